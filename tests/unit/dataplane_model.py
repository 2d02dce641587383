"""Two implementations of one switch for the same tests: the C data plane
on socketpairs (no root, no TAPs), and a Python model of the rules it
follows (SPEC §3: check, learn, look up, deliver). A test that passes on
both pins the behaviour; one that passes on the model only points at the C
code, and the other way round at the model."""

from __future__ import annotations

import socket

from vswitch.datapath import Datapath
from vswitch.protocol import ETH_HLEN

BROADCAST = b"\xff" * 6


class CSwitch:
    """The real data plane; each port is a socketpair whose outer end is the pod."""

    def __init__(self, aging_time: float = 300.0):
        self.dp = Datapath(fdb_max_entries=1024, aging_time=aging_time, batch=16)
        self.pods: dict[int, socket.socket] = {}
        self._inner: list[socket.socket] = []

    def add_network(self, net_id: int, vni: int, mtu: int):
        self.dp.set_network(net_id, vni, mtu)

    def add_port(self, net_id: int) -> int:
        inner, outer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (inner, outer):
            s.setblocking(False)
        port = self.dp.add_port(inner.fileno(), net_id)
        self.pods[port] = outer
        self._inner.append(inner)
        return port

    def send(self, port: int, frame: bytes):
        self.pods[port].send(frame)
        self.dp.drain(port)

    def received(self, port: int) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.pods[port].recv(65536))
            except BlockingIOError:
                return out

    def counters(self) -> dict:
        c = self.dp.counters()
        return {"unicast": c["unicast"], "flooded": c["flooded"],
                "drops": {k: v for k, v in c["drops"].items() if v}}

    def close(self):
        for s in [*self.pods.values(), *self._inner]:
            s.close()


class ModelSwitch:
    """The rules, in Python: what the C pipeline is meant to do with frames
    from ports without offloads or security (no tunnel)."""

    def __init__(self, aging_time: float = 300.0):
        self.mtu: dict[int, int] = {}
        self.network_of: dict[int, int] = {}
        self.fdb: dict[tuple[int, bytes], int] = {}
        self.queues: dict[int, list[bytes]] = {}
        self.unicast = self.flooded = 0
        self.drops: dict[str, int] = {}

    def add_network(self, net_id: int, vni: int, mtu: int):
        self.mtu[net_id] = mtu

    def add_port(self, net_id: int) -> int:
        port = len(self.network_of)
        self.network_of[port] = net_id
        self.queues[port] = []
        return port

    def _drop(self, reason: str):
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def send(self, port: int, frame: bytes):
        net = self.network_of[port]
        if len(frame) < ETH_HLEN:
            return self._drop("runt")
        if len(frame) - ETH_HLEN > self.mtu[net]:
            return self._drop("oversize")
        dst, src = frame[:6], frame[6:12]
        if src[0] & 1:
            return self._drop("bad_source")
        self.fdb[(net, src)] = port                    # learn (or move)
        out = None if dst[0] & 1 else self.fdb.get((net, dst))
        if out == port:
            return self._drop("loop")
        if out is not None:
            self.unicast += 1
            self.queues[out].append(frame)
            return
        others = [p for p, n in self.network_of.items() if n == net and p != port]
        if not others:
            return self._drop("no_route")
        self.flooded += 1
        for p in others:
            self.queues[p].append(frame)

    def received(self, port: int) -> list[bytes]:
        out, self.queues[port] = self.queues[port], []
        return out

    def counters(self) -> dict:
        return {"unicast": self.unicast, "flooded": self.flooded, "drops": dict(self.drops)}

    def close(self):
        pass


def mac(n: int) -> bytes:
    return bytes([2, 0, 0, 0, 0, n])


def frame(dst: bytes, src: bytes, size: int = 64, ethertype: bytes = b"\x88\xb5") -> bytes:
    """An Ethernet frame of `size` bytes (a local experimental EtherType)."""
    head = dst + src + ethertype
    return head + bytes(max(0, size - len(head)))
