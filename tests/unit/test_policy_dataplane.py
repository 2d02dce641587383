"""NetworkPolicy and connection tracking in the data plane, on socketpairs:
compiled tables per port, verdicts per frame, conntrack both ways, the
table's limit, revalidation after a change, and what drops record."""

import ipaddress
import random

from datapath_rig import BCAST, Rig, mac
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    IPerror6,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import ARP, Ether

from vswitch.netpol import IpBlock
from vswitch.policy import cidr_ranges
from vswitch.protocol import address_key

CAP_DROP = 16
TCP_P, UDP_P = 6, 17
A, B, C = "198.18.1.1", "198.18.1.2", "198.18.1.3"
A6, B6, C6 = "2001:db8::1", "2001:db8::2", "2001:db8::3"


def ip(text: str) -> int:
    return address_key(text)


ALL = (0, (1 << 128) - 1, 2)           # every address of both families, policy 2


def only(text: str, policy: int = 7) -> list:
    """Peer ranges: one address, allowed by `policy`."""
    return [(ip(text), ip(text), policy)]


class Pods:
    """Three pods a, b, c on one network, their MACs learned."""

    def __init__(self, **kw):
        self.rig = Rig(**kw)
        self.ports = {name: self.rig.port() for name in "abc"}
        self.addr = {"a": A, "b": B, "c": C}
        self.addr6 = {"a": A6, "b": B6, "c": C6}
        for i, name in enumerate("abc"):
            self.rig.send(self.ports[name], bytes(Ether(dst=BCAST, src=mac(i + 1)) /
                                                  ARP(psrc=self.addr[name])))
        self.drain()

    def mac(self, name):
        return mac("abc".index(name) + 1)

    def frame(self, src, dst, l4, v6=False) -> bytes:
        l3 = IPv6(src=self.addr6[src], dst=self.addr6[dst]) if v6 else \
            IP(src=self.addr[src], dst=self.addr[dst])
        return bytes(Ether(src=self.mac(src), dst=self.mac(dst)) / l3 / l4)

    def send(self, src, dst, l4, v6=False) -> bool:
        """Whether a frame (IPv4, or IPv6 with l4 following the IPv6
        header: extension headers included) from src reaches dst."""
        self.rig.send(self.ports[src], self.frame(src, dst, l4, v6))
        got = self.rig.received(self.ports[dst])
        return len(got) == 1

    def drain(self):
        for p in self.ports.values():
            self.rig.received(p)

    def drops(self, reason="policy_denied"):
        return self.rig.dp.counters()["drops"][reason]


def test_no_policy_means_no_tracking():
    pods = Pods()
    assert pods.send("a", "b", TCP(sport=1000, dport=80, flags="S"))
    assert pods.rig.dp.conntrack_entries() == []


def test_ingress_rules_by_peer_and_port_and_replies_pass():
    pods = Pods()
    dp = pods.rig.dp
    # b: ingress from a on TCP 80 only (policy 7); isolated by policy 3.
    dp.set_port_policy(pods.ports["b"], ingress=(3, [(only(A), [(TCP_P, 80, 80)])]))
    assert pods.send("a", "b", TCP(sport=1000, dport=80, flags="S"))
    assert pods.send("b", "a", TCP(sport=80, dport=1000, flags="SA"))      # the reply
    assert pods.send("a", "b", TCP(sport=1000, dport=80, flags="A"))
    assert not pods.send("a", "b", TCP(sport=1001, dport=81, flags="S"))   # other port
    assert not pods.send("c", "b", TCP(sport=1000, dport=80, flags="S"))   # other peer
    assert not pods.send("a", "b", UDP(sport=1000, dport=80))              # other protocol
    assert pods.drops() == 3
    assert dp.port_counters(pods.ports["b"])["policy_denied"] == 3
    [entry] = dp.conntrack_entries()
    net, proto, src, sport, dst, dport, flags, left, in_port, out_port, owner = entry
    assert (net, proto, src, sport, dst, dport) == (1, TCP_P, ip(A), 1000, ip(B), 80)
    assert flags & 2 and 3600 < left <= 21600            # replied: established timeout
    assert (in_port, out_port, owner) == (pods.ports["a"], pods.ports["b"], pods.ports["a"])
    assert dp.conntrack_entries(port=pods.ports["c"]) == []


def test_replies_pass_while_new_connections_the_other_way_are_denied():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["a"], ingress=(1, []))        # a: deny all ingress
    assert pods.send("a", "b", TCP(sport=2000, dport=80, flags="S"))
    assert pods.send("b", "a", TCP(sport=80, dport=2000, flags="SA"))
    assert not pods.send("b", "a", TCP(sport=3000, dport=2000, flags="S"))
    assert pods.send("a", "b", UDP(sport=53000, dport=53))
    assert pods.send("b", "a", UDP(sport=53, dport=53000))
    assert not pods.send("b", "a", UDP(sport=53, dport=53001))
    assert pods.send("a", "b", ICMP(type=8, id=9))
    assert pods.send("b", "a", ICMP(type=0, id=9))
    assert not pods.send("b", "a", ICMP(type=8, id=9))           # b's own echo request: new
    assert not pods.send("b", "a", ICMP(type=0, id=10))
    # An ICMP error about a's connection is related; one about nothing is not.
    err = ICMP(type=3, code=4) / IPerror(src=A, dst=B) / TCPerror(sport=2000, dport=80)
    assert pods.send("b", "a", err)
    err = ICMP(type=3, code=4) / IPerror(src=A, dst=B) / TCPerror(sport=2001, dport=80)
    assert not pods.send("b", "a", err)


def test_egress_rules_and_arp_always_passes():
    pods = Pods()
    dp = pods.rig.dp
    # a: egress to b's /31 on UDP 53 (policy 5), isolated by policy 4.
    dp.set_port_policy(pods.ports["a"], egress=(4, [(only(B, 5), [(UDP_P, 53, 53),
                                                                  (TCP_P, 53, 53)])]))
    assert pods.send("a", "b", UDP(sport=4000, dport=53))
    assert not pods.send("a", "c", UDP(sport=4000, dport=53))
    assert not pods.send("a", "b", UDP(sport=4000, dport=54))
    pods.rig.send(pods.ports["a"], bytes(Ether(dst=BCAST, src=pods.mac("a")) / ARP(psrc=A, pdst=B)))
    assert len(pods.rig.received(pods.ports["b"])) == 1
    assert dp.port_counters(pods.ports["a"])["policy_denied"] == 2
    # Non-IP traffic is denied where a direction is isolated.
    pods.rig.send(pods.ports["a"], bytes(Ether(dst=pods.mac("b"), src=pods.mac("a"), type=0x88B5)
                                         / (b"x" * 46)))
    assert pods.rig.received(pods.ports["b"]) == []


def test_port_ranges_and_later_fragments():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(1, [(only(A), [(TCP_P, 8000, 8100)])]))
    assert pods.send("a", "b", TCP(sport=1, dport=8000, flags="S"))
    assert pods.send("a", "b", TCP(sport=2, dport=8100, flags="S"))
    assert not pods.send("a", "b", TCP(sport=3, dport=8101, flags="S"))
    # A later fragment carries no ports: only a rule without ports could allow it.
    frag = bytes(Ether(src=pods.mac("a"), dst=pods.mac("b")) /
                 IP(src=A, dst=B, proto=6, frag=100) / (b"x" * 40))
    pods.rig.send(pods.ports["a"], frag)
    assert pods.rig.received(pods.ports["b"]) == []


def test_a_policy_change_revokes_what_it_no_longer_allows():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(1, [(only(A), [])]))
    assert pods.send("a", "b", TCP(sport=1000, dport=80, flags="S"))
    assert pods.send("a", "b", UDP(sport=1000, dport=81))
    dp.set_port_policy(pods.ports["b"], ingress=(1, [(only(A), [(UDP_P, 81, 81)])]))
    dp.policy_changed()
    assert not pods.send("a", "b", TCP(sport=1000, dport=80, flags="A"))   # revoked
    assert pods.send("a", "b", UDP(sport=1000, dport=81))                  # still allowed
    assert pods.send("b", "a", UDP(sport=81, dport=1000))
    assert dp.counters()["conntrack"]["revoked"] == 1
    assert len(dp.conntrack_entries()) == 1
    steps = dp.trace(pods.ports["a"], pods.frame("a", "b", UDP(sport=1000, dport=81)))
    assert {"step": "policy", "verdict": "pass", "how": "conntrack", "direction": None,
            "policy": None, "to": pods.ports["b"]} in steps


def test_conntrack_limit_drops_new_connections_by_name():
    pods = Pods(conntrack_max=2)
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(1, [([ALL], [])]))
    for sport in (1, 2):
        assert pods.send("a", "b", UDP(sport=sport, dport=80))
        assert pods.send("b", "a", UDP(sport=80, dport=sport))     # answered: never evicted
    assert not pods.send("a", "b", UDP(sport=3, dport=80))
    assert pods.drops("conntrack_full") == 1 and pods.drops() == 0
    assert pods.send("a", "b", UDP(sport=1, dport=80))         # known ones go on
    assert dp.conntrack_flush() == 2
    assert pods.send("a", "b", UDP(sport=3, dport=80))


def test_drop_capture_and_trace_name_the_policy_and_direction():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(9, [(only(A, 11), [(TCP_P, 80, 80)])]))
    session = dp.capture_add(CAP_DROP)
    assert not pods.send("c", "b", TCP(sport=5, dport=80, flags="S"))
    [record] = dp.capture_read()
    assert record[4] == "policy_denied" and record[7] == 9       # ingress (bit 31 clear), policy 9
    dp.capture_remove(session)
    steps = dp.trace(pods.ports["c"], pods.frame("c", "b", TCP(sport=5, dport=80, flags="S")))
    assert steps[-2]["step"] == "policy" and steps[-2]["policy"] == 9
    assert steps[-2]["direction"] == "ingress" and steps[-1] == {"step": "drop",
                                                                 "reason": "policy_denied"}
    steps = dp.trace(pods.ports["a"], pods.frame("a", "b", TCP(sport=5, dport=80, flags="S")))
    assert steps[-1] == {"step": "policy", "verdict": "pass", "how": "rules",
                         "direction": "ingress", "policy": 11, "to": pods.ports["b"]}
    assert dp.conntrack_entries() == []                         # trace tracks nothing
    dp.set_port_policy(pods.ports["a"], egress=(4, []))
    session = dp.capture_add(CAP_DROP)
    assert not pods.send("a", "c", TCP(sport=5, dport=80, flags="S"))
    assert dp.capture_read()[0][7] == (1 << 31) | 4


def test_flooded_copies_are_checked_per_port():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(1, []))
    frame = bytes(Ether(src=pods.mac("a"), dst=BCAST) / IP(src=A, dst="198.18.1.255") /
                  UDP(sport=68, dport=67))
    pods.rig.send(pods.ports["a"], frame)
    assert pods.rig.received(pods.ports["b"]) == []
    assert len(pods.rig.received(pods.ports["c"])) == 1
    assert dp.port_counters(pods.ports["b"])["tx_dropped"] == 1


def test_removing_tables_and_ports_frees_them():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(1, []))
    assert dp.port_policy_enforced(pods.ports["b"])
    dp.set_port_policy(pods.ports["b"])
    assert not dp.port_policy_enforced(pods.ports["b"])
    assert pods.send("c", "b", TCP(sport=5, dport=80, flags="S"))
    dp.set_port_policy(pods.ports["b"], ingress=(1, []))
    dp.remove_port(pods.ports["b"])


def test_bad_tables_are_refused():
    rig = Rig()
    p = rig.port()
    for bad in [(0, []), (1, [([(5, 4, 1)], [])]), (1, [([(1, 5, 1), (3, 9, 1)], [])]),
                (1, [([(1, 5, 0)], [])]), (1, [([], [(6, 90, 80)])]), (1, [([], [(300, 1, 1)])])]:
        try:
            rig.dp.set_port_policy(p, ingress=bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")
    assert not rig.dp.port_policy_enforced(p)


def test_conntrack_table_against_a_model():
    """Many connections in and out of a small table: lookups agree with a
    set, deletions (flush, expiry sweeps) keep every live entry findable."""
    pods = Pods(conntrack_max=3000)
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(1, [([ALL], [])]))
    rnd = random.Random(3)
    ports = rnd.sample(range(1, 65536), 2500)
    for sport in ports:
        assert pods.send("a", "b", UDP(sport=sport, dport=9))
    assert len(dp.conntrack_entries()) == 2500
    assert dp.conntrack_expire() == 0
    for sport in ports[::7]:
        assert pods.send("b", "a", UDP(sport=9, dport=sport))
    dp.set_port_policy(pods.ports["b"], ingress=(1, []))        # deny new ones
    assert all(pods.send("b", "a", UDP(sport=9, dport=sport)) for sport in ports[::5])


def test_sctp_ports_match_and_are_tracked():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["b"], ingress=(1, [(only(A), [(132, 9, 9)])]))
    sctp = bytes.fromhex("1f900009") + bytes(8)            # sport 8080, dport 9
    back = bytes.fromhex("00091f90") + bytes(8)
    for src, dst, payload, ok in (("a", "b", sctp, True), ("b", "a", back, True),
                                  ("c", "b", sctp, False)):
        frame = bytes(Ether(src=pods.mac(src), dst=pods.mac(dst)) /
                      IP(src=pods.addr[src], dst=pods.addr[dst], proto=132) / payload)
        pods.rig.send(pods.ports[src], frame)
        assert (len(pods.rig.received(pods.ports[dst])) == 1) is ok
    assert [e[1] for e in dp.conntrack_entries()] == [132]


def test_replies_of_connections_from_the_gateway_go_back_through_it():
    """A Service's DNAT in the node: the host port brings a connection from
    client a to backend b (a's address, the gateway's MAC); b's replies go
    back to the host port, rewritten to its MAC, not straight to a."""
    pods = Pods()
    dp, rig = pods.rig.dp, pods.rig
    gw = rig.port(1, router=True)
    gw_mac = 0x0E0000000099
    dp.pin_mac(gw, gw_mac)
    syn = bytes(Ether(src="0e:00:00:00:00:99", dst=pods.mac("b")) / IP(src=A, dst=B) /
                TCP(sport=40000, dport=8080, flags="S"))
    rig.send(gw, syn)
    assert len(rig.received(pods.ports["b"])) == 1
    reply = pods.frame("b", "a", TCP(sport=8080, dport=40000, flags="SA"))
    rig.send(pods.ports["b"], reply)
    assert rig.received(pods.ports["a"]) == []
    [back] = rig.received(gw)
    assert Ether(back).dst == "0e:00:00:00:00:99" and Ether(back)[IP].src == B
    assert dp.counters()["gateway_replies"] == 1
    # b's own connections to a, and a's straight to b, take the plain way.
    assert pods.send("b", "a", TCP(sport=5000, dport=80, flags="S"))
    assert pods.send("a", "b", TCP(sport=6000, dport=8080, flags="S"))
    assert pods.send("b", "a", TCP(sport=8080, dport=6000, flags="SA"))
    # A connection b opened towards the node is not one that came in through it.
    rig.send(pods.ports["b"], bytes(Ether(src=pods.mac("b"), dst="0e:00:00:00:00:99") /
                                    IP(src=B, dst="198.18.1.254") / TCP(sport=7000, dport=53)))
    assert len(rig.received(gw)) == 1
    rig.send(gw, bytes(Ether(src="0e:00:00:00:00:99", dst=pods.mac("b")) /
                       IP(src="198.18.1.254", dst=B) / TCP(sport=53, dport=7000, flags="A")))
    assert len(rig.received(pods.ports["b"])) == 1
    rig.send(pods.ports["b"], bytes(Ether(src=pods.mac("b"), dst=pods.mac("a")) /
                                    IP(src=B, dst="198.18.1.254") / TCP(sport=7000, dport=53)))
    assert rig.received(gw) == [] and len(rig.received(pods.ports["a"])) == 1
    assert dp.counters()["gateway_replies"] == 1
    dp.conntrack_flush()                            # forgotten: the plain way again
    rig.send(pods.ports["b"], reply)
    assert len(rig.received(pods.ports["a"])) == 1


def test_ipv6_rules_extension_headers_and_conntrack():
    pods = Pods()
    dp = pods.rig.dp
    # b: ingress from a's IPv6 address on TCP 80 only.
    dp.set_port_policy(pods.ports["b"], ingress=(3, [(only(A6), [(TCP_P, 80, 80)])]))
    assert pods.send("a", "b", TCP(sport=1000, dport=80, flags="S"), v6=True)
    assert pods.send("b", "a", TCP(sport=80, dport=1000, flags="SA"), v6=True)
    assert not pods.send("a", "b", TCP(sport=1001, dport=81, flags="S"), v6=True)
    assert not pods.send("c", "b", TCP(sport=1000, dport=80, flags="S"), v6=True)
    assert not pods.send("a", "b", TCP(sport=1000, dport=80, flags="S"))   # a's IPv4: not named
    [entry] = dp.conntrack_entries()
    assert entry[:6] == (1, TCP_P, ip(A6), 1000, ip(B6), 80)
    # The extension header chain is followed to the ports.
    assert pods.send("a", "b", IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() /
                     TCP(sport=1002, dport=80, flags="S"), v6=True)
    assert not pods.send("a", "b", IPv6ExtHdrDestOpt() / TCP(sport=1003, dport=81, flags="S"),
                         v6=True)
    # A first fragment has the ports; a later one takes its first's verdict
    # (by identification), and without one only port-less rules allow it.
    assert pods.send("a", "b", IPv6ExtHdrFragment(offset=0, m=1, nh=6, id=77) /
                     TCP(sport=1004, dport=80, flags="S"), v6=True)
    assert pods.send("a", "b", IPv6ExtHdrFragment(offset=10, nh=6, id=77) / (b"x" * 40), v6=True)
    assert not pods.send("a", "b", IPv6ExtHdrFragment(offset=10, nh=6, id=78) / (b"x" * 40),
                         v6=True)
    # A chain cut short, and an IPv6 packet naming an IPv4-mapped address
    # (which would pass for a's IPv4 one in a table allowing it), match nothing.
    cut = pods.frame("a", "b", IPv6ExtHdrDestOpt(len=20) / TCP(sport=1005, dport=80), v6=True)
    pods.rig.send(pods.ports["a"], cut[:80])
    dp.set_port_policy(pods.ports["b"], ingress=(3, [(only(A) + only(A6), [])]))
    mapped = bytes(Ether(src=pods.mac("a"), dst=pods.mac("b")) /
                   IPv6(src="::ffff:" + A, dst=B6) / UDP(sport=5, dport=6))
    pods.rig.send(pods.ports["a"], mapped)
    assert pods.rig.received(pods.ports["b"]) == []
    assert pods.drops() == 7


def test_icmpv6_echo_errors_and_neighbour_discovery():
    pods = Pods()
    dp = pods.rig.dp
    dp.set_port_policy(pods.ports["a"], ingress=(1, []))        # a: deny all ingress
    assert pods.send("a", "b", ICMPv6EchoRequest(id=9), v6=True)
    assert pods.send("b", "a", ICMPv6EchoReply(id=9), v6=True)
    assert not pods.send("b", "a", ICMPv6EchoRequest(id=9), v6=True)
    assert not pods.send("b", "a", ICMPv6EchoReply(id=10), v6=True)
    assert pods.send("a", "b", UDP(sport=5000, dport=53), v6=True)
    err = ICMPv6DestUnreach(code=4) / IPerror6(src=A6, dst=B6) / UDP(sport=5000, dport=53)
    assert pods.send("b", "a", err, v6=True)
    err = ICMPv6DestUnreach(code=4) / IPerror6(src=A6, dst=B6) / UDP(sport=5001, dport=53)
    assert not pods.send("b", "a", err, v6=True)
    # Neighbour discovery passes whatever the rules.
    assert pods.send("b", "a", ICMPv6ND_NS(tgt=A6), v6=True)


def test_ipv6_blocks_match_ipv6_only():
    """An ipBlock of ::/0 allows every IPv6 peer and no IPv4 one; 0.0.0.0/0
    the other way round."""
    pods = Pods()
    dp = pods.rig.dp
    every6 = [(lo, hi, 2) for lo, hi in cidr_ranges(IpBlock(ipaddress.ip_network("::/0"), ()))]
    dp.set_port_policy(pods.ports["b"], ingress=(1, [(every6, [])]))
    assert pods.send("c", "b", UDP(sport=1, dport=2), v6=True)
    assert not pods.send("c", "b", UDP(sport=1, dport=2))
    every4 = [(lo, hi, 2) for lo, hi in
              cidr_ranges(IpBlock(ipaddress.ip_network("0.0.0.0/0"), ()))]
    dp.set_port_policy(pods.ports["b"], ingress=(1, [(every4, [])]))
    dp.policy_changed()
    assert pods.send("c", "b", UDP(sport=3, dport=4))
    assert not pods.send("c", "b", UDP(sport=3, dport=4), v6=True)


# ------------------------------------------------- the node, Services, errors

GW, WORLD, ROUTER, SERVICE = "198.18.1.254", "203.0.113.9", "203.0.113.1", "198.19.96.10"
GW_MAC = mac(0xFE)


class Node(Pods):
    """Pods a, b, c with port security (so the data plane knows their
    addresses) and a host port h holding the gateway address."""

    def __init__(self, **kw):
        super().__init__(**kw)
        for name in "abc":
            self.rig.dp.set_port_security(self.ports[name], int.from_bytes(self.mac(name), "big"),
                                          [int(ipaddress.ip_address(self.addr[name]))],
                                          [ip(self.addr6[name])])
        self.host = self.rig.port(router=True)
        self.rig.dp.pin_mac(self.host, int.from_bytes(GW_MAC, "big"))
        self.rig.dp.set_host_addresses(self.host, [int(ipaddress.ip_address(GW))])

    def routed(self, src_ip, dst, l4) -> bool:
        """Whether a packet the node routes out of its host port (from any
        address) reaches pod dst."""
        self.rig.send(self.host, bytes(Ether(src=GW_MAC, dst=self.mac(dst)) /
                                       IP(src=src_ip, dst=self.addr[dst]) / l4))
        return len(self.rig.received(self.ports[dst])) == 1

    def to_gateway(self, src, dst_ip, l4) -> bool:
        """Whether a pod's packet to an address beyond its gateway gets there."""
        self.rig.send(self.ports[src], bytes(Ether(src=self.mac(src), dst=GW_MAC) /
                                             IP(src=self.addr[src], dst=dst_ip) / l4))
        return len(self.rig.received(self.host)) == 1


def test_the_host_port_exempts_the_node_only_and_routed_pods_meet_both_policies():
    node = Node()
    dp = node.rig.dp
    dp.set_port_policy(node.ports["b"], ingress=(1, [(only(C), [])]))     # b: only from c
    assert node.routed(GW, "b", TCP(sport=1, dport=80, flags="S"))          # the node: exempt
    assert node.routed(C, "b", TCP(sport=2, dport=80, flags="S"))           # c, routed: allowed
    assert not node.routed(A, "b", TCP(sport=3, dport=80, flags="S"))       # a, routed: denied
    assert not node.routed(WORLD, "b", TCP(sport=4, dport=80, flags="S"))   # outside: denied
    # a's egress rules judge what the node routes from a, whatever a sent it to.
    dp.set_port_policy(node.ports["a"], egress=(2, [(only(B), [])]))       # a: only to b
    assert not node.routed(A, "c", UDP(sport=5, dport=53))
    # To the gateway, for b: b's rules judge it already, as the node will route it.
    dp.set_port_policy(node.ports["a"], egress=(2, [([ALL], [])]))
    dp.policy_changed()
    assert not node.to_gateway("a", B, TCP(sport=6, dport=80, flags="S"))
    assert node.to_gateway("a", C, TCP(sport=6, dport=80, flags="S"))
    assert node.drops() == 4
    # The two legs of a routed connection are two entries, each of its own path.
    legs = {(e[8], e[9]) for e in dp.conntrack_entries(port=node.ports["a"])}
    assert node.routed(A, "c", TCP(sport=6, dport=80, flags="S"))
    assert {(e[8], e[9]) for e in dp.conntrack_entries(port=node.ports["a"])} == legs
    assert {(e[8], e[9]) for e in dp.conntrack_entries(port=node.ports["c"])} == {
        (node.host, node.ports["c"])}


def test_egress_to_a_service_is_judged_after_the_nodes_dnat():
    node = Node()
    dp = node.rig.dp
    dp.set_port_policy(node.ports["a"], egress=(2, [(only(B), [])]))       # a: only to b
    assert not node.to_gateway("a", SERVICE, TCP(sport=7, dport=80, flags="S"))
    dp.set_service_ranges([(ip(SERVICE), ip(SERVICE))])
    assert node.to_gateway("a", SERVICE, TCP(sport=8, dport=80, flags="S"))
    assert node.routed(A, "b", TCP(sport=8, dport=8080, flags="S"))        # DNATed to b
    assert not node.routed(A, "c", TCP(sport=9, dport=8080, flags="S"))    # ... to c: denied
    assert not node.to_gateway("a", WORLD, TCP(sport=10, dport=80, flags="S"))
    # The Service's replies reach a (the connection to the ClusterIP is tracked).
    dp.set_port_policy(node.ports["a"], ingress=(3, []), egress=(2, [(only(B), [])]))
    dp.policy_changed()
    assert node.to_gateway("a", SERVICE, TCP(sport=11, dport=80, flags="S"))
    assert node.routed(SERVICE, "a", TCP(sport=80, dport=11, flags="SA"))
    assert not node.routed(SERVICE, "a", TCP(sport=80, dport=12, flags="SA"))
    steps = dp.trace(node.host, bytes(Ether(src=GW_MAC, dst=node.mac("c")) /
                                      IP(src=A, dst=C) / TCP(sport=9, dport=8080, flags="S")))
    assert {"step": "policy", "verdict": "policy_denied", "how": "rules", "direction": "egress",
            "policy": 2, "to": node.ports["c"]} in steps


def test_icmp_errors_pass_only_from_the_ends_of_the_connection_or_a_router():
    node = Node()
    dp = node.rig.dp
    dp.set_port_policy(node.ports["a"], ingress=(1, []))            # a: deny all ingress
    assert node.send("a", "b", UDP(sport=5000, dport=53))

    def error(outer_src, quoted_src=A, quoted_dst=B):
        return ICMP(type=3, code=3) / IPerror(src=quoted_src, dst=quoted_dst) / \
            UDP(sport=5000, dport=53)
    assert node.send("b", "a", error(B))                            # from the quoted destination
    assert not node.send("c", "a", error(C))                        # from a third pod
    assert not node.send("b", "a", error(B, quoted_src=C))          # about someone else's
    # Through the node: a's connection to the world, an error from a router on the way.
    assert node.to_gateway("a", WORLD, UDP(sport=5000, dport=53))
    assert node.routed(ROUTER, "a", error(ROUTER, quoted_dst=WORLD))
    assert not node.routed(C, "a", error(C, quoted_dst=WORLD))      # a local pod is no router
    assert node.drops() == 3


def test_a_pod_gets_its_share_of_the_connection_table_and_unanswered_ones_go_first():
    node = Node()
    dp = node.rig.dp
    dp.conntrack_configure(16, 3)
    dp.set_port_policy(node.ports["b"], ingress=(1, [([ALL], [])]))
    for sport in (1, 2, 3):
        assert node.send("a", "b", UDP(sport=sport, dport=80))
    assert not node.send("a", "b", UDP(sport=4, dport=80))
    assert node.drops("conntrack_pod_full") == 1
    assert node.send("c", "b", UDP(sport=1, dport=80))              # c has its own share
    # Through the gateway too: charged to the pod that opened it, not to the node.
    assert not node.routed(A, "b", UDP(sport=4, dport=80))
    assert node.drops("conntrack_pod_full") == 2
    # A routed connection is one entry per leg, both the opener's; the
    # answer the node routes back finds them and charges nobody new.
    assert node.to_gateway("c", B, UDP(sport=7, dport=80))
    assert node.routed(C, "b", UDP(sport=7, dport=80))
    node.rig.send(node.ports["b"], node.frame("b", "c", UDP(sport=80, dport=7)))
    assert len(node.rig.received(node.host)) == 1                   # steered to the node
    assert node.routed(B, "c", UDP(sport=80, dport=7))
    assert dp.conntrack_usage() == {node.ports["a"]: 3, node.ports["c"]: 3}
    assert {e[10] for e in dp.conntrack_entries()} == {node.ports["a"], node.ports["c"]}
    assert len(dp.conntrack_entries()) == 6
    # Without a policy on either end, the gateway's own tracking (Service
    # replies) does the same.
    dp.conntrack_configure(16, 3)
    dp.set_port_policy(node.ports["b"])
    assert node.routed(C, "a", UDP(sport=8, dport=80))
    assert node.routed(A, "c", UDP(sport=80, dport=8))
    assert dp.conntrack_usage() == {node.ports["c"]: 1}
    # A full table evicts a connection never answered before refusing.
    dp.conntrack_configure(2, 2)
    dp.set_port_policy(node.ports["b"], ingress=(1, [([ALL], [])]))
    assert node.send("a", "b", UDP(sport=1, dport=80))
    assert node.send("b", "a", UDP(sport=80, dport=1))              # answered: it stays
    assert node.send("c", "b", UDP(sport=2, dport=80))
    assert node.send("c", "b", UDP(sport=3, dport=80))              # c's first goes
    counters = dp.counters()["conntrack"]
    assert counters["early_dropped"] == 1 and counters["entries"] == 2
    assert node.send("b", "a", UDP(sport=80, dport=1))
    # Removing a port forgets what it was charged with.
    dp.remove_port(node.ports["c"])
    assert dp.conntrack_usage() == {node.ports["a"]: 1}


def test_later_fragments_take_their_first_fragments_verdict():
    node = Node()
    dp = node.rig.dp
    dp.set_port_policy(node.ports["b"], ingress=(1, [(only(A), [(UDP_P, 53, 53), (TCP_P, 80, 80)])]))

    def frag(l4_or_data, fid, offset=0, more=False, proto=UDP_P):
        flags = "MF" if more else 0
        return bytes(Ether(src=node.mac("a"), dst=node.mac("b")) /
                     IP(src=A, dst=B, id=fid, frag=offset, flags=flags, proto=proto) / l4_or_data)

    def send(packet: bytes) -> bool:
        node.rig.send(node.ports["a"], packet)
        return len(node.rig.received(node.ports["b"])) == 1
    assert send(frag(UDP(sport=9, dport=53) / (b"q" * 16), 5, more=True))
    assert send(frag(b"r" * 24, 5, offset=3))
    assert not send(frag(b"r" * 24, 6, offset=3))   # no first seen
    # A first fragment cut inside its TCP header carries its verdict to nothing.
    short = TCP(sport=9, dport=80, flags="S")
    assert send(frag(bytes(short)[:8], 7, more=True, proto=TCP_P))
    assert not send(frag(b"s" * 24, 7, offset=1, proto=TCP_P))
    # A later fragment overlapping the TCP header does not pass on the first's verdict.
    assert send(frag(short / (b"t" * 8), 8, more=True, proto=TCP_P))
    assert not send(frag(b"u" * 24, 8, offset=1, proto=TCP_P))
    assert send(frag(b"u" * 24, 8, offset=4, proto=TCP_P))
    assert dp.counters()["fragments_passed"] == 2
    steps = dp.trace(node.ports["a"], frag(b"r" * 8, 5, offset=6))
    assert any(s.get("how") == "a later fragment of an allowed first one" for s in steps), steps


def test_solicitations_and_listener_reports_go_to_the_host_port_only():
    """A pod's Router Solicitations and MLD reports are for routers: the
    host port gets them, other pods do not (as a bridge with MLD snooping)."""
    from scapy.layers.inet6 import ICMPv6MLReport2, ICMPv6ND_RS, IPv6ExtHdrHopByHop, RouterAlert
    node = Node()
    for l4 in (ICMPv6ND_RS(), IPv6ExtHdrHopByHop(options=[RouterAlert()]) / ICMPv6MLReport2()):
        dst = "ff02::2" if isinstance(l4, ICMPv6ND_RS) else "ff02::16"
        frame = bytes(Ether(src=node.mac("a"), dst="33:33:00:00:00:02") /
                      IPv6(src=A6, dst=dst, hlim=255) / l4)
        node.rig.send(node.ports["a"], frame)
        assert len(node.rig.received(node.host)) == 1
        assert node.rig.received(node.ports["b"]) == node.rig.received(node.ports["c"]) == []
        steps = node.rig.dp.trace(node.ports["a"], frame)
        assert {"step": "flood", "ports": [node.host], "peers": []} in steps
    # Other multicast still floods.
    node.rig.send(node.ports["a"], bytes(Ether(src=node.mac("a"), dst="33:33:00:00:00:01") /
                                         IPv6(src=A6, dst="ff02::1") / UDP()))
    assert len(node.rig.received(node.ports["b"])) == 1
