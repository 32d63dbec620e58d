"""Issuing STI certificates, CSRs and CRLs with the ATIS-1000080 v005 §6.4.1 profile
(docs/requirements.md CM-01..CM-14): v3, a random serial of at least 64 bits, ecdsa-with-SHA256 over
P-256, critical basicConstraints and keyUsage, SKI and AKI, exactly one SHAKEN certificate-policy OID
on intermediates and end entities, one CRL distribution point, CN ``SHAKEN <SPC>`` and a
non-critical TNAuthList (RFC 8226 §9) on SP certificates; delegate certificates inside their
issuer's authority (RFC 9060 §4); CRLs (RFC 5280 §5).
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stirshaken.core.certificates.loading import csr_tnauthlist, utcnow
from stirshaken.core.certificates.profile import SHAKEN_CP_OID
from stirshaken.core.errors import CertificateError
from stirshaken.core.tnauthlist import SPC, TN, TNAuthList, TNRange, from_certificate, to_extension


def random_serial() -> int:
    """A positive serial with 64+ bits of CSPRNG output (CM-02): 127 random bits, top bit clear."""
    return secrets.randbits(127) | (1 << 120)


def make_name(cn: str, org: str, country: str = "US") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, country),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _public_key(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> ec.EllipticCurvePublicKey:
    return key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key


def _crl_dp(crl_url: str, crl_issuer: x509.Name | None) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(crl_url)],
                relative_name=None,
                reasons=None,
                crl_issuer=[x509.DirectoryName(crl_issuer)] if crl_issuer is not None else None,
            )
        ]
    )


def _validity(days: int, not_before: dt.datetime | None, not_after: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    start = not_before or (utcnow() - dt.timedelta(minutes=5))
    end = not_after or (start + dt.timedelta(days=days))
    return start, end


# --- CSR --------------------------------------------------------------------------------------


def build_csr(
    key: ec.EllipticCurvePrivateKey,
    *,
    spc: str | None = None,
    tnauthlist: TNAuthList | None = None,
    org: str = "STI Participant",
    country: str = "US",
    cn: str | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR carrying the TNAuthList extension (ATIS-1000080 §6.3.x, RFC 9448 finalize)."""
    if tnauthlist is None:
        if spc is None:
            raise ValueError("a CSR needs an SPC or a TNAuthList")
        tnauthlist = TNAuthList.for_spc(spc)
    spc = tnauthlist.spc
    name = make_name(cn or (f"SHAKEN {spc}" if spc else "SHAKEN"), org, country)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(to_extension(tnauthlist), critical=False)
        .sign(key, hashes.SHA256())
    )


# --- certificates -----------------------------------------------------------------------------


def create_root(
    key: ec.EllipticCurvePrivateKey,
    *,
    cn: str = "SHAKEN ROOT CA",
    org: str = "Test STI-CA",
    country: str = "US",
    days: int = 3650,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """A self-signed STI root: no CertificatePolicies, no CRL DP (CM-11, CM-12)."""
    name = make_name(cn, org, country)
    start, end = _validity(days, not_before, None)
    pub = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(pub)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(random_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier(ski.digest, None, None), critical=False)
        .sign(key, hashes.SHA256())
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _issued(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    days: int,
    crl_url: str | None,
    crl_issuer: x509.Name | None,
    policy_oid: x509.ObjectIdentifier,
    tnauthlist: TNAuthList | None,
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
    path_length: int | None = None,
) -> x509.Certificate:
    start, end = _validity(days, not_before, not_after)
    if end > issuer_cert.not_valid_after_utc:
        end = issuer_cert.not_valid_after_utc
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(random_serial())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(_key_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(policy_oid, None)]), critical=False)
    )
    if crl_url:
        builder = builder.add_extension(_crl_dp(crl_url, crl_issuer), critical=False)
    if tnauthlist is not None:
        builder = builder.add_extension(to_extension(tnauthlist), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def create_intermediate(
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    cn: str = "SHAKEN Intermediate CA",
    org: str = "Test STI-CA",
    country: str = "US",
    days: int = 1825,
    crl_url: str | None = None,
    crl_issuer: x509.Name | None = None,
    policy_oid: x509.ObjectIdentifier = SHAKEN_CP_OID,
    not_before: dt.datetime | None = None,
    path_length: int = 0,
) -> x509.Certificate:
    """An STI-CA intermediate (CA:TRUE, keyCertSign only: CM-07, CM-08).  ``path_length`` is 0
    (it issues SP certificates only); 1 lets it issue SP delegate-issuing CA certificates
    (:func:`create_sp_certificate` with ``ca=True``, RFC 9060 §4)."""
    return _issued(
        make_name(cn, org, country),
        _public_key(key),
        issuer_cert,
        issuer_key,
        ca=True,
        days=days,
        crl_url=crl_url,
        crl_issuer=crl_issuer,
        policy_oid=policy_oid,
        tnauthlist=None,
        not_before=not_before,
        not_after=None,
        path_length=path_length,
    )


def create_sp_certificate(
    subject_key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey | x509.CertificateSigningRequest,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    tnauthlist: TNAuthList | None = None,
    spc: str | None = None,
    org: str = "STI Participant",
    country: str = "US",
    days: int = 365,
    crl_url: str | None = None,
    crl_issuer: x509.Name | None = None,
    policy_oid: x509.ObjectIdentifier = SHAKEN_CP_OID,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    subject: x509.Name | None = None,
    ca: bool = False,
) -> x509.Certificate:
    """An SP (end-entity) certificate with the ATIS-1000080 §6.4.1 profile.

    ``ca=True``: the SP's CA certificate for issuing delegate certificates (RFC 9060 §4,
    ATIS-1000092): CA:TRUE with path length 0, keyCertSign, the SP's TNAuthList.

    ``subject_key`` may be a key or a CSR; with a CSR the TNAuthList defaults to the CSR's.
    ``subject``: the subject to issue with (the STI-CA passes a CSR subject that passed
    :func:`check_sp_subject`); default ``C=<country>, O=<org>, CN=SHAKEN <SPC>``.
    """
    if isinstance(subject_key, x509.CertificateSigningRequest):
        csr = subject_key
        if not csr.is_signature_valid:
            raise CertificateError("CSR signature does not verify")
        if tnauthlist is None and spc is None:
            tnauthlist = csr_tnauthlist(csr)
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
            raise CertificateError("CSR key is not P-256 (ATIS-1000080 §6.4.1)")
    else:
        pub = _public_key(subject_key)
    if tnauthlist is None:
        if spc is None:
            raise ValueError("an SP certificate needs an SPC or a TNAuthList")
        tnauthlist = TNAuthList.for_spc(spc)
    code = tnauthlist.spc or "TN"
    return _issued(
        subject if subject is not None else make_name(f"SHAKEN {code}" + (" Delegate CA" if ca else ""), org, country),
        pub,
        issuer_cert,
        issuer_key,
        ca=ca,
        path_length=0 if ca else None,
        days=days,
        crl_url=crl_url,
        crl_issuer=crl_issuer,
        policy_oid=policy_oid,
        tnauthlist=tnauthlist,
        not_before=not_before,
        not_after=not_after,
    )


def _block(prefix: str, length: int) -> tuple[int, int] | None:
    """The numbers of ``length`` digits starting with ``prefix``, as ``[lo, hi)``."""
    if not prefix.isdigit() or len(prefix) > length:
        return None
    scale = 10 ** (length - len(prefix))
    return int(prefix) * scale, (int(prefix) + 1) * scale


def within_authority(entry: TN | TNRange, authority: TNAuthList, prefixes: Sequence[str] = ()) -> bool:
    """Whether a delegate TNAuthList entry lies inside an issuer's authority (RFC 9060 §4: a
    delegate certificate's scope must be a subset of its issuer's): the issuer's TN and range
    entries, and ``prefixes``, the TN blocks of the issuer's SPC (which the SPC alone does not
    name; the operator gives them)."""
    if isinstance(entry, TN):
        return authority.covers(entry.number) or any(entry.number.startswith(p) for p in prefixes)
    if not entry.start.isdigit():
        return False
    lo, hi = int(entry.start), int(entry.start) + entry.count
    length = len(entry.start)
    for e in authority.entries:
        if isinstance(e, TNRange) and len(e.start) == length and e.start.isdigit() and int(e.start) <= lo and hi <= int(e.start) + e.count:
            return True
    return any((b := _block(p, length)) is not None and b[0] <= lo and hi <= b[1] for p in prefixes)


def create_delegate_certificate(
    subject_key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    tnauthlist: TNAuthList,
    *,
    authority: Sequence[str] = (),
    cn: str = "SHAKEN Delegate",
    org: str = "STI Delegate",
    country: str = "US",
    days: int = 90,
    crl_url: str | None = None,
    crl_issuer: x509.Name | None = None,
    policy_oid: x509.ObjectIdentifier = SHAKEN_CP_OID,
) -> x509.Certificate:
    """A delegate end-entity certificate (RFC 9060, ATIS-1000092) an SP issues to an enterprise:
    a TNAuthList of TN and range entries only (no SPC), each inside the issuer's authority
    (:func:`within_authority` with the issuer's TNAuthList and ``authority`` prefixes).

    The issuer must be a CA certificate carrying a TNAuthList (the SP's delegate-issuing CA,
    :func:`create_sp_certificate` ``ca=True``).  Raises :class:`CertificateError` naming the entry
    or the issuer fault; nothing is issued then.
    """
    if any(isinstance(e, SPC) for e in tnauthlist.entries):
        raise CertificateError("a delegate certificate names TNs and ranges, not an SPC (RFC 9060 §4)")
    try:
        bc = issuer_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise CertificateError(
            "the issuer certificate is not a CA certificate: delegate certificates are issued by the SP's "
            "delegate-issuing CA certificate (CA:TRUE with the SP's TNAuthList; 'stirshaken cert sp --ca')"
        )
    found = from_certificate(issuer_cert)
    if found is None:
        raise CertificateError("the issuer certificate has no TNAuthList: its authority is unknown (RFC 9060 §4)")
    issuer_tnal = found[0]
    for e in tnauthlist.entries:
        assert isinstance(e, (TN, TNRange))
        if not within_authority(e, issuer_tnal, authority):
            what = f"TN {e.number}" if isinstance(e, TN) else f"range {e.start}+{e.count}"
            spcs = ", ".join(issuer_tnal.spcs)
            hint = f"; for SPC {spcs} give its TN blocks with --authority PREFIX" if spcs and not authority else ""
            raise CertificateError(f"{what} is outside the issuer's authority{hint}")
    return _issued(
        make_name(cn, org, country), _public_key(subject_key), issuer_cert, issuer_key, ca=False, days=days,
        crl_url=crl_url, crl_issuer=crl_issuer, policy_oid=policy_oid, tnauthlist=tnauthlist, not_before=None, not_after=None,
    )


# --- CRLs (RFC 5280 §5) ----------------------------------------------------------------------


def create_crl(
    issuer_cert: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked: Iterable[tuple[int, dt.datetime]] = (),
    *,
    next_update: dt.timedelta = dt.timedelta(days=7),
    number: int = 1,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``issuer_key`` listing (serial, revocation time) pairs."""
    now = utcnow()
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(now - dt.timedelta(minutes=1))
        .next_update(now + next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial, when in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return b.sign(issuer_key, hashes.SHA256())
