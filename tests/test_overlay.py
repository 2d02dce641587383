"""Overlay mode end to end: nodes are namespaces on a shared underlay (a
bridge in a namespace of its own, 192.0.2.0/24, TEST-NET-1), each running
its own vswitchd or the Linux kernel's bridge + VXLAN device."""

from __future__ import annotations

from conftest import BLUE, RED, UNDERLAY, Capture, in_ns, sh
from helpers import kernel_node, overlay_node, ping, send_udp, tcp_transfer_50mb, vxlan


def two_nodes(vswitchd, underlay, pods, networks=(BLUE, RED)):
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, peers=[2], networks=networks)
    d2 = overlay_node(vswitchd, n2, 2, peers=[1], networks=networks)
    p = {**pods(d1, ("a", "198.18.0.1/16"), ("c", "198.18.0.3/16")),
         **pods(d2, ("b", "198.18.0.2/16"), ("d", "198.18.0.4/16"))}
    return (n1, n2), (d1, d2), p


def test_cross_node_ping_and_50mb_tcp(vswitchd, underlay, pods, tmp_path):
    _, (d1, d2), p = two_nodes(vswitchd, underlay, pods)
    for src, dst in (("a", "198.18.0.2"), ("a", "198.18.0.4"), ("d", "198.18.0.3"),
                     ("a", "198.18.0.3")):
        assert " 0% packet loss" in ping(p[src][0], dst, count=3).stdout
    sender = tcp_transfer_50mb(d1, p, tmp_path)  # pod a (node 1) -> pod b (node 2)
    # Pod a handed over TSO superframes; they crossed as segments, intact.
    assert "tso4" in sender["offloads"] and "uso4" not in sender["offloads"]
    assert sender["counters"]["rx_bytes"] / sender["counters"]["rx_packets"] > 3000
    peer = d1.ctl_json("peer", "list")
    assert [x["ip"] for x in peer] == [f"{UNDERLAY}.2"]
    assert peer[0]["counters"]["tx_bytes"] > 50 * 1024 * 1024
    fdb = {e["mac"]: e["port"] for e in d1.ctl_json("fdb", "show")}
    assert fdb[p["b"][1]["mac"]] == f"vxlan:{UNDERLAY}.2"
    assert fdb[p["a"][1]["mac"]] == "pod-a"
    assert d1.ctl_json("status")["vtep"] == f"{UNDERLAY}.1"
    text = d2.ctl("stats").stdout
    assert "tunnel: rx_packets=" in text and f"{UNDERLAY}.1" in text
    assert d2.ctl_json("stats")["gro_merged"] > 0          # the receiving node coalesced


def test_broadcast_reaches_pods_on_both_nodes_and_stays_in_its_vni(vswitchd, underlay, pods,
                                                                  tmp_path):
    (n1, _), (d1, d2), p = two_nodes(vswitchd, underlay, pods)
    p.update(pods(d2, ("r", "198.19.0.2/16", "red")))
    caps = {t: Capture(p[t][0], "arp", tmp_path / f"{t}.pcap") for t in "bcdr"}
    wire = Capture(n1, "udp port 4789", tmp_path / "wire.pcap", ifname="u0")
    ping(p["a"][0], "198.18.0.99", count=2, check=False)
    seen = {t: c.stop() for t, c in caps.items()}
    for t in "bcd":
        assert any(f["ARP"].pdst == "198.18.0.99" for f in seen[t] if f.haslayer("ARP")), t
    assert seen["r"] == []
    from scapy.layers.vxlan import VXLAN
    frames = [f for f in wire.stop() if f.haslayer(VXLAN)]
    decoded = sh("tcpdump", "-r", str(wire.path), "-n").stdout     # tcpdump's own decoder
    assert "VXLAN, flags [I] (0x08), vni 100" in decoded and "ARP, Request who-has 198.18.0.99" in decoded
    assert frames and {f[VXLAN].vni for f in frames} == {100}
    assert all(49152 <= f["UDP"].sport <= 65535 and f["UDP"].dport == 4789 for f in frames)
    assert all(f[VXLAN].flags == 0x08 for f in frames)


def test_networks_with_different_vnis_stay_isolated_across_nodes(vswitchd, underlay, pods,
                                                                tmp_path):
    # The same subnet and addresses in both networks: only the VNI tells them apart.
    same_subnet = (BLUE, {**RED, "subnet": BLUE["subnet"]})
    (n1, n2), (d1, d2), p = two_nodes(vswitchd, underlay, pods, networks=same_subnet)
    p.update(pods(d1, ("x", "198.18.0.1/16", "red")))
    p.update(pods(d2, ("y", "198.18.0.2/16", "red")))
    wire = Capture(n2, "udp port 4789", tmp_path / "wire.pcap", ifname="u0")
    red_sees = Capture(p["y"][0], "", tmp_path / "y.pcap")
    ping(p["a"][0], "198.18.0.2", count=3)                  # blue a -> blue b
    blue = red_sees.stop()
    assert blue == []                                        # nothing blue reached red y
    red_sees = Capture(p["b"][0], "", tmp_path / "b.pcap")
    ping(p["x"][0], "198.18.0.2", count=3)                  # red x -> red y
    assert red_sees.stop() == []                             # nothing red reached blue b
    from scapy.layers.vxlan import VXLAN
    vnis = {f[VXLAN].vni for f in wire.stop() if f.haslayer(VXLAN)}
    assert vnis == {100, 200}
    red = {e["mac"] for e in d2.ctl_json("fdb", "show", "--network", "red")}
    assert p["x"][1]["mac"] in red and p["a"][1]["mac"] not in red


def test_peers_at_run_time(vswitchd, underlay, pods):
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1)
    d2 = overlay_node(vswitchd, n2, 2)
    p = {**pods(d1, ("a", "198.18.0.1/16")), **pods(d2, ("b", "198.18.0.2/16"))}
    assert in_ns(p["a"][0], "ping", "-c", "1", "-W", "1", "198.18.0.2", check=False).returncode != 0
    d1.ctl("peer", "add", f"{UNDERLAY}.2", "--network", "blue")
    d2.ctl("peer", "add", f"{UNDERLAY}.1")
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.2", count=3).stdout
    listing = d1.ctl("peer", "list").stdout
    assert f"{UNDERLAY}.2" in listing and "blue" in listing and "red" not in listing
    assert any(e["port"] == f"vxlan:{UNDERLAY}.2" for e in d1.ctl_json("fdb", "show"))
    # Static entries survive a flush; deleting the peer takes its entries along.
    d1.ctl("fdb", "add", "02:00:00:00:77:01", "--peer", f"{UNDERLAY}.2", "--network", "blue")
    d1.ctl("fdb", "flush")
    # What is left: the static entry, and pod a's own MAC, pinned to its port.
    left = {e["mac"]: e for e in d1.ctl_json("fdb", "show")}
    assert sorted(left) == sorted(["02:00:00:00:77:01", p["a"][1]["mac"]])
    assert left["02:00:00:00:77:01"]["static"] is True
    assert left[p["a"][1]["mac"]]["pinned"] is True
    for bad in (["peer", "add", "300.1.1.1"], ["peer", "add", f"{UNDERLAY}.1"],
                ["peer", "add", f"{UNDERLAY}.3", "--network", "green"], ["peer", "del", "198.51.100.7"],
                ["fdb", "add", "02:00:00:00:77:02", "--peer", "198.51.100.7"]):
        r = d1.ctl(*bad, check=False)
        assert r.returncode == 1 and r.stderr, bad
    d1.ctl("peer", "del", f"{UNDERLAY}.2")
    assert d1.ctl_json("peer", "list") == []
    assert [e["port"] for e in d1.ctl_json("fdb", "show")] == ["pod-a"]     # only the pinned MAC


def test_unknown_peers_and_malformed_vxlan_are_dropped_and_counted(vswitchd, underlay, pods):
    n1, n2 = underlay(1), underlay(2)
    in_ns(n2, "ip", "addr", "add", f"{UNDERLAY}.9/24", "dev", "u0")
    d1 = overlay_node(vswitchd, n1, 1, peers=[2])
    p = pods(d1, ("a", "198.18.0.1/16"), ("c", "198.18.0.3/16"))
    inner = bytes.fromhex("ffffffffffff020000000099") + b"\x08\x06" + bytes(28)
    send_udp(n2, f"{UNDERLAY}.9", [vxlan(100, inner)] * 5)
    send_udp(n2, f"{UNDERLAY}.2", [b"\x08\0\0", vxlan(100, inner, flags=0x0C),
                                    vxlan(100, inner, reserved=b"\0\1\0"), vxlan(100, inner)[:7]])
    send_udp(n2, f"{UNDERLAY}.2", [vxlan(999, inner)] * 2)
    drops = d1.ctl_json("stats")["drops"]
    assert (drops["unknown_peer"], drops["bad_vxlan"], drops["unknown_vni"]) == (5, 4, 2)
    assert d1.ctl_json("port", "show", "pod-c")["counters"]["tx_packets"] == 0
    assert "02:00:00:00:00:99" not in {e["mac"] for e in d1.ctl_json("fdb", "show")}
    # A valid datagram from the peer is delivered: the checks are not too strict.
    send_udp(n2, f"{UNDERLAY}.2", [vxlan(100, inner)])
    assert d1.ctl_json("port", "show", "pod-c")["counters"]["tx_packets"] == 1
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.3", count=2).stdout


def test_learn_peers_accepts_new_sources_when_configured(vswitchd, underlay, pods):
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, learn_peers=True)
    pods(d1, ("a", "198.18.0.1/16"))
    inner = bytes.fromhex("ffffffffffff020000000042") + b"\x08\x06" + bytes(28)
    send_udp(n2, f"{UNDERLAY}.2", [vxlan(100, inner)])
    assert [x["ip"] for x in d1.ctl_json("peer", "list")] == [f"{UNDERLAY}.2"]
    assert {"mac": "02:00:00:00:00:42", "port": f"vxlan:{UNDERLAY}.2"}.items() <= \
        next(e for e in d1.ctl_json("fdb", "show") if e["mac"] == "02:00:00:00:00:42").items()


def test_interop_with_kernel_vxlan(vswitchd, underlay, pods, netns, tmp_path):
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, peers=[2])
    p = pods(d1, ("a", "198.18.0.1/16"))
    kpod = netns("k")
    kernel_node(n2, kpod, f"{UNDERLAY}.1")
    p["b"] = (kpod, None)
    # The kernel bridge port needs a moment before it forwards.
    in_ns(kpod, "ping", "-c", "1", "-w", "10", "198.18.0.1")
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.2", count=3).stdout
    assert " 0% packet loss" in ping(kpod, "198.18.0.1", count=3).stdout
    tcp_transfer_50mb(d1, p, tmp_path)                       # vswitchd pod -> kernel pod
    reverse = ("import socket,sys; s=socket.create_connection(('198.18.0.1',7002));"
               "s.sendall(bytes(5_000_000)); s.close()")
    sink = ("import socket; srv=socket.create_server(('198.18.0.1',7002)); print('ready',flush=True);"
            "c,_=srv.accept(); n=0\nwhile (b:=c.recv(65536)): n+=len(b)\nprint(n)")
    import subprocess
    import sys
    server = subprocess.Popen(["ip", "netns", "exec", p["a"][0], sys.executable, "-c", sink],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        in_ns(kpod, sys.executable, "-c", reverse, timeout=60)
        assert server.stdout.readline().strip() == "5000000"   # kernel pod -> vswitchd pod
    finally:
        server.kill()
    fdb = sh("bridge", "-n", n2, "fdb", "show", "dev", "vx0").stdout
    assert f"{p['a'][1]['mac']} dst {UNDERLAY}.1" in fdb


def test_non_peers_are_refused_before_parsing(vswitchd, underlay, pods):
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, peers=[2])
    pods(d1, ("a", "198.18.0.1/16"))
    in_ns(n2, "ip", "addr", "add", f"{UNDERLAY}.9/24", "dev", "u0")
    send_udp(n2, f"{UNDERLAY}.9", [b"\x08", b"garbage" * 10, vxlan(999, bytes(60))])
    drops = d1.ctl_json("stats")["drops"]
    assert (drops["unknown_peer"], drops["bad_vxlan"], drops["unknown_vni"]) == (3, 0, 0)
