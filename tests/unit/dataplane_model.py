"""A Python model of the data plane's switching rules (SPEC §3: check,
learn, look up, deliver) for frames from plain ports (no offloads, no port
security, no tunnel), with the interface of datapath_rig.Rig, the C data
plane on socketpairs. The same tests run over both: one that passes on the
model only points at the C code, and the other way round at the model."""

from __future__ import annotations

from vswitch.protocol import ETH_HLEN


class Model:
    def __init__(self, mtu: int = 1500):
        self.mtu = {1: mtu, 2: mtu}                 # networks 1 and 2, as Rig declares
        self.network_of: dict[int, int] = {}
        self.fdb: dict[tuple[int, bytes], int] = {}
        self.queues: dict[int, list[bytes]] = {}
        self.unicast = self.flooded = 0
        self.drops: dict[str, int] = {}

    def port(self, network: int = 1) -> int:
        pid = len(self.network_of)
        self.network_of[pid] = network
        self.queues[pid] = []
        return pid

    def _drop(self, reason: str):
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def send(self, pid: int, frame: bytes):
        net = self.network_of[pid]
        l2 = ETH_HLEN + (4 if frame[12:14] in (b"\x81\x00", b"\x88\xa8") else 0)
        if len(frame) < l2:
            return self._drop("runt")
        if len(frame) - l2 > self.mtu[net]:
            return self._drop("oversize")
        dst, src = frame[:6], frame[6:12]
        if src[0] & 1:
            return self._drop("bad_source")
        self.fdb[(net, src)] = pid                     # learn, or move
        out = None if dst[0] & 1 else self.fdb.get((net, dst))
        if out == pid:
            return self._drop("loop")
        if out is not None:
            self.unicast += 1
            self.queues[out].append(frame)
            return
        others = [p for p, n in self.network_of.items() if n == net and p != pid]
        if not others:
            return self._drop("no_route")
        self.flooded += 1
        for p in others:
            self.queues[p].append(frame)

    def received(self, pid: int) -> list[bytes]:
        out, self.queues[pid] = self.queues[pid], []
        return out

    def decisions(self) -> dict:
        return {"unicast": self.unicast, "flooded": self.flooded, "drops": dict(self.drops)}
