"""Certificate revocation lists for the STI-VS (ATIS-1000080 §6.4.1 CM-12, docs/requirements.md PA-02, VS-06).

SHAKEN certificates name one CRL distribution point (an HTTP(S) URL, usually the STI-PA's
SHAKEN CRL).  :class:`CRLStore` keeps the CRLs configured by the operator (files or URLs) and the
ones discovered from distribution points, fetched with the same SSRF rules as x5u
(:mod:`stirshaken.vs.x5u`) and refreshed when their ``nextUpdate`` has passed.  Every change bumps
:attr:`CRLStore.generation`, which makes cached credentials re-validate.

Whether a CRL applies to a certificate (issuer name and signature, or an indirect CRL from a
configured signer) is decided in :meth:`stirshaken.core.certificates.TrustStore._check_revocation`.
Fetch failures are soft: a CRL that cannot be fetched is reported as a warning and the previous
copy (if any) stays in use; this is the common VS policy, as a CRL outage must not block calls.
CRL files are re-read on the same schedule (a deployment may replace them).  A CRL used past its
``nextUpdate`` is reported by :meth:`CRLStore.stale` (the verifier adds a warning check to the
results that depend on it, :mod:`stirshaken.vs.trust`).
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

#: Retry interval for a CRL whose fetch failed or that has no nextUpdate (seconds).
RETRY_INTERVAL = 60.0
#: Refresh interval when nextUpdate lies far away (keep reasonably current anyway).
MAX_REFRESH = 86400.0


@dataclass(slots=True)
class CRLRecord:
    """One CRL and where it came from."""

    source: str
    crl: x509.CertificateRevocationList | None
    next_refresh: float
    error: str | None = None


def _next_refresh(crl: x509.CertificateRevocationList, now: float) -> float:
    nu = crl.next_update_utc
    if nu is None:
        return now + RETRY_INTERVAL * 10
    return min(max(nu.timestamp(), now + RETRY_INTERVAL), now + MAX_REFRESH)


class CRLStore:
    """CRLs by source (file path or URL)."""

    def __init__(self, sources: Sequence[str] = (), *, fetch_distribution_points: bool = True):
        self.fetch_distribution_points = fetch_distribution_points
        self._records: dict[str, CRLRecord] = {}
        self.generation = 0
        self._crls: tuple[x509.CertificateRevocationList, ...] = ()
        self.warnings: list[str] = []
        self.fetches = 0
        self.fetch_failures = 0
        #: URL sources never tried yet (the verifier fetches them before its first verification)
        self.unfetched: set[str] = set()
        #: earliest refresh time of any source (kept up to date: the verifier reads it per call)
        self.next_due = float("inf")
        now = time.time()
        for src in sources:
            if is_url(src):
                self._records[src] = CRLRecord(src, None, 0.0)
                self.unfetched.add(src)
            else:
                crl = self._load_file(src)
                self._records[src] = CRLRecord(src, crl, _next_refresh(crl, now))
        self._rebuild()

    @staticmethod
    def _load_file(path: str) -> x509.CertificateRevocationList:
        """The CRL of a file; :class:`CertificateError` naming the file (``cannot read {path}:
        ...``, ``{path}: a certificate, not a CRL``)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read CRL file {path}: {exc.strerror}") from None
        try:
            return load_crl(data)
        except CertificateError as exc:
            raise CertificateError(f"{path}: {exc.description}") from None

    def _rebuild(self) -> None:
        self._crls = tuple(r.crl for r in self._records.values() if r.crl is not None)
        self.generation += 1
        self._update_due()

    def _update_due(self) -> None:
        self.next_due = min((r.next_refresh for r in self._records.values()), default=float("inf"))

    @property
    def crls(self) -> tuple[x509.CertificateRevocationList, ...]:
        return self._crls

    def add(self, source: str, crl: x509.CertificateRevocationList, now: float | None = None) -> None:
        """Install a CRL (used by tests and by callers that fetch CRLs themselves)."""
        now = time.time() if now is None else now
        self._records[source] = CRLRecord(source, crl, _next_refresh(crl, now))
        self.unfetched.discard(source)
        self._rebuild()

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

    def due(self, now: float) -> list[str]:
        """Sources (URLs and files) whose refresh time has come (nextUpdate passed, or never fetched)."""
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

    async def refresh(self, fetcher: Fetcher, urls: Sequence[str], now: float | None = None) -> bool:
        """Fetch ``urls`` (files are re-read); returns True when any CRL changed.  Failures become
        warnings and the previous copy stays in use."""
        changed = False
        for url in urls:
            now = time.time() if now is None else now
            old = self._records.get(url)
            self.unfetched.discard(url)
            self.fetches += 1
            try:
                if is_url(url):
                    res = await fetcher.get(url, what="CRL")
                    crl = load_crl(res.body)
                else:
                    crl = self._load_file(url)
            except (FetchError, CertificateError, StirShakenError) as exc:
                self.fetch_failures += 1
                msg = f"CRL {url} unavailable: {exc.description}"
                self.warnings = (self.warnings + [msg])[-20:]
                self._records[url] = CRLRecord(url, old.crl if old else None, now + RETRY_INTERVAL, msg)
                continue
            if old is None or old.crl is None or old.crl.public_bytes(Encoding.DER) != crl.public_bytes(Encoding.DER):
                changed = True
            self._records[url] = CRLRecord(url, crl, _next_refresh(crl, now))
        if changed:
            self._rebuild()
        else:
            self._update_due()
        return changed

    def status(self) -> list[dict[str, object]]:
        return [
            {"source": r.source, "loaded": r.crl is not None, "next_refresh": r.next_refresh, "error": r.error}
            for r in self._records.values()
        ]

