"""Frames with a virtio_net_hdr (IFF_VNET_HDR ports): pass-through between
offload ports, checksum completion and refusals towards plain ports."""

from __future__ import annotations

import pytest
from datapath_rig import (
    BCAST,
    GSO_NONE,
    GSO_TCPV4,
    NEEDS_CSUM,
    Rig,
    frame,
    ip4_l4,
    mac,
    partial,
    vnet,
)
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether


def test_header_and_frame_pass_unchanged_between_offload_ports():
    r = Rig()
    a, b = r.port(vnet_hdr=True), r.port(vnet_hdr=True)
    superframe = vnet(NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16) + frame(BCAST, mac(1), ip4_l4(6, 9001))
    r.send(a, superframe)
    assert r.received(b) == [superframe]
    assert r.dp.port_counters(b)["tx_bytes"] == len(superframe) - 10


def test_plain_port_frames_get_an_empty_header():
    r = Rig()
    a, b = r.port(), r.port(vnet_hdr=True)
    f = frame(BCAST, mac(1))
    r.send(a, f)
    assert r.received(b) == [bytes(10) + f]


@pytest.mark.parametrize("l4", [TCP, UDP])
def test_partial_checksum_is_completed_towards_a_plain_port(l4):
    pkt = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01") / \
        IP(src="198.18.0.1", dst="198.18.0.2") / l4(sport=1234, dport=80) / (b"payload!" * 37 + b"x")
    good = bytes(Ether(bytes(pkt)))                       # scapy fills in the checksums
    raw, start, offset = partial(Ether(good), l4)
    assert raw != good
    r = Rig()
    a, b, c = r.port(vnet_hdr=True), r.port(), r.port(vnet_hdr=True)
    r.send(a, vnet(NEEDS_CSUM, GSO_NONE, 0, 0, start, offset) + raw)
    assert r.received(b) == [good]
    # The offload port got it too, either still partial or completed and
    # marked so: in both cases a receiver ends up with the right checksum.
    (copy,) = r.received(c)
    assert copy[10:] in (raw, good)


def test_superframe_towards_a_plain_port_is_dropped_and_counted():
    r = Rig()
    a, plain, offload = r.port(vnet_hdr=True), r.port(), r.port(vnet_hdr=True)
    r.send(a, vnet(NEEDS_CSUM, GSO_TCPV4, 66, 1448, 34, 16) + frame(BCAST, mac(1), ip4_l4(6, 5000)))
    assert r.received(plain) == [] and len(r.received(offload)) == 1
    assert r.dp.counters()["drops"]["needs_segmentation"] == 1
    assert r.dp.port_counters(plain)["tx_dropped"] == 1


@pytest.mark.parametrize("header,reason", [
    (vnet(NEEDS_CSUM, GSO_NONE, 0, 0, 60, 16), "bad_vnet_hdr"),     # field past the end
    (vnet(0, 9), "bad_vnet_hdr"),                                    # unknown GSO type
    (vnet(0, GSO_TCPV4, 66, 1448), "bad_vnet_hdr"),                  # GSO without NEEDS_CSUM
    (vnet(NEEDS_CSUM, GSO_TCPV4, 66, 1600, 34, 16), "oversize"),     # segments above the MTU
    (b"\0" * 5, "runt"),                                             # not even a header
])
def test_bad_offload_headers_are_dropped(header, reason):
    r = Rig()
    a, b = r.port(vnet_hdr=True), r.port(vnet_hdr=True)
    r.send(a, header + (frame(BCAST, mac(1), ip4_l4(6, 46)) if len(header) == 10 else b""))
    assert r.received(b) == []
    assert r.dp.counters()["drops"][reason] == 1


@pytest.mark.parametrize("ethertype,body,start,offset", [
    (b"\x08\x00", ip4_l4(6, 60), 14 + 12, 0),        # aimed at the IPv4 source address
    (b"\x08\x00", ip4_l4(6, 60), 14 + 20, 4),        # at the TCP sequence number
    (b"\x08\x00", ip4_l4(17, 60), 14 + 20, 16),      # UDP with TCP's checksum offset
    (b"\x08\x00", ip4_l4(1, 60), 14 + 20, 2),        # ICMP: not a checksum offload
    (b"\x08\x06", bytes(28), 14 + 12, 2),            # ARP: the sender address
    (b"\x86\xdd", b"\x60" + bytes(5) + b"\x06" + bytes(33) + bytes(40), 14 + 8, 2),
])
def test_partial_checksum_aimed_elsewhere_is_dropped(ethertype, body, start, offset):
    """Completing a checksum writes where csum_start + csum_offset point,
    after port security checked the frame: only a TCP or UDP checksum field
    may be the target, anything else is a bad header."""
    r = Rig()
    a, b, plain = r.port(vnet_hdr=True), r.port(vnet_hdr=True), r.port()
    r.send(a, vnet(NEEDS_CSUM, GSO_NONE, 0, 0, start, offset) + frame(BCAST, mac(1), body, ethertype))
    assert r.received(b) == [] and r.received(plain) == []
    assert r.dp.counters()["drops"]["bad_vnet_hdr"] == 1
