"""How late the event loop runs: a timer every INTERVAL notes how much
after its due time it woke (`lag`), and how much of that the loop's own
thread spent running (`held`: work that held the loop, as opposed to the
process waiting for a CPU on a busy machine). The longest of each, over the
daemon's life and over the last WINDOW seconds, is in `status` and the
metrics: the control plane's promise is that no work (a cluster's records,
a policy pass) holds the loop long enough to starve the lease, the watch
or the API."""

from __future__ import annotations

import asyncio
import time
from collections import deque

INTERVAL = 0.05              # seconds between wake-ups
WINDOW = 10.0                # seconds the recent maxima cover


class Longest:
    """The longest of values noted, since the start and over a window."""

    def __init__(self):
        self.max = 0.0
        self._recent: deque[tuple[float, float]] = deque()   # (when, value), decreasing value

    def note(self, now: float, value: float):
        self.max = max(self.max, value)
        while self._recent and self._recent[-1][1] <= value:
            self._recent.pop()          # (a monotonic queue: its head is the window's maximum)
        self._recent.append((now, value))
        while self._recent[0][0] < now - WINDOW:
            self._recent.popleft()

    def recent(self) -> float:
        return self._recent[0][1] if self._recent else 0.0


class LoopLag:
    def __init__(self):
        self.lag, self.held = Longest(), Longest()

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            due, cpu = loop.time() + INTERVAL, time.thread_time()
            await asyncio.sleep(INTERVAL)
            now = loop.time()
            self.note(now, max(0.0, now - due), time.thread_time() - cpu)

    def note(self, now: float, delay: float, cpu: float = 0.0):
        """A wake-up `delay` late, after `cpu` seconds of the thread's own
        work since the timer was set."""
        self.lag.note(now, delay)
        self.held.note(now, min(delay, cpu))

    def report(self) -> dict:
        return {"max_ms": round(self.lag.max * 1e3, 1),
                "recent_ms": round(self.lag.recent() * 1e3, 1),
                "held_max_ms": round(self.held.max * 1e3, 1),
                "held_recent_ms": round(self.held.recent() * 1e3, 1)}
