"""Trust sources of the STI-VS: anchors, the STI-PA trusted-CA list and CRLs.

ATIS-1000074 §5.3.1 / ATIS-1000080 (docs/requirements.md VS-06, PA-01): the leaf certificate must chain
to an STI-CA that the STI-PA lists as trusted, must not be revoked and must carry a TNAuthList
with an SPC (CM-13).  Anchors come from

* PEM files or directories of PEM files (``*.pem``, ``*.crt``, ``*.cer``), and
* the STI-PA's signed CA list: a JWS (ES256) whose ``x5u`` header names the PA signing
  certificate; that certificate must chain to one of the configured STI-PA roots.  Payload
  ``{"version", "sequence", "exp", "trustList": [PEM, ...]}``.  The response of the STI-PA API,
  ``{"status":"success","caList":"<JWS>"}``, is accepted as well as the bare JWS.

:class:`TrustManager` combines them with a :class:`~stirshaken.vs.crl.CRLStore` into a
:class:`~stirshaken.core.certificates.TrustStore`, rebuilt when anything changes; its
:attr:`~TrustManager.generation` tells caches when to re-validate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Sequence

import orjson
from cryptography import x509
from cryptography.x509.oid import NameOID

from stirshaken.core.certificates import TrustStore, ValidatedCredential, crl_urls, load_certificates
from stirshaken.vs.crl import CRLStore
from stirshaken.core.errors import CertificateError, StirShakenError, TNAuthListError, UntrustedCertificateError
from stirshaken.core.jose import parse_compact, verify_x5u_jws
from stirshaken.core.tnauthlist import from_certificate

PEM_SUFFIXES = (".pem", ".crt", ".cer")


class CAListError(UntrustedCertificateError):
    """The STI-PA trusted-CA list is malformed, expired or not signed by the STI-PA."""


def load_pem_sources(sources: Sequence[str]) -> list[x509.Certificate]:
    """Certificates from PEM files and directories of PEM files (sorted, non-recursive).

    Raises :class:`CertificateError` whose description starts with the file at fault (``cannot
    read {file}: ...`` or ``{file}: a private key, not a certificate``)."""
    out: list[x509.Certificate] = []
    for src in sources:
        path = Path(src)
        try:
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in PEM_SUFFIXES and p.is_file()) if path.is_dir() else [path]
        except OSError as exc:
            raise CertificateError(f"cannot read {path}: {exc.strerror}") from None
        for f in files:
            try:
                data = f.read_bytes()
            except OSError as exc:
                raise CertificateError(f"cannot read {f}: {exc.strerror}") from None
            try:
                out.extend(load_certificates(data))
            except CertificateError as exc:
                raise CertificateError(f"{f}: {exc.description}") from None  # which file (of a directory)
    return out


@dataclass(frozen=True)
class CAList:
    """A verified STI-PA trusted-CA list."""

    version: object
    sequence: int | None
    exp: int | None
    anchors: tuple[x509.Certificate, ...]
    signer: x509.Certificate


def split_ca_list(text: str | bytes) -> tuple[dict[str, object], dict[str, object], bytes, bytes]:
    """Parse a CA-list JWS (or the ``{"caList": JWS}`` envelope): header, payload, signing input,
    signature (:func:`stirshaken.core.jose.parse_compact`); raises :class:`CAListError`."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            env = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CAListError("CA list envelope is not valid JSON") from None
        if not isinstance(env, dict) or not isinstance(env.get("caList"), str):
            raise CAListError("CA list envelope has no 'caList' string")
        raw = env["caList"].strip()
    jws = parse_compact(raw, what="CA list", error=CAListError)
    return dict(jws.header), jws.payload, jws.signing_input, jws.signature


def verify_ca_list(
    text: str | bytes, signer_chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], *, now: float | None = None
) -> CAList:
    """Verify a CA list JWS with the (already fetched) signer chain; sans-I/O."""
    now = time.time() if now is None else now
    header, payload, signing_input, sig = split_ca_list(text)
    if header.get("alg") != "ES256":
        raise CAListError(f"CA list 'alg' is not ES256 ({str(header.get('alg'))[:20]!r})")
    if not roots:
        raise CAListError("no STI-PA root configured to verify the CA list (ca_list_trust)")
    signer = verify_x5u_jws(signing_input, sig, signer_chain, roots, at=dt.datetime.fromtimestamp(now, dt.timezone.utc),
                            error=CAListError, what="CA list")
    exp = payload.get("exp")
    if exp is not None and (not isinstance(exp, (int, float)) or exp < now):
        raise CAListError("CA list has expired ('exp' passed)")
    tl = payload.get("trustList")
    if not isinstance(tl, list) or not tl or not all(isinstance(p, str) for p in tl):
        raise CAListError("CA list 'trustList' must be a non-empty array of PEM strings")
    anchors: list[x509.Certificate] = []
    for item in tl:
        try:
            anchors.extend(load_certificates(item.encode()))
        except CertificateError as exc:
            raise CAListError(f"CA list entry is not a certificate: {exc.description}") from None
    seq = payload.get("sequence")
    return CAList(
        version=payload.get("version"),
        sequence=seq if isinstance(seq, int) else None,
        exp=int(exp) if isinstance(exp, (int, float)) else None,
        anchors=tuple(anchors),
        signer=signer,
    )


def ca_list_x5u(text: str | bytes) -> str:
    """The ``x5u`` header of a CA list JWS (the STI-PA signing certificate's URL)."""
    header, _, _, _ = split_ca_list(text)
    x5u = header.get("x5u")
    if not isinstance(x5u, str) or not x5u:
        raise CAListError("CA list JWS header has no 'x5u'")
    return x5u


class TrustManager:
    """Anchors (files + CA list) and CRLs, exposed as one :class:`TrustStore` per generation.

    ``crl_policy`` (docs/requirements.md VS-10): ``"soft"``, a certificate whose revocation status
    cannot be established validates with a warning naming the reason; ``"hard"``, it fails
    (437).  The sources (file paths) are kept: :meth:`read_files` and :meth:`install_files`
    read them again (SIGHUP)."""

    def __init__(
        self,
        anchor_sources: Sequence[str] = (),
        *,
        crls: CRLStore | None = None,
        ca_list_roots: Sequence[str] = (),
        anchors: Sequence[x509.Certificate] = (),
        crl_signers: Sequence[str] = (),
        crl_policy: str = "soft",
    ):
        self.anchor_sources = tuple(anchor_sources)
        self.ca_list_root_sources = tuple(ca_list_roots)
        self.crl_signer_sources = tuple(crl_signers)
        self.extra_anchors = tuple(anchors)
        self.crl_policy = crl_policy
        self.file_anchors: tuple[x509.Certificate, ...] = ()
        self.ca_list_roots: tuple[x509.Certificate, ...] = ()
        # certificates whose CRLs count for the chain (the STI-PA's indirect SHAKEN CRL, CM-12);
        # never path anchors: a CRL signer must not be able to vouch for certificates
        self.crl_signers: tuple[x509.Certificate, ...] = ()
        self.ca_list: CAList | None = None
        self.ca_list_error: StirShakenError | None = None
        self.ca_list_source: str | None = None
        self.crls = crls or CRLStore()
        self._anchor_gen = 0
        self._store: TrustStore | None = None
        self._store_gen = -1
        self.install_files(self.read_files())

    def read_files(self) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
        """Trust anchors, CA-list roots and CRL signers read from their files now; raises
        :class:`CertificateError` naming the file.  Changes nothing (see :meth:`install_files`)."""
        return (tuple(load_pem_sources(self.anchor_sources)) + self.extra_anchors, tuple(load_pem_sources(self.ca_list_root_sources)),
                tuple(load_pem_sources(self.crl_signer_sources)))

    def install_files(self, files: tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]) -> None:
        """Use what :meth:`read_files` read."""
        self.file_anchors, self.ca_list_roots, self.crl_signers = files
        self._anchor_gen += 1

    @property
    def generation(self) -> int:
        return self._anchor_gen + self.crls.generation

    @property
    def anchors(self) -> tuple[x509.Certificate, ...]:
        return self.file_anchors + (self.ca_list.anchors if self.ca_list else ())

    def set_ca_list(self, ca_list: CAList) -> None:
        self.ca_list = ca_list
        self.ca_list_error = None
        self._anchor_gen += 1

    async def load_ca_list(
        self,
        source: str,
        get: Callable[[str], Awaitable[bytes]],
        get_chain: Callable[[str], Awaitable[list[x509.Certificate]]],
        *,
        now: float | None = None,
    ) -> CAList:
        """Load and verify the CA list from a file or URL (``get``/``get_chain`` do the I/O).
        On failure the previous list stays and :attr:`ca_list_error` says why."""
        self.ca_list_source = source
        try:
            cal = await self.read_ca_list(source, get, get_chain, self.ca_list_roots, now=now)
        except CAListError as err:
            self._ca_list_failed(err)
            raise
        self.set_ca_list(cal)
        return cal

    @staticmethod
    async def read_ca_list(
        source: str,
        get: Callable[[str], Awaitable[bytes]],
        get_chain: Callable[[str], Awaitable[list[x509.Certificate]]],
        roots: Sequence[x509.Certificate],
        *,
        now: float | None = None,
    ) -> CAList:
        """The CA list of ``source`` verified against ``roots``; raises :class:`CAListError`."""
        try:
            if source.lower().startswith(("http://", "https://")):
                text = await get(source)
            else:
                text = Path(source).read_bytes()
            signer_chain = await get_chain(ca_list_x5u(text))
            return verify_ca_list(text, signer_chain, roots, now=now)
        except OSError as exc:
            raise CAListError(f"cannot read CA list {source}: {exc.strerror}") from None
        except CAListError:
            raise
        except StirShakenError as exc:
            raise CAListError(f"CA list unusable: {exc.description}") from None

    def _ca_list_failed(self, err: StirShakenError) -> None:
        if self.ca_list_error is None:
            self._anchor_gen += 1  # results that rely on the list must now say so
        self.ca_list_error = err

    def store(self) -> TrustStore:
        gen = self.generation
        if self._store is None or self._store_gen != gen:
            anchors = self.anchors
            if not anchors:
                detail = f" ({self.ca_list_error.description})" if self.ca_list_error else ""
                raise UntrustedCertificateError("Failed to authenticate CA: no trust anchors configured" + detail)
            self._store = TrustStore(anchors, crls=self.crls.crls, crl_signers=self.crl_signers)
            self._store_gen = gen
        return self._store

    def validate(self, certs: Sequence[x509.Certificate], *, at: float | None = None) -> ValidatedCredential:
        """Path validation plus the SHAKEN leaf rules (ATIS-1000080 CM-13): a non-critical
        TNAuthList holding an SPC, or, for a delegate certificate (RFC 9060), TN / range entries
        with an SP certificate (a CA carrying a TNAuthList) on the validated chain.  Raises 437 errors (:class:`UntrustedCertificateError`,
        :class:`TNAuthListError`); a revocation status that cannot be established is a warning of
        the credential, or 437 with ``crl_policy = "hard"`` (:meth:`trust_warnings`)."""
        if not certs:
            raise CertificateError("the x5u resource holds no certificate")
        when = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.timezone.utc)
        leaf = certs[0]
        tn = from_certificate(leaf)
        if tn is None:
            raise TNAuthListError("certificate has no TNAuthList extension (ATIS-1000080 §6.4.1)")
        if tn[1]:
            raise TNAuthListError("certificate TNAuthList is marked critical (ATIS-1000080 §6.4.1 CM-13)")
        cred = self.store().validate(list(certs), at=when)
        if tn[0].spc is None and not any(from_certificate(c) is not None for c in cred.chain[1:]):
            # an RFC 9060 delegate certificate (TN / range entries only) must chain through the SP's
            # certificate, a CA carrying the SP's TNAuthList; the orig TN is checked per call
            raise TNAuthListError(
                "certificate TNAuthList holds no SPC (ATIS-1000080 §6.4.1 CM-13) and no issuer in its chain carries "
                "a TNAuthList, so it is no delegate certificate either (RFC 9060 §4)"
            )
        revocation, other = self.trust_warnings(cred, when.timestamp())
        # with distribution points still to fetch the credential is provisional: the caller
        # fetches them and validates again (stirshaken.vs.credentials), then the policy applies
        if revocation and self.crl_policy == "hard" and not self.crls.missing_for(cred.chain):
            raise UntrustedCertificateError(f"revocation status cannot be established (crl_policy hard): {revocation[0]}")
        if revocation or other:
            cred = dataclasses.replace(cred, warnings=cred.warnings + revocation + other)
        return cred

    def trust_warnings(self, cred: ValidatedCredential, at: float) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """What the result of ``cred`` must say about its trust sources at ``at``: (revocation
        problems, other problems), one line each (docs/requirements.md VS-10).

        Revocation: a certificate of the chain naming a CRL distribution point that no CRL covers
        (not fetched, unavailable, or not signed by its issuer nor a configured CRL signer), a
        configured CRL that could never be read (it may cover any chain), a CRL covering the chain
        that is past its ``nextUpdate``.  Other: the STI-PA CA list the chain's anchor came from is
        past its ``exp`` (it could not be reloaded).  Marks the chain's distribution points used."""
        crls = self.crls
        out: list[str] = []
        dps_used: list[str] = []
        for cert in cred.chain[:-1]:
            dps = crl_urls(cert)
            dps_used.extend(dps)
            if not dps or cert not in cred.unchecked:
                continue
            out.append(f"revocation status of {_name(cert.subject)} unknown: " + "; ".join(self._dp_problem(u) for u in dps))
        crls.touch(dps_used, at)
        for src in crls.sources:
            rec = crls.record(src)
            if rec is not None and rec.crl is None and rec.error is not None:
                out.append(f"revocation status unknown: the configured CRL {src} is unavailable ({rec.error})")
        out.extend(self.stale_crl_warnings(cred.chain, at))
        other: list[str] = []
        cal = self.ca_list
        if cal is not None and cal.exp is not None and cal.exp < at and cred.chain[-1] in cal.anchors:
            why = f": {self.ca_list_error.description}" if self.ca_list_error else ""
            other.append(f"the STI-PA CA list is past its exp ({dt.datetime.fromtimestamp(cal.exp, dt.timezone.utc):%Y-%m-%d %H:%M:%S}Z)"
                         f" and could not be reloaded{why}; its CAs are still trusted")
        return tuple(out), tuple(other)

    def _dp_problem(self, url: str) -> str:
        rec = self.crls.record(url)
        if rec is None or (rec.crl is None and rec.error is None):
            if not self.crls.fetch_distribution_points:
                return f"its CRL {url} is not configured and distribution points are not fetched"
            return f"its CRL {url} is not fetched yet"
        if rec.crl is None:
            return f"its CRL {url} is unavailable ({rec.error})"
        return (f"its CRL {url} (issuer {_name(rec.crl.issuer)}) is not signed by the certificate's issuer nor by a "
                "configured CRL signer (crl_signers)")

    def stale_crl_warnings(self, chain: Sequence[x509.Certificate], at: float) -> tuple[str, ...]:
        """A warning for each CRL past its ``nextUpdate`` that covers ``chain`` (issued by a chain
        certificate's issuer or by a CRL signer): it is still used, as it could not be refreshed,
        but revocations since then are unknown (:mod:`stirshaken.vs.crl`)."""
        names = {c.issuer for c in chain} | {s.subject for s in self.crl_signers}
        out = []
        for rec in self.crls.stale(at):
            crl = rec.crl
            assert crl is not None and crl.next_update_utc is not None
            if crl.issuer in names:
                why = f" ({rec.error})" if rec.error else ""
                out.append(f"CRL {rec.source} is past its nextUpdate ({crl.next_update_utc:%Y-%m-%d %H:%M:%S}Z)"
                           f" and could not be refreshed{why}; revocations since then are unknown")
        return tuple(out)

    def problems(self, now: float) -> list[str]:
        """What is wrong with the trust sources at ``now`` (``/healthz``): the CRLs'
        (:meth:`CRLStore.problems`) and the CA list's (not loaded, reload failed, past ``exp``)."""
        out = []
        cal, err = self.ca_list, self.ca_list_error
        src = self.ca_list_source or "CA list"
        if err is not None:
            keep = f"; the previous list (sequence {cal.sequence}) stays in use" if cal is not None else ""
            out.append(f"CA list {src} could not be loaded: {err.description}{keep}")
        if cal is not None and cal.exp is not None and cal.exp < now:
            out.append(f"CA list {src} is past its exp ({dt.datetime.fromtimestamp(cal.exp, dt.timezone.utc):%Y-%m-%d %H:%M:%S}Z)")
        return out + self.crls.problems(now)


def _name(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={cns[0].value}" if cns else name.rfc4514_string()
