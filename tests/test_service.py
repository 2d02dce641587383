"""vswitchd as a node service: the sd_notify protocol, live reload, and
restarts and crashes that keep pods connected (persistent TAPs re-attached
from the SQLite state)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import BLUE, RED, UNDERLAY, in_ns, sh, write_toml
from helpers import BLOCKED, NotifySocket, Runtime, overlay_node

ROOT = Path(__file__).resolve().parent.parent


class Pinger:
    """A ping between pods running in the background (count requests, one
    every interval, covering what the test does meanwhile); counts what
    was lost."""

    def __init__(self, ns: str, ip: str, interval="0.01", count=200):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-i", interval, "-W", "1",
                                      "-c", str(count), ip], stdout=subprocess.PIPE, text=True)

    def stop(self) -> tuple[int, int]:
        """(transmitted, received) once every request was answered or timed
        out (stopping it with a signal would count a reply still on its way
        as lost)."""
        out = self.proc.communicate(timeout=30)[0]
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        return int(m.group(1)), int(m.group(2))


def ping_ok(ns, ip):
    return " 0% packet loss" in in_ns(ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", ip,
                                     check=False).stdout


def test_notify_protocol(vswitchd, pods, tmp_path):
    """READY once ports are back and the API answers, STATUS with it,
    WATCHDOG keep-alives, RELOADING then READY around a reload, STOPPING."""
    notify = NotifySocket(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}
    d = vswitchd(env=env)
    ready = notify.until("READY")[-1]
    assert ready["READY"] == "1" and "bridge mode, 0 ports, 2 networks" in ready["STATUS"]
    assert {"WATCHDOG"} <= set(notify.until("WATCHDOG")[-1])
    assert notify.until("WATCHDOG")          # and again: they keep coming
    pods(d, ("a", "198.18.0.1/16"))
    d.proc.send_signal(signal.SIGHUP)
    seen = notify.until("RELOADING")
    assert "MONOTONIC_USEC" in seen[-1]
    assert "1 ports" in notify.until("READY")[-1]["STATUS"]
    # Restarted on the same state: READY comes after the port is back.
    d.stop()
    assert "STOPPING" in notify.until("STOPPING")[-1]
    d2 = vswitchd(env=env, state_dir=d.state_dir)
    assert "1 ports" in notify.until("READY")[-1]["STATUS"]
    assert [p["state"] for p in d2.ctl_json("port", "list")] == ["up"]


def test_no_notify_socket_no_watchdog_is_fine(vswitchd):
    d = vswitchd(env={"NOTIFY_SOCKET": "/nonexistent/notify", "WATCHDOG_USEC": "100000"})
    time.sleep(0.3)
    assert d.client.status()["mode"] == "bridge"


def test_stop_and_start_keep_pods_connected(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    before = {x["name"]: x for x in d.ctl_json("port", "list")}
    d.stop()
    assert not ping_ok(p["a"][0], "198.18.0.2")      # nothing switches meanwhile
    d2 = vswitchd(state_dir=d.state_dir)
    after = {x["name"]: x for x in d2.ctl_json("port", "list")}
    for name, port in before.items():
        assert (after[name]["mac"], after[name]["addresses"], after[name]["port_security"]) == \
            (port["mac"], port["addresses"], port["port_security"])
    assert ping_ok(p["a"][0], "198.18.0.2")


def test_sigkill_then_start_brings_everything_back(vswitchd, netns, cni_path):  # noqa: F811
    d = vswitchd(networks=(BLOCKED,))
    rt = Runtime(cni_path, d)
    a, b, c = netns("a"), netns("b"), netns("c")
    results = {ns: rt.add(ns, f"ctr-{ns[-1]}") for ns in (a, b, c)}
    d.proc.kill()
    d.proc.wait()
    # While it is down, pod c goes away for good.
    sh("ip", "netns", "del", c)
    d2 = vswitchd(networks=(BLOCKED,), state_dir=d.state_dir)
    ports = {x["container"]: x for x in d2.ctl_json("port", "list")}
    assert set(ports) == {"ctr-a/eth0", "ctr-b/eth0"}
    assert ping_ok(a, results[b]["ips"][0]["address"].split("/")[0])
    allocations = {x["container_id"]: x["ip"] for x in d2.ctl_json("ipam", "show")["allocations"]}
    assert set(allocations) == {"ctr-a", "ctr-b"}           # c's address released
    for ns in (a, b):
        assert f"{allocations[f'ctr-{ns[-1]}']}/16" == results[ns]["ips"][0]["address"]
    # The repeated ADD of a running pod answers from what is there.
    assert Runtime(cni_path, d2).add(a, "ctr-a") == results[a]


def test_reload_adds_a_network_and_keeps_traffic_flowing(vswitchd, pods, netns):
    d = vswitchd(networks=(BLUE,))
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    pinger = Pinger(p["a"][0], "198.18.0.2")
    time.sleep(0.5)
    config = {**d.config, "network": [BLUE, RED], "fdb": {"aging_time": 120}}
    write_toml(d.config_path, config)
    r = d.ctl_json("reload")
    assert r["changes"] == ["network red added", "aging_time 300 -> 120"]
    time.sleep(0.5)
    sent, received = pinger.stop()
    # Stated bound: a reload that leaves a port's network alone loses nothing on it.
    assert sent > 50 and received == sent
    assert d.client.status()["aging_time"] == 120
    red = pods(d, ("c", "198.19.0.1/16", "red"), ("e", "198.19.0.2/16", "red"))
    assert ping_ok(red["c"][0], "198.19.0.2")
    # SIGHUP does the same; taking the network away again removes its ports.
    write_toml(d.config_path, {**config, "network": [BLUE]})
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while len(d.ctl_json("port", "list")) != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(x["name"] for x in d.ctl_json("port", "list")) == ["pod-a", "pod-b"]
    assert d.client.status()["networks"] == ["blue"]
    assert "network red removed" in d.log_path.read_text()


def test_reload_changes_mtu_in_place(vswitchd, pods):
    d = vswitchd(networks=(BLUE,))
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    write_toml(d.config_path, {**d.config, "network": [{**BLUE, "mtu": 1400}]})
    assert d.ctl_json("reload")["changes"] == ["network blue mtu 1500 -> 1400"]
    assert "mtu 1400" in in_ns(p["a"][0], "ip", "link", "show", "eth0").stdout
    assert [x["mtu"] for x in d.ctl_json("port", "list")] == [1400, 1400]
    r = in_ns(p["a"][0], "ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1372", "198.18.0.2",
              check=False)
    assert r.returncode == 0
    # The pods keep the new MTU across a restart.
    d.stop()
    d2 = vswitchd(networks=({**BLUE, "mtu": 1400},), state_dir=d.state_dir)
    assert [x["mtu"] for x in d2.ctl_json("port", "list")] == [1400, 1400]


def test_reload_changes_busy_polling(vswitchd, pods):
    d = vswitchd(networks=(BLUE,))
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    before = d.config.get("datapath", {}).get("busy_poll_us", 50)
    write_toml(d.config_path, {**d.config, "datapath": {**d.config.get("datapath", {}),
                                                        "busy_poll_us": 0}})
    assert d.ctl_json("reload")["changes"] == [f"busy_poll_us {before:g} -> 0"]
    assert in_ns(p["a"][0], "ping", "-c", "3", "-i", "0.2", "198.18.0.2").returncode == 0


def test_invalid_reload_is_refused_and_the_old_config_stays(vswitchd, pods):
    d = vswitchd(networks=(BLUE,))
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    good = d.config_path.read_text()
    for text, why in (("[node\n", "not valid TOML"),
                      (good + "bogus = 1\n", "bogus: unknown key"),
                      (good.replace('name = "test-node0"', 'name = "other"'),
                       "node.name cannot change"),
                      (good.replace("vni = 100", "vni = 101"), "network[0].vni")):
        d.config_path.write_text(text)
        r = d.ctl("reload", check=False)
        assert r.returncode == 1 and "reload refused" in r.stderr and why in r.stderr, r.stderr
        d.proc.send_signal(signal.SIGHUP)
        time.sleep(0.2)
        assert d.proc.poll() is None
        assert ping_ok(p["a"][0], "198.18.0.2")
    assert d.log_path.read_text().count("reload refused, running config kept") >= 8
    assert d.client.status()["networks"] == ["blue"]


def test_reload_adds_and_removes_peers(vswitchd, underlay, pods):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, networks=(BLUE,))
    d2 = overlay_node(vswitchd, n2, 2, peers=[1], networks=(BLUE,))
    p = {**pods(d1, ("a", "198.18.0.1/16"), ("c", "198.18.0.3/16")),
         **pods(d2, ("b", "198.18.0.2/16"))}
    assert not ping_ok(p["a"][0], "198.18.0.2")
    local = Pinger(p["a"][0], "198.18.0.3")
    config = {**d1.config, "overlay": {**d1.config["overlay"], "peers": [f"{UNDERLAY}.2"]}}
    write_toml(d1.config_path, config)
    assert d1.ctl_json("reload")["changes"] == [f"peer {UNDERLAY}.2 added"]
    assert ping_ok(p["a"][0], "198.18.0.2")
    sent, received = local.stop()
    assert sent > 20 and received == sent
    write_toml(d1.config_path, {**config, "overlay": {**config["overlay"], "peers": []}})
    assert d1.ctl_json("reload")["changes"] == [f"peer {UNDERLAY}.2 removed"]
    assert d1.ctl_json("peer", "list") == []


def test_stop_remove_ports_takes_everything_away(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"))
    d.ctl("stop", "--remove-ports")
    assert d.proc.wait(10) == 0
    assert "eth0" not in in_ns(p["a"][0], "ip", "-o", "link").stdout
    d2 = vswitchd(state_dir=d.state_dir)
    assert d2.ctl_json("port", "list") == []


def test_deleted_namespace_makes_a_port_lost_and_frees_it(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    sh("ip", "netns", "del", p["a"][0])
    deadline = time.monotonic() + 10
    while d.ctl_json("port", "show", "pod-a")["state"] != "lost" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.ctl_json("port", "show", "pod-a")["state"] == "lost"
    # Its address can be taken again once the port is deleted.
    d.ctl("port", "del", "pod-a")
    assert ping_ok(p["b"][0], "198.18.0.2")


def test_unit_file_passes_systemd_analyze(tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing (Debian: systemd)")
    root = tmp_path / "root"
    r = subprocess.run(["bash", str(ROOT / "scripts/install-service.sh")],
                       env={**os.environ, "DESTDIR": str(root)}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    unit = root / "etc/systemd/system/vswitchd.service"
    text = unit.read_text()
    assert "Type=notify" in text and "WatchdogSec=" in text and "ExecReload=" in text
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # A broken unit is caught, so the check above means something.
    bad = tmp_path / "vswitchd.service"
    bad.write_text(text.replace("Type=notify", "Typo=notify"))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True)
    assert "Unknown key" in r.stderr
    from vswitch.config import load
    assert load(str(root / "etc/vswitch/vswitchd.toml")).networks[0].name == "default"
    assert os.readlink(root / "opt/cni/bin/vswitch").endswith("vswitch-cni")
