"""STI-VS: verification of a call's Identity headers with credential fetching, caching and trust.

One entry point, sync and async (as httpx offers both)::

    v = Verifier(VerifierConfig(trust_anchors=["/etc/stir/roots"], crls=["https://pa.example/crl"]))
    result = v.verify(CallInfo(identities=[hdr], from_="sip:+12155551212@a", to="sip:+12155551213@b"))
    result = await v.averify(CallInfo(...))

Procedure (RFC 8224 §6.2, ATIS-1000074 §5.3.1, ATIS-1000082 error table E3-E19):

1. every Identity header value (repeated or comma-joined) is parsed and checked without its
   credential by :func:`stirshaken.core.verification.prepare` (syntax, JOSE header, claims, freshness of
   ``iat`` and ``Date``, ``orig`` against From / P-Asserted-Identity);
2. the credential of each distinct ``x5u`` is obtained: a static chain, the memory cache, Redis,
   or a fetch (:mod:`stirshaken.vs.x5u`, SSRF-guarded), then path-validated against the trust
   anchors, the STI-PA CA list and the CRLs (:mod:`stirshaken.vs.trust`, :mod:`stirshaken.vs.crl`);
   the validated credential is cached with the chain (:mod:`stirshaken.vs.cache`);
3. :func:`stirshaken.core.verification.complete` checks authority (optional) and the ES256 signature;
4. optional replay detection (:mod:`stirshaken.vs.replay`);
5. :func:`stirshaken.core.verification.decide` binds destinations across SHAKEN / ``div`` / ``rcd``
   PASSporTs (To and Request-URI) and folds everything into one
   :class:`~stirshaken.core.verification.VerificationResult`.

The flow is written once, as a generator that yields its I/O requests (the sans-I/O pattern of
h11): :meth:`Verifier.verify` serves them by blocking on the verifier's private I/O thread (so it
works whether or not the calling thread runs an event loop), :meth:`Verifier.averify` awaits
them.  A warm cache needs no I/O at all: the sync path then never touches an event loop.
All fetching, Redis and single-flight state live on that one I/O loop, so concurrent sync and
async callers needing the same uncached x5u share exactly one fetch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Generator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stirshaken.vs.cache import CacheEntry, LRUCache, RedisBackend, SingleFlight, slim_credential, ttl_from_headers
from stirshaken.core.certificates import ValidatedCredential, load_certificates
from stirshaken.vs.crl import CRLStore
from stirshaken.core.errors import FetchError, InvalidIdentityError, StaleDateError, StirShakenError, UntrustedCertificateError
from stirshaken.core.identity import split_header_values
from stirshaken.vs.replay import MemoryReplayStore, RedisReplayStore, replay_error, replay_key
from stirshaken.core.tn import TNError, canonicalize_tn, uri_user
from stirshaken.vs.trust import TrustManager
from stirshaken.core.verification import (
    Check,
    VerificationCache,
    PassportResult,
    Prepared,
    VerificationResult,
    complete,
    decide,
    failed,
    prepare,
)
from stirshaken.vs.config import VerifierConfig, is_url
from stirshaken.vs.x5u import Fetcher

#: Retry interval after the CA list could not be loaded (seconds).
CA_LIST_RETRY = 60.0
_INF = float("inf")


@dataclass
class CallInfo:
    """The parts of a SIP request a VS looks at (RFC 8224 §6.2, ATIS-1000074 §5.3.1).

    Header values, URIs or bare TNs are all accepted for ``from_``, ``pai``, ``to`` and ``ruri``.
    ``date`` is the Date header as epoch seconds (None: iat-only freshness).
    """

    identities: Sequence[str]
    from_: str | None = None
    pai: str | None = None
    to: str | Sequence[str] | None = None
    ruri: str | None = None
    date: float | None = None


# display name (quoted, or a token run that must be followed by '<': possessive, so an addr-spec
# without '<' costs no backtracking), then a sip/sips/tel URI whose user part is +digits
_SIMPLE_TN_URI = re.compile(r'(?:"[^"]*"|[^<"]*+(?=<))?<?(?:sips?|tel):\+?([0-9]+)(?:[@;>]|$)', re.IGNORECASE)


_DISPLAY_NAME = re.compile(r'^"(?:[^"\\]|\\.)*"\s*')


def call_tn(value: str | None) -> str | None:
    """The canonical TN of a From/PAI/To/R-URI value (name-addr, URI or bare number), else the
    value itself (which then matches no PASSporT TN), or None for an empty value."""
    if value is None:
        return None
    m = _SIMPLE_TN_URI.match(value)
    if m is not None:
        return m.group(1)
    v = _DISPLAY_NAME.sub("", value.strip(), count=1)
    if not v:
        return None
    if v.isdigit():
        return v
    if "<" in v or v[:4].lower() in ("sip:", "tel:") or v[:5].lower() == "sips:":
        user = uri_user(v)
        if user is None:
            return v
        v_user = user
    else:
        v_user = v
    try:
        return canonicalize_tn(v_user)
    except TNError:
        return v


# I/O requests the verification flow yields (served by _serve_io).
_SETUP = ("setup",)


class _IOThread:
    """A private event loop in a daemon thread: every fetch, Redis call and in-flight map lives here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="stirshaken-vs-io", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class Verifier:
    """The STI-VS.  Thread-safe; one instance serves many concurrent calls (sync or async).

    ``redis_prefix`` (class default ``"stirshaken:"``) namespaces the Redis keys; set it on the
    instance before the first verification to separate deployments or tests.
    """

    redis_prefix: str = "stirshaken:"

    def __init__(self, config: VerifierConfig, *, static_chains: dict[str, list[x509.Certificate]] | None = None):
        self.config = config
        self.policy = config.policy()
        self.x5u_policy = config.x5u_policy()
        self.crls = CRLStore(config.crls, fetch_distribution_points=config.fetch_crl_distribution_points)
        self.trust = TrustManager(config.trust_anchors, crls=self.crls, ca_list_roots=config.ca_list_trust,
                                  crl_signers=config.crl_signers)
        self.cache: LRUCache[str, CacheEntry] = LRUCache(config.cache_entries)
        # parsed Identity parameter tails, JOSE headers and certificate checks (core.verification)
        self.verification_cache = VerificationCache()
        self._static: dict[str, list[x509.Certificate]] = {}
        self._static_entries: dict[str, CacheEntry] = {}
        self._static_errors: dict[str, StirShakenError] = {}
        for url, certs in (static_chains or {}).items():
            self.add_static_chain(url, certs)
        self.stats: dict[str, int] = {
            "verifications": 0,
            "cache_hits": 0,
            "cache_misses": 0,
            "negative_hits": 0,
            "static_hits": 0,
            "fetches": 0,
            "fetch_failures": 0,
            "redis_hits": 0,
            "redis_errors": 0,
            "revalidations": 0,
            "crl_fetches": 0,
            "crl_fetch_failures": 0,
            "replays": 0,
            "internal_errors": 0,
        }
        self._window = config.max_age + config.future_skew
        self._replay_mem = MemoryReplayStore(self._window) if config.replay_detection else None
        self._io: _IOThread | None = None
        self._io_lock = threading.Lock()
        self._fetcher: Fetcher | None = None
        self._redis: RedisBackend | None = None
        self._redis_replay: RedisReplayStore | None = None
        self._flight: SingleFlight[str, ValidatedCredential | StirShakenError] = SingleFlight()
        self._ca_list_next_try = 0.0
        self._ca_list_refresh_at = _INF  # reload of a loaded CA list (exp or ca_list_refresh)
        self._ca_list_refreshing = False
        self._crl_refreshing = False
        self._closed = False
        # the direct path of verify/averify (see _fast); replay detection always takes the flow
        self.fast_path = not config.replay_detection
        #: when a list: one record per x5u load (fetch or Redis) is appended, for diagnostics
        #: (``stirshaken inspect``); None (the default) records nothing
        self.trace: list[dict[str, Any]] | None = None

    # --- public API ------------------------------------------------------------------------

    def add_static_chain(self, x5u: str, certs: list[x509.Certificate]) -> None:
        """Use ``certs`` (leaf first) for ``x5u``; nothing is fetched for it."""
        if not certs:
            raise ValueError("a static chain needs at least one certificate")
        self._static[x5u] = list(certs)
        self._static_entries.pop(x5u, None)
        self.cache.pop(x5u)

    def add_static_error(self, x5u: str, error: StirShakenError) -> None:
        """Answer ``error`` for ``x5u`` whenever its credential is needed, without fetching (an
        offline audit's x5u whose chain it does not have).  The checks that come before the
        credential (RFC 8224 §6.2: header, claims, freshness) still run first, as for any call."""
        self._static_errors[x5u] = error

    def is_static(self, x5u: str) -> bool:
        """True when ``x5u`` has a static chain (:meth:`add_static_chain`): it is never fetched."""
        return x5u in self._static

    def chain_for(self, x5u: str, now: float | None = None) -> list[x509.Certificate] | None:
        """The certificates (leaf first) this verifier holds for ``x5u``: its static chain or the
        cached fetched chain, whether or not it validated; None when it holds none (never fetched,
        fetch failed, or expired at ``now``, epoch seconds, default the current time)."""
        certs = self._static.get(x5u)
        if certs is not None:
            return list(certs)
        entry = self.cache.get(x5u, time.time() if now is None else now)
        return entry.certs if entry is not None and entry.der else None

    def _try_fast(self, call: CallInfo, now: float | None) -> VerificationResult | None:
        """The direct warm path shared by :meth:`verify` and :meth:`averify`; None when the
        generator flow must run (I/O or setup needed)."""
        if not self.fast_path:
            return None
        try:
            return self._fast(call, now)
        except Exception as exc:  # as in the flow: never let anything escape
            self.stats["verifications"] += 1
            return self._internal_error(exc)

    def verify(self, call: CallInfo, *, now: float | None = None) -> VerificationResult:
        """Verify a call, blocking.  Works with or without a running event loop in this thread."""
        result = self._try_fast(call, now)
        if result is not None:
            return result
        flow = self._flow(call, now)
        try:
            request = next(flow)
            while True:
                try:
                    response = self._io_submit(request).result(timeout=self._io_timeout())
                except concurrent.futures.TimeoutError:
                    response = self._io_timeout_response(request)
                request = flow.send(response)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except Exception as exc:  # never let anything escape: map to a typed 438
            return self._internal_error(exc)

    async def averify(self, call: CallInfo, *, now: float | None = None) -> VerificationResult:
        """Verify a call from a coroutine (any event loop)."""
        result = self._try_fast(call, now)
        if result is not None:
            return result
        flow = self._flow(call, now)
        try:
            request = next(flow)
            while True:
                try:
                    response = await asyncio.wait_for(asyncio.wrap_future(self._io_submit(request)), self._io_timeout())
                except asyncio.TimeoutError:
                    response = self._io_timeout_response(request)
                request = flow.send(response)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return self._internal_error(exc)

    async def aclose(self) -> None:
        """Close HTTP sessions, Redis and the I/O thread."""
        io = self._io
        if io is None or self._closed:
            self._closed = True
            return
        self._closed = True
        try:
            await asyncio.wrap_future(io.submit(self._close_io()))
        finally:
            await asyncio.get_running_loop().run_in_executor(None, io.stop)
            self._io = None

    def close(self) -> None:
        io = self._io
        self._closed = True
        if io is None:
            return
        try:
            io.submit(self._close_io()).result(timeout=5)
        except Exception:
            pass
        io.stop()
        self._io = None

    def __enter__(self) -> "Verifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the flow (sans-I/O generator) -----------------------------------------------------

    def _flow(self, call: CallInfo, now: float | None) -> Generator[tuple[Any, ...], Any, VerificationResult]:
        now = time.time() if now is None else float(now)
        if not math.isfinite(now):
            now = time.time()
        self.stats["verifications"] += 1
        policy = self.policy
        values = self._identity_values(call)
        date = call.date
        if date is not None and (not isinstance(date, (int, float)) or not math.isfinite(date)):
            err = StaleDateError("Received 'Date' value is not a valid time")
            return decide([failed(v if isinstance(v, str) else repr(v), err) for v in values] or [failed("", err)], policy)
        if self._needs_setup(now):
            yield _SETUP
        else:
            self._schedule_due_refreshes(now)
        origs = self._origs(call)
        targets = self._targets(call)
        items = self._prepare_all(values, origs, now, date)
        creds: dict[str, ValidatedCredential | StirShakenError] = {}
        missing: list[str] = []
        for it in items:
            if isinstance(it, Prepared) and it.x5u not in creds and it.x5u not in missing:
                c = self._lookup(it.x5u, now, self.stats)
                if c is None:
                    missing.append(it.x5u)
                else:
                    creds[it.x5u] = c
        if missing:
            fetched = yield ("obtain", tuple(missing), now)
            creds.update(fetched)
        results = self._complete_all(items, creds)
        if self.config.replay_detection:
            results = yield from self._replay(results, now)
        return decide(results, policy, targets=targets)

    def _fast(self, call: CallInfo, now: float | None) -> VerificationResult | None:
        """The warm path of :meth:`_flow`, run directly instead of through the generator.

        Mirrors :meth:`_flow` step by step with the same helpers (_identity_values, _origs,
        _targets, _prepare_all, _lookup, _complete_all, decide) and gives the same result and
        stats; it returns None, having changed nothing but caches, whenever the flow would do
        anything else: a non-finite clock or Date, setup or a background refresh due, or a
        credential not in memory (I/O).  Replay detection never comes here (``fast_path``).
        tests/test_vs_verify.py::test_fast_path_agrees_with_flow runs calls both ways.
        """
        now = time.time() if now is None else float(now)
        if not -_INF < now < _INF:  # NaN or infinite: the flow replaces it
            return None
        date = call.date
        if date is not None and (not isinstance(date, (int, float)) or not -_INF < date < _INF):
            return None
        if now >= self.crls.next_due or now >= self._ca_list_refresh_at or self._needs_setup(now):
            return None
        items = self._prepare_all(self._identity_values(call), self._origs(call), now, date)
        counts: dict[str, int] = {}  # the flow's stats of the lookups, applied only if we finish
        creds: dict[str, ValidatedCredential | StirShakenError] = {}
        for it in items:
            if type(it) is Prepared and it.x5u not in creds:
                c = self._lookup(it.x5u, now, counts)
                if c is None:
                    return None
                creds[it.x5u] = c
        stats = self.stats
        stats["verifications"] += 1
        for k, n in counts.items():
            stats[k] += n
        if not items:  # no Identity header: the flow's decide([]) (428)
            return decide([], self.policy)
        return decide(self._complete_all(items, creds), self.policy, targets=self._targets(call))

    def _prepare_all(self, values: list[str], origs: list[str], now: float, date: float | None) -> list[Prepared | PassportResult]:
        """Step 1 for every Identity header value: a Prepared, or the failed result."""
        policy = self.policy
        cache = self.verification_cache
        items: list[Prepared | PassportResult] = []
        for value in values:
            try:
                items.append(prepare(value, orig=origs, dest=None, now=now, date=date, policy=policy, expected_ppt=None, cache=cache))
            except StirShakenError as err:  # what verify_prepared_or_error returns, without a second prepare
                items.append(failed(str(value), err))
            except Exception as exc:  # a malformed anything is a typed 438, never an exception
                items.append(failed(value[:200] if isinstance(value, str) else repr(value)[:200],
                                    InvalidIdentityError(f"malformed Identity header ({type(exc).__name__})")))
        return items

    def _complete_all(self, items: list[Prepared | PassportResult], creds: dict[str, ValidatedCredential | StirShakenError]) -> list[PassportResult]:
        """Step 3: authority and signature of every prepared header with its credential."""
        policy, cache = self.policy, self.verification_cache
        return [complete(it, creds[it.x5u], policy, cache=cache) if type(it) is Prepared else it for it in items]  # type: ignore[misc]

    def _identity_values(self, call: CallInfo) -> list[str]:
        ids = call.identities
        if ids is None:
            return []
        if isinstance(ids, str):
            ids = [ids]
        out: list[str] = []
        for v in ids:
            if not isinstance(v, str):
                out.append(v)  # reported as malformed by the flow
                continue
            if "," in v:
                out.extend(split_header_values(v))
            else:
                v = v.strip()
                if v:
                    out.append(v)
        return out

    @staticmethod
    def _origs(call: CallInfo) -> list[str]:
        """The calling TNs of the request (From, P-Asserted-Identity)."""
        tn = call_tn(call.from_)
        origs = [tn] if tn else []
        if call.pai is not None:
            tn = call_tn(call.pai)
            if tn:
                origs.append(tn)
        return origs

    @staticmethod
    def _targets(call: CallInfo) -> list[str]:
        """The called TNs of the request (To, Request-URI)."""
        to = call.to
        if isinstance(to, str):
            tn = call_tn(to)
            targets = [tn] if tn else []
        else:
            targets = [t for t in (call_tn(x) for x in (to or ())) if t]
        tn = call_tn(call.ruri)
        if tn:
            targets.append(tn)
        return targets

    def _replay(self, results: list[PassportResult], now: float) -> Generator[tuple[Any, ...], Any, list[PassportResult]]:
        keys = {i: replay_key(r.passport.signature) for i, r in enumerate(results) if r.ok and r.passport is not None}
        if not keys:
            return results
        if self.config.redis:
            fresh = yield ("replay", tuple(keys.values()), now)
        else:
            assert self._replay_mem is not None
            fresh = {k: self._replay_mem.check_and_add(k, now) for k in keys.values()}
        out = list(results)
        for i, k in keys.items():
            if not fresh.get(k, True):
                self.stats["replays"] += 1
                r = results[i]
                err = replay_error(self._window)
                out[i] = PassportResult(raw=r.raw, ppt=r.ppt, ok=False, checks=r.checks + (Check("replay", False, err.description),),
                                        passport=r.passport, error=err)
        return out

    # --- credentials: the synchronous cache path --------------------------------------------

    def _lookup(self, url: str, now: float, counts: dict[str, int] | None) -> ValidatedCredential | StirShakenError | None:
        """A credential from static chains or the memory cache; None when I/O is needed.
        Hits and misses are counted in ``counts`` (the stats, or None)."""
        count = counts is not None
        if self._static_errors:
            err = self._static_errors.get(url)
            if err is not None:
                return err
        certs = self._static.get(url)
        if certs is not None:
            entry = self._static_entries.get(url)
            if entry is not None and entry.generation == self.trust.generation and now < entry.validated_until:
                if count:
                    counts["static_hits"] = counts.get("static_hits", 0) + 1  # type: ignore[index]
                return entry.credential or entry.error
            if self.crls.missing_for(certs):
                return None
            return self._validate_static(url, certs, now)
        entry = self.cache.get(url, now)
        if entry is None:
            if count:
                counts["cache_misses"] = counts.get("cache_misses", 0) + 1  # type: ignore[index]
            return None
        if entry.error is not None and entry.credential is None and not entry.der:
            if count:
                counts["negative_hits"] = counts.get("negative_hits", 0) + 1  # type: ignore[index]
            return entry.error
        if entry.generation != self.trust.generation or now >= entry.validated_until:
            certs = entry.certs
            if self.crls.missing_for(certs):
                return None
            self._revalidate(entry, certs, now)
        if count:
            counts["cache_hits"] = counts.get("cache_hits", 0) + 1  # type: ignore[index]
        return entry.credential or entry.error  # type: ignore[return-value]

    def _validate(self, certs: Sequence[x509.Certificate], now: float) -> tuple[ValidatedCredential | StirShakenError, float]:
        try:
            cred = self.trust.validate(certs, at=now)
        except StirShakenError as err:
            return err, now + self.config.negative_ttl
        except Exception as exc:  # defensive: a malformed certificate must not escape
            return UntrustedCertificateError(f"certificate cannot be validated: {type(exc).__name__}: {str(exc)[:120]}"), now + self.config.negative_ttl
        # validate again when a CRL turns stale (its warning must then show in the results)
        return cred, min(cred.not_after.timestamp(), self.crls.fresh_until(now))

    def _validate_static(self, url: str, certs: list[x509.Certificate], now: float) -> ValidatedCredential | StirShakenError:
        gen = self.trust.generation
        res, until = self._validate(certs, now)
        entry = CacheEntry(url=url, expires=float("inf"), der=CacheEntry.der_of(certs), generation=gen, validated_until=until)
        if isinstance(res, StirShakenError):
            entry.error = res
        else:
            entry.credential = res
        self._static_entries[url] = entry
        return res

    def _revalidate(self, entry: CacheEntry, certs: list[x509.Certificate], now: float) -> None:
        """Validate ``entry`` again from ``certs`` (its :attr:`~CacheEntry.certs`, parsed once by the caller)."""
        self.stats["revalidations"] += 1
        gen = self.trust.generation
        res, until = self._validate(certs, now)
        if isinstance(res, StirShakenError):
            entry.credential, entry.error = None, res
        else:
            entry.credential, entry.error = slim_credential(res), None
        entry.generation = gen
        entry.validated_until = until

    def _needs_setup(self, now: float) -> bool:
        """Blocking I/O before this verification: first load of the CA list, configured CRL URLs
        never fetched (O(1): called for every verification)."""
        if self.crls.unfetched:
            return True
        return self.trust.ca_list is None and self.config.ca_list is not None and now >= self._ca_list_next_try

    def _schedule_due_refreshes(self, now: float) -> None:
        """Background refreshes (the call goes on with what is loaded): CRLs past their refresh
        time, the CA list at its ``exp`` / ``ca_list_refresh``."""
        if self.crls.next_due <= now:
            self._schedule_crl_refresh()
        if self._ca_list_refresh_at <= now:
            self._schedule_ca_list_refresh()

    # --- I/O (runs on the private loop) ---------------------------------------------------

    def _ensure_io(self) -> _IOThread:
        io = self._io
        if io is None:
            with self._io_lock:
                if self._io is None:
                    self._io = _IOThread()
                    self._closed = False
                io = self._io
        return io

    def _io_submit(self, request: tuple[Any, ...]) -> concurrent.futures.Future[Any]:
        return self._ensure_io().submit(self._serve_io(request))

    def _io_timeout(self) -> float:
        c = self.config
        return 3 * (c.fetch_timeout + c.connect_timeout) + 5.0

    def _io_timeout_response(self, request: tuple[Any, ...]) -> Any:
        if request[0] == "obtain":
            return {u: FetchError("Failed to dereference 'info' URI: timed out") for u in request[1]}
        if request[0] == "replay":
            return {k: True for k in request[1]}
        return None

    async def _serve_io(self, request: tuple[Any, ...]) -> Any:
        kind = request[0]
        if kind == "setup":
            await self._setup(time.time())
            return None
        if kind == "obtain":
            urls, now = request[1], request[2]
            got = await asyncio.gather(*(self._flight.run(u, lambda u=u: self._obtain(u, now)) for u in urls))
            return dict(zip(urls, got))
        if kind == "replay":
            store = self._get_redis_replay()
            keys, now = request[1], request[2]
            return {k: await store.check_and_add(k, now) for k in keys}
        raise ValueError(f"unknown I/O request {kind!r}")

    def _get_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.x5u_policy)
        return self._fetcher

    def _get_redis(self) -> RedisBackend | None:
        if self.config.redis and self._redis is None:
            self._redis = RedisBackend(self.config.redis, prefix=self.redis_prefix)
        return self._redis

    def _get_redis_replay(self) -> RedisReplayStore:
        if self._redis_replay is None:
            backend = self._get_redis()
            assert backend is not None
            self._redis_replay = RedisReplayStore(backend, self._window)
        return self._redis_replay

    async def _setup(self, now: float) -> None:
        cfg = self.config
        if cfg.ca_list and self.trust.ca_list is None and now >= self._ca_list_next_try:
            await self._load_ca_list(now)
        never = list(self.crls.unfetched)
        if never:
            await self._refresh_crls(never)

    async def _load_ca_list(self, now: float) -> None:
        """(Re)load the CA list; on failure keep the previous one and retry in CA_LIST_RETRY."""
        cfg = self.config
        assert cfg.ca_list is not None
        fetcher = self._get_fetcher()

        async def get(url: str) -> bytes:
            return (await fetcher.get(url, what="CA list")).body

        async def get_chain(url: str) -> list[x509.Certificate]:
            if not is_url(url):
                with open(url, "rb") as fh:
                    return load_certificates(fh.read())
            return (await fetcher.fetch_chain(url))[0]

        try:
            cal = await self.trust.load_ca_list(cfg.ca_list, get, get_chain, now=now)
        except StirShakenError:
            self._ca_list_next_try = now + CA_LIST_RETRY
            if self.trust.ca_list is not None:
                self._ca_list_refresh_at = now + CA_LIST_RETRY
            return
        self._ca_list_refresh_at = min(now + max(cfg.ca_list_refresh, 1.0), float(cal.exp) if cal.exp is not None else _INF)

    def _schedule_ca_list_refresh(self) -> None:
        if self._ca_list_refreshing:
            return
        self._ca_list_refreshing = True

        async def run() -> None:
            try:
                await self._load_ca_list(time.time())
            finally:
                self._ca_list_refreshing = False

        self._ensure_io().submit(run())

    async def _refresh_crls(self, urls: Sequence[str]) -> None:
        before_f, before_ff = self.crls.fetches, self.crls.fetch_failures
        await self.crls.refresh(self._get_fetcher(), urls)
        self.stats["crl_fetches"] += self.crls.fetches - before_f
        self.stats["crl_fetch_failures"] += self.crls.fetch_failures - before_ff

    def _schedule_crl_refresh(self) -> None:
        if self._crl_refreshing:
            return
        self._crl_refreshing = True

        async def run() -> None:
            try:
                await self._refresh_crls(self.crls.due(time.time()))
            finally:
                self._crl_refreshing = False

        self._ensure_io().submit(run())

    async def _obtain(self, url: str, now: float) -> ValidatedCredential | StirShakenError:
        """Cache miss: (static chain |) Redis | fetch, then CRL distribution points, then validation."""
        cached = self._lookup(url, now, None)
        if cached is not None:
            return cached
        certs = self._static.get(url)
        if certs is not None:
            await self._fetch_dps(certs)
            return self._validate_static(url, certs, now)
        entry = self.cache.get(url, now)
        if entry is None or not entry.der:
            entry = await self._load_chain(url, now)
            if entry.error is not None and not entry.der:
                self.cache.put(url, entry)
                return entry.error
        certs = entry.certs
        await self._fetch_dps(certs)
        self._revalidate(entry, certs, now)
        if entry.error is not None:
            entry.expires = now + self.config.negative_ttl
        self.cache.put(url, entry)
        return entry.credential or entry.error  # type: ignore[return-value]

    async def _fetch_dps(self, certs: Sequence[x509.Certificate]) -> None:
        missing = self.crls.missing_for(certs)
        if missing:
            await self._refresh_crls(missing)

    async def _load_chain(self, url: str, now: float) -> CacheEntry:
        cfg = self.config
        redis = self._get_redis()
        if redis is not None:
            hit = await redis.get_chain(url)
            self.stats["redis_errors"] = redis.errors
            if hit is not None and hit[1] > now:
                try:
                    certs = load_certificates(hit[0])
                    self.stats["redis_hits"] += 1
                    return CacheEntry(url=url, expires=hit[1], der=CacheEntry.der_of(certs))
                except StirShakenError:
                    pass
        self.stats["fetches"] += 1
        t0 = time.perf_counter()
        try:
            certs, res = await self._get_fetcher().fetch_chain(url)
        except StirShakenError as err:
            self.stats["fetch_failures"] += 1
            if self.trace is not None:
                self.trace.append({"url": url, "seconds": time.perf_counter() - t0, "error": err})
            return CacheEntry(url=url, expires=now + cfg.negative_ttl, error=err)
        not_after = min(c.not_valid_after_utc.timestamp() for c in certs)
        ttl = ttl_from_headers(res.headers, now, floor=cfg.cache_min_ttl, ceiling=cfg.cache_max_ttl, not_after=not_after)
        if self.trace is not None:
            self.trace.append({"url": url, "seconds": time.perf_counter() - t0, "result": res, "ttl": ttl, "certificates": len(certs)})
        expires = now + max(ttl, 1.0)
        if redis is not None and ttl > 0:
            pem = b"".join(c.public_bytes(Encoding.PEM) for c in certs)
            await redis.put_chain(url, pem, expires, now)
            self.stats["redis_errors"] = redis.errors
        return CacheEntry(url=url, expires=expires, der=CacheEntry.der_of(certs))

    async def _close_io(self) -> None:
        if self._fetcher is not None:
            await self._fetcher.close()
            self._fetcher = None
        if self._redis is not None:
            await self._redis.close()
            self._redis = None
            self._redis_replay = None

    # --- errors ------------------------------------------------------------------------------

    def _internal_error(self, exc: BaseException) -> VerificationResult:
        self.stats["internal_errors"] += 1
        err = InvalidIdentityError(f"verification failed: {type(exc).__name__}: {str(exc)[:160]}")
        return decide([failed("", err)], self.policy)


__all__ = ["CallInfo", "Verifier", "VerifierConfig", "call_tn"]
