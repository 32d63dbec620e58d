"""Output batched per event-loop iteration, shared by the REST and SIP servers.

Why: on loopback every ``write``/``sendto`` delivers the data and wakes the peer's thread on the
other CPU inside the system call, between two requests of ours.  The event loop reads everything
that is ready in one wake-up, so the answers computed for it are queued and delivered together
once the loop has handled them all (``loop.call_soon`` runs after the I/O callbacks of the
iteration): the peer is woken once per batch instead of once per answer.  An answer waits at most
for the rest of its batch, bounded by ``limit``.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

#: answers queued in one iteration before they are delivered without waiting for its end
MAX_BATCH = 64


class LoopBatch(Generic[T]):
    """Items queued during one event-loop iteration, handed to ``deliver`` together at its end."""

    __slots__ = ("loop", "deliver", "limit", "items", "scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[[list[T]], None], limit: int = MAX_BATCH):
        self.loop = loop
        self.deliver = deliver
        self.limit = limit
        self.items: list[T] = []
        self.scheduled = False

    def add(self, item: T) -> None:
        items = self.items
        items.append(item)
        if len(items) >= self.limit:
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        items = self.items
        if items:
            self.items = []
            self.deliver(items)

    def clear(self) -> None:
        """Drop what is queued (the transport is gone)."""
        self.items.clear()
