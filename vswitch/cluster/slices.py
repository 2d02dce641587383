"""Work on many records at once, in slices: after every SLICE seconds of it
the event loop gets a turn, so that no large batch (a watch response, a
re-list, the endpoints of a network joined at 5,000 nodes) holds the lease's
renewals, the watch or the API back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

SLICE = 0.02                # seconds of work before the loop gets a turn

T = TypeVar("T")


async def sliced(items: Iterable[T]) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for item in items:
        yield item
        if loop.time() - start > SLICE:
            await asyncio.sleep(0)
            start = loop.time()
