"""The VXLAN tunnel's sockets, a set per forwarding thread.

Receiving: one UDP socket per worker bound to the VTEP address and port
(SO_REUSEPORT: the kernel spreads datagrams over them by a hash of their
addresses and ports, and the outer source port carries each inner flow's
hash, so flows spread over workers and each keeps to one), drained with
recvmmsg, with UDP_GRO on, so a burst of equal-size datagrams of one flow
arrives as one buffer.

Sending: a small pool of UDP sockets bound to the VTEP address at source
ports in 49152-65535. The data plane picks one by a hash of the inner flow
(RFC 7348 5: the source port carries the flow's entropy, so the underlay
can spread flows; one flow always keeps one port) and sends with UDP_SEGMENT
(UDP GSO): the VXLAN datagrams cut from one TCP superframe leave in one
sendmsg and travel the underlay stack as one packet. Only a UDP socket can
do that, hence a pool of them rather than a raw socket that writes its own
UDP header. The kernel fills in the outer UDP checksum (RFC 7348 allows
zero, but UDP GSO needs it)."""

from __future__ import annotations

import ctypes
import ipaddress
import random
import socket
import struct

from . import protocol

SOCKET_BUFFER = 8 << 20      # room for bursts; *FORCE because we are root
SENDERS = 16                 # source ports: enough for the underlay to spread flows
SPORT_MIN, SPORT_MAX = 49152, 65535
# A classic BPF program of one instruction, "return 0": the senders are bound
# to a port, and must not queue what anyone sends to it.
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)
SO_ATTACH_FILTER = 26
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33          # asm-generic/socket.h; not in Python's socket


class Tunnel:
    def __init__(self, vtep_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
                 udp_port: int, workers: int = 1):
        vtep_ip = ipaddress.ip_address(vtep_ip)
        self.family = socket.AF_INET if vtep_ip.version == 4 else socket.AF_INET6
        self.rx: list[socket.socket] = []
        self.tx: list[socket.socket] = []
        self.workers = workers
        try:
            for _ in range(workers):
                rx = socket.socket(self.family, socket.SOCK_DGRAM)
                self.rx.append(rx)
                rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                rx.bind((str(vtep_ip), udp_port))
                rx.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SOCKET_BUFFER)
                rx.setsockopt(socket.SOL_UDP, protocol.UDP_GRO, 1)
                rx.setblocking(False)
            self._bind_senders(str(vtep_ip), SENDERS * workers)
        except OSError:
            self.close()
            raise

    def _bind_senders(self, vtep_ip: str, count: int):
        """count sockets on free ports of 49152-65535, from a random start."""
        start = random.randrange(SPORT_MIN, SPORT_MAX + 1)
        span = SPORT_MAX - SPORT_MIN + 1
        for i in range(span):
            if len(self.tx) == count:
                return
            port = SPORT_MIN + (start - SPORT_MIN + i * 997) % span     # 997: spread, coprime
            sock = socket.socket(self.family, socket.SOCK_DGRAM)
            try:
                sock.bind((vtep_ip, port))
            except OSError:
                sock.close()
                continue
            self.tx.append(sock)
            _attach_drop_all(sock)
            sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, SOCKET_BUFFER // 4)
            sock.setblocking(False)
        if not self.tx:
            raise OSError(98, "no free UDP source port in 49152-65535")

    def senders(self) -> list[list[tuple[int, int]]]:
        """Per worker, (fd, source port) of each of its sending sockets,
        for the data plane."""
        each = max(len(self.tx) // self.workers, 1)
        pool = [(s.fileno(), s.getsockname()[1]) for s in self.tx]
        return [pool[k * each:(k + 1) * each] or pool for k in range(self.workers)]

    def close(self):
        for s in self.rx + self.tx:
            s.close()


def _attach_drop_all(sock: socket.socket):
    insn = ctypes.create_string_buffer(_DROP_ALL, len(_DROP_ALL))
    prog = struct.pack("HL", 1, ctypes.addressof(insn))      # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
