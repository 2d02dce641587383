"""Capture sessions: what `vswitchctl capture` and Python hooks see.

A session tells the data plane which capture points, which port and which
tcpdump filter it wants (compiled to classic BPF by tcpdump itself, run in
the fast path); matching frames are copied into the data plane's ring, which
a pump drains every few milliseconds while any session is open, handing each
record to the sessions that matched it. Consumers have bounded queues: a
slow one loses records (counted), forwarding never waits.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from dataclasses import dataclass
from typing import Callable

from .errors import InvalidRequest, Unsupported
from .protocol import ALL_CAPTURE_POINTS, CAPTURE_POINT_NAMES, CAPTURE_POINTS, MAX_SNAPLEN

log = logging.getLogger("vswitch.capture")

PUMP_INTERVAL = 0.005        # seconds between drains of the ring while sessions are open


@dataclass(frozen=True)
class Record:
    ts_ns: int
    point: str
    port: str
    reason: str | None       # the drop reason, for point "drop"
    orig_len: int
    data: bytes

    def meta(self) -> dict:
        return {"ts_ns": self.ts_ns, "point": self.point, "port": self.port,
                "reason": self.reason, "orig_len": self.orig_len}


def compile_filter(expr: str) -> list[tuple[int, ...]]:
    """A tcpdump expression as classic BPF for Ethernet frames, compiled by
    tcpdump (libpcap), so the syntax is exactly tcpdump's."""
    if not isinstance(expr, str) or expr.lstrip().startswith("-") or "\0" in expr:
        raise InvalidRequest(f"bad filter {expr!r}: a tcpdump expression, not options")
    try:
        # "--": whatever the expression says, tcpdump takes it as one (as root).
        r = subprocess.run(["tcpdump", "-ddd", "-y", "EN10MB", "--", expr], capture_output=True,
                           text=True, timeout=20)
    except FileNotFoundError:
        raise Unsupported("filters need tcpdump, which is not installed") from None
    if r.returncode != 0:
        reason = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "rejected"
        raise InvalidRequest(f"bad filter {expr!r}: {reason.removeprefix('tcpdump: ')}")
    lines = r.stdout.split("\n")
    return [tuple(int(x) for x in line.split()) for line in lines[1:1 + int(lines[0])]]


def point_mask(points) -> int:
    """CAP_* bits of a point name, a list of them, or None (all)."""
    if points is None:
        return ALL_CAPTURE_POINTS
    names = [points] if isinstance(points, str) else points
    unknown = [p for p in names if p not in CAPTURE_POINTS]
    if unknown or not names:
        raise InvalidRequest(f"unknown capture point {unknown[0] if unknown else ''!r} "
                             f"(known: {', '.join(CAPTURE_POINTS)})")
    return sum(CAPTURE_POINTS[p] for p in set(names))


class Captures:
    def __init__(self, switch):
        self.switch = switch
        self.dataplane = switch.dataplane
        self.consumers: dict[int, Callable[[Record], None]] = {}
        self.consumer_dropped = 0       # records a slow consumer had no room for
        self._pump_task: asyncio.Task | None = None

    async def open(self, consumer: Callable[[Record], None], points=None,
                   port: str | None = None, filter: str | None = None,
                   snaplen: int = MAX_SNAPLEN) -> int:
        mask = point_mask(points)
        port_id = self.switch.port_id(port) if port else -1
        program = await asyncio.get_running_loop().run_in_executor(
            None, compile_filter, filter) if filter else []
        session = self.dataplane.capture_add(mask, port_id, snaplen, program)
        self.consumers[session] = consumer
        if self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())
        log.info("capture %d started: points %s, port %s, filter %r", session,
                 points or "all", port or "any", filter or "")
        return session

    def close(self, session: int):
        if self.consumers.pop(session, None) is not None:
            self.drain()            # the others' records: the ring is reset when none is left
            self.dataplane.capture_remove(session)
            log.info("capture %d stopped", session)

    async def _pump(self):
        try:
            while self.consumers:
                self.drain()
                await asyncio.sleep(PUMP_INTERVAL)
        finally:
            self._pump_task = None

    def drain(self):
        label = self.switch.port_label
        while records := self.dataplane.capture_read():
            for ts_ns, mask, port, point, reason, orig_len, data, detail in records:
                if detail:              # a policy drop: its direction and deciding policy
                    reason = (f"{reason} ({'egress' if detail >> 31 else 'ingress'}, "
                              f"{self.dataplane.policy_name(detail & 0x7FFFFFFF)})")
                record = Record(ts_ns, CAPTURE_POINT_NAMES[point], label(port), reason, orig_len, data)
                for session, consumer in list(self.consumers.items()):
                    if mask & (1 << session):
                        consumer(record)

    def stats(self) -> dict:
        return {"sessions": len(self.consumers), "ring_dropped": self.dataplane.capture_dropped,
                "consumer_dropped": self.consumer_dropped}
