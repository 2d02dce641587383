"""The daemon as a process: config validation, the control socket, the CLI's
output, bad API requests, and a clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from conftest import BLUE, DAEMON, in_ns, write_toml


def run_with_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return subprocess.run(DAEMON + ["--config", str(path)], capture_output=True, text=True,
                          timeout=30)


NET = '[[network]]\nname = "blue"\nvni = 1\nsubnet = "198.18.0.0/16"\n'


@pytest.mark.parametrize("text,key", [
    ('[node]\nmode = "mesh"\n' + NET, "node.mode"),
    ('[node]\nsocket = "relative.sock"\n' + NET, "node.socket"),
    ('[node]\nbogus = 1\n' + NET, "node.bogus"),
    ('[fdb]\naging_time = 0\n' + NET, "fdb.aging_time"),
    ('[fdb]\naging_time = "5m"\n' + NET, "fdb.aging_time"),
    ('[fdb]\nmax_entries = -1\n' + NET, "fdb.max_entries"),
    ('[datapath]\nbatch = 5000\n' + NET, "datapath.batch"),
    ('[datapath]\nbusy_poll_us = -1\n' + NET, "datapath.busy_poll_us"),
    ('[datapath]\noffloads = "yes"\n' + NET, "datapath.offloads"),
    ('[[network]]\nname = "blue"\nsubnet = "198.18.0.0/16"\n', "network[0].vni"),
    ('[[network]]\nname = "blue"\nvni = 16777216\nsubnet = "198.18.0.0/16"\n', "network[0].vni"),
    ('[[network]]\nname = "Blue!"\nvni = 1\nsubnet = "198.18.0.0/16"\n', "network[0].name"),
    ('[[network]]\nname = "blue"\nvni = 1\nsubnet = "198.18.0.0/33"\n', "network[0].subnet"),
    (NET + 'block = "198.19.1.0/24"\n', "network[0].block"),
    (NET + "mtu = 40\n", "network[0].mtu"),
    (NET + NET.replace("vni = 1", "vni = 2"), "network[1].name"),
    (NET + NET.replace('"blue"', '"red"'), "network[1].vni"),
    (NET + "colour = 3\n", "network[0].colour"),
    ("network = []\n", "network"),
    (NET + 'block = "198.18.1.0/24"\ngateway = "198.18.2.1"\n', "network[0].gateway"),
    (NET + 'block = "198.18.1.0/24"\ngateway = "198.18.1.255"\n', "network[0].gateway"),
    (NET + 'gateway = "x"\n', "network[0].gateway"),
    (NET + 'host_port = "a name too long"\n', "network[0].host_port"),
    (NET + 'host_port = "h0"\n' + NET.replace('"blue"', '"red"').replace("vni = 1", "vni = 2")
     + 'host_port = "h0"\n', "network[1].host_port"),
    ("[overlay]\nvtep_ip = \"192.0.2.1\"\n" + NET, "overlay"),
    ('[node]\nmode = "overlay"\n' + NET, "overlay"),
    ('[node]\nmode = "overlay"\n[overlay]\npeers = []\n' + NET, "overlay.vtep_ip"),
    ('[node]\nmode = "overlay"\n[overlay]\nvtep_ip = "192.0.2.300"\n' + NET, "overlay.vtep_ip"),
    ('[node]\nmode = "overlay"\n[overlay]\nvtep_ip = "192.0.2.1"\npeers = ["x"]\n' + NET,
     "overlay.peers"),
    ('[node]\nmode = "overlay"\n[overlay]\nvtep_ip = "192.0.2.1"\npeers = ["192.0.2.1"]\n' + NET,
     "overlay.peers"),
    ('[node]\nmode = "overlay"\n[overlay]\nvtep_ip = "192.0.2.1"\nudp_port = 0\n' + NET,
     "overlay.udp_port"),
    ('[node]\nmode = "overlay"\n[overlay]\nvtep_ip = "192.0.2.1"\n' + NET + "mtu = 1460\n",
     "network[0].mtu"),
    ('[node]\nmode = "overlay"\n[overlay]\nvtep_ip = "192.0.2.1"\nlearn_peers = 1\n' + NET,
     "overlay.learn_peers"),
    ("[node\nname = 1\n", "not valid TOML"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, text, key):
    r = run_with_config(tmp_path, text)
    assert r.returncode == 2, r.stderr
    assert key in r.stderr
    assert r.stderr.count("\n") == 1                    # one message, no traceback


def test_vtep_address_not_on_this_node_exits_2(tmp_path, netns):
    node = netns("n")
    path = tmp_path / "overlay.toml"
    write_toml(path, {"node": {"mode": "overlay", "socket": str(tmp_path / "s.sock"),
                               "state_dir": str(tmp_path / "state")},
                      "overlay": {"vtep_ip": "192.0.2.77"}, "network": [{**BLUE, "mtu": 1450}]})
    r = subprocess.run(["ip", "netns", "exec", node] + DAEMON + ["--config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "overlay.vtep_ip" in r.stderr and "192.0.2.77:4789" in r.stderr
    assert not os.path.exists(tmp_path / "s.sock")


def test_missing_config_file_exits_2(tmp_path):
    r = subprocess.run(DAEMON + ["--config", str(tmp_path / "nope.toml")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "nope.toml" in r.stderr and "cannot read" in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_socket_is_private_and_removed_on_stop_pods_stay(vswitchd, pods, sig):
    """A stop removes the socket and leaves the pods' interfaces, addresses
    and routes in place (no carrier) for the next start."""
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"))
    mode = os.stat(d.socket).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert os.stat(d.socket).st_uid == 0
    assert "eth0" in in_ns(p["a"][0], "ip", "-br", "link").stdout
    d.proc.send_signal(sig)
    assert d.proc.wait(10) == 0
    assert not os.path.exists(d.socket)
    link = in_ns(p["a"][0], "ip", "-br", "addr", "show", "eth0").stdout
    assert "NO-CARRIER" in in_ns(p["a"][0], "ip", "link", "show", "eth0").stdout
    assert "198.18.0.1/16" in link
    assert "stopping; pod interfaces stay" in d.log_path.read_text()


def test_second_daemon_on_the_same_socket_is_refused(vswitchd, tmp_path):
    d = vswitchd()
    path = tmp_path / "second.toml"
    write_toml(path, {"node": {"socket": d.socket, "state_dir": str(tmp_path / "other")},
                      "network": [BLUE]})
    r = subprocess.run(DAEMON + ["--config", str(path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "another vswitchd" in r.stderr
    assert d.client.status()["mode"] == "bridge"


def test_state_dir_problems_exit_2(vswitchd, tmp_path):
    """A state directory another daemon holds, or one that cannot be made."""
    d = vswitchd()
    for state_dir, problem in ((d.state_dir, "in use by another vswitchd"),
                               ("/proc/vswitch-state", "cannot open the state database")):
        path = tmp_path / "second.toml"
        write_toml(path, {"node": {"socket": str(tmp_path / "2.sock"), "state_dir": state_dir},
                          "network": [BLUE]})
        r = subprocess.run(DAEMON + ["--config", str(path)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "node.state_dir" in r.stderr and problem in r.stderr
    assert d.client.status()["mode"] == "bridge"


def test_host_port_name_taken_exits_2(tmp_path, netns):
    node = netns("n")
    in_ns(node, "ip", "link", "add", "vswh0", "type", "veth", "peer", "name", "vswh0p")
    path = tmp_path / "host.toml"
    write_toml(path, {"node": {"socket": str(tmp_path / "s.sock"),
                               "state_dir": str(tmp_path / "state")},
                      "network": [{**BLUE, "host_port": "vswh0"}]})
    r = subprocess.run(["ip", "netns", "exec", node] + DAEMON + ["--config", str(path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "network[0].host_port" in r.stderr and "already exists" in r.stderr


def raw_request(path: str, data: bytes) -> tuple[int, dict]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    s.sendall(data)
    reply = b""
    while chunk := s.recv(65536):
        reply += chunk
    s.close()
    head, body = reply.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("request_bytes,status,message", [
    (b"GET /v1/nothing HTTP/1.1\r\n\r\n", 404, "no such path"),
    (b"GET /other HTTP/1.1\r\n\r\n", 404, "no such path"),
    (b"PUT /v1/status HTTP/1.1\r\n\r\n", 405, "not allowed"),
    (b"POST /v1/ports HTTP/1.1\r\nContent-Length: 5\r\n\r\n{oops", 400, "not valid JSON"),
    (b"POST /v1/ports HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]", 400, "JSON object"),
    (b"POST /v1/ports HTTP/1.1\r\nContent-Length: 13\r\n\r\n{\"name\": \"x\"}", 400, "'netns'"),
    (b"POST /v1/ports HTTP/1.1\r\nContent-Length: 35\r\n\r\n{\"name\": \"x\", \"netns\": \"n\", \"a\": 1}",
     400, "unknown field"),
    (b"POST /v1/ports HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400, "Content-Length"),
    (b"BROKEN\r\n\r\n", 400, "malformed"),
    (b"GET /v1/ports/ghost HTTP/1.1\r\n\r\n", 404, "no port"),
])
def test_bad_api_requests_get_errors_and_daemon_goes_on(vswitchd, request_bytes, status, message):
    d = vswitchd()
    got_status, body = raw_request(d.socket, request_bytes)
    assert got_status == status
    assert message in body["error"]
    assert d.client.status()["ports"] == 0


def test_cli_human_and_json_output(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    in_ns(p["a"][0], "ping", "-c", "1", "198.18.0.2")
    status = d.ctl_json("status")
    assert status["mode"] == "bridge" and status["ports"] == 2 and status["node"] == "test-node0"
    assert "mode bridge" in d.ctl("status").stdout
    listing = d.ctl("port", "list").stdout
    assert "pod-a" in listing and "198.18.0.2/16" in listing
    assert "rx_packets" in d.ctl("port", "show", "pod-b").stdout
    assert "02:" not in d.ctl("fdb", "show", "--network", "red").stdout
    assert d.ctl("fdb", "show").stdout.count("blue") == 2
    stats = d.ctl("stats").stdout
    assert "pod-a" in stats and "drops:" in stats and "unicast=" in stats
    # --json works before or after the verb.
    before = subprocess.run([sys.executable, "-m", "vswitch.ctl", "--socket", d.socket, "--json",
                             "stats"], capture_output=True, text=True, check=True)
    assert json.loads(before.stdout)["ports"]["pod-a"]["rx_packets"] >= 2


def test_cli_without_daemon_says_so(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vswitch.ctl", "--socket", str(tmp_path / "none.sock"),
                        "status"], capture_output=True, text=True)
    assert r.returncode == 1 and "not running" in r.stderr


def test_deleted_pod_namespace_is_noticed(vswitchd, pods, netns):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    subprocess.run(["ip", "netns", "del", p["a"][0]], check=True)
    # The daemon keeps serving; the port shows as lost and can be deleted.
    in_ns(p["b"][0], "ping", "-c", "1", "-W", "0.5", "198.18.0.1", check=False)
    deadline = time.monotonic() + 5
    while d.ctl_json("port", "show", "pod-a")["state"] != "lost" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert d.ctl_json("port", "show", "pod-a")["state"] == "lost"
    d.ctl("port", "del", "pod-a")
    assert [x["name"] for x in d.ctl_json("port", "list")] == ["pod-b"]


def test_concurrent_port_adds_cannot_share_a_name_or_address(vswitchd, netns):
    from concurrent.futures import ThreadPoolExecutor

    from vswitch.client import ClientError
    d = vswitchd()
    spaces = [netns(t) for t in "abcd"]
    requests = [("same-name", spaces[0], "198.18.0.1"), ("same-name", spaces[1], "198.18.0.2"),
                ("x", spaces[2], "198.18.0.9"), ("y", spaces[3], "198.18.0.9")]

    def add(req):
        name, ns, ip = req
        try:
            d.client.add_port(name, ns, ip=ip)
            return "ok"
        except ClientError as e:
            return e.status

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(add, requests))
    assert sorted(results[:2], key=str) == [409, "ok"]
    assert sorted(results[2:], key=str) == [409, "ok"]
    assert len(d.client.ports()) == 2
