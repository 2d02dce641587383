"""Capture files that tcpdump, tshark and Wireshark read: pcapng (one
interface per port and capture point, the drop reason as a packet comment,
the direction as a flag) or classic pcap. Ethernet link type throughout;
captured VXLAN packets carry a synthesized outer Ethernet header."""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
# epb_flags direction bits: 01 inbound, 10 outbound.
INBOUND, OUTBOUND = 1, 2
DIRECTION = {"ingress": INBOUND, "decap": INBOUND, "egress": OUTBOUND, "encap": OUTBOUND}


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


class PcapngWriter:
    def __init__(self, out: BinaryIO, snaplen: int = 65535):
        self.out, self.snaplen = out, snaplen
        self.interfaces: dict[str, int] = {}
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + \
            _option(4, b"vswitch") + _option(0, b"")          # shb_userappl, end
        self.out.write(_block(0x0A0D0D0A, shb))

    def _interface(self, name: str) -> int:
        if name not in self.interfaces:
            # if_name, if_tsresol = 9 (nanoseconds), end of options.
            idb = struct.pack("<HHI", LINKTYPE_ETHERNET, 0, self.snaplen) + \
                _option(2, name.encode()) + _option(9, b"\x09") + _option(0, b"")
            self.out.write(_block(1, idb))
            self.interfaces[name] = len(self.interfaces)
        return self.interfaces[name]

    def write(self, ts_ns: int, port: str, point: str, data: bytes, orig_len: int,
              reason: str | None = None):
        iface = self._interface(f"{port}/{point}")
        options = b""
        if reason:
            options += _option(1, f"drop: {reason}".encode())           # opt_comment
        if point in DIRECTION:
            options += _option(2, struct.pack("<I", DIRECTION[point]))   # epb_flags
        if options:
            options += _option(0, b"")
        body = struct.pack("<IIIII", iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(data), orig_len)
        self.out.write(_block(6, body + data + b"\0" * (-len(data) % 4) + options))


class PcapWriter:
    """Classic pcap (nanosecond timestamps): no interfaces, no comments."""

    def __init__(self, out: BinaryIO, snaplen: int = 65535):
        self.out = out
        self.out.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))

    def write(self, ts_ns: int, port: str, point: str, data: bytes, orig_len: int,
              reason: str | None = None):
        self.out.write(struct.pack("<IIII", ts_ns // 10**9, ts_ns % 10**9, len(data), orig_len))
        self.out.write(data)
