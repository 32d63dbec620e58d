"""STI-VS credentials: the validated certificate of an ``x5u``, from a static chain, the memory
cache, Redis or a fetch (RFC 8224 §6.2 step 5, RFC 8226 §9, ATIS-1000074 §5.3.1 steps V2-V5,
ATIS-1000080 §5.3).

:class:`CredentialSource` is the half of :class:`stirshaken.vs.verifier.Verifier` that answers
"which :class:`~stirshaken.core.certificates.ValidatedCredential` (or which error) belongs to
this x5u":

* static chains and errors (:meth:`~CredentialSource.add_static_chain`,
  :meth:`~CredentialSource.add_static_error`) are never fetched;
* the synchronous path (``_lookup``) answers from the static chains and the memory cache,
  validating again when the trust (CA list, CRLs) changed or a validation ran out, and says when
  I/O is needed instead;
* the asynchronous path (``_obtain``, on the private I/O loop) reads Redis or fetches the chain
  (:mod:`stirshaken.vs.x5u`, SSRF-guarded), fetches the CRL distribution points it names
  (:mod:`stirshaken.vs.crl`) and validates it against the trust anchors, the STI-PA CA list and
  the CRLs (:mod:`stirshaken.vs.trust`); results, errors included, are cached
  (:mod:`stirshaken.vs.cache`; errors for ``negative_ttl`` seconds);
* the CA list is loaded at the first verification and refreshed at its ``exp`` or every
  ``ca_list_refresh`` seconds, CRLs at their refresh times, in the background (ATIS-1000080 §5.3,
  ATIS-1001006);
* CRL distribution points are fetched only for chains that validated, and one verification
  starts at most ``max_fetches_per_request`` outbound fetches (:class:`FetchBudget`; x5u and CRLs,
  docs/requirements.md VS-10);
* :meth:`~CredentialSource.areload_trust` reads every trust source again (SIGHUP), all or
  nothing; :meth:`~CredentialSource.trust_problems` says what is wrong with them now.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from typing import Any, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stirshaken.core.certificates import ValidatedCredential, load_certificates
from stirshaken.core.errors import FetchError, StirShakenError, UntrustedCertificateError
from stirshaken.vs.cache import CacheEntry, LRUCache, RedisBackend, SingleFlight, slim_credential, ttl_from_headers
from stirshaken.vs.config import OptionError, VerifierConfig, check_files, is_url
from stirshaken.vs.crl import CRLStore
from stirshaken.vs.trust import TrustManager
from stirshaken.vs.x5u import Fetcher

#: Retry interval after the CA list could not be loaded (seconds).
CA_LIST_RETRY = 60.0
_INF = float("inf")


class FetchLimitError(FetchError):
    """An x5u not fetched because the request already started ``max_fetches_per_request``
    fetches (436, docs/requirements.md VS-10); never cached."""


class TrustReloadError(StirShakenError):
    """A trust source could not be read again (:meth:`CredentialSource.areload_trust`); the
    previous trust stays in use."""


class FetchBudget:
    """The outbound fetches (x5u and CRL) one verification may still start: ``limit`` is
    ``max_fetches_per_request`` (docs/requirements.md VS-10)."""

    __slots__ = ("left", "limit")

    def __init__(self, limit: int):
        self.left = self.limit = limit

    def take(self) -> bool:
        """Use one fetch; False when none is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


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


class CredentialSource:
    """Credentials of x5u URLs for a verifier (module docstring); the base of
    :class:`~stirshaken.vs.verifier.Verifier`.  Fetches and background refreshes run on a private
    I/O thread started on first need (``_ensure_io``); the verifier submits its flow's I/O
    requests to it and closes it.

    ``stats`` counts cache hits and misses, fetches, Redis and CRL activity (with the verifier's
    own counters).  ``redis_prefix`` (class default ``"stirshaken:"``) namespaces the Redis keys.
    """

    redis_prefix: str = "stirshaken:"

    def __init__(self, config: VerifierConfig, *, static_chains: dict[str, list[x509.Certificate]] | None = None):
        self.config = config
        self.x5u_policy = config.x5u_policy()
        self.crls = CRLStore(config.crls, fetch_distribution_points=config.fetch_crl_distribution_points,
                             refresh=config.crl_refresh, unused_ttl=config.crl_unused_ttl)
        self.trust = TrustManager(config.trust_anchors, crls=self.crls, ca_list_roots=config.ca_list_trust,
                                  crl_signers=config.crl_signers, crl_policy=config.crl_policy)
        self.cache: LRUCache[str, CacheEntry] = LRUCache(config.cache_entries)
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
            "fetch_limit_hits": 0,
            "replays": 0,
            "internal_errors": 0,
        }
        self._io: _IOThread | None = None
        self._io_lock = threading.Lock()
        self._fetcher: Fetcher | None = None
        self._crl_fetcher: Fetcher | None = None
        self._setting_up = False
        self._redis: RedisBackend | None = None
        self._flight: SingleFlight[str, ValidatedCredential | StirShakenError] = SingleFlight()
        self._ca_list_next_try = 0.0
        self._ca_list_refresh_at = _INF  # reload of a loaded CA list (exp or ca_list_refresh)
        self._ca_list_refreshing = False
        self._crl_refreshing = False
        self._closed = False
        #: when a list: one record per x5u load (fetch or Redis) is appended, for diagnostics
        #: (``stirshaken inspect``); None (the default) records nothing
        self.trace: list[dict[str, Any]] | None = None

    # --- static chains ------------------------------------------------------------------------

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

    # --- credentials: the synchronous cache path --------------------------------------------

    def _lookup(self, url: str, now: float, counts: dict[str, int] | None) -> ValidatedCredential | StirShakenError | None:
        """A credential from static chains or the memory cache; None when I/O is needed (a fetch,
        or the CRL distribution points of a chain that validated).  Hits and misses are counted in
        ``counts`` (the stats, or None)."""
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
            res, pending = self._validate_static(url, certs, now)
            return None if pending else res
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
            if self._revalidate(entry, entry.certs, now):
                return None
        if count:
            counts["cache_hits"] = counts.get("cache_hits", 0) + 1  # type: ignore[index]
        return entry.credential or entry.error  # type: ignore[return-value]

    def _validate(self, certs: Sequence[x509.Certificate], now: float) -> tuple[ValidatedCredential | StirShakenError, float, list[str]]:
        """Validate ``certs`` at ``now``: (credential or error, validated until, distribution points
        of the validated chain still to fetch).  With such points the credential is provisional
        (validated until ``now``): the caller fetches them and validates again."""
        try:
            cred = self.trust.validate(certs, at=now)
        except StirShakenError as err:
            return err, now + self.config.negative_ttl, []
        except Exception as exc:  # defensive: a malformed certificate must not escape
            return UntrustedCertificateError(f"certificate cannot be validated: {type(exc).__name__}: {str(exc)[:120]}"), now + self.config.negative_ttl, []
        pending = self.crls.missing_for(cred.chain)
        if pending:
            return cred, now, pending
        # validate again when a CRL or the CA list turns stale (its warning must then show in the
        # results), and at half the unused-CRL lifetime (keeps its distribution points in use)
        until = min(cred.not_after.timestamp(), self.crls.fresh_until(now), now + self.config.crl_unused_ttl / 2)
        cal = self.trust.ca_list
        if cal is not None and cal.exp is not None and cal.exp > now:
            until = min(until, float(cal.exp))
        return cred, until, []

    def _validate_static(self, url: str, certs: list[x509.Certificate], now: float) -> tuple[ValidatedCredential | StirShakenError, list[str]]:
        gen = self.trust.generation
        res, until, pending = self._validate(certs, now)
        entry = CacheEntry(url=url, expires=float("inf"), der=CacheEntry.der_of(certs), generation=gen, validated_until=until)
        if isinstance(res, StirShakenError):
            entry.error = res
        else:
            entry.credential = res
        self._static_entries[url] = entry
        return res, pending

    def _revalidate(self, entry: CacheEntry, certs: list[x509.Certificate], now: float) -> list[str]:
        """Validate ``entry`` again from ``certs`` (its :attr:`~CacheEntry.certs`, parsed once by
        the caller); returns the distribution points still to fetch (see :meth:`_validate`)."""
        self.stats["revalidations"] += 1
        gen = self.trust.generation
        res, until, pending = self._validate(certs, now)
        if isinstance(res, StirShakenError):
            entry.credential, entry.error = None, res
        else:
            entry.credential, entry.error = slim_credential(res), None
        entry.generation = gen
        entry.validated_until = until
        return pending

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

    def _get_fetcher(self) -> Fetcher:
        if self._fetcher is None:
            self._fetcher = Fetcher(self.x5u_policy)
        return self._fetcher

    def _get_redis(self) -> RedisBackend | None:
        if self.config.redis and self._redis is None:
            self._redis = RedisBackend(self.config.redis, prefix=self.redis_prefix)
        return self._redis

    async def _setup(self, now: float) -> None:
        cfg = self.config
        if cfg.ca_list and self.trust.ca_list is None and now >= self._ca_list_next_try:
            await self._load_ca_list(now)
        never = list(self.crls.unfetched)
        if never:
            await self._refresh_crls(never)

    def maintain(self, now: float | None = None) -> None:
        """Start in the background what is due: the first load of the CA list and the configured
        CRLs, refreshes, forgetting unused distribution points.  Verifications do this as they
        come; a server calls it periodically so an idle node's trust (and ``/healthz``) stays
        current.  Never blocks."""
        now = time.time() if now is None else now
        if self._needs_setup(now):
            if not self._setting_up:
                self._setting_up = True

                async def run() -> None:
                    try:
                        await self._setup(time.time())
                    finally:
                        self._setting_up = False

                self._ensure_io().submit(run())
        else:
            self._schedule_due_refreshes(now)

    def trust_problems(self, now: float | None = None) -> list[str]:
        """What is wrong with the trust sources now, one line each (CA list that could not be
        loaded or is past its ``exp``, CRLs unavailable or past ``nextUpdate``); empty when all is
        well (a source not tried yet is no problem: the first verification or :meth:`maintain` loads it)."""
        return self.trust.problems(time.time() if now is None else now)

    async def areload_trust(self) -> dict[str, Any]:
        """Read every trust source again (SIGHUP, docs/requirements.md VS-10): trust anchor files,
        CA-list roots, CRL signers, CRL files and the CA list, all or nothing; then the configured
        CRL URLs are fetched again (a failure there keeps that CRL's previous copy).  Raises
        :class:`TrustReloadError` naming what failed, the previous trust staying in use; returns
        a summary (anchors, CRLs, CA list sequence, problems)."""
        return await asyncio.wrap_future(self._ensure_io().submit(self._reload_trust()))

    async def _reload_trust(self) -> dict[str, Any]:
        now = time.time()
        cfg = self.config
        try:
            check_files(cfg)  # names the option and the file of a bad one
            files = self.trust.read_files()
            crl_records = self.crls.read_sources(now)
            cal = None
            if cfg.ca_list:
                get, get_chain = self._ca_list_io()
                cal = await self.trust.read_ca_list(cfg.ca_list, get, get_chain, files[1], now=now)
        except OptionError as exc:
            raise TrustReloadError(f"{exc.option}: {exc.message}") from None
        except StirShakenError as exc:
            raise TrustReloadError(exc.description) from None
        except OSError as exc:
            raise TrustReloadError(f"{getattr(exc, 'filename', None) or 'a trust file'}: {exc.strerror or exc}") from None
        self.trust.install_files(files)
        self.crls.install(crl_records)
        if cal is not None:
            self.trust.set_ca_list(cal)
            self._ca_list_refresh_at = min(now + max(cfg.ca_list_refresh, 1.0), float(cal.exp) if cal.exp is not None else _INF)
        urls = [s for s in self.crls.sources if is_url(s)]
        if urls:
            await self._refresh_crls(urls)
        return {"trust_anchors": len(self.trust.anchors), "crls": len(self.crls.crls),
                "ca_list_sequence": cal.sequence if cal is not None else None, "problems": self.trust_problems(now)}

    def _ca_list_io(self) -> tuple[Any, Any]:
        fetcher = self._get_fetcher()

        async def get(url: str) -> bytes:
            return (await fetcher.get(url, what="CA list")).body

        async def get_chain(url: str) -> list[x509.Certificate]:
            if not is_url(url):
                with open(url, "rb") as fh:
                    return load_certificates(fh.read())
            return (await fetcher.fetch_chain(url))[0]

        return get, get_chain

    async def _load_ca_list(self, now: float) -> None:
        """(Re)load the CA list; on failure keep the previous one and retry in CA_LIST_RETRY."""
        cfg = self.config
        assert cfg.ca_list is not None
        get, get_chain = self._ca_list_io()
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

    def _get_crl_fetcher(self) -> Fetcher:
        if self._crl_fetcher is None:
            self._crl_fetcher = Fetcher(self.config.crl_fetch_policy())
        return self._crl_fetcher

    async def _refresh_crls(self, urls: Sequence[str], *, discovered: bool = False) -> None:
        before_f, before_ff = self.crls.fetches, self.crls.fetch_failures
        await self.crls.refresh(self._get_crl_fetcher(), urls, discovered=discovered)
        self.stats["crl_fetches"] += self.crls.fetches - before_f
        self.stats["crl_fetch_failures"] += self.crls.fetch_failures - before_ff

    def _schedule_crl_refresh(self) -> None:
        if self._crl_refreshing:
            return
        self._crl_refreshing = True

        async def run() -> None:
            try:
                now = time.time()
                self.crls.forget_unused(now)
                await self._refresh_crls(self.crls.due(now))
            finally:
                self._crl_refreshing = False

        self._ensure_io().submit(run())

    async def _obtain(self, url: str, now: float, budget: FetchBudget | None = None) -> ValidatedCredential | StirShakenError:
        """Cache miss: (static chain |) Redis | fetch, validation, then the CRL distribution points
        of a chain that validated and validation again.  ``budget``: the request's fetches."""
        cached = self._lookup(url, now, None)
        if cached is not None:
            return cached
        certs = self._static.get(url)
        if certs is not None:
            res, pending = self._validate_static(url, certs, now)
            if pending:
                await self._fetch_dps(pending, budget)
                res, pending = self._validate_static(url, certs, now)
            return self._pending_result(res, pending)
        entry = self.cache.get(url, now)
        if entry is None or not entry.der:
            entry = await self._load_chain(url, now, budget)
            if entry.error is not None and not entry.der:
                if not isinstance(entry.error, FetchLimitError):
                    self.cache.put(url, entry)
                return entry.error
        certs = entry.certs
        pending = self._revalidate(entry, certs, now)
        if pending:
            await self._fetch_dps(pending, budget)
            pending = self._revalidate(entry, certs, now)
        if entry.error is not None:
            entry.expires = now + self.config.negative_ttl
        self.cache.put(url, entry)
        return self._pending_result(entry.credential or entry.error, pending)  # type: ignore[arg-type]

    def _pending_result(self, res: ValidatedCredential | StirShakenError, pending: list[str]) -> ValidatedCredential | StirShakenError:
        """A credential whose distribution points could not be fetched within the request's
        budget: its warning says so; with ``crl_policy = "hard"`` it is 437 (the cache keeps the
        provisional credential, validated again by the next request)."""
        if pending and self.config.crl_policy == "hard" and not isinstance(res, StirShakenError):
            return UntrustedCertificateError(f"revocation status cannot be established (crl_policy hard): CRL {pending[0]} not fetched: "
                                             f"the request reached max_fetches_per_request ({self.config.max_fetches_per_request})")
        return res

    async def _fetch_dps(self, urls: Sequence[str], budget: FetchBudget | None) -> None:
        """Fetch the distribution points ``urls`` of a validated chain, as far as ``budget`` allows."""
        allowed = [u for u in urls if budget is None or budget.take()]
        if len(allowed) < len(urls):
            self.stats["fetch_limit_hits"] += 1
        if allowed:
            await self._refresh_crls(allowed, discovered=True)

    async def _load_chain(self, url: str, now: float, budget: FetchBudget | None = None) -> CacheEntry:
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
        if budget is not None and not budget.take():
            self.stats["fetch_limit_hits"] += 1
            return CacheEntry(url=url, expires=now, error=FetchLimitError(
                f"x5u not fetched: this request already started {budget.limit} fetches (max_fetches_per_request)"))
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


__all__ = ["CA_LIST_RETRY", "CredentialSource", "FetchBudget", "FetchLimitError", "TrustReloadError"]
