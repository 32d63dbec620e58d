"""Replay detection for PASSporTs (RFC 8225 §10.1, RFC 8224 §12.1; docs/requirements.md PT-20).

``iat`` freshness bounds how long a captured PASSporT can be replayed; within that window the
same signature arriving again means a replay or cut-and-paste attack.  A verified PASSporT's
signature is remembered for ``window`` seconds (the freshness window plus the future skew); a
second sighting is flagged with :class:`~stirshaken.core.errors.ReplayError` (438).

Only signatures that verified are recorded, so a forged token cannot "burn" a genuine one.
SIP retransmissions of the same INVITE reach the VS with the same Identity header: callers must
verify once per transaction (not per retransmission), and forking proxies before the VS should
be taken into account when enabling this.

Backends: process memory (:class:`MemoryReplayStore`) or Redis ``SET key 1 NX EX window`` shared
by nodes (:class:`RedisReplayStore`), which falls back to memory while Redis is unavailable.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

from stirshaken.vs.cache import RedisBackend
from stirshaken.core.errors import ReplayError


def replay_key(signature: bytes) -> str:
    """A short, stable key for a signature (SHA-256 of the 64 signature bytes, hex)."""
    return hashlib.sha256(signature).hexdigest()[:40]


def replay_error(window: int) -> ReplayError:
    return ReplayError(f"PASSporT replay: the same signature was already seen within the last {window} s (RFC 8225 §10.1)")


class MemoryReplayStore:
    """Seen signatures with expiry, bounded in entries (oldest dropped first)."""

    def __init__(self, window: int, max_entries: int = 1_000_000):
        self.window = window
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def _purge(self, now: float) -> None:
        seen = self._seen
        while seen:
            key, exp = next(iter(seen.items()))
            if exp > now and len(seen) <= self.max_entries:
                break
            seen.popitem(last=False)

    def check_and_add(self, key: str, now: float | None = None) -> bool:
        """True when ``key`` is new (and records it), False when it is a replay."""
        now = time.time() if now is None else now
        self._purge(now)
        exp = self._seen.get(key)
        if exp is not None and exp > now:
            return False
        self._seen[key] = now + self.window
        self._seen.move_to_end(key)
        return True

    def __len__(self) -> int:
        return len(self._seen)


class RedisReplayStore:
    """Replay detection shared by nodes through Redis; memory fallback when Redis is down."""

    def __init__(self, backend: RedisBackend, window: int):
        self.backend = backend
        self.window = window
        self.memory = MemoryReplayStore(window)

    async def check_and_add(self, key: str, now: float | None = None) -> bool:
        res = await self.backend.set_nx("replay:" + key, self.window)
        local_new = self.memory.check_and_add(key, now)
        if res is None:  # Redis unavailable: this node's memory still catches local replays
            return local_new
        return res and local_new
