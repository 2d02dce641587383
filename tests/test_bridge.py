"""vswitchd in bridge mode, end to end: pods are network namespaces whose
eth0 is a TAP held by a real daemon, driven through the real vswitchctl."""

from __future__ import annotations

import sys
import time

from conftest import Capture, in_ns, packet_socket
from helpers import ping, tcp_transfer_50mb


def counters(daemon, port: str) -> dict:
    return daemon.ctl_json("port", "show", port)["counters"]


def test_two_pods_ping(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    r = ping(p["a"][0], "198.18.0.2", count=5)
    assert " 0% packet loss" in r.stdout
    stats = d.ctl_json("stats")
    assert stats["ports"]["pod-a"]["rx_packets"] >= 6      # ARP + 5 echo requests
    assert stats["ports"]["pod-b"]["tx_packets"] >= 6
    assert stats["unicast"] >= 9
    # The pods' MACs are learned on their ports.
    fdb = {e["mac"]: e["port"] for e in d.ctl_json("fdb", "show")}
    assert fdb[p["a"][1]["mac"]] == "pod-a" and fdb[p["b"][1]["mac"]] == "pod-b"


def test_50mb_tcp_transfer_arrives_intact_in_superframes(vswitchd, pods, tmp_path):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    sender = tcp_transfer_50mb(d, p, tmp_path)
    assert "tso4" in sender["offloads"]
    assert "tcp-segmentation-offload: on" in in_ns(p["a"][0], "ethtool", "-k", "eth0").stdout
    c = sender["counters"]
    assert c["rx_bytes"] / c["rx_packets"] > 3000        # far above one MTU: TSO in use


def test_50mb_tcp_transfer_without_offloads(vswitchd, pods, tmp_path):
    d = vswitchd(datapath={"offloads": False})
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    sender = tcp_transfer_50mb(d, p, tmp_path)
    assert sender["offloads"] == []
    assert "tcp-segmentation-offload: off" in in_ns(p["a"][0], "ethtool", "-k", "eth0").stdout
    c = sender["counters"]
    assert c["rx_bytes"] / c["rx_packets"] <= 1514


def test_broadcast_reaches_every_pod_of_the_network_only(vswitchd, pods, tmp_path):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"), ("c", "198.18.0.3/16"),
             ("r", "198.19.0.1/16", "red"))
    bpf = "arp or (udp and dst host 198.18.255.255)"
    caps = {tag: Capture(p[tag][0], bpf, tmp_path / f"{tag}.pcap") for tag in "bcr"}
    # An address nobody has: the kernel broadcasts ARP requests for it.
    ping(p["a"][0], "198.18.0.99", count=2, check=False)
    bcast = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
             "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1);"
             "s.sendto(b'hello', ('198.18.255.255', 9999))")
    in_ns(p["a"][0], sys.executable, "-c", bcast)
    seen = {tag: cap.stop() for tag, cap in caps.items()}
    for tag in "bc":
        arps = [f for f in seen[tag] if f.haslayer("ARP") and f["ARP"].pdst == "198.18.0.99"]
        udp = [f for f in seen[tag] if f.haslayer("UDP") and bytes(f["UDP"].payload) == b"hello"]
        assert arps and all(f.dst == "ff:ff:ff:ff:ff:ff" for f in arps), tag
        assert len(udp) == 1, tag
    assert seen["r"] == []
    assert counters(d, "pod-r")["tx_packets"] == 0


def test_learned_unicast_is_not_seen_by_a_third_pod(vswitchd, pods, tmp_path):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"), ("c", "198.18.0.3/16"))
    ping(p["a"][0], "198.18.0.2", count=2)               # both MACs learned
    cap = Capture(p["c"][0], "icmp", tmp_path / "c.pcap")
    before = counters(d, "pod-c")["tx_packets"]
    r = ping(p["a"][0], "198.18.0.2", count=50, interval="0.01")
    assert " 0% packet loss" in r.stdout
    assert cap.stop() == []
    assert counters(d, "pod-c")["tx_packets"] == before
    assert counters(d, "pod-b")["tx_packets"] >= 50


def test_fdb_entries_age_out(vswitchd, pods):
    d = vswitchd(aging_time=2)
    # Learned entries age; a port-secured pod's MAC is pinned instead (test_hardening).
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"), port_security=False)
    ping(p["a"][0], "198.18.0.2", count=1)
    macs = {e["mac"] for e in d.ctl_json("fdb", "show")}
    assert p["a"][1]["mac"] in macs
    time.sleep(3.5)                                      # aging 2 s + sweep interval 1 s
    assert d.ctl_json("fdb", "show") == []
    stats = d.ctl_json("stats")
    assert stats["fdb"]["entries"] == 0 and stats["fdb"]["expired"] >= 2
    ping(p["a"][0], "198.18.0.2", count=1)               # relearned on the next frame
    assert len(d.ctl_json("fdb", "show")) == 2


def test_fdb_flush_and_port_removal(vswitchd, pods):
    d = vswitchd()
    # Learned entries: a port-secured pod's MAC is pinned and not flushed (test_hardening).
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"), ("r", "198.19.0.1/16", "red"),
             port_security=False)
    ping(p["a"][0], "198.18.0.2", count=1)
    # One frame from pod r (a ping to nowhere would go on sending ARP).
    with packet_socket(p["r"][0]) as s:
        s.send(b"\xff" * 6 + bytes.fromhex(p["r"][1]["mac"].replace(":", "")) + b"\x88\xb5" + bytes(46))
    time.sleep(0.2)
    assert {e["network"] for e in d.ctl_json("fdb", "show")} == {"blue", "red"}
    assert d.ctl_json("fdb", "flush", "--network", "red") == {"flushed": 1}
    assert {e["network"] for e in d.ctl_json("fdb", "show")} == {"blue"}
    d.ctl("port", "del", "pod-a")
    assert [e["port"] for e in d.ctl_json("fdb", "show")] == ["pod-b"]
    # The TAP is gone from the pod and the name is free again.
    assert "eth0" not in in_ns(p["a"][0], "ip", "-br", "link").stdout
    assert d.ctl("port", "show", "pod-a", check=False).returncode != 0
    d.ctl("port", "add", "pod-a", "--netns", p["a"][0], "--ip", "198.18.0.1/16")
    ping(p["a"][0], "198.18.0.2", count=1)


def test_port_add_bad_requests_leave_daemon_working(vswitchd, pods, netns):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    spare = netns("x")
    bad = [
        (["pod-a", "--netns", spare], "already exists"),
        (["pod-x", "--netns", "nonexistent-ns-" + spare], "not found"),
        (["pod-x", "--netns", spare, "--mac", "02:00:00:00:00"], "bad MAC"),
        (["pod-x", "--netns", spare, "--mac", "zz:00:00:00:00:01"], "bad MAC"),
        (["pod-x", "--netns", spare, "--mac", "01:00:5e:00:00:01"], "multicast"),
        (["pod-x", "--netns", spare, "--ip", "198.18.0.300/16"], "bad address"),
        (["pod-x", "--netns", spare, "--ip", "198.18.0.7/40"], "bad address"),
        (["pod-x", "--netns", spare, "--ip", "203.0.113.5/24"], "outside network"),
        (["pod-x", "--netns", spare, "--ip", "198.18.0.2/16"], "already used"),
        (["pod-x", "--netns", spare, "--network", "green"], "unknown network"),
        (["pod-x", "--netns", spare, "--ifname", "this-name-is-too-long"], "bad interface name"),
        (["bad/name", "--netns", spare], "bad port name"),
        (["pod-x", "--netns", p["a"][0]], "already exists in namespace"),
    ]
    for args, message in bad:
        r = d.ctl("port", "add", *args, check=False)
        assert r.returncode == 1, args
        assert message in r.stderr, (args, r.stderr)
    # Nothing half-made: no port, no interface left in the spare namespace.
    assert [x["name"] for x in d.ctl_json("port", "list")] == ["pod-a", "pod-b"]
    assert in_ns(spare, "ip", "-br", "link").stdout.split()[0] == "lo"
    assert len(in_ns(spare, "ip", "-br", "link").stdout.splitlines()) == 1
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.2", count=2).stdout
    assert d.proc.poll() is None


def test_frames_from_a_pod_are_fuzzed_and_counted(vswitchd, pods):
    """Random and truncated frames from a pod's own interface: each one is
    counted, bad ones by reason, and the switch keeps forwarding."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether

    d = vswitchd()
    # Without port security, so that random sources reach learning.
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"), ("c", "198.18.0.3/16"),
             port_security=False)
    # A misconfigured pod: its MTU is above the network's, so it can send
    # frames the switch must refuse as oversize.
    in_ns(p["a"][0], "ip", "link", "set", "eth0", "mtu", "9000")
    sock = packet_socket(p["a"][0])
    valid = [bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:aa:01") / ARP(pdst="198.18.0.2")),
             bytes(Ether(dst=p["b"][1]["mac"], src="02:00:00:00:aa:02") / IP(dst="198.18.0.2") / TCP()),
             bytes(Ether(dst="02:00:00:00:aa:01", src="02:00:00:00:aa:03") / IP() / UDP() / (b"x" * 3000))]
    frames = st.one_of(
        st.binary(min_size=14, max_size=3000),
        st.builds(lambda f, cut: f[:max(14, cut)], st.sampled_from(valid), st.integers(0, 3100)))
    sent = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(frames)
    def send(frame):
        sock.send(frame)
        sent.append(frame)

    before = d.ctl_json("stats")
    send()
    sock.close()
    time.sleep(0.5)
    after = d.ctl_json("stats")

    def delta(*path):
        a, b = after, before
        for k in path:
            a, b = a[k], b[k]
        return a - b

    assert delta("ports", "pod-a", "rx_packets") == len(sent)
    def l2(f):
        return 18 if f[12:14] in (b"\x81\x00", b"\x88\xa8") else 14

    runt = [f for f in sent if len(f) < l2(f)]
    oversize = [f for f in sent if len(f) >= l2(f) and len(f) - l2(f) > 1500]
    bad_source = [f for f in sent if len(f) >= l2(f) and len(f) - l2(f) <= 1500 and f[6] & 1]
    assert oversize and bad_source                       # the fuzzer did try them
    assert delta("drops", "runt") == len(runt)
    assert delta("drops", "oversize") == len(oversize)
    assert delta("drops", "bad_source") == len(bad_source)
    ingress = sum(delta("drops", k) for k in ("runt", "oversize", "bad_source", "loop", "no_route"))
    # Pods b and c answer some of it (ARP, TCP resets), so count every port.
    rx = sum(delta("ports", port, "rx_packets") for port in after["ports"])
    assert delta("unicast") + delta("flooded") + ingress == rx
    # Still a switch: the other pods talk, and so does the fuzzed one.
    assert " 0% packet loss" in ping(p["b"][0], "198.18.0.3", count=3).stdout
    d.ctl("fdb", "flush")
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.2", count=3).stdout
    assert d.proc.poll() is None


def test_oversize_frame_from_pod_is_dropped_not_delivered(vswitchd, pods):
    d = vswitchd()
    p = pods(d, ("a", "198.18.0.1/16"), ("b", "198.18.0.2/16"))
    ping(p["a"][0], "198.18.0.2", count=1)
    in_ns(p["a"][0], "ip", "link", "set", "eth0", "mtu", "2000")
    before = d.ctl_json("stats")
    r = in_ns(p["a"][0], "ping", "-c", "1", "-W", "1", "-s", "1800", "-M", "do", "198.18.0.2",
              check=False)
    assert r.returncode != 0
    after = d.ctl_json("stats")
    assert after["drops"]["oversize"] - before["drops"]["oversize"] == 1
    assert after["ports"]["pod-b"]["tx_packets"] == before["ports"]["pod-b"]["tx_packets"]
