"""Replay detection for PASSporTs (RFC 8225 §10.1, RFC 8224 §12.1; docs/requirements.md PT-20).

``iat`` freshness bounds how long a captured PASSporT can be replayed; within that window the
same PASSporT arriving in *another call* is a replay or cut-and-paste attack (438).  What is a
replay and what is not:

* **The key** of a PASSporT is what its signature covers, the JWS signing input
  ``BASE64URL(header) "." BASE64URL(payload)`` (:func:`replay_key`), never the signature bytes:
  an ECDSA signature ``(r, s)`` has a twin ``(r, n - s)`` that verifies as well and that anyone
  can compute without the key, so a key made of signature bytes would let a replay pass as new.
* **The call** is named by its dialog identity, Call-ID and From tag (RFC 3261 §12; the To tag
  is left out: the first INVITE has none), as :func:`call_context` digests it.  A mark records
  the call that first presented a PASSporT.  The same PASSporT again in that call is not a
  replay: an Identity header repeated in one request (proxies duplicate them), a retransmission
  of the INVITE (wherever it lands: another worker, another node), a request merged or forked
  upstream, a re-INVITE of the dialog.  In any other call within the window it is a replay.
  A caller that gives no Call-ID (the REST interface without ``callId``, a library caller) makes
  each verification a call of its own.
* Only PASSporTs whose signature verified are marked, so a forged token cannot "burn" a genuine
  one.  A mark lives ``window`` seconds (the freshness window plus the future skew): after that
  the PASSporT is stale anyway.

Limits, by design: someone who copies the Call-ID and From tag of the original call along with
its PASSporT presents the same dialog, and is treated as that call (RFC 8224 §12.1: replay
detection cannot tell a retransmission from such a copy; the destination binding and freshness
still apply).

Stores:

* :class:`ReplayTable`: the memory backend, a fixed-size table of marks in a memory mapping.
  ``stirshaken serve`` with several workers makes it before forking them, so every worker of a
  node sees the same marks (a retransmission or a replay may reach any worker of the shared UDP
  socket); with one worker, or in a library, it is private to the process.
* Redis (``[verification] redis``): the marks shared by every node, claimed atomically by one
  script per verification (:meth:`~stirshaken.vs.cache.RedisBackend.claim`).  Each node also keeps
  them in its table, which answers alone while Redis is unreachable (marks made then are not
  copied to Redis when it returns); see :class:`~stirshaken.vs.cache.RedisBackend` for how Redis
  is probed again after an outage.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import secrets
import struct
import tempfile
import threading
from typing import IO, TYPE_CHECKING

from stirshaken.core.errors import ReplayError

if TYPE_CHECKING:
    from stirshaken.vs.config import VerifierConfig

__all__ = ["ReplayTable", "call_context", "replay_error", "replay_key"]


def replay_key(signing_input: bytes) -> bytes:
    """The replay key of a PASSporT (16 bytes): SHA-256 of its JWS signing input
    ``BASE64URL(header) "." BASE64URL(payload)`` (RFC 7515 §5.2), truncated.

    The signing input is what the signature covers; the signature itself is malleable (the
    ``(r, n - s)`` twin of an ECDSA signature verifies too), so it is no part of the key."""
    return hashlib.sha256(signing_input).digest()[:16]


def call_context(call_id: str | None, from_tag: str | None) -> bytes:
    """The call a PASSporT is seen in, as 8 bytes: a digest of the dialog identity ``call_id``
    and ``from_tag`` (RFC 3261 §12: the Call-ID and the From tag; compared exactly), or, without
    a Call-ID, 8 random bytes (the verification is a call of its own)."""
    if not call_id:
        return secrets.token_bytes(8)
    text = f"{call_id}\x00{from_tag or ''}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(text).digest()[:8]


def replay_error(window: int) -> ReplayError:
    """The 438 of a replay (RFC 8225 §10.1)."""
    return ReplayError(f"PASSporT replay: the same PASSporT was verified in another call within the last {window} s "
                       "(RFC 8225 §10.1)")


_SLOT = struct.Struct("<16s8sd")  # replay key, call context, expiry (epoch seconds)
_WAYS = 8  # slots per bucket
_BUCKET = _SLOT.size * _WAYS


class ReplayTable:
    """Replay marks in a fixed-size table: ``key -> (call context, expiry)``.

    ``entries`` slots (``[verification] replay_entries``, rounded up to buckets of 8; 32 bytes
    each) in a memory mapping, whose pages the kernel provides as the table fills.
    A key lives in the bucket its first bytes select; when a bucket is full, the mark that
    expires first gives way (counted in :attr:`evictions`: the table is too small for the call
    rate times the window).  ``shared=True`` makes the table usable by processes forked after it
    was made (``stirshaken serve`` workers): the mapping is shared and each operation holds a
    POSIX record lock on the mapping's file, which the kernel releases if its holder dies.
    Thread-safe in either case.  Expiry uses the caller's clock (``now``, epoch seconds).
    """

    def __init__(self, window: float, entries: int, *, shared: bool = False):
        if entries < 1:
            raise ValueError("entries must be >= 1")
        self.window = window
        self.buckets = max(1, -(-entries // _WAYS))
        size = self.buckets * _BUCKET
        self._file: IO[bytes] | None = None
        self._fd = -1
        if shared:
            if hasattr(os, "memfd_create"):
                self._fd = os.memfd_create("stirshaken-replay")
            else:  # pragma: no cover - not Linux
                self._file = tempfile.TemporaryFile()
                self._fd = self._file.fileno()
            os.ftruncate(self._fd, size)
            self._mm = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED)
        else:
            self._mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
        self._lock = threading.Lock()
        self.evictions = 0

    @classmethod
    def for_config(cls, config: VerifierConfig, *, shared: bool = False) -> ReplayTable:
        """The table of ``config``: marks live ``max_age + future_skew`` seconds (while the
        PASSporT can be fresh), ``replay_entries`` slots."""
        return cls(config.max_age + config.future_skew, config.replay_entries, shared=shared)

    @property
    def shared(self) -> bool:
        return self._fd >= 0

    def _acquire(self) -> None:
        self._lock.acquire()
        if self._fd >= 0:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise

    def _release(self) -> None:
        if self._fd >= 0:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    def _base(self, key: bytes) -> int:
        return (int.from_bytes(key[:8], "little") % self.buckets) * _BUCKET

    def _find(self, key: bytes, now: float) -> tuple[int, bytes | None, float]:
        """``(offset, context, expiry)`` of ``key``'s unexpired mark, else ``(offset of the slot
        to use, None, expiry of what is there)``."""
        mm = self._mm
        base = self._base(key)
        victim, victim_exp = base, float("inf")
        for j, (k, ctx, exp) in enumerate(_SLOT.iter_unpack(mm[base:base + _BUCKET])):
            if k == key and exp > now:
                return base + j * _SLOT.size, ctx, exp
            if exp < victim_exp:
                victim, victim_exp = base + j * _SLOT.size, exp
        return victim, None, victim_exp

    def peek(self, key: bytes, now: float) -> bytes | None:
        """The call context holding ``key`` at ``now``, or None."""
        self._acquire()
        try:
            return self._find(key, now)[1]
        finally:
            self._release()

    def claim(self, key: bytes, context: bytes, now: float) -> bytes | None:
        """The call context already holding ``key`` (unexpired), or None after recording
        ``context`` for it until ``now + window``.  Atomic across threads and workers."""
        self._acquire()
        try:
            off, held, exp = self._find(key, now)
            if held is not None:
                return held
            if exp > now:
                self.evictions += 1
            _SLOT.pack_into(self._mm, off, key, context, now + self.window)
            return None
        finally:
            self._release()

    def close(self) -> None:
        self._mm.close()
        if self._file is not None:
            self._file.close()
        elif self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
