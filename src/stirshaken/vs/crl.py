"""Certificate revocation lists for the STI-VS (ATIS-1000080 §6.3.3, §6.4.1 CM-12; docs/requirements.md
PA-02, VS-06, VS-10).

SHAKEN certificates name one CRL distribution point (an HTTP(S) URL, usually the STI-PA's
SHAKEN CRL, an indirect CRL signed by the STI-PA's CRL signer).  :class:`CRLStore` keeps the CRLs
configured by the operator (files or URLs, ``crls``) and the ones discovered from the
distribution points of chains that validated.  Every change of what is loaded bumps
:attr:`CRLStore.generation`, which makes cached credentials re-validate.

* Fetching follows its own rules (:meth:`stirshaken.vs.config.VerifierConfig.crl_fetch_policy`):
  http is allowed, as the CRL is signed, but the SSRF address rules of x5u stay.
* Every source is read again every ``refresh`` seconds at most, and sooner at its ``nextUpdate``
  (a CRL file replaced on disk is so picked up); a source that could not be read is tried again
  within a minute.  A failed read keeps the previous copy and records the error.
* A distribution point that no validated chain used (:meth:`CRLStore.touch`) for ``unused_ttl``
  seconds is forgotten (:meth:`CRLStore.forget_unused`): a stream of certificates naming new URLs
  cannot make the store grow nor keep it fetching.

Whether a CRL covers a certificate (its issuer and signature, or an indirect CRL from a configured
signer) is decided by :meth:`stirshaken.core.certificates.TrustStore.crl_covers`; what a gap in
revocation status means for a call by :mod:`stirshaken.vs.trust` (``crl_policy``).
:meth:`CRLStore.problems` lists what is wrong with the sources now (``/healthz``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from stirshaken.core.certificates import crl_urls, load_crl
from stirshaken.core.errors import CertificateError, FetchError, StirShakenError
from stirshaken.vs.config import is_url
from stirshaken.vs.x5u import Fetcher

#: Retry interval for a CRL whose read failed (seconds; shorter when ``refresh`` is).
RETRY_INTERVAL = 60.0
#: Default of ``refresh`` (seconds): the ``crl_refresh`` option's default.
DEFAULT_REFRESH = 3600.0


@dataclass(slots=True)
class CRLRecord:
    """One CRL source: the CRL last read (None: never read), when to read it again, the error of
    the last read (None when it worked), whether the operator configured it (else it is a
    distribution point) and when a validated chain last used it (epoch seconds)."""

    source: str
    crl: x509.CertificateRevocationList | None
    next_refresh: float
    error: str | None = None
    configured: bool = True
    last_used: float = 0.0
    der: bytes = b""


def _utc(t: object) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S}Z"


class CRLStore:
    """CRLs by source (file path or URL).  ``refresh`` and ``unused_ttl`` in seconds (module
    docstring); raises :class:`CertificateError` when a configured CRL file cannot be read."""

    def __init__(self, sources: Sequence[str] = (), *, fetch_distribution_points: bool = True,
                 refresh: float = DEFAULT_REFRESH, unused_ttl: float = 86400.0):
        self.fetch_distribution_points = fetch_distribution_points
        self.refresh_interval = float(refresh)
        self.unused_ttl = float(unused_ttl)
        self.sources = tuple(sources)
        self._records: dict[str, CRLRecord] = {}
        self.generation = 0
        self._crls: tuple[x509.CertificateRevocationList, ...] = ()
        self.fetches = 0
        self.fetch_failures = 0
        #: URL sources never tried yet (the verifier fetches them before its first verification)
        self.unfetched: set[str] = set()
        #: earliest refresh time of any source (kept up to date: the verifier reads it per call)
        self.next_due = float("inf")
        self._records = self.read_sources(time.time())
        self.unfetched = {s for s in self.sources if is_url(s)}
        self._rebuild()

    # --- reading ---------------------------------------------------------------------------------

    def _next_refresh(self, crl: x509.CertificateRevocationList, now: float) -> float:
        nu = crl.next_update_utc
        later = now + self.refresh_interval
        if nu is None:
            return later
        return min(max(nu.timestamp(), now + min(RETRY_INTERVAL, self.refresh_interval)), later)

    def _retry_at(self, now: float) -> float:
        return now + min(RETRY_INTERVAL, self.refresh_interval)

    @staticmethod
    def _load_file(path: str) -> tuple[x509.CertificateRevocationList, bytes]:
        """The CRL of a file and its DER; :class:`CertificateError` naming the file (``cannot read
        {path}: ...``, ``{path}: a certificate, not a CRL``)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read CRL file {path}: {exc.strerror}") from None
        try:
            crl = load_crl(data)
        except CertificateError as exc:
            raise CertificateError(f"{path}: {exc.description}") from None
        return crl, crl.public_bytes(Encoding.DER)

    def read_sources(self, now: float) -> dict[str, CRLRecord]:
        """Records of the configured sources: files read now (raises :class:`CertificateError`
        naming the file), URLs kept as they are (or new, never fetched).  Nothing is changed:
        :meth:`install` applies the result (the reload of :mod:`stirshaken.vs.credentials`)."""
        out: dict[str, CRLRecord] = {}
        for src in self.sources:
            if is_url(src):
                old = self._records.get(src)
                out[src] = old if old is not None and old.configured else CRLRecord(src, None, 0.0)
            else:
                crl, der = self._load_file(src)
                out[src] = CRLRecord(src, crl, self._next_refresh(crl, now), der=der)
        return out

    def install(self, configured: dict[str, CRLRecord]) -> bool:
        """Replace the configured sources' records by ``configured`` (from :meth:`read_sources`);
        distribution points stay.  Returns True when a CRL changed."""
        before = {k: r.der for k, r in self._records.items()}
        dps = {k: r for k, r in self._records.items() if not r.configured and k not in configured}
        self._records = {**configured, **dps}
        changed = before != {k: r.der for k, r in self._records.items()}
        self._rebuild()
        return changed

    def _rebuild(self) -> None:
        self._crls = tuple(r.crl for r in self._records.values() if r.crl is not None)
        self.generation += 1
        self._update_due()

    def _update_due(self) -> None:
        due = float("inf")
        ttl = self.unused_ttl
        for r in self._records.values():
            due = min(due, r.next_refresh if r.configured else min(r.next_refresh, r.last_used + ttl))
        self.next_due = due

    @property
    def crls(self) -> tuple[x509.CertificateRevocationList, ...]:
        return self._crls

    def record(self, source: str) -> CRLRecord | None:
        """The record of ``source`` (a configured source or a distribution point), if known."""
        return self._records.get(source)

    def records(self) -> list[CRLRecord]:
        return list(self._records.values())

    def add(self, source: str, crl: x509.CertificateRevocationList, now: float | None = None) -> None:
        """Install a CRL (used by tests and by callers that fetch CRLs themselves)."""
        now = time.time() if now is None else now
        old = self._records.get(source)
        self._records[source] = CRLRecord(source, crl, self._next_refresh(crl, now), configured=old.configured if old else True,
                                          last_used=now, der=crl.public_bytes(Encoding.DER))
        self.unfetched.discard(source)
        self._rebuild()

    # --- distribution points ---------------------------------------------------------------------

    def missing_for(self, certs: Sequence[x509.Certificate]) -> list[str]:
        """Distribution-point URLs of ``certs`` not known yet (when DP fetching is enabled)."""
        if not self.fetch_distribution_points:
            return []
        out: list[str] = []
        for cert in certs:
            for url in crl_urls(cert):
                if url not in self._records and url not in out:
                    out.append(url)
        return out

    def touch(self, urls: Sequence[str], now: float) -> None:
        """A validated chain used these sources at ``now`` (keeps distribution points known)."""
        for url in urls:
            r = self._records.get(url)
            if r is not None and r.last_used < now:
                r.last_used = now

    def forget_unused(self, now: float) -> list[str]:
        """Drop the distribution points no validated chain used for ``unused_ttl`` seconds;
        returns their URLs (configured sources are never dropped)."""
        gone = [k for k, r in self._records.items() if not r.configured and r.last_used + self.unused_ttl <= now]
        for k in gone:
            del self._records[k]
        if gone:
            self._rebuild()
        return gone

    # --- refresh ---------------------------------------------------------------------------------

    def due(self, now: float) -> list[str]:
        """Sources (URLs and files) whose refresh time has come (nextUpdate or ``refresh`` passed,
        or never fetched)."""
        return [s for s, r in self._records.items() if r.next_refresh <= now]

    def stale(self, at: float) -> list[CRLRecord]:
        """Records whose CRL is past its ``nextUpdate`` at ``at`` (still used: better than none)."""
        out = []
        for r in self._records.values():
            nu = r.crl.next_update_utc if r.crl is not None else None
            if nu is not None and nu.timestamp() < at:
                out.append(r)
        return out

    def fresh_until(self, at: float) -> float:
        """The earliest ``nextUpdate`` after ``at`` among the CRLs (inf when none): a credential
        validated now must be looked at again then (its CRL may turn stale)."""
        times = [r.crl.next_update_utc.timestamp() for r in self._records.values() if r.crl is not None and r.crl.next_update_utc is not None]
        return min((t for t in times if t >= at), default=float("inf"))

    async def refresh(self, fetcher: Fetcher, urls: Sequence[str], now: float | None = None, *, discovered: bool = False) -> bool:
        """Read ``urls`` again (fetched, or files re-read); returns True when any CRL changed.
        ``discovered``: the URLs are distribution points of a chain that validated (new records
        are not configured sources).  A failure keeps the previous copy and records the error."""
        changed = False
        for url in urls:
            now = time.time() if now is None else now
            old = self._records.get(url)
            if old is None and not discovered:
                continue  # forgotten meanwhile
            configured = old.configured if old is not None else False
            last_used = old.last_used if old is not None else now
            self.unfetched.discard(url)
            self.fetches += 1
            try:
                if is_url(url):
                    res = await fetcher.get(url, what="CRL")
                    crl = load_crl(res.body)
                    der = crl.public_bytes(Encoding.DER)
                else:
                    crl, der = self._load_file(url)
            except (FetchError, CertificateError, StirShakenError) as exc:
                self.fetch_failures += 1
                if old is None or old.crl is None or old.error is None:
                    changed = True  # a new problem: results must say so
                self._records[url] = CRLRecord(url, old.crl if old else None, self._retry_at(now), exc.description,
                                               configured, last_used, old.der if old else b"")
                continue
            if old is None or old.der != der or old.error is not None:
                changed = True
            self._records[url] = CRLRecord(url, crl, self._next_refresh(crl, now), None, configured, last_used, der)
        if changed:
            self._rebuild()
        else:
            self._update_due()
        return changed

    # --- state -----------------------------------------------------------------------------------

    def problems(self, now: float) -> list[str]:
        """What is wrong with the sources at ``now``, one line each: a source that could not be
        read (and has no copy, or a stale one), a CRL past its ``nextUpdate``, a refresh that
        failed while the previous copy is still current (``/healthz`` reasons)."""
        out = []
        for r in self._records.values():
            nu = r.crl.next_update_utc if r.crl is not None else None
            if r.crl is None:
                if r.error is not None:
                    out.append(f"CRL {r.source} unavailable: {r.error}")
            elif nu is not None and nu.timestamp() < now:
                out.append(f"CRL {r.source} is past its nextUpdate ({_utc(nu)})" + (f" and could not be refreshed: {r.error}" if r.error else ""))
            elif r.error is not None:
                out.append(f"CRL {r.source} could not be refreshed: {r.error} (the copy valid until {_utc(nu) if nu else 'its next refresh'} is used)")
        return out

    def status(self) -> list[dict[str, object]]:
        return [
            {"source": r.source, "loaded": r.crl is not None, "next_refresh": r.next_refresh, "error": r.error,
             "configured": r.configured, "last_used": r.last_used}
            for r in self._records.values()
        ]
