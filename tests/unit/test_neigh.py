"""The neighbour table and ARP and ND suppression, on socketpairs: ARP
requests and Neighbor Solicitations for known addresses are answered to the
asking port and go nowhere else."""

import random

from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from tests.datapath_rig import BCAST, Rig, mac
from vswitch.datapath import address_key as ip


def arp_request(src: bytes, spa: str, tpa: str) -> bytes:
    return bytes(Ether(dst=BCAST, src=src) / ARP(op=1, hwsrc=src, psrc=spa, pdst=tpa))


def test_known_address_is_answered_locally_and_not_flooded():
    rig = Rig()
    a, b = rig.port(), rig.port()
    rig.dp.neigh_set(1, ip("198.18.0.7"), 0x02AABBCCDDEE)
    rig.send(a, arp_request(mac(1), "198.18.0.2", "198.18.0.7"))
    replies = rig.received(a)
    assert len(replies) == 1 and rig.received(b) == []
    reply = Ether(replies[0])
    assert reply.dst == "02:00:00:00:00:01" and reply.src == "02:aa:bb:cc:dd:ee"
    assert reply[ARP].op == 2 and reply[ARP].hwsrc == "02:aa:bb:cc:dd:ee"
    assert reply[ARP].psrc == "198.18.0.7" and reply[ARP].pdst == "198.18.0.2"
    assert reply[ARP].hwdst == "02:00:00:00:00:01"
    assert rig.dp.counters()["arp_suppressed"] == 1


def test_unknown_other_network_probe_and_gratuitous_arp_flood():
    rig = Rig()
    a, b = rig.port(), rig.port()
    rig.dp.neigh_set(2, ip("198.18.0.7"), 0x02AABBCCDDEE)     # another network's
    rig.dp.neigh_set(1, ip("198.18.0.9"), 0x02AABBCCDDEF)
    for request in (arp_request(mac(1), "198.18.0.2", "198.18.0.7"),     # unknown here
                    arp_request(mac(1), "0.0.0.0", "198.18.0.9"),        # RFC 5227 probe
                    arp_request(mac(1), "198.18.0.9", "198.18.0.9")):    # gratuitous
        rig.send(a, request)
        assert rig.received(a) == [] and rig.received(b) == [request]
    assert rig.dp.counters()["arp_suppressed"] == 0


def test_trace_shows_the_suppression():
    rig = Rig()
    a = rig.port()
    rig.dp.neigh_set(1, ip("198.18.0.7"), 0x02AABBCCDDEE)
    steps = rig.dp.trace(a, arp_request(mac(1), "198.18.0.2", "198.18.0.7"))
    assert steps[-1]["step"] == "arp_suppression"
    assert steps[-1]["mac"] == "02:aa:bb:cc:dd:ee" and steps[-1]["target"] == "198.18.0.7"


def test_table_grows_deletes_and_forgets_a_removed_network():
    rig = Rig()
    rnd = random.Random(7)
    entries = {(rnd.choice((1, 2)), rnd.getrandbits(rnd.choice((32, 128))) | 1):
               rnd.getrandbits(47) | 1
               for _ in range(5000)}
    for (net, addr), m in entries.items():
        rig.dp.neigh_set(net, addr, m)
    assert rig.dp.neigh_count == len(entries)
    gone = rnd.sample(sorted(entries), 2000)
    for net, addr in gone:
        assert rig.dp.neigh_delete(net, addr)
        del entries[(net, addr)]
    assert not rig.dp.neigh_delete(*gone[0])
    for (net, addr), m in entries.items():
        assert rig.dp.neigh_lookup(net, addr) == m
    rig.dp.remove_network(2)
    assert rig.dp.neigh_count == sum(1 for net, _ in entries if net == 1)
    assert all(rig.dp.neigh_lookup(net, addr) == (m if net == 1 else 0)
               for (net, addr), m in entries.items())


def solicitation(src: bytes, source: str, target: str) -> bytes:
    return bytes(Ether(dst="33:33:ff:00:00:07", src=src)
                 / IPv6(src=source, dst="ff02::1:ff00:7", hlim=255) / ICMPv6ND_NS(tgt=target))


def test_known_ipv6_address_is_advertised_locally_and_not_flooded():
    rig = Rig()
    a, b = rig.port(), rig.port()
    rig.dp.neigh_set(1, ip("2001:db8::7"), 0x02AABBCCDDEE)
    rig.send(a, solicitation(mac(1), "2001:db8::2", "2001:db8::7"))
    replies = rig.received(a)
    assert len(replies) == 1 and rig.received(b) == []
    na = Ether(replies[0])
    assert (na.dst, na.src) == ("02:00:00:00:00:01", "02:aa:bb:cc:dd:ee")
    assert (na[IPv6].src, na[IPv6].dst, na[IPv6].hlim) == ("2001:db8::7", "2001:db8::2", 255)
    assert na[ICMPv6ND_NA].tgt == "2001:db8::7" and (na[ICMPv6ND_NA].S, na[ICMPv6ND_NA].O) == (1, 1)
    assert na[ICMPv6NDOptDstLLAddr].lladdr == "02:aa:bb:cc:dd:ee"
    check = na.copy()
    del check[ICMPv6ND_NA].cksum
    assert Ether(bytes(check))[ICMPv6ND_NA].cksum == na[ICMPv6ND_NA].cksum
    assert rig.dp.counters()["nd_suppressed"] == 1
    steps = rig.dp.trace(a, solicitation(mac(1), "2001:db8::2", "2001:db8::7"))
    assert steps[-1]["step"] == "nd_suppression" and steps[-1]["target"] == "2001:db8::7"


def test_unknown_targets_and_duplicate_address_detection_flood():
    rig = Rig()
    a, b = rig.port(), rig.port()
    rig.dp.neigh_set(1, ip("2001:db8::7"), 0x02AABBCCDDEE)
    rig.dp.neigh_set(1, ip("198.18.0.7"), 0x02AABBCCDDEF)    # IPv4 of the same bits: another key
    for request in (solicitation(mac(1), "2001:db8::2", "2001:db8::8"),   # unknown
                    solicitation(mac(1), "::", "2001:db8::7"),            # DAD
                    solicitation(mac(1), "2001:db8::2", "::ffff:198.18.0.7")):
        rig.send(a, request)
        assert rig.received(a) == [] and rig.received(b) == [request]
    assert rig.dp.counters()["nd_suppressed"] == 0
