"""Attacks from a pod, from an underlay host and through the control socket
and the CNI plugin, performed for real (namespaces, raw sockets, crafted
datagrams): each must fail and be counted under a named reason or refused
with a clear error, while the daemon stays up and reports correctly."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import struct
import subprocess
import sys
import threading

import pytest
from conftest import BLUE, DAEMON, RED, UNDERLAY, in_ns, sh, write_toml
from datapath_rig import BCAST, Rig, checksum, frame, mac
from helpers import NotifySocket, Runtime, overlay_node, ping, send_udp, vxlan, wait_for

from vswitch.client import Client, ClientError
from vswitch.netns import entered

SOL_PACKET, PACKET_VNET_HDR = 263, 15


def udp_frame(src_mac: bytes, src_ip: str, dst_ip: str, payload: bytes = b"x" * 32,
              dst_mac: bytes = BCAST) -> bytes:
    """Ethernet/IPv4/UDP with a correct IP header checksum, UDP checksum 0."""
    udp = struct.pack("!HHHH", 1234, 7, 8 + len(payload), 0) + payload
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                               socket.inet_aton(src_ip), socket.inet_aton(dst_ip)))
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    return dst_mac + src_mac + b"\x08\x00" + bytes(ip) + udp


class Listener:
    """A UDP socket on an underlay address, collecting what arrives (a
    stand-in peer node)."""

    def __init__(self, ns: str, ip: str, port: int = 4789):
        with entered(ns):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.3)

    def received(self) -> list[bytes]:
        out = []
        try:
            while True:
                out.append(self.sock.recv(70000))
        except socket.timeout:
            return out


# ---------------------------------------------------------------- finding 1

def test_checksum_offload_cannot_rewrite_a_checked_source(vswitchd, underlay, pods):  # noqa: F811
    """A pod with a raw socket and PACKET_VNET_HDR asks for a partial
    checksum aimed at its own IPv4 source: completing it on the way into the
    tunnel would have forged the source after port security passed it."""
    n1, n2 = underlay(1), underlay(2)
    peer = Listener(n2, f"{UNDERLAY}.2")
    d1 = overlay_node(vswitchd, n1, 1, peers=[2])
    ns, info = pods(d1, ("a", "198.18.0.1/16"))["a"]
    own = bytes.fromhex(info["mac"].replace(":", ""))
    with entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        s.bind(("eth0", 0))
    legit = udp_frame(own, "198.18.0.1", "198.18.0.9")
    forged_at = 14 + 12                     # csum_start at the IPv4 source, offset 2: its last octets
    s.send(struct.pack("<BBHHHH", 1, 0, 0, 0, forged_at, 2) + legit)
    s.send(struct.pack("<BBHHHH", 0, 0, 0, 0, 0, 0) + legit)
    s.close()
    wait_for("the drop", lambda: d1.ctl_json("stats")["drops"]["bad_vnet_hdr"] == 1)
    inner = [d[8:] for d in peer.received() if d[20:22] == b"\x08\x00"]
    assert [socket.inet_ntoa(f[26:30]) for f in inner] == ["198.18.0.1"]   # only the legit one
    assert d1.ctl_json("stats")["tunnel"]["tx_packets"] >= 1


# ---------------------------------------------------------------- finding 2

def test_vni_zero_is_refused_and_every_report_still_answers(vswitchd, underlay, pods):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, learn_peers=True)
    pods(d1, ("a", "198.18.0.1/16"))
    inner = bytes.fromhex("ffffffffffff020000000042") + b"\x08\x06" + bytes(28)
    send_udp(n2, f"{UNDERLAY}.2", [vxlan(0, inner)] * 3)
    wait_for("unknown_vni", lambda: d1.ctl_json("stats")["drops"]["unknown_vni"] == 3)
    assert d1.ctl_json("stats")["drops"]["oversize"] == 0
    assert d1.ctl_json("peer", "list") == []                  # no phantom membership
    for verb in (("status",), ("fdb", "show"), ("peer", "list"), ("stats",), ("port", "list")):
        d1.ctl_json(*verb)                                     # every report answers
    assert "02:00:00:00:00:42" not in {e["mac"] for e in d1.ctl_json("fdb", "show")}


def test_the_watchdog_and_metrics_outlive_crafted_vnis(vswitchd, underlay, tmp_path):  # noqa: F811
    """The attack that once stopped the watchdog and the metrics: datagrams
    with VNI 0 and with undeclared VNIs, learn_peers on; keep-alives keep
    coming and every report answers."""
    n1, n2 = underlay(1), underlay(2)
    notify = NotifySocket(tmp_path / "notify")
    d1 = vswitchd(netns=n1, mode="overlay", networks=[{**BLUE, "mtu": 1450}],
                  overlay={"vtep_ip": f"{UNDERLAY}.1", "learn_peers": True},
                  metrics={"listen": "127.0.0.1:9477"},
                  env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    notify.until("READY")
    inner = bytes.fromhex("ffffffffffff020000000042") + b"\x08\x06" + bytes(28)
    send_udp(n2, f"{UNDERLAY}.2", [vxlan(0, inner), vxlan(4095, inner), vxlan(0xFFFFFF, inner)])
    for _ in range(3):
        assert "WATCHDOG" in notify.until("WATCHDOG")[-1]
    with entered(n1):
        scrape = socket.create_connection(("127.0.0.1", 9477), timeout=5)
    scrape.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    answer = b""
    while chunk := scrape.recv(65536):
        answer += chunk
    scrape.close()
    assert answer.startswith(b"HTTP/1.1 200") and b'vswitch_drops_total{reason="unknown_vni"} 3' in answer
    assert d1.ctl_json("status")["peers"] == 0


def test_a_failing_periodic_step_does_not_stop_the_others():
    from vswitch.daemon import periodic
    calls = {"bad": 0, "good": 0}

    def bad():
        calls["bad"] += 1
        raise KeyError(7)

    def good():
        calls["good"] += 1

    async def run():
        task = asyncio.create_task(periodic("test", 0.01, bad, good))
        while calls["good"] < 5:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run())
    assert calls["bad"] >= 5 and calls["good"] >= 5


# ---------------------------------------------------------------- finding 3

def test_the_tunnel_cannot_steal_a_secured_pods_mac(vswitchd, underlay, pods):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, peers=[2], networks=({**BLUE, "host_port": "vswst0"}, RED))
    p = pods(d1, ("a", "198.18.0.10/16"), ("c", "198.18.0.3/16"))
    victim, gateway = p["a"][1]["mac"], d1.ctl_json("port", "show", "host-blue")["mac"]
    for mac_text in (victim, gateway):                 # a pod's MAC, and the node's gateway's
        inner = BCAST + bytes.fromhex(mac_text.replace(":", "")) + b"\x08\x06" + bytes(28)
        send_udp(n2, f"{UNDERLAY}.2", [vxlan(100, inner)] * 2)
    wait_for("mac_pinned", lambda: d1.ctl_json("stats")["drops"]["mac_pinned"] == 4)
    fdb = {e["mac"]: e for e in d1.ctl_json("fdb", "show")}
    assert fdb[victim]["port"] == "pod-a" and fdb[victim]["pinned"]
    assert fdb[gateway]["port"] == "host-blue" and fdb[gateway]["pinned"]
    rows = {line.split()[1]: line.split()[2:] for line in d1.ctl("fdb", "show").stdout.splitlines()[1:]}
    assert rows[victim] == ["pod-a", "pinned"] and rows[gateway] == ["host-blue", "pinned"]
    assert " 0% packet loss" in ping(p["c"][0], "198.18.0.10", count=2).stdout


def test_another_port_cannot_take_a_secured_pods_mac():
    r = Rig()
    secured, open_port, other = r.port(), r.port(), r.port()
    r.dp.set_port_security(secured, int.from_bytes(mac(1), "big"), [])
    r.send(open_port, frame(BCAST, mac(1)))
    assert r.received(other) == [] and r.dp.counters()["drops"]["mac_pinned"] == 1
    assert r.dp.trace(open_port, frame(BCAST, mac(1)))[-1] == {"step": "drop",
                                                               "reason": "mac_pinned"}


# ---------------------------------------------------------------- finding 4

def test_a_peer_injects_only_into_its_own_networks(vswitchd, underlay, pods):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1)
    d1.ctl("peer", "add", f"{UNDERLAY}.2", "--network", "blue")
    p = pods(d1, ("a", "198.18.0.1/16"), ("r", "198.19.0.1/16", "red"))
    inner = bytes.fromhex("ffffffffffff020000000077") + b"\x08\x06" + bytes(28)
    send_udp(n2, f"{UNDERLAY}.2", [vxlan(200, inner)] * 3 + [vxlan(100, inner)])
    wait_for("the drops", lambda: d1.ctl_json("stats")["drops"]["peer_not_member"] == 3)
    assert d1.ctl_json("port", "show", "pod-r")["counters"]["tx_packets"] == 0
    wait_for("the blue frame",
             lambda: d1.ctl_json("port", "show", "pod-a")["counters"]["tx_packets"] == 1)
    assert p


# ---------------------------------------------------------------- finding 5

def test_colliding_macs_cannot_build_a_probe_chain_or_fill_the_table():
    """MACs j << 37 all had home slot 0 under the old unkeyed hash; under the
    keyed one they spread, and one port may learn only its share."""
    colliding = [(j << 37) for j in range(2048) if not (j >> 3) & 1][:1024]
    r = Rig(fdb_max_entries=65536, fdb_max_per_port=4096)
    a, b = r.port(), r.port()
    for m in colliding:
        r.send(a, frame(BCAST, m.to_bytes(6, "big")))
    r.received(b)
    assert r.dp.counters()["fdb"]["entries"] == len(colliding)
    assert r.dp.fdb_longest_probe() < 16          # was 1023 (one chain)

    limited = Rig(fdb_max_per_port=100)
    a, b = limited.port(), limited.port()
    delivered = 0
    for m in colliding[:300]:
        limited.send(a, frame(BCAST, m.to_bytes(6, "big")))
        delivered += len(limited.received(b))
    fdb = limited.dp.counters()["fdb"]
    assert (fdb["entries"], fdb["limited"]) == (100, 200)
    assert delivered == 300                       # frames still forwarded, just not learned
    limited.send(b, frame(BCAST, mac(9)))         # another port still learns
    assert limited.dp.counters()["fdb"]["entries"] == 101


# ---------------------------------------------------------------- finding 6

def test_learned_peers_are_capped_age_and_go_when_learning_stops(vswitchd, underlay, pods):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    for i in (7, 8, 9):
        in_ns(n2, "ip", "addr", "add", f"{UNDERLAY}.{i}/24", "dev", "u0")
    d1 = overlay_node(vswitchd, n1, 1, learn_peers=True, max_learned_peers=2,
                      peer_aging_time=1)
    pods(d1, ("a", "198.18.0.1/16"))
    inner = bytes.fromhex("ffffffffffff020000000042") + b"\x08\x06" + bytes(28)
    for i in (7, 8, 9):
        send_udp(n2, f"{UNDERLAY}.{i}", [vxlan(100, inner)])
    peers = d1.ctl_json("peer", "list")
    assert sorted(p["ip"] for p in peers) == [f"{UNDERLAY}.7", f"{UNDERLAY}.8"]
    assert all(p["learned"] for p in peers)
    assert d1.ctl_json("stats")["drops"]["unknown_peer"] == 1
    wait_for("learned peers to age out", lambda: d1.ctl_json("peer", "list") == [])
    send_udp(n2, f"{UNDERLAY}.7", [vxlan(100, inner)])
    assert [p["ip"] for p in d1.ctl_json("peer", "list")] == [f"{UNDERLAY}.7"]
    d1.config["overlay"]["learn_peers"] = False
    write_toml(d1.config_path, d1.config)
    d1.ctl("reload")
    assert d1.ctl_json("peer", "list") == []


# ---------------------------------------------------------------- finding 7

def icmp6(src: bytes, msg_type: int, body: bytes = bytes(12)) -> bytes:
    """An ICMPv6 message from the link-local address of MAC src to ff02::1
    (checksum left 0: the data plane decides on the type before anyone
    checks it)."""
    from vswitch.protocol import link_local
    payload = bytes([msg_type, 0, 0, 0]) + body
    ip6 = struct.pack("!IHBB", 0x60000000, len(payload), 58, 255) + \
        link_local(src.hex(":")).packed + bytes.fromhex("ff02" + "00" * 13 + "01")
    return bytes.fromhex("333300000001") + src + b"\x86\xdd" + ip6 + payload


def test_router_advertisements_and_redirects_from_pods_are_dropped(vswitchd, netns, pods):
    node = netns("node")
    d = vswitchd(netns=node, networks=({**BLUE, "host_port": "vswra0"},))
    p = pods(d, ("a", "198.18.0.10/16"), ("b", "198.18.0.11/16"))
    attacker = bytes.fromhex(p["a"][1]["mac"].replace(":", ""))
    with entered(p["a"][0]):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("eth0", 0))
    with entered(p["b"][0]):
        victim = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86DD))
        victim.bind(("eth0", 0))
        victim.settimeout(0.5)
    ra = icmp6(attacker, 134, bytes([64, 0, 0x07, 0x08]) + bytes(8))
    hidden = bytearray(icmp6(attacker, 134))              # behind a destination-options header
    hidden[20] = 60
    hidden = bytes(hidden[:54]) + bytes([58, 0, 1, 4, 0, 0, 0, 0]) + bytes(hidden[54:])
    hidden = hidden[:18] + struct.pack("!H", len(hidden) - 54) + hidden[20:]
    for f in (ra, icmp6(attacker, 137, bytes(36)), hidden, icmp6(attacker, 128)):   # 128: echo
        s.send(f)
    s.close()
    got = []
    try:
        while True:
            got.append(victim.recv(2000))
    except socket.timeout:
        pass
    victim.close()
    assert [f[54] for f in got if f[20] == 58] == [128]    # only the echo request arrived
    assert d.ctl_json("stats")["drops"]["ra_guard"] == 3
    with entered(node):
        assert open("/proc/sys/net/ipv6/conf/vswra0/accept_ra").read().strip() == "0"
        assert open("/proc/sys/net/ipv6/conf/vswra0/accept_redirects").read().strip() == "0"


# ---------------------------------------------------------------- finding 8

def test_records_that_cannot_be_restored_are_lost_not_fatal(vswitchd, netns, pods, tmp_path):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"), ("c", "198.18.0.3/16"))
    d.stop()
    db = sqlite3.connect(os.path.join(d.state_dir, "state.db"))
    db.execute("UPDATE ports SET rates=? WHERE name='pod-b'", (json.dumps({"ingress_rate": 10**400}),))
    stale = f"/run/netns/{p['a'][0]}-stale"
    open(stale, "w").close()                               # a plain file where a namespace was
    db.execute("UPDATE ports SET netns=?, netns_id=NULL WHERE name='pod-c'", (stale,))
    db.commit()
    db.close()
    try:
        d2 = vswitchd(state_dir=d.state_dir)
        ports = {x["name"]: x for x in d2.ctl_json("port", "list")}
        assert ports["pod-a"]["state"] == "up"
        assert ports["pod-b"]["state"] == ports["pod-c"]["state"] == "lost"
        assert "ingress_rate" in ports["pod-b"]["error"]
        assert "not a network namespace" in ports["pod-c"]["error"]
        d2.ctl("port", "del", "pod-b")                       # an operator can clear it
        assert "pod-b" not in {x["name"] for x in d2.ctl_json("port", "list")}
    finally:
        os.unlink(stale)


def test_absurd_rates_are_refused_before_anything_is_made(vswitchd, netns):
    d = vswitchd()
    ns = netns("x")
    with pytest.raises(ClientError, match="ingress_rate must be an integer"):
        d.client.attach("ctr-rates", "eth0", ns, rates={"ingress_rate": 10**30})
    assert d.ctl_json("port", "list") == [] and d.ctl_json("ipam", "show")["allocations"] == []
    assert "eth0" not in in_ns(ns, "ip", "-o", "link").stdout


# ---------------------------------------------------------------- finding 9

def test_a_reload_removing_a_network_during_a_port_creation_leaves_nothing(netns, tmp_path):
    """The real Switch, TAP, namespace and state; the reload runs exactly
    while the TAP is being made (the Tap call is held there)."""
    from vswitch import ports as ports_module
    from vswitch import switch as switch_module
    from vswitch.config import parse
    from vswitch.errors import Conflict
    ns = netns("r")
    base = {"node": {"name": "race", "state_dir": str(tmp_path / "state"),
                     "socket": str(tmp_path / "s.sock")}}
    both, blue_only = parse({**base, "network": [BLUE, RED]}), parse({**base, "network": [BLUE]})
    made, go_on = threading.Event(), threading.Event()
    real_tap = ports_module.Tap       # (the Tap port creation makes)

    def held_tap(*args, **kwargs):
        tap = real_tap(*args, **kwargs)
        made.set()
        go_on.wait(10)
        return tap

    async def run():
        sw = switch_module.Switch(both, asyncio.get_running_loop())
        await sw.start()
        ports_module.Tap = held_tap
        try:
            adding = asyncio.create_task(sw.add_port("p", ns, network="red", ip="198.19.0.5/16"))
            await asyncio.get_running_loop().run_in_executor(None, made.wait, 10)
            await sw.reload(blue_only)
            go_on.set()
            with pytest.raises(Conflict, match="was removed while"):
                await adding
        finally:
            ports_module.Tap = real_tap
        assert "eth0" not in in_ns(ns, "ip", "-o", "link").stdout     # no TAP left behind
        assert await sw.state.run(sw.state.ports) == []              # no record left behind
        port = await sw.add_port("p", ns, network="blue", ip="198.18.0.5/16")   # no 409
        assert port.state == "up"
        sw.close(remove_ports=True)

    asyncio.run(run())


# ---------------------------------------------------------------- finding 10

def test_only_pod_namespaces_are_accepted(vswitchd, netns, pods):
    node = netns("node")
    d = vswitchd(netns=node)
    daemon = d.proc.pid                     # `ip netns exec` execs the daemon in place
    for path, why in (("/run/netns/../../proc/1/ns/net", "bad network namespace"),
                      ("/proc/self/ns/net", "bad network namespace"),
                      ("/etc/passwd", "bad network namespace"), ("../x", "bad network namespace"),
                      (f"/proc/{daemon}/ns/net", "own network namespace"),
                      (f"/proc/{daemon}/task/{daemon}/ns/net", "own network namespace"),
                      ("/proc/1/ns/net", "")):        # the host's: refused one way or another
        r = d.ctl("port", "add", "evil", "--netns", path, "--ip", "198.18.0.66/16", check=False)
        assert r.returncode != 0 and why in r.stderr, (path, r.stderr)
    assert d.ctl_json("port", "list") == []
    assert "198.18.0.66" not in in_ns(node, "ip", "-o", "addr").stdout


def test_a_namespace_replaced_at_its_path_is_not_reused(vswitchd, netns, pods):
    d = vswitchd()
    ns, _ = pods(d, ("a", "198.18.0.1/16"))["a"]
    d.stop()
    sh("ip", "netns", "del", ns)
    sh("ip", "netns", "add", ns)                            # same name, another namespace
    d2 = vswitchd(state_dir=d.state_dir)
    assert d2.ctl_json("port", "list") == []                # forgotten, not recreated there
    assert "eth0" not in in_ns(ns, "ip", "-o", "link").stdout


# ---------------------------------------------------------------- finding 11

@pytest.mark.parametrize("peer", ["0.0.0.0", "224.0.0.1", "255.255.255.255", "127.0.0.1",
                                  "240.0.0.1"])
def test_peer_addresses_that_no_node_has_are_refused(vswitchd, underlay, tmp_path, peer):  # noqa: F811
    d = overlay_node(vswitchd, underlay(1), 1)
    r = d.ctl("peer", "add", peer, check=False)
    assert r.returncode != 0 and "bad peer address" in r.stderr
    assert d.ctl_json("peer", "list") == []
    path = tmp_path / "bad.toml"
    write_toml(path, {"node": {"mode": "overlay", "state_dir": str(tmp_path / "s")},
                      "overlay": {"vtep_ip": "192.0.2.1", "peers": [peer]}})
    r = subprocess.run(DAEMON + ["--config", str(path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "overlay.peers" in r.stderr


def test_one_mac_is_given_to_one_port_even_concurrently(vswitchd, netns):
    d = vswitchd()
    spaces = [netns(f"m{i}") for i in range(8)]
    results = [None] * 8

    def add(i):
        results[i] = d.ctl("port", "add", f"p{i}", "--netns", spaces[i], "--mac",
                           "02:00:00:00:11:11", check=False).returncode

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0] + [1] * 7
    assert len(d.ctl_json("port", "list")) == 1


def test_a_mac_known_behind_a_peer_cannot_be_requested(vswitchd, underlay, netns):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, peers=[2])
    inner = BCAST + bytes.fromhex("020000005555") + b"\x08\x06" + bytes(28)
    send_udp(n2, f"{UNDERLAY}.2", [vxlan(100, inner)])
    r = d1.ctl("port", "add", "x", "--netns", netns("x"), "--mac", "02:00:00:00:55:55",
               check=False)
    assert r.returncode != 0 and "already used" in r.stderr


# ---------------------------------------------------------------- finding 12

def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_capture_client_sending_garbage_is_not_buffered(vswitchd):
    d = vswitchd()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.socket)
    body = json.dumps({"duration": 30}).encode()
    s.sendall(b"POST /v1/capture HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    before = rss_kib(d.proc.pid)
    chunk = bytes(1 << 20)
    for _ in range(200):                                    # 200 MiB the daemon must not keep
        s.sendall(chunk)
    d.ctl_json("status")
    assert rss_kib(d.proc.pid) - before < 50 * 1024
    s.close()


def test_half_sent_requests_are_limited_and_timed_out(vswitchd):
    from vswitch.httpd import MAX_CONNECTIONS, READ_TIMEOUT
    d = vswitchd()
    held = []
    for _ in range(MAX_CONNECTIONS):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(d.socket)
        c.sendall(b"GET /v1/status HTTP/1.1\r\n")           # and never the rest
        held.append(c)
    wait_for("the connection limit", lambda: b" 503 " in _raw_status(d.socket))
    held[0].settimeout(READ_TIMEOUT + 10)
    assert b" 408 " in held[0].recv(200)                    # timed out, answered, closed
    for c in held:
        c.close()
    wait_for("the daemon to serve again", lambda: b" 200 " in _raw_status(d.socket))


def _raw_status(path: str) -> bytes:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(path)
    c.sendall(b"GET /v1/status HTTP/1.1\r\n\r\n")
    try:
        return c.recv(100)
    finally:
        c.close()


@pytest.mark.parametrize("conf", [{"runtimeConfig": None}, {"args": {"cni": None}}, {"args": None}])
def test_cni_takes_null_as_absent(vswitchd, netns, cni_path, conf):  # noqa: F811
    d = vswitchd()
    out = Runtime(cni_path, d).add(netns("a"), "ctr-null", conf=conf)
    assert out["ips"][0]["address"].startswith("198.18.")


@pytest.mark.parametrize("conf", [
    {"args": {"cni": "x"}}, {"prevResult": {"interfaces": "eth0"}}, {"prevResult": {"ips": [1, 2]}},
    {"prevResult": {"dns": []}}, {"runtimeConfig": {"ips": "198.18.0.1"}},
    {"mtu": True}, {"runtimeConfig": {"bandwidth": {"ingressRate": "fast"}}},
])
def test_cni_answers_wrong_types_with_the_specs_error(vswitchd, netns, cni_path, conf):  # noqa: F811
    d = vswitchd()
    rt = Runtime(cni_path, d)
    rc, err = rt.run("ADD", netns("a"), "ctr-types", conf=conf)
    assert rc != 0 and isinstance(err["code"], int) and err["msg"]


def test_cni_answers_deep_nesting_with_the_specs_error():
    env = {**os.environ, "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/"}
    r = subprocess.run([sys.executable, "-m", "vswitch.cni"], input="[" * 200000, env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["code"] == 6


def test_a_capture_filter_cannot_pass_options_to_tcpdump(vswitchd):
    d = vswitchd()
    for expr in ("-r /etc/shadow", "  -F /etc/shadow", "-V/etc/passwd"):
        with pytest.raises(ClientError, match="not options"):
            list(Client(d.socket).capture(filter=expr, count=1))
    assert d.ctl_json("status")["ports"] == 0


def test_unsafe_or_broken_hooks_are_disabled_and_the_daemon_runs(vswitchd, tmp_path):
    unsafe = tmp_path / "unsafe.py"
    unsafe.write_text("def hook(*a):\n    pass\n")
    unsafe.chmod(0o666)
    d = vswitchd(hook=[{"call": f"{unsafe}:hook"}, {"call": "nomodule_here:fn"},
                       {"call": "os:no_such_function"}])
    hooks = d.ctl_json("stats")["hooks"]
    assert [h["enabled"] for h in hooks] == [False, False, False]
    assert "writable by group or others" in hooks[0]["error"]
    assert "nomodule_here" in hooks[1]["error"] and "no_such_function" in hooks[2]["error"]
