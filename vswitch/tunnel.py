"""The VXLAN tunnel's sockets. Receiving: a UDP socket bound to the VTEP
address and port, drained with recvmmsg. Sending: a raw IPPROTO_UDP socket
bound to the VTEP address, because the data plane writes the UDP header
itself (the source port carries a hash of the inner flow, RFC 7348 5);
the kernel adds the IPv4 header."""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

SOCKET_BUFFER = 8 << 20      # room for bursts; *FORCE because we are root
# A classic BPF program of one instruction, "return 0": the raw socket would
# otherwise get a copy of every UDP datagram the node receives.
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)
SO_ATTACH_FILTER = 26
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33          # asm-generic/socket.h; not in Python's socket


def ip_to_int(ip) -> int:
    """IPv4 address as the data plane holds it (network byte order in memory)."""
    return struct.unpack("=I", ipaddress.IPv4Address(ip).packed)[0]


def ip_str(value: int) -> str:
    return str(ipaddress.IPv4Address(struct.pack("=I", value)))


class Tunnel:
    def __init__(self, vtep_ip: ipaddress.IPv4Address, udp_port: int):
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        try:
            self.rx.bind((str(vtep_ip), udp_port))
            self.tx.bind((str(vtep_ip), 0))
            _attach_drop_all(self.tx)
            self.rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER)
            self.tx.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SOCKET_BUFFER)
            self.rx.setblocking(False)
            self.tx.setblocking(False)
        except OSError:
            self.close()
            raise

    def close(self):
        self.rx.close()
        self.tx.close()


def _attach_drop_all(sock: socket.socket):
    insn = ctypes.create_string_buffer(_DROP_ALL, len(_DROP_ALL))
    prog = struct.pack("HL", 1, ctypes.addressof(insn))      # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
