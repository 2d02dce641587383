"""A data plane on socketpairs, for the tests that drive the C code
directly: AF_UNIX datagram sockets keep message boundaries like a TAP's, so
every frame shape can be written in, and no root is needed."""

from __future__ import annotations

import socket
import struct
import time

from scapy.layers.inet import IP, TCP

from vswitch.datapath import new_datapath

BCAST = b"\xff" * 6
# The daemon's settings, but for what would stand in the way of tests of
# other rules: no FDB limit per port or peer, no share of conntrack per pod,
# no busy polling, one worker and no thread (a rig drains by hand).
RIG_SETTINGS = {"fdb_max_per_port": 0, "fdb_max_per_peer": 0, "conntrack_max_per_pod": 0,
                "busy_poll_us": 0, "workers": 1}


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, n >> 8, n & 0xFF])


def frame(dst: bytes, src: bytes, payload=b"\x00" * 46, ethertype=b"\x08\x00") -> bytes:
    return dst + src + ethertype + payload


def ones_sum(data: bytes) -> int:
    """The folded ones'-complement sum of 16-bit words (RFC 1071): the tests'
    reference for the Internet checksum, independent of the C code's."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes) -> int:
    """The Internet checksum of data, as stored in a header."""
    return ~ones_sum(data) & 0xFFFF


class Rig:
    """A Datapath with socketpair ports; `pod` ends are where frames go in/out.

    workers > 1: each port has a queue (socketpair) per worker, the workers'
    threads run, and send() waits until the frame has been switched (close()
    stops them; start=False: the caller starts them). With one worker the
    rig drains by hand."""

    def __init__(self, mtu=1500, workers=1, start=True, **kw):
        self.dp = new_datapath(**{**RIG_SETTINGS, **kw, "workers": workers})
        for network in (1, 2):
            self.dp.set_network(network, 100 + network, mtu)
        self.pods: dict[int, list[socket.socket]] = {}
        self._next = 0
        if workers > 1 and start:
            self.dp.start()

    def port(self, network=1, vnet_hdr=False, router=False) -> int:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
                 for _ in range(self.dp.n_workers)]
        for sw, pod in pairs:
            sw.setblocking(False)
            pod.setblocking(False)
        pid = self.dp.add_port([sw.fileno() for sw, _ in pairs], network, vnet_hdr, router)
        for sw, _ in pairs:
            sw.close()                      # the data plane holds its own copies
        self.pods[pid] = [pod for _, pod in pairs]
        return pid

    def send(self, pid: int, data: bytes, queue: int | None = None):
        """Into one of the port's queues (None: each in turn)."""
        queues = self.pods[pid]
        if queue is None:
            queue, self._next = self._next % len(queues), self._next + 1
        if not self.dp.running:
            queues[queue].send(data)
            while self.dp.drain(pid) > 0:
                pass
            return
        done = self.switched() + 1
        queues[queue].send(data)
        deadline = time.monotonic() + 5
        while self.switched() < done:
            assert time.monotonic() < deadline, "the frame was not switched"
            time.sleep(0.0002)

    def switched(self) -> int:
        return sum(w["frames"] for w in self.dp.worker_counters())

    def received(self, pid: int) -> list[bytes]:
        out = []
        for q in self.pods[pid]:
            while True:
                try:
                    out.append(q.recv(70000))
                except BlockingIOError:
                    break
        return out

    def close(self):
        self.dp.stop()


# virtio_net_hdr (offload ports)
NEEDS_CSUM, DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_UDP_L4 = 0, 1, 5


def ip4_l4(proto: int, size: int) -> bytes:
    """An IPv4 packet body for offload headers to point at: a 20-byte IPv4
    header with `proto`, a TCP (6, data offset 5) or UDP (17) header, zeros."""
    l4 = b"\0" * 12 + b"\x50" + b"\0" * 7 if proto == 6 else bytes(8)
    return (b"\x45" + bytes(8) + bytes([proto]) + bytes(10) + l4).ljust(size, b"\0")


def vnet(flags=0, gso=GSO_NONE, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0) -> bytes:
    return struct.pack("<BBHHHH", flags, gso, hdr_len, gso_size, csum_start, csum_offset)


def partial(pkt, l4):
    """pkt as a sending stack hands it over with checksum offload: the L4
    checksum field holds only the (uncomplemented) pseudo-header sum."""
    ip = pkt[IP]
    l4_len = len(ip) - ip.ihl * 4
    pseudo = socket.inet_aton(ip.src) + socket.inet_aton(ip.dst) + struct.pack("!BBH", 0, ip.proto,
                                                                               l4_len)
    raw = bytearray(bytes(pkt))
    start = 14 + ip.ihl * 4
    field = start + (16 if l4 is TCP else 6)
    raw[field:field + 2] = struct.pack("!H", ones_sum(pseudo))
    return bytes(raw), start, field - start
