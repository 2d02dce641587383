"""How late the event loop runs: a timer every INTERVAL notes how much
after its due time it woke. The longest delay, over the daemon's life and
over the last WINDOW seconds, is in `status` and the metrics: the control
plane's promise is that no work (a cluster's records, a policy pass) holds
the loop long enough to starve the lease, the watch or the API."""

from __future__ import annotations

import asyncio
from collections import deque

INTERVAL = 0.05              # seconds between wake-ups
WINDOW = 10.0                # seconds the recent maximum covers


class LoopLag:
    def __init__(self):
        self.max = 0.0                           # seconds, since the start
        self._recent: deque[tuple[float, float]] = deque()   # (when, delay), decreasing delay

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + INTERVAL
            await asyncio.sleep(INTERVAL)
            now = loop.time()
            self.note(now, max(0.0, now - due))

    def note(self, now: float, delay: float):
        self.max = max(self.max, delay)
        while self._recent and self._recent[-1][1] <= delay:
            self._recent.pop()          # (a monotonic queue: its head is the window's maximum)
        self._recent.append((now, delay))
        while self._recent[0][0] < now - WINDOW:
            self._recent.popleft()

    def recent(self) -> float:
        return self._recent[0][1] if self._recent else 0.0

    def report(self) -> dict:
        return {"max_ms": round(self.max * 1e3, 1), "recent_ms": round(self.recent() * 1e3, 1)}
