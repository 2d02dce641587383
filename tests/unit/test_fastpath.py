"""The Cython data plane on its own: ports are AF_UNIX datagram socketpairs
(message boundaries like a TAP's), so every frame shape can be written in,
including those a kernel would never hand to a TAP (runts)."""

from __future__ import annotations

import ipaddress
import random
import time

import pytest
from datapath_rig import BCAST, Rig, frame, mac
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vswitch.datapath import DROP_NAMES
from vswitch.protocol import address_key, link_local

INGRESS_DROPS = ("runt", "oversize", "bad_source", "loop", "no_route", "bad_vnet_hdr")


def test_flood_learn_then_unicast():
    r = Rig()
    a, b, c = r.port(), r.port(), r.port()
    r.send(a, frame(BCAST, mac(1)))
    assert len(r.received(b)) == 1 and len(r.received(c)) == 1 and r.received(a) == []
    r.send(b, frame(mac(1), mac(2)))          # a's MAC is known now: unicast
    assert len(r.received(a)) == 1 and r.received(c) == []
    r.send(a, frame(mac(2), mac(1)))
    assert len(r.received(b)) == 1 and r.received(c) == []
    r.send(a, frame(mac(9), mac(1)))          # unknown unicast floods
    assert len(r.received(b)) == 1 and len(r.received(c)) == 1
    counters = r.dp.counters()
    assert (counters["unicast"], counters["flooded"]) == (2, 2)
    assert sorted(m for _, m, *_ in r.dp.fdb_entries()) == ["02:00:00:00:00:01", "02:00:00:00:00:02"]


def test_networks_are_isolated():
    r = Rig()
    a, b, other = r.port(network=1), r.port(network=1), r.port(network=2)
    r.send(a, frame(BCAST, mac(1)))
    assert len(r.received(b)) == 1 and r.received(other) == []
    r.send(other, frame(mac(1), mac(3)))      # a's MAC, but from another network
    assert r.received(a) == [] and r.received(b) == []
    assert r.dp.counters()["drops"]["no_route"] == 1


def test_vlan_tagged_frames_are_switched():
    r = Rig()
    a, b = r.port(), r.port()
    tagged = mac(2) + mac(1) + b"\x81\x00\x00\x0a\x08\x00" + b"\x00" * 46
    r.send(a, tagged)
    assert r.received(b) == [tagged]


@pytest.mark.parametrize("data,reason", [
    (b"", "runt"), (b"\x01\x02\x03", "runt"), (b"\xff" * 13, "runt"),
    (BCAST + mac(1) + b"\x81\x00\x00", "runt"),                 # tag cut short
    (frame(BCAST, mac(1), b"\x00" * 1501), "oversize"),
    (frame(BCAST, b"\x01" + mac(1)[1:]), "bad_source"),
    (frame(BCAST, BCAST), "bad_source"),
])
def test_bad_frames_dropped_by_reason(data, reason):
    r = Rig()
    a, b = r.port(), r.port()
    r.send(a, data)
    assert r.received(b) == []
    c = r.dp.counters()
    assert c["drops"][reason] == 1
    assert sum(c["drops"].values()) == 1
    assert r.dp.port_counters(a)["rx_dropped"] == 1


def test_mtu_sized_frame_passes_and_tag_is_not_payload():
    r = Rig()
    a, b = r.port(), r.port()
    r.send(a, frame(BCAST, mac(1), b"\x00" * 1500))
    r.send(a, mac(2) + mac(1) + b"\x81\x00\x00\x0a\x08\x00" + b"\x00" * 1500)
    assert [len(f) for f in r.received(b)] == [1514, 1518]


def test_hairpin_is_dropped_as_loop():
    r = Rig()
    a, b = r.port(), r.port()
    r.send(a, frame(BCAST, mac(1)))
    r.send(a, frame(mac(1), mac(5)))          # destination lives on the ingress port
    assert r.received(b) == [frame(BCAST, mac(1))]
    assert r.dp.counters()["drops"]["loop"] == 1


def test_mac_moves_between_ports():
    r = Rig()
    a, b, c = r.port(), r.port(), r.port()
    r.send(a, frame(BCAST, mac(1)))
    r.send(b, frame(BCAST, mac(1)))           # the MAC moved to b
    r.received(a), r.received(b), r.received(c)
    r.send(c, frame(mac(1), mac(3)))
    assert len(r.received(b)) == 1 and r.received(a) == []
    assert r.dp.counters()["fdb"]["moves"] == 1


def test_entries_age_out():
    r = Rig(aging_time=0.2)
    a, b, c = r.port(), r.port(), r.port()
    r.send(a, frame(BCAST, mac(1)))
    assert len(r.dp.fdb_entries()) == 1
    time.sleep(0.3)
    assert r.dp.fdb_entries() == []           # invisible at once
    r.received(b), r.received(c)
    r.send(b, frame(mac(1), mac(2)))          # aged out: floods again
    assert len(r.received(c)) == 1
    time.sleep(0.3)
    assert r.dp.fdb_expire() == 2             # and swept
    assert r.dp.counters()["fdb"]["entries"] == 0


def test_remove_port_forgets_its_macs():
    r = Rig()
    a, b, c = r.port(), r.port(), r.port()
    for n in range(1, 50):
        r.send(a if n % 2 else b, frame(BCAST, mac(n)))
    r.dp.remove_port(a)
    assert {p for _, _, p, *_ in r.dp.fdb_entries()} == {b}
    assert len(r.dp.fdb_entries()) == 24


def test_fdb_full_stops_learning_and_counts():
    r = Rig(fdb_max_entries=4)
    a, b = r.port(), r.port()
    for n in range(1, 11):
        r.send(a, frame(BCAST, mac(n)))
    c = r.dp.counters()["fdb"]
    assert (c["entries"], c["full"]) == (4, 6)


def test_fdb_flush_by_network():
    r = Rig()
    a, b, x, y = r.port(1), r.port(1), r.port(2), r.port(2)
    r.send(a, frame(BCAST, mac(1)))
    r.send(x, frame(BCAST, mac(2)))
    assert r.dp.fdb_flush(2) == 1
    assert [m for _, m, *_ in r.dp.fdb_entries()] == ["02:00:00:00:00:01"]
    assert r.dp.fdb_flush() == 1


def test_write_to_full_peer_counts_queue_full():
    r = Rig()
    a, b = r.port(), r.port()
    sent = 0
    for _ in range(5000):                     # b's pod end never reads
        r.send(a, frame(BCAST, mac(1)))
        sent += 1
        if r.dp.counters()["drops"]["queue_full"]:
            break
    assert r.dp.counters()["drops"]["queue_full"] == 1
    assert r.dp.port_counters(b)["tx_dropped"] == 1
    assert r.dp.port_counters(b)["tx_packets"] == sent - 1


def test_batch_limit_per_drain():
    r = Rig(batch=8)
    a, b = r.port(), r.port()
    for _ in range(20):
        r.pods[a][0].send(frame(BCAST, mac(1)))
    # (A drain may also stop early at its time quantum: a preempted test.)
    counts = []
    while (n := r.dp.drain(a)) > 0:
        counts.append(n)
    assert sum(counts) == 20 and max(counts) == 8 and len(counts) >= 3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "delete_port"]),
                          st.integers(1, 3000), st.integers(0, 3)), max_size=400))
def test_fdb_matches_a_model(ops):
    """Random learning and port removal agree with a dict (exercises
    backward-shift deletion across clusters and wrap-around)."""
    r = Rig(fdb_max_entries=4096)
    ports = [r.port() for _ in range(4)]
    model = {}
    for op, n, p in ops:
        if op == "insert":
            r.send(ports[p], frame(BCAST, mac(n)))
            for q in ports:
                r.received(q)
            model[n] = ports[p]
        else:
            r.dp.remove_port(ports[p])
            model = {k: v for k, v in model.items() if v != ports[p]}
            ports[p] = r.port()
    got = {int(m.replace(":", ""), 16) & 0xFFFF: pid for _, m, pid, *_ in r.dp.fdb_entries()}
    assert got == model


frames = st.one_of(
    st.binary(max_size=1600),
    st.builds(lambda d, s, rest: d + s + rest,
              st.sampled_from([BCAST, mac(1), mac(2), mac(3), b"\x01\x00\x5e\x00\x00\x01"]),
              st.sampled_from([mac(1), mac(2), mac(3), b"\x03" + mac(3)[1:]]),
              st.binary(max_size=1600)),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2), frames), min_size=1, max_size=60))
def test_fuzz_counters_add_up(batch):
    """Whatever arrives: no crash, and every received frame is accounted for
    exactly once (delivered to one port, flooded, or dropped by reason)."""
    r = Rig()
    ports = [r.port(), r.port(), r.port(vnet_hdr=True)]
    for p, data in batch:
        r.send(ports[p], data)
    c = r.dp.counters()
    rx = sum(r.dp.port_counters(p)["rx_packets"] for p in ports)
    assert rx == len(batch)
    assert rx == c["unicast"] + c["flooded"] + sum(c["drops"][k] for k in INGRESS_DROPS)
    delivered = sum(len(r.received(p)) for p in ports)
    assert delivered == sum(r.dp.port_counters(p)["tx_packets"] for p in ports)
    assert set(c["drops"]) == set(DROP_NAMES)


def test_random_frames_never_crash():
    r = Rig()
    a, b = r.port(), r.port()
    rng = random.Random(7)
    for _ in range(3000):
        r.send(a, rng.randbytes(rng.randrange(0, 2000)))
        r.received(b)
    assert r.dp.port_counters(a)["rx_packets"] == 3000


# Port security: the rule, written out in Python as the model the fast path must match.
OWN_MAC, OWN_IPS = mac(1), (bytes([198, 18, 0, 1]), bytes([198, 18, 0, 11]))
OWN_IP6S = (link_local(OWN_MAC.hex(":")).packed, b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01")


def spoofed_model(f: bytes) -> bool:
    l2 = 18 if f[12:14] in (b"\x81\x00", b"\x88\xa8") else 14
    ethertype, l3 = f[l2 - 2:l2], f[l2:]
    if f[6:12] != OWN_MAC:
        return True
    if ethertype == b"\x08\x00":
        return len(l3) < 20 or l3[12:16] not in OWN_IPS
    if ethertype == b"\x08\x06":
        if len(l3) < 28 or l3[:6] != b"\x00\x01\x08\x00\x06\x04" or l3[8:14] != OWN_MAC:
            return True
        return l3[14:18] != bytes(4) and l3[14:18] not in OWN_IPS
    if ethertype == b"\x86\xdd":
        if len(l3) < 40:
            return True
        if l3[8:24] == bytes(16):           # only for duplicate address detection
            icmp = icmp6_at(f, l2)
            return icmp is None or f[icmp] not in (135, 131, 143)
        return l3[8:24] not in OWN_IP6S
    return ethertype in (b"\x81\x00", b"\x88\xa8")


def upper_layer(f: bytes, l2: int) -> tuple[int, int, bool] | None:
    """(protocol, offset, later fragment) past up to 8 extension headers;
    None: a chain cut short or longer."""
    nh, off = f[l2 + 6], l2 + 40
    for _ in range(9):
        if nh not in (0, 43, 44, 51, 60):
            return nh, off, False
        if off + 8 > len(f):
            return None
        if nh == 44 and int.from_bytes(f[off + 2:off + 4], "big") & 0xFFF8:
            return f[off], off + 8, True
        step = 8 if nh == 44 else (f[off + 1] + 2) * 4 if nh == 51 else (f[off + 1] + 1) * 8
        nh, off = f[off], off + step
    return None


def icmp6_at(f: bytes, l2: int) -> int | None:
    """Where an ICMPv6 message starts, past the extension headers."""
    upper = upper_layer(f, l2)
    if upper is None or upper[0] != 58 or upper[2] or upper[1] + 4 > len(f):
        return None
    return upper[1]


def nd_spoofed_model(f: bytes) -> bool:
    """Neighbour discovery for an address or MAC not the port's own: an NA's
    target, an NS/NA/RS link-layer address option; a bad option too."""
    l2 = 18 if f[12:14] in (b"\x81\x00", b"\x88\xa8") else 14
    if f[l2 - 2:l2] != b"\x86\xdd" or len(f) < l2 + 40:
        return False
    icmp = icmp6_at(f, l2)
    if icmp is None or f[icmp] not in (133, 135, 136):
        return False
    if f[icmp] == 136 and (icmp + 24 > len(f) or f[icmp + 8:icmp + 24] not in OWN_IP6S):
        return True
    opt = icmp + (8 if f[icmp] == 133 else 24)
    end = min(len(f), l2 + 40 + int.from_bytes(f[l2 + 4:l2 + 6], "big"))
    while opt + 2 <= end:
        size = f[opt + 1] * 8
        if size == 0 or opt + size > end:
            return True
        if f[opt] in (1, 2) and (size < 8 or f[opt + 2:opt + 8] != OWN_MAC):
            return True
        opt += size
    return False


def router_message_model(f: bytes) -> bool:
    """RA guard: an IPv6 Router Advertisement (134) or Redirect (137), found
    through up to 8 extension headers; a chain cut short counts as one."""
    l2 = 18 if f[12:14] in (b"\x81\x00", b"\x88\xa8") else 14
    if f[l2 - 2:l2] != b"\x86\xdd" or len(f) < l2 + 40:
        return False
    upper = upper_layer(f, l2)
    if upper is None:
        return True
    nh, off, later = upper
    return nh == 58 and not later and (off >= len(f) or f[off] in (134, 137))


def l3_frames():
    """Frames from the secured pod's MAC (mostly), with own and other sources."""
    src_mac = st.sampled_from([OWN_MAC, mac(2)])
    ip = st.sampled_from([*OWN_IPS, bytes(4), bytes([198, 18, 0, 2])])
    ipv4 = st.builds(lambda s, a, rest: s + b"\x08\x00" + b"\x45" + bytes(11) + a + rest,
                     src_mac, ip, st.binary(min_size=0, max_size=40))
    arp = st.builds(lambda s, hw, a, rest: s + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x01"
                    + hw + a + rest, src_mac, src_mac, ip, st.binary(min_size=0, max_size=20))
    v6src = st.sampled_from([*OWN_IP6S, b"\xfe\x80" + bytes(14), bytes(16),
                             b"\x20\x01\x0d\xb8" + bytes(12)])
    next_header = st.sampled_from([0, 6, 17, 43, 44, 58, 60])
    option = st.builds(lambda kind, hw: bytes([kind, 1]) + hw, st.sampled_from([1, 2, 3]),
                       st.sampled_from([OWN_MAC, mac(2)])) | st.sampled_from([bytes(2), b"\x01"])
    nd = st.builds(lambda kind, target, opts: bytes([kind]) + bytes(3 if kind == 133 else 7) +
                   (b"" if kind == 133 else target) + b"".join(opts),
                   st.sampled_from([133, 135, 136]), st.sampled_from([*OWN_IP6S, bytes(16)]),
                   st.lists(option, max_size=3))
    ipv6 = st.builds(lambda s, nh, a, rest, plen: s + b"\x86\xdd" + b"\x60" + bytes(3)
                     + (len(rest) if plen else 0).to_bytes(2, "big") + bytes([nh, 64]) + a
                     + bytes(16) + rest, src_mac, next_header, v6src,
                     st.binary(min_size=0, max_size=30) | nd
                     | st.sampled_from([bytes([134]), bytes([137, 0]),
                                       bytes([58, 0, 0, 0, 0, 0, 0, 0, 134])]), st.booleans())
    tagged = st.builds(lambda s, t, inner: s + t + b"\x00\x05" + inner, src_mac,
                       st.sampled_from([b"\x81\x00", b"\x88\xa8"]),
                       st.sampled_from([b"\x08\x00\x45" + bytes(11) + OWN_IPS[0] + bytes(4),
                                        b"\x81\x00" + bytes(30)]))
    other = st.builds(lambda s, rest: s + rest, src_mac, st.binary(min_size=2, max_size=60))
    return st.builds(lambda dst, body: dst + body, st.just(BCAST),
                     st.one_of(ipv4, arp, ipv6, tagged, other))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(l3_frames(), min_size=1, max_size=30))
def test_port_security_matches_its_model(frames):
    rig = Rig()
    pod, other = rig.port(), rig.port()
    rig.dp.set_port_security(pod, int.from_bytes(OWN_MAC, "big"),
                             [int.from_bytes(ip, "big") for ip in OWN_IPS],
                             [int.from_bytes(ip, "big") for ip in OWN_IP6S])
    for f in frames:
        rig.send(pod, f)
    runts = [f for f in frames if len(f) < (18 if f[12:14] in (b"\x81\x00", b"\x88\xa8") else 14)]
    checked = [f for f in frames if f not in runts]
    expected = sum(spoofed_model(f) for f in checked)
    nd = sum(nd_spoofed_model(f) for f in checked if not spoofed_model(f))
    guarded = sum(router_message_model(f) for f in checked
                  if not spoofed_model(f) and not nd_spoofed_model(f))
    drops = rig.dp.counters()["drops"]
    assert (drops["spoofed_source"], drops["nd_spoofed"], drops["ra_guard"]) == \
        (expected, nd, guarded)
    assert len(rig.received(other)) == len(checked) - expected - nd - guarded


def test_neighbour_lies_behind_extension_headers_are_caught():
    """An NA claiming another's address is an NA to its receiver whatever
    options precede it: port security follows the chain to it."""
    from scapy.layers.inet6 import ICMPv6ND_NA, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import Ether
    rig = Rig()
    pod, other = rig.port(), rig.port()
    rig.dp.set_port_security(pod, int.from_bytes(OWN_MAC, "big"), [],
                             [int.from_bytes(ip, "big") for ip in OWN_IP6S])
    own = str(ipaddress.IPv6Address(OWN_IP6S[1]))
    for ext in (IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()):
        for target, lie in ((own, False), ("2001:db8::99", True)):
            rig.send(pod, bytes(Ether(src=OWN_MAC.hex(":"), dst=BCAST.hex(":")) /
                                IPv6(src=own, dst="ff02::1", hlim=255) / ext /
                                ICMPv6ND_NA(tgt=target)))
            assert (len(rig.received(other)) == 0) is lie
    assert rig.dp.counters()["drops"]["nd_spoofed"] == 2


def test_port_security_can_be_turned_off():
    rig = Rig()
    pod, other = rig.port(), rig.port()
    rig.dp.set_port_security(pod, int.from_bytes(OWN_MAC, "big"), [])
    rig.send(pod, frame(BCAST, mac(7)))
    assert rig.dp.counters()["drops"]["spoofed_source"] == 1
    rig.dp.set_port_security(pod, None)
    rig.send(pod, frame(BCAST, mac(7)))
    assert len(rig.received(other)) == 1
    with pytest.raises(ValueError):
        rig.dp.set_port_security(pod, 1, list(range(1, 10)))


def test_ingress_and_egress_rate_limits_are_token_buckets():
    rig = Rig()
    a, b = rig.port(), rig.port()
    # 8 kbit/s is 1000 bytes a second: nothing refills during the test, so
    # the burst (at least 64 KiB) decides exactly what passes.
    rig.dp.set_port_rates(a, 8000, 0, 0, 0)
    for _ in range(100):
        rig.send(a, frame(mac(2), mac(1), payload=bytes(986)))     # 1000-byte frames
    assert rig.dp.counters()["drops"]["rate_limited"] == 100 - 65
    assert len(rig.received(b)) == 65
    rig.dp.set_port_rates(a, 0, 0, 0, 0)
    rig.dp.set_port_rates(b, 0, 0, 8000, 8 * 70000)                  # 70000-byte burst
    for _ in range(100):
        rig.send(a, frame(mac(2), mac(1), payload=bytes(986)))
    assert len(rig.received(b)) == 70
    assert rig.dp.port_counters(b)["tx_dropped"] == 30
    assert rig.dp.counters()["drops"]["rate_limited"] == 35 + 30


def test_poll_serves_ready_ports_round_robin():
    """One poll() serves every ready port, `batch` frames per port per round:
    a port with a backlog cannot make the others wait behind it."""
    r = Rig(batch=2)
    busy, quiet, sink = r.port(), r.port(), r.port()
    session = r.dp.capture_add(1)                         # ingress: the order frames are read
    for _ in range(10):                                    # an AF_UNIX pair queues 10 at most
        r.pods[busy][0].send(frame(BCAST, mac(1)))
    for _ in range(2):
        r.pods[quiet][0].send(frame(BCAST, mac(2)))
    assert r.dp.poll() == 0
    order = [rec[2] for rec in r.dp.capture_read()]
    r.dp.capture_remove(session)
    assert sorted(order) == [busy] * 10 + [quiet] * 2
    assert order.index(quiet) <= 2 and order[:4].count(quiet) == 2
    assert len(r.received(sink)) >= 10                    # and everything was switched


def test_the_peer_table_holds_a_5000_node_cluster_and_finds_each_peer():
    """Peers are found through a hash index (once per datagram received):
    every one of 6,000 is found after others are forgotten and come back."""
    rig = Rig()
    peers = [address_key(f"198.19.{k // 250}.{k % 250 + 1}") for k in range(6000)]
    for ip in peers:
        rig.dp.add_peer(ip, 1)
    for ip in peers[::2]:
        assert rig.dp.remove_peer(ip)
    for ip in peers[::4]:
        rig.dp.add_peer(ip, 1)
    for k, ip in enumerate(peers):
        there = k % 2 == 1 or k % 4 == 0
        if there:
            rig.dp.fdb_add_remote(1, 0x020000000000 + k, ip)
        else:
            with pytest.raises(KeyError):
                rig.dp.fdb_add_remote(1, 0x020000000000 + k, ip)
    assert len(rig.dp.peer_list()) == 4500


def test_removing_a_network_forgets_its_peers_and_their_entries_only():
    rig = Rig()
    only1 = [address_key(f"198.19.1.{k}") for k in range(1, 200)]
    both = address_key("198.19.2.1")
    for ip in only1:
        rig.dp.add_peer(ip, 1)
    rig.dp.add_peer(both, 1)
    rig.dp.add_peer(both, 2)
    rig.dp.fdb_add_remote(1, 0x020000000001, only1[0])
    rig.dp.fdb_add_remote(2, 0x020000000002, both)
    rig.dp.remove_network(1)
    assert [p[0] for p in rig.dp.peer_list()] == [both]
    assert rig.dp.peer_list()[0][1] == [2]
    assert rig.dp.fdb_lookup(2, 0x020000000002) >= 0
    rig.dp.set_network(1, 101, 1500)
    rig.dp.add_peer(only1[5], 1)            # the index finds peers added after
    assert rig.dp.peer_list(only1[5])[0][1] == [1]
