"""Debugging a switch: captures at every point (read back by tcpdump and
tshark), Python hooks, the packet tracer, the Prometheus endpoint and JSON
logs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest
from conftest import CTL, UNDERLAY, in_ns, packet_socket
from helpers import CaptureRun, overlay_node, ping, tcp_bps, tshark


def test_capture_file_of_a_ping_reads_back_in_tcpdump_and_tshark(vswitchd, pods, tmp_path):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    path = tmp_path / "ping.pcapng"
    cap = CaptureRun(d, "-w", str(path), "--filter", "icmp", "-c", "8")
    ping(p["a"][0], "198.18.0.2", count=2)
    rc, _, err = cap.wait()
    assert rc == 0 and "8 frames captured" in err
    text = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True).stdout
    assert text.count("198.18.0.1 > 198.18.0.2: ICMP echo request") == 4   # in at a, out at b
    assert text.count("198.18.0.2 > 198.18.0.1: ICMP echo reply") == 4
    rows = tshark(path, "frame.interface_name", "icmp.type")
    assert sorted(rows) == sorted([["pod-a/ingress", "8"], ["pod-b/egress", "8"],
                                   ["pod-b/ingress", "0"], ["pod-a/egress", "0"]] * 2)
    # Classic pcap too.
    path = tmp_path / "ping.pcap"
    cap = CaptureRun(d, "-w", str(path), "--format", "pcap", "--point", "ingress",
                     "--port", "pod-a", "--filter", "icmp", "-c", "2")
    ping(p["a"][0], "198.18.0.2", count=2)
    assert cap.wait()[0] == 0
    text = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True).stdout
    assert text.count("ICMP echo request") == 2 and "reply" not in text
    assert d.ctl_json("stats")["capture"]["sessions"] == 0


def test_capture_streams_live_into_tcpdump(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    cap = CaptureRun(d, "-w", "-", "--filter", "icmp", "--point", "ingress")
    dump = subprocess.Popen(["tcpdump", "-l", "-nr", "-"], stdin=cap.proc.stdout,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    cap.proc.stdout.close()
    ping(p["a"][0], "198.18.0.2", count=1)
    # Lines arrive while the capture is still running.
    line = dump.stdout.readline()
    assert "198.18.0.1 > 198.18.0.2: ICMP echo request" in line
    assert "198.18.0.2 > 198.18.0.1: ICMP echo reply" in dump.stdout.readline()
    assert cap.proc.poll() is None
    cap.proc.terminate()
    cap.proc.wait(10)
    dump.wait(10)
    deadline = time.monotonic() + 10
    while d.ctl_json("stats")["capture"]["sessions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.ctl_json("stats")["capture"]["sessions"] == 0      # stopping leaves nothing behind


def test_filter_keeps_only_what_it_matches_and_several_captures_run(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    requests = CaptureRun(d, "--filter", "icmp[icmptype] == icmp-echo", "--duration", "3")
    arp = CaptureRun(d, "--filter", "arp", "--duration", "3")
    everything = CaptureRun(d, "--port", "pod-b", "--duration", "3")
    in_ns(p["a"][0], "ip", "neigh", "flush", "all")
    ping(p["a"][0], "198.18.0.2", count=2)
    lines = {name: c.wait()[1].decode().splitlines()
             for name, c in (("requests", requests), ("arp", arp), ("all", everything))}
    assert lines["requests"] and all("echo-request" in x for x in lines["requests"])
    assert lines["arp"] and all(" ARP " in x for x in lines["arp"])
    assert all(" pod-b " in x for x in lines["all"])
    assert any("echo-reply" in x for x in lines["all"]) and any("ARP" in x for x in lines["all"])
    # Bad requests get an error; the daemon goes on.
    for args, message in ((["--filter", "icmp and"], "bad filter"),
                          (["--port", "nope"], "no port"),
                          (["--port", "vxlan:192.0.2.9"], "no peer")):
        r = subprocess.run(CTL + ["--socket", d.socket, "capture", *args], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1 and message in r.stderr, r.stderr
    assert d.ctl_json("stats")["capture"]["sessions"] == 0


def test_drop_capture_shows_a_runt_and_its_reason(vswitchd, pods, tmp_path):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    path = tmp_path / "drops.pcapng"
    cap = CaptureRun(d, "--point", "drop", "-w", str(path), "-c", "2")
    lines = CaptureRun(d, "--point", "drop", "-c", "1")
    sock = packet_socket(p["a"][0])
    sock.send(b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x81\x00\x00")  # tag cut short
    sock.send(b"\xff" * 6 + bytes.fromhex("020000000009") + b"\x08\x00" + bytes(46))  # spoofed
    sock.close()
    assert cap.wait()[0] == 0
    rc, out, _ = lines.wait()
    assert "drop    pod-a [runt]" in out.decode()
    rows = tshark(path, "frame.interface_name", "frame.comment", "frame.len")
    assert rows == [["pod-a/drop", "drop: runt", "15"], ["pod-a/drop", "drop: spoofed_source", "60"]]


HOOK = '''
import json
OUT = {out!r}

def record(point, port, frame, meta):
    from scapy.layers.l2 import Ether
    import scapy.layers.inet
    with open(OUT, "a") as f:
        f.write(json.dumps([point, port, meta["orig_len"], Ether(frame).summary()]) + "\\n")

def broken(point, port, frame, meta):
    raise RuntimeError("this hook is broken")
'''


def test_hooks_receive_frames_and_a_failing_hook_is_disabled(vswitchd, pods, tmp_path):
    out = tmp_path / "hook.out"
    module = tmp_path / "myhooks.py"
    module.write_text(HOOK.format(out=str(out)))
    d = vswitchd(hook=[{"call": f"{module}:record", "point": ["ingress", "egress"],
                        "port": "pod-a", "filter": "icmp"},
                       {"call": f"{module}:broken"}])
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    ping(p["a"][0], "198.18.0.2", count=2)
    deadline = time.monotonic() + 10
    while (not out.exists() or len(out.read_text().splitlines()) < 4) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    seen = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(s[0], s[1]) for s in seen] == [("ingress", "pod-a"), ("egress", "pod-a")] * 2
    assert "echo-request" in seen[0][3] and "echo-reply" in seen[1][3]
    hooks = d.ctl_json("stats")["hooks"]
    assert hooks[0]["enabled"] and hooks[0]["calls"] == 4
    assert not hooks[1]["enabled"] and "this hook is broken" in hooks[1]["error"]
    assert d.log_path.read_text().count("RuntimeError: this hook is broken") == 1
    assert f"hook {module}:broken: disabled (RuntimeError" in d.ctl("stats").stdout
    assert d.proc.poll() is None
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.2", count=1).stdout


def test_example_hook_logs_icmp(vswitchd, pods):
    from pathlib import Path
    example = Path(__file__).resolve().parent.parent / "examples/hooks/trace_icmp.py"
    d = vswitchd(hook=[{"call": f"{example}:hook", "point": ["ingress"], "filter": "icmp"}])
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    ping(p["a"][0], "198.18.0.2", count=1)
    deadline = time.monotonic() + 10
    while "echo-reply" not in d.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = d.log_path.read_text()
    assert "ingress pod-a: 198.18.0.1 > 198.18.0.2 echo-request" in log
    assert "ingress pod-b: 198.18.0.2 > 198.18.0.1 echo-reply" in log


# A hook that cannot be loaded no longer stops the daemon (test_hardening);
# a config that is wrong still does.
@pytest.mark.parametrize("call,key", [("os:getcwd", "hook[0].filter"),
                                      ("no-colon-here", "hook[0].call")])
def test_bad_hook_config_exits_2(tmp_path, call, key):
    from conftest import DAEMON, write_toml
    path = tmp_path / "c.toml"
    hook = {"call": call, "filter": "icmp and"}
    write_toml(path, {"node": {"socket": str(tmp_path / "s.sock"),
                               "state_dir": str(tmp_path / "state")}, "hook": [hook]})
    r = subprocess.run(DAEMON + ["--config", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and key in r.stderr, r.stderr


def test_trace_tells_where_a_frame_goes(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"), ("c", "198.18.0.3/16"))
    mac = {tag: info["mac"] for tag, (_, info) in p.items()}
    # Permanent neighbours: no ARP (nor the kernel's reachability probes a
    # few seconds later) crosses the switch while the counters are compared.
    for here, there, addr in (("a", "b", "198.18.0.2"), ("b", "a", "198.18.0.1")):
        in_ns(p[here][0], "ip", "neigh", "replace", addr, "lladdr", mac[there], "dev", "eth0",
              "nud", "permanent")
    ping(p["a"][0], "198.18.0.2", count=1)
    before = d.ctl_json("stats")

    def trace(*args):
        return d.ctl_json("trace", "--in-port", "pod-a", *args)["steps"]

    learned = trace("--scapy", f"Ether(src='{mac['a']}', dst='{mac['b']}')/"
                    "IP(src='198.18.0.1', dst='198.18.0.2')/ICMP()")
    assert learned[-1] == {"step": "output", "ports": ["pod-b"], "peers": []}
    assert {"step": "fdb", "mac": mac["b"], "result": "learned", "port": "pod-b"} in learned
    unknown = trace("--scapy", f"Ether(src='{mac['a']}', dst='02:00:00:00:99:99')/"
                    "IP(src='198.18.0.1', dst='198.18.0.99')")
    assert unknown[-1] == {"step": "flood", "ports": ["pod-b", "pod-c"], "peers": []}
    assert trace("--hex", "ffffffffffff02")[-1] == {"step": "drop", "reason": "runt"}
    spoof = trace("--scapy", f"Ether(src='{mac['a']}', dst='{mac['b']}')/"
                  "IP(src='198.18.0.77', dst='198.18.0.2')")
    assert spoof[-1] == {"step": "drop", "reason": "spoofed_source"}
    text = d.ctl("trace", "--in-port", "pod-a", "--hex", "ffffffffffff02").stdout
    assert "drop: reason runt" in text
    # Nothing was learned, sent or counted.
    after = d.ctl_json("stats")
    assert after["ports"] == before["ports"] and after["fdb"]["entries"] == before["fdb"]["entries"]
    assert d.ctl("trace", "--in-port", "nope", "--hex", "00", check=False).returncode == 1
    assert d.ctl("trace", "--in-port", "pod-a", "--hex", "zz", check=False).returncode == 1


def test_overlay_encap_and_decap_points(vswitchd, underlay, pods, tmp_path):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, peers=[2])
    d2 = overlay_node(vswitchd, n2, 2, peers=[1])
    p = {**pods(d1, ("a", "198.18.0.1/16")), **pods(d2, ("b", "198.18.0.2/16"))}
    ping(p["a"][0], "198.18.0.2", count=1)          # ARP done before the capture
    path = tmp_path / "encap.pcapng"
    cap = CaptureRun(d1, "--point", "encap", "--point", "decap", "-w", str(path),
                     "--filter", "udp port 4789 or icmp", "-c", "4")
    ping(p["a"][0], "198.18.0.2", count=2)
    assert cap.wait()[0] == 0
    text = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True).stdout
    assert text.count(f"{UNDERLAY}.1.") == 2 and "VXLAN, flags [I] (0x08), vni 100" in text
    assert "198.18.0.2 > 198.18.0.1: ICMP echo reply" in text
    rows = tshark(path, "frame.interface_name", "vxlan.vni", "ip.dst")
    assert [r[0] for r in rows] == [f"vxlan:{UNDERLAY}.2/encap", f"vxlan:{UNDERLAY}.2/decap"] * 2
    assert rows[0][1:] == ["100", f"{UNDERLAY}.2,198.18.0.2"]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_prometheus_endpoint(vswitchd, pods):
    from prometheus_client.parser import text_string_to_metric_families
    listen = f"127.0.0.1:{free_port()}"
    d = vswitchd(metrics={"listen": listen})
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))

    def scrape():
        with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            families = list(text_string_to_metric_families(r.read().decode()))
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in families for s in f.samples}

    before = scrape()
    ping(p["a"][0], "198.18.0.2", count=3)
    sock = packet_socket(p["a"][0])
    sock.send(b"\xff" * 6 + bytes.fromhex("020000000009") + b"\x08\x00" + bytes(46))
    sock.close()
    time.sleep(0.2)
    after = scrape()
    rx = ("vswitch_port_rx_packets_total", (("port", "pod-a"),))
    assert after[rx] - before[rx] >= 3
    spoofed = ("vswitch_drops_total", (("reason", "spoofed_source"),))
    assert after[spoofed] - before[spoofed] == 1
    assert after[("vswitch_up", ())] == 1
    assert after[rx] == d.ctl_json("stats")["ports"]["pod-a"]["rx_packets"]
    # NetworkPolicy: pod-b isolated; a's pings are counted on b, by reason and per port.
    d.client.apply_policies([{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                              "metadata": {"name": "b", "namespace": "default"},
                              "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                                       "ingress": [{"from": [{"ipBlock": {
                                           "cidr": "198.18.0.1/32"}}], "ports": [{"port": 80}]}]}}])
    ping(p["a"][0], "198.18.0.2", count=2, check=False)
    denied = scrape()
    assert denied[("vswitch_port_policy_denied_total", (("port", "pod-b"),))] == 2
    assert denied[("vswitch_drops_total", (("reason", "policy_denied"),))] == 2
    assert denied[("vswitch_conntrack_entries", ())] == 0
    assert denied[("vswitch_conntrack_max_entries", ())] == 262144
    # The endpoint moves with a reload, and goes away with the key.
    moved = f"127.0.0.1:{free_port()}"
    from conftest import write_toml
    write_toml(d.config_path, {**d.config, "metrics": {"listen": moved}})
    assert d.ctl_json("reload")["changes"] == [f"metrics on {moved}"]
    listen = moved
    assert scrape()[("vswitch_up", ())] == 1
    write_toml(d.config_path, {k: v for k, v in d.config.items() if k != "metrics"})
    d.ctl("reload")
    with pytest.raises(OSError):
        scrape()


def test_json_logs(vswitchd, pods):
    d = vswitchd(node={"log_format": "json"})
    pods(d, ("a", "198.18.0.1/16"))
    d.stop()
    lines = d.log_path.read_text().splitlines()
    entries = [json.loads(x) for x in lines]
    assert any(e["message"].startswith("port pod-a added") for e in entries)
    assert {"time", "level", "logger", "message"} <= set(entries[0])


def test_a_slow_capture_client_loses_copies_not_traffic(vswitchd, pods):
    """A client that never reads: its queue fills, copies are dropped and
    counted, and forwarding goes on at full speed."""
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(d.socket)
    body = json.dumps({"filter": "tcp"}).encode()
    stalled.sendall(b"POST /v1/capture HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    deadline = time.monotonic() + 10
    while d.ctl_json("stats")["capture"]["sessions"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert tcp_bps(p["a"][0], p["b"][0], "198.18.0.2", seconds=2) > 100e6
    capture = d.ctl_json("stats")["capture"]
    assert capture["consumer_dropped"] + capture["ring_dropped"] > 0
    stalled.close()
    deadline = time.monotonic() + 10
    while d.ctl_json("stats")["capture"]["sessions"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert d.ctl_json("stats")["capture"]["sessions"] == 0
