"""Certificate cache of the STI-VS (ATIS-1000074 §5.3.1 / docs/requirements.md VS-03, CR-03).

* :class:`LRUCache` - in-memory, bounded in entries, each entry with an absolute expiry.
* :func:`ttl_from_headers` - RFC 9111 (ex RFC 7234) freshness from ``Cache-Control: max-age`` /
  ``s-maxage`` / ``Expires``, clamped between a floor and a ceiling and never past the chain's
  ``notAfter``.  With no usable directive the ceiling (24 h by default) applies, as ATIS-1000074
  recommends ("if the response has no recognized caching directives or caches for less than
  24 h, SHOULD cache for 24 h" is honoured for the no-directive case; explicit short lifetimes are
  only raised to the floor).
* :class:`SingleFlight` - concurrent requests for the same key share one in-flight coroutine.
* :class:`RedisBackend` - optional shared store (PEM + expiry) so that nodes fetch once; each node
  re-validates the PEM into its own LRU; it also holds the replay marks (:mod:`stirshaken.vs.replay`).
  Redis can never fail a verification: short timeouts, errors are swallowed and a dead Redis is
  skipped until a background PING (after 0.25 s, doubling up to 2 s) finds it back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Hashable, Mapping, Sequence, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stirshaken.core.certificates import ValidatedCredential
from stirshaken.core.errors import StirShakenError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class CacheEntry:
    """One cached x5u: the chain as fetched (DER), its validation outcome and when each expires.

    ``expires`` bounds the chain itself (HTTP freshness, notAfter); ``credential`` is the result of
    path validation under trust generation ``generation`` (a new trust list or CRL makes the
    entry re-validate from ``der`` without refetching).  ``error`` marks a negative entry.

    Memory (issue 17): an entry keeps the DER bytes of the chain (≈ 1 KB for leaf + intermediate)
    and a :func:`slim_credential` (public key, TNAuthList, leaf), not the parsed
    ``x509.Certificate`` objects of the chain (≈ 7.5 KB each) nor the PEM text or HTTP response:
    ≈ 11 KiB per entry measured (``bench/stress.py``, RSS of 3,000 entries), was ≈ 20 KiB in the same measurement (≈ 41 KB in a serving worker).  :attr:`certs` parses
    the DER again when the entry must be re-validated (new trust list or CRL, expiry: rare).
    """

    url: str
    expires: float
    der: tuple[bytes, ...] = ()
    credential: ValidatedCredential | None = None
    error: StirShakenError | None = None
    generation: int = -1
    validated_until: float = 0.0

    @property
    def certs(self) -> list[x509.Certificate]:
        """The chain, parsed from :attr:`der` (a new list of new objects at each call)."""
        return [x509.load_der_x509_certificate(d) for d in self.der]

    @staticmethod
    def der_of(certs: Sequence[x509.Certificate]) -> tuple[bytes, ...]:
        """The DER encodings of ``certs`` (what an entry keeps of a chain)."""
        return tuple(c.public_bytes(Encoding.DER) for c in certs)


def slim_credential(cred: ValidatedCredential) -> ValidatedCredential:
    """``cred`` without its validated chain beyond the leaf (the chain is only read while
    validating, e.g. for CRL warnings): what a cache entry keeps."""
    if len(cred.chain) <= 1:
        return cred
    return dataclasses.replace(cred, chain=(cred.leaf,))


class LRUCache(Generic[K, V]):
    """A dict-backed LRU bounded in entries.  ``get`` drops expired entries (``expires`` attr)."""

    def __init__(self, max_entries: int = 10000):
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()  # sync callers and the I/O thread share the cache
        self.evictions = 0

    def get(self, key: K, now: float) -> V | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if getattr(entry, "expires", now + 1) <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self.evictions += 1

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def ttl_from_headers(
    headers: Mapping[str, str],
    now: float,
    *,
    floor: int = 300,
    ceiling: int = 86400,
    not_after: float | None = None,
) -> float:
    """Seconds to keep a fetched chain (RFC 9111 §4.2.1, clamped; never past ``not_after``)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ttl: float | None = None
    cc = lower.get("cache-control", "")
    directives: dict[str, str | None] = {}
    for part in cc.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition("=")
        directives[name.strip().lower()] = value.strip().strip('"') if value else None
    if "no-store" in directives or "no-cache" in directives:
        ttl = 0
    else:
        for name in ("s-maxage", "max-age"):
            raw = directives.get(name)
            if raw is not None:
                try:
                    ttl = max(0, int(raw))
                    break
                except ValueError:
                    continue
        if ttl is None and "expires" in lower:
            try:
                when = email.utils.parsedate_to_datetime(lower["expires"])
                base = now
                if "date" in lower:
                    try:
                        base_dt = email.utils.parsedate_to_datetime(lower["date"])
                        base = base_dt.timestamp()
                    except (TypeError, ValueError, IndexError):
                        base = now
                ttl = max(0.0, when.timestamp() - base)
            except (TypeError, ValueError, IndexError):
                ttl = 0  # RFC 9111 §5.3: an invalid Expires means "already expired"
    if ttl is None:
        ttl = ceiling
    ttl = min(max(ttl, floor), ceiling)
    if not_after is not None:
        ttl = min(ttl, not_after - now)
    return max(ttl, 0.0)


class SingleFlight(Generic[K, V]):
    """Concurrent callers asking for the same key share one in-flight task (one event loop).

    The work runs as its own task, so a cancelled waiter never cancels the fetch the others
    are waiting for.
    """

    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future[V]] = {}

    async def run(self, key: K, fn: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())
            self._inflight[key] = task

            def _done(t: asyncio.Future[V], key: K = key) -> None:
                if self._inflight.get(key) is t:
                    del self._inflight[key]
                if not t.cancelled():
                    t.exception()  # retrieved: waiters re-raise it themselves

            task.add_done_callback(_done)
        return await asyncio.shield(task)

    def __len__(self) -> int:
        return len(self._inflight)


#: Lua, atomic in Redis: for each key, its value, or "" after setting it to ARGV[1] for ARGV[2] s
_CLAIM = """
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if v then
    out[i] = v
  else
    redis.call('SET', k, ARGV[1], 'EX', ARGV[2])
    out[i] = ''
  end
end
return out
"""


class RedisBackend:
    """Shared store in Redis: ``<prefix>x5u:<url>`` -> ``<expiry epoch>\\n<PEM>`` (certificate
    chains) and ``<prefix>replay:<key>`` -> call context (replay marks, :meth:`claim`).

    A verification never fails or waits long because of Redis.  Every operation has a short
    timeout (``op_timeout``, s); a failed one marks Redis *down*: calls then skip it (``None`` /
    no-op) without waiting, while a background task on the caller's event loop PINGs it after
    ``retry_after`` s, doubling up to ``max_retry_after`` s between tries, and marks it up again
    at the first answer.  So after an outage Redis is used again at most ``max_retry_after`` s
    (plus one PING) after it answers, and a Redis that does not answer costs one call one timeout
    per outage, not one per call.  ``errors`` counts the failed operations of calls (not the
    PINGs), ``recoveries`` the returns.
    """

    def __init__(self, url: str, *, prefix: str = "stirshaken:", op_timeout: float = 0.25, retry_after: float = 0.25,
                 max_retry_after: float = 2.0):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self.url = url
        self.prefix = prefix
        self.op_timeout = op_timeout
        self.retry_after = retry_after
        self.max_retry_after = max_retry_after
        # one immediate retry on a new connection: a pooled connection is stale after a restart
        self._client: Any = aioredis.Redis.from_url(
            url, socket_connect_timeout=op_timeout, socket_timeout=op_timeout, retry=Retry(NoBackoff(), 1)
        )
        self._claim_script: Any = self._client.register_script(_CLAIM)
        self._down = False
        self._probe: asyncio.Task[None] | None = None
        self.errors = 0
        self.recoveries = 0

    @property
    def available(self) -> bool:
        return not self._down

    def _fail(self) -> None:
        """An operation failed: Redis is down until a PING answers (called on the event loop)."""
        self.errors += 1
        if self._down:
            return
        self._down = True
        self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        delay = self.retry_after
        while True:
            await asyncio.sleep(delay)
            try:
                await asyncio.wait_for(self._client.ping(), self.op_timeout * 2)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = min(delay * 2, self.max_retry_after)
                continue
            self._down = False
            self.recoveries += 1
            return

    async def _op(self, coro: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(coro, self.op_timeout * 2)
        except Exception:
            self._fail()
            return None

    async def get_chain(self, url: str) -> tuple[bytes, float] | None:
        if not self.available:
            return None
        raw = await self._op(self._client.get(self.prefix + "x5u:" + url))
        if not raw:
            return None
        head, _, pem = bytes(raw).partition(b"\n")
        try:
            return pem, float(head)
        except ValueError:
            return None

    async def put_chain(self, url: str, pem: bytes, expires: float, now: float) -> None:
        ttl = int(expires - now)
        if ttl <= 0 or not self.available:
            return
        await self._op(self._client.set(self.prefix + "x5u:" + url, str(expires).encode() + b"\n" + pem, ex=ttl))

    async def claim(self, keys: Sequence[str], value: bytes, ttl: int) -> list[bytes | None] | None:
        """For each of ``keys`` (below the prefix), atomically: the value already there, or None
        after setting it to ``value`` for ``ttl`` seconds (at least 1).  None when Redis is down."""
        if not self.available:
            return None
        got = await self._op(self._claim_script(keys=[self.prefix + k for k in keys], args=[value, max(1, int(ttl))]))
        if not isinstance(got, list) or len(got) != len(keys):
            return None
        return [bytes(v) or None for v in got]

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        try:
            await self._client.aclose()
        except Exception:
            pass
