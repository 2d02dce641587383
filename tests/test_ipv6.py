"""Dual-stack pods: one IPv4 and one IPv6 address each, from IPAM or by
hand, talking over both families in bridge and overlay mode (with TSO),
IPv6 port security (sources, neighbour discovery, RA guard), the CNI result
with both families through a chain, and IPAM durability for both."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys

import pytest
from conftest import BLUE, CTL, in_ns, packet_socket, sh
from helpers import (
    CaptureRun,
    Runtime,
    kernel_node,
    overlay_node,
    peers,
    ping,
    tcp_transfer_50mb,
    tshark,
    wait_for,
)
from scapy.layers.inet import UDP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_RA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import Ether

from vswitch.protocol import link_local

BLUE6 = {**BLUE, "subnet6": "2001:db8:18::/64"}


def ping6(ns: str, addr: str, count: int = 3):
    return in_ns(ns, "ping", "-6", "-c", str(count), "-i", "0.05", "-W", "2", addr, check=False)


def dual(*tags: str) -> list[tuple[str, str]]:
    """Pod specs with 198.18.0.N/16 and 2001:db8:18::N/64 (N: 1 for a, 2 for b, ...)."""
    return [(t, f"198.18.0.{'abcd'.index(t) + 1}/16,2001:db8:18::{'abcd'.index(t) + 1}/64")
            for t in tags]


def drops(d) -> dict:
    return d.ctl_json("stats")["drops"]


def test_dual_stack_pods_talk_over_both_families_with_tso(vswitchd, pods, tmp_path):
    d = vswitchd(networks=(BLUE6,))
    p = pods(d, *dual("a", "b"), ipv6=True)
    assert p["a"][1]["addresses"] == ["198.18.0.1/16", "2001:db8:18::1/64"]
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.2").stdout
    assert " 0% packet loss" in ping6(p["a"][0], "2001:db8:18::2").stdout
    # The pod's link-local address is the one port security expects (EUI-64 of its MAC).
    lladdr = str(link_local(p["a"][1]["mac"]))
    assert lladdr in in_ns(p["a"][0], "ip", "-6", "addr", "show", "eth0").stdout
    assert " 0% packet loss" in ping6(p["b"][0], f"{lladdr}%eth0").stdout
    sender = tcp_transfer_50mb(d, p, tmp_path, to="2001:db8:18::2")
    assert "tso6" in sender["offloads"]
    c = sender["counters"]
    assert c["rx_bytes"] / c["rx_packets"] > 3000        # IPv6 superframes crossed the switch
    # Their own neighbour discovery, DAD and MLD passed port security.
    assert [drops(d)[r] for r in ("spoofed_source", "nd_spoofed", "ra_guard")] == [0, 0, 0]


def test_dual_stack_across_two_overlay_nodes(vswitchd, underlay, pods, tmp_path):  # noqa: F811
    n1, n2 = underlay(1), underlay(2)
    d1 = overlay_node(vswitchd, n1, 1, peers=[2], networks=(BLUE6,))
    d2 = overlay_node(vswitchd, n2, 2, peers=[1], networks=(BLUE6,))
    p = {**pods(d1, *dual("a"), ipv6=True), **pods(d2, *dual("b"), ipv6=True)}
    assert " 0% packet loss" in ping6(p["a"][0], "2001:db8:18::2").stdout
    assert " 0% packet loss" in ping(p["b"][0], "198.18.0.1").stdout
    sender = tcp_transfer_50mb(d1, p, tmp_path, to="2001:db8:18::2")
    c = sender["counters"]
    assert c["rx_bytes"] / c["rx_packets"] > 3000        # cut into segments for the tunnel
    assert d2.ctl_json("stats")["gro_merged"] > 0         # and merged again towards pod b
    c = d2.ctl_json("port", "show", "pod-b")["counters"]
    assert c["tx_bytes"] / c["tx_packets"] > 3000


def test_ipv6_spoofing_neighbour_lies_and_router_advertisements_are_dropped(vswitchd, pods):
    """Pod a sends from b's address, advertises b's address as its own (and
    its own with another MAC), and sends a Router Advertisement: each is
    dropped with its reason, and b and c go on talking."""
    d = vswitchd(networks=(BLUE6,))
    p = pods(d, *dual("a", "b", "c"), ipv6=True)
    a_mac, b_mac = p["a"][1]["mac"], p["b"][1]["mac"]
    assert " 0% packet loss" in ping6(p["c"][0], "2001:db8:18::2").stdout
    b6, a6 = "2001:db8:18::2", "2001:db8:18::1"
    to_c = Ether(src=a_mac, dst=p["c"][1]["mac"])
    frames = {
        "spoofed_source": to_c / IPv6(src=b6, dst="2001:db8:18::3") / UDP(dport=9),
        "nd_spoofed": Ether(src=a_mac, dst="33:33:00:00:00:01") / IPv6(src=a6, dst="ff02::1")
        / ICMPv6ND_NA(tgt=b6, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=a_mac),
        "ra_guard": Ether(src=a_mac, dst="33:33:00:00:00:01")
        / IPv6(src=str(link_local(a_mac)), dst="ff02::1", hlim=255) / ICMPv6ND_RA(),
    }
    lie_about_mac = Ether(src=a_mac, dst="33:33:00:00:00:01") / IPv6(src=a6, dst="ff02::1") \
        / ICMPv6ND_NA(tgt=a6, O=1) / ICMPv6NDOptDstLLAddr(lladdr="02:00:00:00:99:99")
    before = drops(d)
    s = packet_socket(p["a"][0])
    try:
        for frame in [*frames.values(), lie_about_mac]:
            s.send(bytes(frame))
    finally:
        s.close()
    after = drops(d)
    assert {r: after[r] - before[r] for r in frames} == \
        {"spoofed_source": 1, "nd_spoofed": 2, "ra_guard": 1}
    # The victim keeps its address: c still reaches b, at b's MAC.
    assert " 0% packet loss" in ping6(p["c"][0], b6).stdout
    neigh = in_ns(p["c"][0], "ip", "-6", "neigh", "show", b6).stdout
    assert b_mac in neigh and a_mac not in neigh
    assert "default" not in in_ns(p["c"][0], "ip", "-6", "route", "show", "default").stdout


def test_cni_result_with_both_families_through_a_tuning_chain(vswitchd, netns, cni_path):  # noqa: F811
    host = {**BLUE6, "host_port": "vswt6", "masquerade": False}
    d = vswitchd(networks=(host,), netns=netns("node", True))
    rt = Runtime(cni_path, d, version="1.0.0", name="chain")
    a, b = netns("a", True), netns("b", True)
    result = rt.add(a)
    ips = [ipaddress.ip_interface(i["address"]) for i in result["ips"]]
    assert [i.version for i in ips] == [4, 6] and ips[1] in ipaddress.ip_network("2001:db8:18::/64")
    assert [i["gateway"] for i in result["ips"]] == ["198.18.0.1", "2001:db8:18::1"]
    assert {r["dst"]: r["gw"] for r in result["routes"]} == {"0.0.0.0/0": "198.18.0.1",
                                                             "::/0": "2001:db8:18::1"}
    tuning = {"type": "tuning", "sysctl": {"net.ipv6.conf.eth0.hop_limit": "33"}}
    conf = {"cniVersion": "1.0.0", "name": "chain", **tuning, "prevResult": result}
    rc, out = rt.run("ADD", a, stdin=json.dumps(conf), plugin="tuning")
    assert rc == 0, out
    assert out["ips"] == result["ips"]
    assert in_ns(a, "sysctl", "-n", "net.ipv6.conf.eth0.hop_limit").stdout.strip() == "33"
    assert rt.run("CHECK", a, conf={"prevResult": out}) == (0, None)
    # A static address per family, as runtimeConfig "ips" asks.
    static = rt.add(b, cid="ctr-2", conf={"runtimeConfig": {
        "ips": ["198.18.0.77/16", "2001:db8:18::77/64"]}})
    assert [i["address"] for i in static["ips"]] == ["198.18.0.77/16", "2001:db8:18::77/64"]
    # Both families reach the other pod and the gateway (the host port).
    assert " 0% packet loss" in ping6(a, "2001:db8:18::77").stdout
    assert " 0% packet loss" in ping6(b, "2001:db8:18::1").stdout
    code, err = rt.run("ADD", netns("c", True), cid="ctr-3", conf={"runtimeConfig": {
        "ips": ["2001:db8:18::5/64", "2001:db8:18::6/64"]}})
    assert code != 0 and "one address per family" in err["msg"]
    assert rt.run("DEL", a, stdin=json.dumps(conf), plugin="tuning")[0] == 0
    assert rt.run("DEL", a) == (0, None)
    assert [x["ip6"] for x in d.ctl_json("ipam", "show")["allocations"]] == ["2001:db8:18::77"]
    text = d.ctl("ipam", "show").stdout
    assert "2001:db8:18::/64" in text and "198.18.0.77  2001:db8:18::77" in text


def test_ipam_keeps_both_families_across_a_sigkill(vswitchd, netns):
    d = vswitchd(networks=(BLUE6,))
    ns = [netns(t, True) for t in "ab"]
    first = [d.client.attach(f"ctr-{i}", "eth0", f"/run/netns/{n}") for i, n in enumerate(ns)]
    assert len({r["ip6"] for r in first}) == 2 and all(r["ip6"] for r in first)
    d.proc.kill()
    d.proc.wait()
    d2 = vswitchd(networks=(BLUE6,), state_dir=d.state_dir)
    again = [d2.client.attach(f"ctr-{i}", "eth0", f"/run/netns/{n}") for i, n in enumerate(ns)]
    assert [(r["ip"], r["ip6"]) for r in again] == [(r["ip"], r["ip6"]) for r in first]
    third = d2.client.attach("ctr-3", "eth0", f"/run/netns/{netns('c', True)}")
    assert third["ip6"] not in {r["ip6"] for r in first}
    assert " 0% packet loss" in ping6(ns[0], first[1]["ip6"].split("/")[0]).stdout
    released = d2.client.detach("ctr-0", "eth0")["released"]
    assert sorted(released) == sorted(r.split("/")[0] for r in (first[0]["ip"], first[0]["ip6"]))
    left = {a["ip6"] for a in d2.ctl_json("ipam", "show")["allocations"]}
    assert first[0]["ip6"].split("/")[0] not in left and len(left) == 2


def test_ipv6_only_network_through_cni_with_a_gateway(vswitchd, netns, cni_path):  # noqa: F811
    """subnet6 alone: pods get one IPv6 address and an IPv6 default route,
    no IPv4; the host port holds the IPv6 gateway; CNI STATUS is ready."""
    v6only = {"name": "six", "vni": 600, "subnet6": "2001:db8:60::/64", "mtu": 1500,
              "host_port": "vsw6o", "masquerade": False}
    d = vswitchd(networks=(v6only,), netns=netns("node", True))
    rt = Runtime(cni_path, d, network="six", version="1.1.0")
    a, b = netns("a", True), netns("b", True)
    ra, rb = rt.add(a), rt.add(b, cid="ctr-2")
    assert [i["address"] for i in ra["ips"]] == ["2001:db8:60::2/64"]
    assert ra["ips"][0]["gateway"] == "2001:db8:60::1"
    assert ra["routes"] == [{"dst": "::/0", "gw": "2001:db8:60::1"}]
    assert "inet " not in in_ns(a, "ip", "addr", "show", "eth0").stdout
    assert " 0% packet loss" in ping6(a, rb["ips"][0]["address"].split("/")[0]).stdout
    assert " 0% packet loss" in ping6(b, "2001:db8:60::1").stdout       # the node
    assert rt.run("STATUS")[0] == 0
    show = d.ctl_json("ipam", "show")
    assert show["networks"][0]["subnet"] is None and show["networks"][0]["gateway6"] == \
        "2001:db8:60::1"
    assert [(x["ip"], x["ip6"]) for x in show["allocations"]] == [
        (None, "2001:db8:60::2"), (None, "2001:db8:60::3")]
    code, err = rt.run("ADD", netns("c", True), cid="ctr-3",
                       conf={"runtimeConfig": {"ips": ["198.18.0.9/16"]}})
    assert code != 0 and "IPv6 only" in err["msg"]



UNDERLAY6 = "2001:db8:ff::"


@pytest.fixture
def underlay6(netns):
    """Factory: node(i) makes a namespace joined to an IPv6-only underlay
    (a bridge in a hub namespace) as 2001:db8:ff::i."""
    hub = netns("ul6", True)
    in_ns(hub, "ip", "link", "add", "ul", "type", "bridge")
    in_ns(hub, "ip", "link", "set", "ul", "up")

    def node(i: int) -> str:
        ns = netns(f"n{i}", True)
        in_ns(hub, "ip", "link", "add", f"ul{i}", "type", "veth", "peer", "name", "u0", "netns", ns)
        in_ns(hub, "ip", "link", "set", f"ul{i}", "master", "ul", "up")
        in_ns(ns, "ip", "addr", "add", f"{UNDERLAY6}{i}/64", "dev", "u0", "nodad")
        in_ns(ns, "ip", "link", "set", "u0", "up")
        return ns

    return node


def overlay6_node(vswitchd, node_ns: str, i: int, peers=()):
    """vswitchd with an IPv6 VTEP; the pod MTU is what a 1500-byte underlay leaves."""
    return vswitchd(netns=node_ns, mode="overlay", networks=({**BLUE6, "mtu": 1430},),
                    overlay={"vtep_ip": f"{UNDERLAY6}{i}",
                             "peers": [f"{UNDERLAY6}{p}" for p in peers]})


def test_vxlan_over_an_ipv6_underlay_between_two_nodes(vswitchd, underlay6, pods, tmp_path):
    n1, n2 = underlay6(1), underlay6(2)
    d1, d2 = overlay6_node(vswitchd, n1, 1, [2]), overlay6_node(vswitchd, n2, 2, [1])
    p = {**pods(d1, *dual("a"), ipv6=True), **pods(d2, *dual("b"), ipv6=True)}
    assert " 0% packet loss" in ping(p["a"][0], "198.18.0.2").stdout
    assert " 0% packet loss" in ping6(p["b"][0], "2001:db8:18::1").stdout
    assert [x["ip"] for x in d1.ctl_json("peer", "list")] == [f"{UNDERLAY6}2"]
    # The encapsulated packets are VXLAN in UDP over IPv6, as tshark reads them.
    path = tmp_path / "encap.pcapng"
    cap = CaptureRun(d1, "--point", "encap", "-w", str(path), "--filter", "udp port 4789",
                     "--duration", "2")
    ping(p["a"][0], "198.18.0.2", count=2)
    assert cap.wait()[0] == 0
    rows = tshark(path, "frame.interface_name", "ipv6.src", "ipv6.dst", "vxlan.vni", "ip.dst",
                  display_filter="icmp")          # (the pods' own IPv6 ND is encapsulated too)
    assert rows and rows[0] == [f"vxlan:{UNDERLAY6}2/encap", f"{UNDERLAY6}1", f"{UNDERLAY6}2",
                                "100", "198.18.0.2"]
    # TSO superframes cut into segments over IPv6, merged again towards the pod.
    sender = tcp_transfer_50mb(d1, p, tmp_path, to="2001:db8:18::2")
    c = sender["counters"]
    assert c["rx_bytes"] / c["rx_packets"] > 3000
    assert d2.ctl_json("stats")["gro_merged"] > 0
    assert d1.ctl_json("stats")["drops"]["too_big"] == 0


def test_interop_with_kernel_vxlan_over_ipv6(vswitchd, underlay6, pods, netns, tmp_path):
    """A node with Linux's VXLAN device over IPv6 and a bridge, both ways."""
    n1, n2 = underlay6(1), underlay6(2)
    d1 = overlay6_node(vswitchd, n1, 1, [2])
    p = pods(d1, *dual("a"), ipv6=True)
    kpod = netns("k", True)
    kernel_node(n2, kpod, f"{UNDERLAY6}1", local=f"{UNDERLAY6}2", mtu=1430)
    in_ns(kpod, "ip", "addr", "add", "2001:db8:18::2/64", "dev", "eth0", "nodad")
    p["b"] = (kpod, None)
    in_ns(kpod, "ping", "-c", "1", "-w", "10", "198.18.0.1")     # the bridge port is ready
    assert " 0% packet loss" in ping6(p["a"][0], "2001:db8:18::2").stdout
    assert " 0% packet loss" in ping(kpod, "198.18.0.1").stdout
    tcp_transfer_50mb(d1, p, tmp_path, to="2001:db8:18::2")   # vswitchd pod -> kernel pod
    sink = ("import socket; srv=socket.create_server(('2001:db8:18::1',7002), "
            "family=socket.AF_INET6); print('ready',flush=True); c,_=srv.accept(); n=0\n"
            "while (b:=c.recv(65536)): n+=len(b)\nprint(n)")
    server = subprocess.Popen(["ip", "netns", "exec", p["a"][0], sys.executable, "-c", sink],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        in_ns(kpod, sys.executable, "-c", "import socket; s=socket.create_connection("
              "('2001:db8:18::1',7002)); s.sendall(bytes(5_000_000)); s.close()", timeout=60)
        assert server.stdout.readline().strip() == "5000000"   # kernel pod -> vswitchd pod
    finally:
        server.kill()
    fdb = sh("bridge", "-n", n2, "fdb", "show", "dev", "vx0").stdout
    assert f"{p['a'][1]['mac']} dst {UNDERLAY6}1" in fdb


def test_a_dual_stack_cluster_network(cluster):  # noqa: F811
    """Cluster mode: nodes claim IPv6 blocks (/122) beside IPv4 ones, take a
    gateway of each family, publish both addresses of their pods, answer
    Neighbor Solicitations for known pods locally, and enforce policies
    on both addresses of remote pods."""
    cluster.ipv6 = True
    cluster.etcd()
    nodes = [cluster.node(i) for i in (1, 2)]
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", "198.18.0.0/16",
                 "--subnet6", "2001:db8:18::/64")
    for d, other in zip(nodes, ("192.0.2.2", "192.0.2.1")):
        wait_for("peers", lambda d=d, other=other: peers(d) == {other})
        wait_for("gateways", lambda d=d: d.ctl_json("network", "list")[0]["gateway6_here"])
    blocks = {(b["node"], ipaddress.ip_network(b["block"]).version): b["block"]
              for b in nodes[0].ctl_json("ipam", "blocks")}
    assert ipaddress.ip_network(blocks[("node1", 6)]).prefixlen == 122
    pods = {t: cluster.pod(d, t, pod={"namespace": "x", "name": t, "labels": {"pod": t}})
            for t, d in zip("ab", nodes)}
    for t, d in zip("ab", nodes):
        ip6 = ipaddress.ip_interface(pods[t]["ip6"]).ip
        assert ip6 in ipaddress.ip_network(blocks[(d.name, 6)])
        gw6 = d.ctl_json("network", "list")[0]["gateway6_here"]
        assert ipaddress.ip_address(gw6) in ipaddress.ip_network(blocks[(d.name, 6)])
        assert " 0% packet loss" in ping6(pods[t]["ns"], gw6).stdout      # its node
    b6 = pods["b"]["ip6"].split("/")[0]
    wait_for("b's IPv6 endpoint on node 1", lambda: cluster.current.get(
        f"/vswitch/endpoints/blue/{b6}"))
    assert " 0% packet loss" in ping6(pods["a"]["ns"], b6).stdout
    assert " 0% packet loss" in ping(pods["b"]["ns"], pods["a"]["ip"].split("/")[0]).stdout
    assert nodes[0].ctl_json("stats")["nd_suppressed"] >= 1       # a's solicitation for b
    listing = {n["name"]: n["pods"] for n in nodes[1].ctl_json("node", "list")}
    assert listing == {"node1": 1, "node2": 1}                   # one pod, two records each
    # a admits only pods labelled role=client: c on node 2 over both families, not b.
    c = cluster.pod(nodes[1], "c", pod={"namespace": "x", "name": "c",
                                        "labels": {"role": "client"}})
    c6 = c["ip6"].split("/")[0]
    wait_for("c's endpoints on node 1", lambda: cluster.current.get(
        f"/vswitch/endpoints/blue/{c6}"))
    r = subprocess.run([*CTL, "--socket", nodes[1].socket, "policy", "apply", "-f", "-"],
                       input=json.dumps({
                           "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                           "metadata": {"name": "clients", "namespace": "x"},
                           "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                               {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    a4, a6 = pods["a"]["ip"].split("/")[0], pods["a"]["ip6"].split("/")[0]
    wait_for("policy on node 1", lambda: nodes[0].ctl_json("policy", "list") and
             " 100% packet loss" in ping6(pods["b"]["ns"], a6, count=1).stdout)
    shown = nodes[0].ctl_json("policy", "show", "x/clients")["pods"]
    assert [p["addresses"] for p in shown] == [[a4, a6]]
    assert " 0% packet loss" in ping6(c["ns"], a6).stdout
    assert " 0% packet loss" in ping(c["ns"], a4).stdout
    assert " 100% packet loss" in ping(pods["b"]["ns"], a4, count=1, check=False).stdout
    assert nodes[0].ctl_json("stats")["drops"]["policy_denied"] >= 2


def test_an_ipv6_only_cluster_network(cluster):  # noqa: F811
    """`network create --subnet6` alone: nodes claim IPv6 blocks only and
    take an IPv6 gateway; pods get one IPv6 address each, no IPv4, and
    reach each other across nodes and their node."""
    cluster.ipv6 = True
    cluster.etcd()
    nodes = [cluster.node(i) for i in (1, 2)]
    r = nodes[0].ctl("network", "create", "none", "--vni", "7", check=False)
    assert r.returncode != 0 and "'subnet' (IPv4) or 'subnet6'" in r.stderr
    nodes[0].ctl("network", "create", "six", "--vni", "600", "--subnet6", "2001:db8:60::/64")
    for d in nodes:
        wait_for("gateway", lambda d=d: d.ctl_json("network", "list")[0]["gateway6_here"])
    [net] = nodes[1].ctl_json("network", "list")
    assert (net["subnet"], net["subnet6"], net["block_size6"]) == (None, "2001:db8:60::/64", 122)
    assert "2001:db8:60::/64" in nodes[1].ctl("network", "list").stdout
    pods = {t: cluster.pod(d, t, network="six") for t, d in zip("ab", nodes)}
    blocks = {b["node"]: ipaddress.ip_network(b["block"]) for b in nodes[0].ctl_json("ipam", "blocks")}
    assert {b.version for b in blocks.values()} == {6}
    for t, d in zip("ab", nodes):
        assert pods[t]["ip"] is None and pods[t]["gateway"] is None
        assert ipaddress.ip_interface(pods[t]["ip6"]).ip in blocks[d.name]
        assert "inet " not in in_ns(pods[t]["ns"], "ip", "addr", "show", "eth0").stdout
        assert " 0% packet loss" in ping6(pods[t]["ns"], pods[t]["gateway6"]).stdout
        [shown] = d.ctl_json("ipam", "show")["networks"]
        assert 0 < shown["free"] < 64
    b6 = pods["b"]["ip6"].split("/")[0]
    wait_for("b's endpoint", lambda: cluster.current.get(f"/vswitch/endpoints/six/{b6}"))
    assert " 0% packet loss" in ping6(pods["a"]["ns"], b6).stdout


def test_a_cluster_over_an_ipv6_underlay(cluster):  # noqa: F811
    """Nodes whose VTEPs are IPv6 (etcd still reached over IPv4): each finds
    the other as a peer from its node record, the network's MTU leaves room
    for the 70 bytes of VXLAN over IPv6, and pods on the two nodes talk."""
    cluster.ipv6 = True
    cluster.etcd()
    nodes = []
    for i in (1, 2):
        in_ns(cluster.node_ns(i), "ip", "addr", "add", f"{UNDERLAY6}{i}/64", "dev", "u0", "nodad")
        nodes.append(cluster.node(i, cluster.config(i, {"overlay": {"vtep_ip": f"{UNDERLAY6}{i}"}})))
    nodes[0].ctl("network", "create", "blue", "--vni", "100", "--subnet", "198.18.0.0/16")
    for d, other in zip(nodes, (2, 1)):
        wait_for("an IPv6 peer", lambda d=d, other=other: peers(d) == {f"{UNDERLAY6}{other}"})
    assert nodes[1].ctl_json("network", "list")[0]["mtu"] == 1500 - 70
    a, b = cluster.pod(nodes[0], "a"), cluster.pod(nodes[1], "b")
    b4 = b["ip"].split("/")[0]
    wait_for("b's endpoint", lambda: cluster.current.get(f"/vswitch/endpoints/blue/{b4}"))
    assert " 0% packet loss" in ping(a["ns"], b4).stdout
    assert nodes[0].ctl_json("stats")["tunnel"]["tx_packets"] > 0
