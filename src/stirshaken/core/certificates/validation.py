"""Path validation with revocation (RFC 5280 §6, ATIS-1000080 v005 §6.3.3): :class:`TrustStore`
turns an x5u chain into a :class:`ValidatedCredential`, or one line naming the certificate at fault.

Path validation uses ``cryptography.x509.verification`` with a client verifier whose end-entity
policy does not demand a SAN (SHAKEN leaves have none: ATIS-1000080 §6.4.1 names no SAN); revocation
is checked against CRLs whose signature verifies with a certificate of the chain or a configured CRL
signer (the STI-PA's).  :func:`signing_certificate_fault` applies the same checks on the signing
side, before a key and chain are used.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtensionOID, NameOID

from stirshaken.core.certificates.loading import check_parsable, utcnow
from stirshaken.core.errors import CertificateError, TNAuthListError, UntrustedCertificateError
from stirshaken.core.tnauthlist import MALFORMED_EXTENSIONS, TNAUTHLIST_OID, TNAuthList, from_certificate


@dataclass(frozen=True)
class ValidatedCredential:
    """What a verifier needs from a validated x5u chain (cacheable as a whole)."""

    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    public_key: ec.EllipticCurvePublicKey
    tnauthlist: TNAuthList
    not_after: dt.datetime
    warnings: tuple[str, ...] = field(default=())
    #: a delegate certificate (RFC 9060): TN / range entries and no SPC; the verifier checks the
    #: orig TN against them on every call (core.verification.check_authority)
    delegate: bool = False
    #: the certificates of ``chain`` (anchor excluded) that no CRL of the trust store covers: their
    #: revocation status is not established (the caller decides whether that matters,
    #: stirshaken.vs.trust; docs/requirements.md VS-10)
    unchecked: tuple[x509.Certificate, ...] = ()

    @functools.cached_property
    def spc(self) -> str | None:
        """The first SPC of the TNAuthList (None: a delegate certificate's TN entries only)."""
        return self.tnauthlist.spc

    @functools.cached_property
    def serial_hex(self) -> str:
        """The leaf's serial number in lowercase hex (as records and logs name it).  Computed once
        per credential: per-call records name it for every verified call."""
        return format(self.leaf.serial_number, "x")


def _ee_policy() -> xv.ExtensionPolicy:
    return xv.ExtensionPolicy.permit_all()


def _ca_policy() -> xv.ExtensionPolicy:
    # Lenient on CA profile details that real STI-CAs get wrong (key usage, policies, AKI), strict on
    # what matters for trust: basicConstraints must be present and say CA.
    return xv.ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, xv.Criticality.AGNOSTIC, None)


def _printable(text: str, limit: int = 120) -> str:
    """``text`` from a certificate made fit for a one-line error: characters that do not print
    (CR, LF, other controls) escaped, cut to ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dn_name(name: x509.Name) -> str:
    """``CN=...`` of a name (its full RFC 4514 form when it has no CN), as :func:`_printable`."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return _printable(f"CN={cns[0].value}" if cns else (name.rfc4514_string() or "an empty name"))


def _dn(cert: x509.Certificate) -> str:
    return _dn_name(cert.subject)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _validity_fault(certs: Sequence[x509.Certificate], at: dt.datetime, *, what: str = "certificate") -> str | None:
    """The first certificate outside its validity period at ``at`` (RFC 5280 §6.1.3 (a)(2))."""
    for c in certs:
        if c.not_valid_after_utc < at:
            return f"{what} {_dn(c)} expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M:%S}Z"
        if c.not_valid_before_utc > at:
            return f"{what} {_dn(c)} is not valid before {c.not_valid_before_utc:%Y-%m-%d %H:%M:%S}Z"
    return None


def signing_certificate_fault(key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate], at: dt.datetime) -> str | None:
    """Why a signer must not sign with ``key`` under the certificate chain ``chain`` (leaf first)
    at ``at``, or ``None``: the key is not the leaf's (a verifier's signature check fails, RFC 8224
    §6.2 step 4), the leaf is outside its validity period (RFC 5280 §6.1.3), or it carries no
    TNAuthList (RFC 8226 §9, ATIS-1000080 §6.4.1: no authority for any number).  One line."""
    if not chain:
        return "the certificate file holds no certificate"
    leaf = chain[0]
    if leaf.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != \
            key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        return f"the private key does not belong to the certificate {_dn(leaf)}"
    fault = _validity_fault([leaf], at, what="certificate")
    if fault is not None:
        return fault
    try:
        tnal = from_certificate(leaf)
    except TNAuthListError as exc:
        return f"certificate {_dn(leaf)} has a malformed TNAuthList: {exc.description}"
    if tnal is None:
        return f"certificate {_dn(leaf)} carries no TNAuthList (RFC 8226 §9): it authorizes no telephone number"
    return None


#: Critical extensions that path validation processes (RFC 5280 §4.2: any other critical one fails it).
_PROCESSED_CRITICAL = frozenset({
    ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.NAME_CONSTRAINTS, ExtensionOID.POLICY_CONSTRAINTS,
    ExtensionOID.INHIBIT_ANY_POLICY, ExtensionOID.CERTIFICATE_POLICIES,
})


def _critical_fault(certs: Sequence[x509.Certificate]) -> str | None:
    for c in certs:
        try:
            exts = c.extensions
        except MALFORMED_EXTENSIONS as exc:
            return f"certificate {_dn(c)} has extensions that cannot be parsed ({_printable(str(exc), 80)})"
        for ext in exts:
            if ext.critical and ext.oid not in _PROCESSED_CRITICAL:
                name = "TNAuthList" if ext.oid == TNAUTHLIST_OID else getattr(ext.oid, "_name", "unknown")
                return f"certificate {_dn(c)} marks the extension {name} ({ext.oid.dotted_string}) critical, which path validation cannot process (RFC 5280 §4.2)"
    return None


class TrustStore:
    """Trust anchors, CRLs and CRL signers: the offline inputs of path validation."""

    def __init__(
        self,
        anchors: Sequence[x509.Certificate],
        *,
        crls: Sequence[x509.CertificateRevocationList] = (),
        crl_signers: Sequence[x509.Certificate] = (),
    ):
        if not anchors:
            raise UntrustedCertificateError("no trust anchors configured")
        self.anchors = tuple(anchors)
        self.crls = tuple(crls)
        self.crl_signers = tuple(crl_signers)
        self._store = xv.Store(list(self.anchors))

    def with_crls(self, crls: Sequence[x509.CertificateRevocationList]) -> "TrustStore":
        return TrustStore(self.anchors, crls=crls, crl_signers=self.crl_signers)

    def validate(self, certs: Sequence[x509.Certificate], *, at: dt.datetime | None = None) -> ValidatedCredential:
        """Validate leaf ``certs[0]`` with intermediates ``certs[1:]``; check revocation.

        Raises :class:`UntrustedCertificateError` (437, TN-Validation-Failed) for a chain that does
        not reach an anchor, an expired or not-yet-valid certificate, a revoked one or a critical
        extension we cannot process; :class:`TNAuthListError` (437) when the leaf has no usable
        TNAuthList with an SPC or TN entries (ATIS-1000074 §5.3.1 via ATIS-1000080).
        """
        if not certs:
            raise CertificateError("the x5u resource holds no certificate")
        at = at or utcnow()
        for cert in certs:
            check_parsable(cert)
        leaf, intermediates = certs[0], list(certs[1:])
        fault = _validity_fault([leaf], at)
        if fault:
            raise UntrustedCertificateError(fault)
        pub = leaf.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
            raise CertificateError("certificate key is not P-256 as ES256 requires")
        verifier = (
            xv.PolicyBuilder()
            .store(self._store)
            .time(at)
            .extension_policies(ca_policy=_ca_policy(), ee_policy=_ee_policy())
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, intermediates)
        except xv.VerificationError:
            raise UntrustedCertificateError(f"Failed to authenticate CA: {self._path_fault(leaf, intermediates, at)}") from None
        chain = tuple(verified.chain)
        unchecked = self._check_revocation(chain)
        tn = from_certificate(leaf)  # raises TNAuthListError when malformed
        if tn is None:
            raise TNAuthListError("certificate has no TNAuthList extension")
        tnal, _critical = tn  # never empty: an SPC, or TN / range entries (RFC 9060 delegates)
        return ValidatedCredential(
            leaf=leaf,
            chain=chain,
            public_key=pub,
            tnauthlist=tnal,
            not_after=min(c.not_valid_after_utc for c in chain),
            delegate=tnal.spc is None,
            unchecked=unchecked,
        )

    def _path_fault(self, leaf: x509.Certificate, intermediates: Sequence[x509.Certificate], at: dt.datetime) -> str:
        """Why no path leads from ``leaf`` to a trust anchor, in the words of the field, naming the
        certificate at fault (the library's own message is never shown).

        Faults are looked for in a fixed order: a presented certificate outside its validity
        period (leaf first), then the walk up the chain by issuer name and signature: an issuer
        that is neither presented nor an anchor, a self-signed certificate that is not an anchor,
        an anchor that is itself expired, and last a path whose CA certificates do not allow
        issuing (basicConstraints, path length).  All of them are 437 (ATIS-1000082, "Failed to
        authenticate CA").
        """
        pool = [leaf, *intermediates]
        fault = _validity_fault(pool[1:], at)
        if fault:
            return fault
        current = leaf
        for _ in range(len(pool) + 1):
            anchor = next((a for a in self.anchors if a.subject == current.issuer and _issued_by(current, a)), None)
            if anchor is not None:
                return _validity_fault([anchor], at, what="trust anchor") or _critical_fault(pool) or (
                    f"the path from {_dn(leaf)} to the trust anchor {_dn(anchor)} is not valid: a CA certificate on it "
                    "is not allowed to issue (basicConstraints or path length)"
                )
            if current.issuer == current.subject:
                return f"not trusted: chains to {_dn(current)} which is not a trust anchor"
            parent = next((c for c in pool if c is not current and c.subject == current.issuer and _issued_by(current, c)), None)
            if parent is None:
                if any(a.subject == current.issuer for a in self.anchors) or any(c.subject == current.issuer for c in pool):
                    return f"the signature of {_dn(current)} does not verify with the key of its issuer {_dn_name(current.issuer)}"
                return (
                    f"issuer not found: the chain has no certificate {_dn_name(current.issuer)} (the issuer of {_dn(current)}) "
                    "and it is not a trust anchor"
                )
            current = parent
        return f"no path from {_dn(leaf)} to a trust anchor (the chain loops)"

    def _check_revocation(self, chain: Sequence[x509.Certificate]) -> tuple[x509.Certificate, ...]:
        """Raise :class:`UntrustedCertificateError` (437) when a CRL that covers a certificate of
        the validated ``chain`` (anchor excluded) lists its serial (RFC 5280 §6.3, ATIS-1000080
        §6.3.3); return the certificates no CRL covers (revocation status not established)."""
        unchecked = []
        for i, cert in enumerate(chain[:-1]):
            issuer = chain[i + 1]
            covered = False
            for crl in self.crls:
                if not self.crl_covers(crl, cert, issuer):
                    continue
                covered = True
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    raise UntrustedCertificateError(
                        f"certificate {_dn(cert)} (serial {cert.serial_number:x}) is revoked by the CRL of {_dn_name(crl.issuer)}"
                    )
            if not covered:
                unchecked.append(cert)
        return tuple(unchecked)

    def crl_covers(self, crl: x509.CertificateRevocationList, cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Whether ``crl`` speaks for ``cert`` (issued by ``issuer``): its issuer is the
        certificate's issuer and the signature verifies with the issuer's key, or its issuer is a
        configured CRL signer (or an anchor) whose key verifies it: the STI-PA's indirect SHAKEN
        CRL (ATIS-1000080 §6.3.3, docs/requirements.md CM-12).  A CRL whose signature verifies
        with none of them covers nothing."""
        try:
            if crl.issuer == cert.issuer and crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                return True
        except TypeError:
            pass
        for signer in self.crl_signers + self.anchors:
            if crl.issuer == signer.subject:
                try:
                    if crl.is_signature_valid(signer.public_key()):  # type: ignore[arg-type]
                        return True
                except TypeError:
                    continue
        return False


def crl_urls(cert: x509.Certificate) -> list[str]:
    """HTTP(S) URLs of the certificate's CRL distribution points."""
    try:
        dp = cert.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    except (x509.ExtensionNotFound, *MALFORMED_EXTENSIONS):
        return []
    urls = []
    for point in dp:
        for name in point.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier) and name.value.lower().startswith(("http://", "https://")):
                urls.append(name.value)
    return urls
