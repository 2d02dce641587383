"""Frames (with and without virtio_net headers) from pod ports, and VXLAN
datagrams from a peer and from a stranger, into the data plane."""

import atheris
from rig import FuzzRig

rig: FuzzRig


def setup():
    global rig
    rig = FuzzRig()


def one_input(data: bytes):
    fdp = atheris.FuzzedDataProvider(data)
    kind = fdp.ConsumeIntInRange(0, 3)
    index = fdp.ConsumeIntInRange(0, 7)
    payload = fdp.ConsumeBytes(70000)
    if kind < 2:
        rig.from_port(index, payload)
    else:
        rig.from_underlay(index, payload, learn=kind == 3)
    rig.flush()
    if index == 7:
        rig.dp.policy_changed()         # every connection is checked again
        rig.dp.conntrack_expire(64)


def seeds() -> list[bytes]:
    """Well-formed inputs for the mutations to start from: kind, index, then
    a frame (a virtio_net_hdr first on offload ports 0, 2, 4) or a datagram."""
    import struct
    eth = bytes.fromhex("ffffffffffff020000000001")
    ip_tcp = bytes.fromhex("4500003c00010000400600000a0000010a000002") + \
        bytes.fromhex("04d2005000000001000000005010ffff00000000") + bytes(20)
    partial = struct.pack("<BBHHHH", 1, 0, 0, 0, 34, 16)
    tso = struct.pack("<BBHHHH", 1, 1, 54, 1448, 34, 16)
    arp = bytes.fromhex("0001080006040001") + bytes.fromhex("020000000001") + bytes(4) + bytes(10)
    ra = bytes.fromhex("6000000000103aff") + bytes.fromhex("fe80" + "00" * 14) + \
        bytes.fromhex("ff02" + "00" * 13 + "01") + bytes([134, 0, 0, 0]) + bytes(12)
    # IPv6 TCP behind a hop-by-hop header, and an ICMPv6 error quoting it.
    src6, dst6 = bytes.fromhex("20010db8" + "00" * 11 + "01"), bytes.fromhex("20010db8" + "00" * 11 + "02")

    def ip6(next_header: int, src: bytes, dst: bytes, payload: bytes) -> bytes:
        return struct.pack("!IHBB", 0x60000000, len(payload), next_header, 64) + src + dst + payload
    ip6_tcp = ip6(0, src6, dst6, bytes.fromhex("0600010400000000") + ip_tcp[20:40])
    icmp6_error = ip6(58, dst6, src6, bytes([1, 4]) + bytes(6) + ip6_tcp)
    vxlan = bytes.fromhex("0800000000006500")
    return [bytes([0, 0]) + partial + eth + b"\x08\x00" + ip_tcp,
            bytes([0, 2]) + tso + eth + b"\x08\x00" + ip_tcp + bytes(3000),
            bytes([1, 1]) + eth + b"\x08\x06" + arp,
            bytes([0, 3]) + eth + b"\x86\xdd" + ra,
            bytes([0, 3]) + eth + b"\x86\xdd" + ip6_tcp,
            bytes([1, 1]) + eth + b"\x86\xdd" + icmp6_error,
            bytes([2, 0]) + vxlan + eth + b"\x08\x00" + ip_tcp,
            bytes([3, 1]) + vxlan + eth + b"\x08\x06" + arp]
