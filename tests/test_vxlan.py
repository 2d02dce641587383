"""The data plane's VXLAN path on its own: a Datapath with socketpair ports
and real tunnel sockets on the loopback of a namespace made for the test;
a "peer" is a UDP socket bound to another loopback address."""

from __future__ import annotations

import socket
import struct

import pytest
from conftest import in_ns
from datapath_rig import (
    BCAST,
    GSO_UDP_L4,
    NEEDS_CSUM,
    Rig,
    checksum,
    frame,
    ip4_l4,
    mac,
    partial,
    vnet,
)

from vswitch.datapath import address_key
from vswitch.encap import VXLAN
from vswitch.netns import entered
from vswitch.tunnel import Tunnel

PORT = 4789


class OverlayRig(Rig):
    def __init__(self, ns: str, underlay_mtu=1500, mtu=1450, **kw):
        super().__init__(mtu=mtu, **kw)
        with entered(ns):
            self.tunnel = Tunnel("127.0.0.1", PORT)
            self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.2", PORT))
        self.peer.settimeout(0.2)
        self.dp.set_tunnel([s.fileno() for s in self.tunnel.rx], self.tunnel.senders(), PORT, underlay_mtu,
                           VXLAN.outer_overhead(4), False, 0, 64)
        self.dp.add_peer(address_key("127.0.0.2"), 1)

    def from_peer(self, data: bytes):
        self.peer.sendto(data, ("127.0.0.1", PORT))
        while self.dp.drain_tunnel() > 0:
            pass

    def at_peer(self) -> list[tuple[bytes, int]]:
        """(UDP payload, source port) of what reached the peer."""
        out = []
        try:
            while True:
                data, (_, sport) = self.peer.recvfrom(70000)
                out.append((data, sport))
        except socket.timeout:
            return out


@pytest.fixture
def rig(netns):
    ns = netns("lo")
    in_ns(ns, "ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
    rigs = []

    def make(**kw):
        rigs.append(OverlayRig(ns, **kw))
        return rigs[-1]

    yield make
    for r in rigs:
        r.tunnel.close()
        r.peer.close()


def header(vni: int) -> bytes:
    return b"\x08\0\0\0" + vni.to_bytes(3, "big") + b"\0"


def test_flood_is_encapsulated_with_the_networks_vni(rig):
    r = rig()
    a = r.port(network=1)
    f = frame(BCAST, mac(1))
    r.send(a, f)
    ((payload, sport),) = r.at_peer()
    assert payload == header(101) + f
    assert 49152 <= sport <= 65535
    assert r.dp.counters()["tunnel"]["tx_packets"] == 1


def test_source_port_follows_the_inner_flow(rig):
    r = rig()
    a = r.port()
    flow = lambda sp: bytes.fromhex("ffffffffffff020000000001") + b"\x08\x00" + \
        bytes.fromhex("450000280000400040110000c6120001c6120002") + struct.pack("!HH", sp, 53) + bytes(4)  # noqa: E731
    for sp in (1000, 1000, 2000):
        r.send(a, flow(sp))
    ports = [s for _, s in r.at_peer()]
    assert ports[0] == ports[1] and len(set(ports)) == 2


def test_decap_learns_the_peer_and_unicast_goes_back_to_it(rig):
    r = rig()
    a, b = r.port(), r.port()
    r.from_peer(header(101) + frame(BCAST, mac(9)))
    assert len(r.received(a)) == 1 and len(r.received(b)) == 1
    assert r.at_peer() == []                                 # split horizon: not back out
    r.send(a, frame(mac(9), mac(1)))
    ((payload, _),) = r.at_peer()
    assert payload == header(101) + frame(mac(9), mac(1))
    assert r.received(b) == []
    (entry,) = [e for e in r.dp.fdb_entries() if e[1] == "02:00:00:00:00:09"]
    assert entry[2] is None and entry[3] == address_key("127.0.0.2")


def test_frame_for_a_remote_mac_from_the_tunnel_is_not_sent_back(rig):
    r = rig()
    a = r.port()
    r.from_peer(header(101) + frame(BCAST, mac(9)))
    r.received(a)
    r.from_peer(header(101) + frame(mac(9), mac(8)))          # dst lives behind the tunnel
    assert r.at_peer() == [] and r.received(a) == []
    assert r.dp.counters()["drops"]["loop"] == 1


def test_partial_checksum_is_completed_before_encapsulation(rig):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    good = bytes(Ether(bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:01") /
                             IP(src="198.18.0.1", dst="198.18.0.2") / TCP() / (b"z" * 300))))
    raw, start, offset = partial(Ether(good), TCP)
    r = rig()
    a = r.port(vnet_hdr=True)
    r.send(a, vnet(NEEDS_CSUM, 0, 0, 0, start, offset) + raw)
    ((payload, _),) = r.at_peer()
    assert payload == header(101) + good


def test_superframes_and_oversize_frames_do_not_enter_the_tunnel(rig):
    r = rig(underlay_mtu=1500, mtu=1500)
    a = r.port(vnet_hdr=True)
    # A UDP superframe: the tunnel path cuts only TCP ones.
    r.send(a, vnet(NEEDS_CSUM, GSO_UDP_L4, 42, 1400, 34, 6) + frame(BCAST, mac(1), ip4_l4(17, 3001)))
    r.send(a, vnet() + frame(BCAST, mac(1), bytes(1500)))    # 1514 + 36 > 1500
    r.send(a, vnet() + frame(BCAST, mac(1), bytes(1450)))    # 1464 + 36 = 1500 fits
    assert [len(p) for p, _ in r.at_peer()] == [8 + 1464]
    drops = r.dp.counters()["drops"]
    assert (drops["needs_segmentation"], drops["too_big"]) == (1, 1)
    assert r.dp.peer_list()[0][2]["tx_dropped"] == 2


def test_peer_membership_decides_replication(rig):
    r = rig()
    a, x = r.port(network=1), r.port(network=2)
    r.send(x, frame(BCAST, mac(5)))                          # network 2 has no peer
    assert r.at_peer() == []
    assert r.dp.counters()["drops"]["no_route"] == 1
    r.dp.remove_peer(address_key("127.0.0.2"), 1)
    r.send(a, frame(BCAST, mac(1)))
    assert r.at_peer() == [] and r.dp.peer_list() == []


def test_fuzzed_datagrams_are_all_accounted_for(rig):
    """Random and mangled VXLAN from the peer: no crash, every datagram
    counted once (delivered, flooded or dropped by reason)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    r = rig()
    a, b = r.port(), r.port()
    valid = header(101) + frame(BCAST, mac(7))
    datagrams = st.one_of(
        st.binary(max_size=1600),
        st.builds(lambda cut: valid[:cut], st.integers(0, len(valid))),
        st.builds(lambda i, v: valid[:i] + bytes([v]) + valid[i + 1:], st.integers(0, 7),
                  st.integers(0, 255)))
    sent = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(datagrams)
    def send(data):
        r.from_peer(data)
        r.received(a), r.received(b)
        sent.append(data)

    send()
    c = r.dp.counters()
    assert c["tunnel"]["rx_packets"] == len(sent)
    # Every reason but those counted per copy on the way out (a mutated VNI
    # may name network 2, which the peer is no member of: peer_not_member).
    per_copy = {"needs_segmentation", "too_big", "port_down", "queue_full", "write_error"}
    ingress = sum(v for k, v in c["drops"].items() if k not in per_copy)
    assert c["unicast"] + c["flooded"] + ingress == len(sent)
    assert c["drops"]["bad_vxlan"] >= sum(1 for d in sent if len(d) < 8)
    r.from_peer(valid)                                       # still switching
    assert len(r.received(a)) == 1


@pytest.mark.parametrize("version", [4, 6])
def test_tcp_superframe_is_cut_into_valid_segments(rig, version):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    data = bytes(range(256)) * 20 + b"tail!"                  # 5125 bytes
    l3 = IP(src="198.18.0.1", dst="198.18.0.2", id=1000) if version == 4 else \
        IPv6(src="2001:db8::1", dst="2001:db8::2")
    pkt = Ether(dst="02:00:00:00:00:09", src="02:00:00:00:00:01") / l3 / \
        TCP(sport=40000, dport=80, seq=123456, flags="PAF", options=[("NOP", None)] * 4) / data
    raw = bytearray(bytes(pkt))
    l4 = 14 + (20 if version == 4 else 40)
    raw[l4 + 16:l4 + 18] = b"\x12\x34"        # a partial checksum: must be recomputed anyway
    if version == 4:
        raw[16:18] = b"\xff\xff"              # the stack leaves the total length to us
    gso_size = 1400 if version == 4 else 1380     # headers + segment + 36 must fit 1500
    r = rig()
    a = r.port(vnet_hdr=True)
    r.send(a, vnet(NEEDS_CSUM, 1 if version == 4 else 4, 0, gso_size, l4, 16) + bytes(raw))
    got = r.at_peer()
    assert len(got) == 4 and len({sport for _, sport in got}) == 1
    payload = b""
    for i, (datagram, _) in enumerate(got):
        assert datagram[:8] == header(101)
        seg = Ether(datagram[8:])
        tcp = seg[TCP]
        assert tcp.seq == 123456 + i * gso_size
        assert str(tcp.flags) == ("FPA" if i == 3 else "A")
        chunk = bytes(tcp.payload)
        assert len(chunk) == (gso_size if i < 3 else len(data) - 3 * gso_size)
        payload += chunk
        again = seg.copy()
        del again[TCP].chksum
        if version == 4:
            assert seg[IP].id == 1000 + i and seg[IP].len == 20 + 24 + len(chunk)
            del again[IP].chksum, again[IP].len
        else:
            assert seg[IPv6].plen == 24 + len(chunk)
        rebuilt = Ether(bytes(again))
        assert rebuilt[TCP].chksum == tcp.chksum             # checksums are right
        if version == 4:
            assert rebuilt[IP].chksum == seg[IP].chksum
    assert payload == data
    assert r.dp.counters()["drops"]["needs_segmentation"] == 0


def tcp_segments(count, mss=1000, first_seq=5000, flags="A", bad=None, ipv6=False):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    out = []
    for i in range(count):
        ip = IPv6(src="2001:db8::9", dst="2001:db8::1") if ipv6 else \
            IP(src="198.18.0.9", dst="198.18.0.1", id=100 + i)
        seg = Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:09") / ip / \
            TCP(sport=5201, dport=40000, seq=first_seq + i * mss, ack=77, flags=flags,
                options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / \
            (bytes([i % 256]) * mss)
        raw = bytearray(bytes(seg))
        if i == bad:
            raw[-1] ^= 0xFF                   # payload no longer matches its checksum
        out.append(bytes(raw))
    return out


def gro_rig(rig):
    r = rig()
    a = r.port(vnet_hdr=True)
    r.send(a, vnet() + frame(BCAST, mac(1)))                  # the pod's MAC is learned
    r.at_peer()
    return r, a


def deliver_batch(r, datagrams):
    """All datagrams wait in the socket, then one drain: one recvmmsg batch."""
    for d in datagrams:
        r.peer.sendto(header(101) + d, ("127.0.0.1", PORT))
    r.dp.drain_tunnel()


def test_gro_merges_a_train_of_segments_into_one_superframe(rig):
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    r, a = gro_rig(rig)
    segs = tcp_segments(5)
    deliver_batch(r, segs)
    (got,) = r.received(a)
    flags, gso, hdr_len, gso_size, start, offset = struct.unpack("<BBHHHH", got[:10])
    assert (flags, gso, hdr_len, gso_size, start, offset) == (NEEDS_CSUM, 1, 66, 1000, 34, 16)
    superframe = bytearray(got[10:])
    # Complete the partial checksum as the pod's kernel may: the result must verify.
    superframe[50:52] = struct.pack("!H", checksum(bytes(superframe[34:])))
    pkt = Ether(bytes(superframe))
    assert pkt[IP].len == 20 + 32 + 5000
    assert bytes(pkt[TCP].payload) == b"".join(bytes([i]) * 1000 for i in range(5))
    assert pkt[TCP].seq == 5000
    check = pkt.copy()
    del check[TCP].chksum, check[IP].chksum
    rebuilt = Ether(bytes(check))
    assert (rebuilt[TCP].chksum, rebuilt[IP].chksum) == (pkt[TCP].chksum, pkt[IP].chksum)
    assert r.dp.gro_merged == 5
    assert r.dp.port_counters(a)["tx_packets"] == 1           # one write for five segments


def test_gro_merges_ipv6_segments_too(rig):
    from scapy.layers.inet import TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether
    r, a = gro_rig(rig)
    deliver_batch(r, tcp_segments(4, ipv6=True) + tcp_segments(1, first_seq=1, ipv6=True))
    first, other = r.received(a)
    flags, gso, hdr_len, gso_size, start, offset = struct.unpack("<BBHHHH", first[:10])
    assert (flags, gso, hdr_len, gso_size, start, offset) == (NEEDS_CSUM, 4, 86, 1000, 54, 16)
    superframe = bytearray(first[10:])
    pseudo = bytes(superframe[22:54]) + struct.pack("!IxxxB", len(superframe) - 54, 6)
    superframe[70:72] = struct.pack("!H", checksum(pseudo + bytes(superframe[54:70]) + b"\0\0"
                                                   + bytes(superframe[72:])))
    pkt = Ether(bytes(superframe))
    assert pkt[IPv6].plen == 32 + 4000 and pkt[TCP].seq == 5000
    assert bytes(pkt[TCP].payload) == b"".join(bytes([i]) * 1000 for i in range(4))
    check = pkt.copy()
    del check[TCP].chksum
    assert Ether(bytes(check))[TCP].chksum == pkt[TCP].chksum
    assert Ether(other[10:])[TCP].seq == 1                    # another train: not merged
    assert r.dp.gro_merged == 4


@pytest.mark.parametrize("case,expected", [
    ("bad_checksum", [1000, 1000, 1000]),     # the broken one is passed on alone, unmerged
    ("out_of_order", [2000, 1000]),           # a gap in the sequence ends the train
    ("push", [2000, 1000]),                   # PSH ends the train after that segment
    ("syn", [1000, 1000, 1000]),              # only ACK/PSH segments are merged
])
def test_gro_merges_only_what_continues_the_flow(rig, case, expected):
    r, a = gro_rig(rig)
    if case == "bad_checksum":
        segs = tcp_segments(3, bad=1)
    elif case == "out_of_order":
        segs = tcp_segments(4)
        segs = segs[:2] + segs[3:]
    elif case == "push":
        segs = tcp_segments(2, flags="PA") + tcp_segments(1, first_seq=7000)
        segs = [tcp_segments(2)[0], segs[1], segs[2]]
    else:
        segs = tcp_segments(3, flags="SA")
    deliver_batch(r, segs)
    got = r.received(a)
    payloads = [len(g) - 10 - 66 for g in got]
    assert payloads == expected
