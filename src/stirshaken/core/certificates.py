"""STI certificates: CSRs, the ATIS-1000080 §6.4.1 profile, issuance, profile check and path
validation.

Issuance follows ATIS-1000080 v005 §6.4.1 (docs/requirements.md CM-01..CM-14): v3, random serial of at
least 64 bits, ecdsa-with-SHA256 over P-256, critical basicConstraints and keyUsage, SKI and AKI,
exactly one SHAKEN certificate-policy OID on intermediates and end entities, one CRL distribution
point, CN ``SHAKEN <SPC>`` and a non-critical TNAuthList on SP certificates.

Path validation uses ``cryptography.x509.verification`` with a client verifier whose end-entity
policy does not demand a SAN (SHAKEN leaves have none: ATIS-1000080 §6.4.1 names no SAN); revocation is
checked against CRLs whose signature verifies with a certificate of the chain or a configured CRL
signer (the STI-PA's).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import textwrap
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID
from cryptography.x509 import verification as xv

from stirshaken.core.errors import CertificateError, TNAuthListError, UntrustedCertificateError
from stirshaken.core.tnauthlist import MALFORMED_EXTENSIONS, SPC, TN, TNAUTHLIST_OID, TNAuthList, TNRange, from_certificate, to_extension

#: US SHAKEN Certificate Policy OIDs (CP v1.1-v1.4, docs/requirements.md CM-11).
SHAKEN_CP_ARC = "2.16.840.1.114569.1.1."
SHAKEN_CP_OID = x509.ObjectIdentifier("2.16.840.1.114569.1.1.3")
ANY_POLICY_OID = x509.ObjectIdentifier("2.5.29.32.0")

_ALLOWED_EXTENSIONS = {
    ExtensionOID.KEY_USAGE,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.CERTIFICATE_POLICIES,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.CRL_DISTRIBUTION_POINTS,
    TNAUTHLIST_OID,
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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


#: the subject attributes an SP certificate may carry (ATIS-1000080 §6.4.1): C, O and CN required,
#: ST, L and OU optional
_SUBJECT_REQUIRED = ((NameOID.COUNTRY_NAME, "C"), (NameOID.ORGANIZATION_NAME, "O"), (NameOID.COMMON_NAME, "CN"))
_SUBJECT_OPTIONAL = {NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.LOCALITY_NAME: "L", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU"}


def check_sp_subject(subject: x509.Name, spc: str | None) -> list[str]:
    """Every way ``subject`` falls short of the SP certificate subject rule of ATIS-1000080 §6.4.1
    (CM-06): exactly one C, O and CN; the CN contains ``SHAKEN`` and, for an SP certificate, the
    SPC (``spc``; None for a delegate certificate, RFC 9060, whose CN need only be present);
    ST, L and OU are allowed, nothing else.  Each finding is one line naming the attribute; an
    empty list means the subject conforms.  The STI-CA's finalize (``badCSR``) and
    :func:`check_profile` both use this one rule."""
    out: list[str] = []
    for oid, label in _SUBJECT_REQUIRED:
        n = len(subject.get_attributes_for_oid(oid))
        if n == 0:
            out.append(f"CM-06 subject lacks {label}")
        elif n > 1:
            out.append(f"CM-06 subject has {n} {label} attributes, expected one")
    for attr in subject:
        if attr.oid not in _SUBJECT_OPTIONAL and all(attr.oid != oid for oid, _ in _SUBJECT_REQUIRED):
            name = getattr(attr.oid, "_name", None) or attr.oid.dotted_string
            out.append(f"CM-06 subject attribute {name} is not allowed (only C, O, CN, ST, L, OU)")
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns and spc is not None:
        cn = str(cns[0])
        if "SHAKEN" not in cn:
            out.append(f"CM-06 CN {cn[:60]!r} does not contain 'SHAKEN'")
        elif not re.search(rf"(?<![0-9A-Za-z]){re.escape(spc)}(?![0-9A-Za-z])", cn.replace("SHAKEN", " ", 1)):
            # the SPC as a whole token: 'SHAKEN 12345' names SPC 12345, not 1234
            out.append(f"CM-06 CN {cn[:60]!r} does not contain the SPC {spc!r}")
    return out


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


def csr_tnauthlist(csr: x509.CertificateSigningRequest) -> TNAuthList:
    """The TNAuthList requested in a CSR; raises :class:`TNAuthListError` when absent or bad."""
    try:
        ext = csr.extensions.get_extension_for_oid(TNAUTHLIST_OID)
    except x509.ExtensionNotFound:
        raise TNAuthListError("CSR does not carry a TNAuthList extension") from None
    except MALFORMED_EXTENSIONS as exc:
        raise TNAuthListError(f"CSR extensions are malformed: {exc}") from None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    return TNAuthList.from_der(raw)


#: what cryptography raises when it decodes a malformed field lazily: ValueError mostly; TypeError
#: for a name attribute of BIT STRING type that is not an X500UniqueIdentifier
_MALFORMED_FIELD = (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm)


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """Load a PEM or DER CSR and check its self-signature; raises :class:`CertificateError`.

    The lazily decoded fields the STI-CA reads (subject, public key, signature algorithm,
    extensions) are parsed here, so that a malformed one is this error and not a ``ValueError``
    later."""
    try:
        csr = (
            x509.load_pem_x509_csr(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_csr(data)
        )
        csr.subject, csr.public_key(), csr.signature_hash_algorithm, csr.extensions
        valid = csr.is_signature_valid
    except (*_MALFORMED_FIELD, x509.DuplicateExtension) as exc:
        raise CertificateError(content_problem(data, "a CSR") or f"not a valid CSR: {_parse_problem(exc)}") from None
    if not valid:
        raise CertificateError("CSR signature does not verify")
    return csr


# --- issuance ---------------------------------------------------------------------------------


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


# --- loading ----------------------------------------------------------------------------------


#: what a PEM block holds, by its label (RFC 7468 §§5-13 and the OpenSSL labels still met)
_PEM_KINDS = {
    "CERTIFICATE": "a certificate", "TRUSTED CERTIFICATE": "a certificate", "X509 CRL": "a CRL",
    "CERTIFICATE REQUEST": "a CSR", "NEW CERTIFICATE REQUEST": "a CSR", "PRIVATE KEY": "a private key",
    "ENCRYPTED PRIVATE KEY": "a private key", "EC PRIVATE KEY": "a private key", "RSA PRIVATE KEY": "a private key",
    "PUBLIC KEY": "a public key", "EC PARAMETERS": "EC parameters",
}
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,40})-----")


def content_problem(data: bytes, expected: str) -> str | None:
    """Why ``data`` cannot be ``expected`` (``"a certificate"``, ``"a CRL"``, ``"a CSR"``, ``"a
    private key"``), judged by its form alone: ``"empty, not a certificate"``, ``"a private key,
    not a certificate"`` (from the first PEM label, RFC 7468), ``"text without a PEM block, not a
    CRL"``; None when it may be one (the parser then has the last word).  Used on the error path
    of the loaders, so that a wrong file is named for what it is, not by a parser's message."""
    if not data.strip():
        return f"empty, not {expected}"
    labels = [m.decode() for m in _PEM_LABEL.findall(bytes(data))]
    if labels:
        kinds = [_PEM_KINDS.get(label, f"a PEM {label.lower()} block") for label in labels]
        return None if expected in kinds else f"{kinds[0]}, not {expected}"
    if b"-----BEGIN" in data:
        return f"a damaged PEM file (its BEGIN line is not RFC 7468), not {expected}"
    head = bytes(data[:512])
    if head.isascii() and all(32 <= c < 127 or c in b"\r\n\t" for c in head):
        return f"text without a PEM block, not {expected}"
    return None


def _parse_problem(exc: Exception) -> str:
    """cryptography's parse error in words: its PEM message points to a FAQ URL and its ASN.1
    one is the Rust parser's debug text, neither of which belongs in a one-line error."""
    text = str(exc)
    if text.startswith("Unable to load PEM file") or "delimiters" in text:
        return "no PEM block of the expected type could be loaded"
    if "error parsing asn1 value" in text or "ParseError" in text:
        return "malformed DER (neither a PEM file nor valid DER)"
    if text == "Invalid key":
        return "the public key is malformed"
    if "no BEGIN X509 CRL" in text:
        return "a PEM file without a CRL (no BEGIN X509 CRL block)"
    return textwrap.shorten(text, 160, placeholder=" ...")


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle (or one DER certificate); raises :class:`CertificateError`."""
    if not isinstance(data, (bytes, bytearray)):
        raise CertificateError("certificate data must be bytes")
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(bytes(data))
        else:
            certs = [x509.load_der_x509_certificate(bytes(data))]
    except _MALFORMED_FIELD as exc:
        raise CertificateError(content_problem(data, "a certificate") or f"not a valid certificate: {_parse_problem(exc)}") from None
    if not certs:
        raise CertificateError("no certificate found")
    for cert in certs:
        _check_parsable(cert)
    return certs


def _check_parsable(cert: x509.Certificate) -> None:
    """Parse the lazily decoded fields now, so that a malformed name, key or validity is a
    :class:`CertificateError` here and not a ``ValueError`` deep inside a later check."""
    try:
        cert.version, cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc
        cert.public_key()
    except _MALFORMED_FIELD as exc:
        raise CertificateError(f"not a valid certificate: {_parse_problem(exc)}") from None


def pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A PEM or DER CRL (RFC 5280 §5); raises :class:`CertificateError`.

    The lazily decoded fields that revocation checking reads (issuer, update times, the revoked
    entries) are parsed here, so that a malformed one is this error and not a ``ValueError``
    inside a later validation."""
    try:
        crl = x509.load_pem_x509_crl(data) if data.lstrip().startswith(b"-----") else x509.load_der_x509_crl(data)
        crl.issuer, crl.last_update_utc, crl.next_update_utc
        for entry in crl:
            entry.serial_number, entry.revocation_date_utc
    except _MALFORMED_FIELD as exc:
        raise CertificateError(content_problem(data, "a CRL") or f"not a valid CRL: {_parse_problem(exc)}") from None
    return crl


# --- the profile check (ATIS-1000080 v005 §6.4.1 / §6.4.1.1) ---------------------------------


def _role(cert: x509.Certificate) -> str:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (x509.ExtensionNotFound, *MALFORMED_EXTENSIONS):
        return "sp"
    if not bc.ca:
        return "sp"
    return "root" if cert.issuer == cert.subject else "intermediate"


def check_profile(cert: x509.Certificate, role: str | None = None, *, issuer: x509.Certificate | None = None) -> list[str]:
    """Every deviation of ``cert`` from the ATIS-1000080 profile for its role.

    ``role`` is ``"root"``, ``"intermediate"`` or ``"sp"``; guessed from basicConstraints when
    None.  Each finding names the rule (CM-xx of docs/requirements.md#cm).  An empty list means conformant.
    With ``issuer`` (the issuing certificate) the issuer name (CM-05) and the authority key
    identifier (CM-10) are compared with it as well.
    """
    try:
        _check_parsable(cert)
    except CertificateError as exc:
        return [f"certificate cannot be parsed: {exc.description}"]
    role = role or _role(cert)
    out: list[str] = []
    if cert.version != x509.Version.v3:
        out.append("CM-01 version is not v3")
    if cert.serial_number <= 0:
        out.append("CM-02 serial number is not positive")
    elif cert.serial_number.bit_length() < 64:
        out.append("CM-02 serial number has fewer than 64 bits")
    if cert.signature_algorithm_oid != x509.SignatureAlgorithmOID.ECDSA_WITH_SHA256:
        out.append("CM-03 signature algorithm is not ecdsa-with-SHA256")
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        out.append("CM-04 public key is not P-256")
    subject = cert.subject
    cns = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if role != "sp":
        for oid, label in ((NameOID.COMMON_NAME, "CN"), (NameOID.ORGANIZATION_NAME, "O"), (NameOID.COUNTRY_NAME, "C")):
            if not subject.get_attributes_for_oid(oid):
                out.append(f"CM-06 subject lacks {label}")
    try:
        exts = cert.extensions
    except MALFORMED_EXTENSIONS as exc:
        return out + [f"extensions cannot be parsed: {exc}"]
    present = {e.oid: e for e in exts}

    bc = present.get(ExtensionOID.BASIC_CONSTRAINTS)
    if bc is None:
        out.append("CM-07 basicConstraints missing")
    else:
        if not bc.critical:
            out.append("CM-07 basicConstraints not critical")
        if bc.value.ca != (role != "sp"):
            out.append(f"CM-07 basicConstraints CA={bc.value.ca} for a {role} certificate")
    ku = present.get(ExtensionOID.KEY_USAGE)
    if ku is None:
        out.append("CM-08 keyUsage missing")
    else:
        if not ku.critical:
            out.append("CM-08 keyUsage not critical")
        v = ku.value
        flags = {
            "digitalSignature": v.digital_signature,
            "keyCertSign": v.key_cert_sign,
            "cRLSign": v.crl_sign,
            "keyEncipherment": v.key_encipherment,
            "contentCommitment": v.content_commitment,
            "dataEncipherment": v.data_encipherment,
            "keyAgreement": v.key_agreement,
        }
        on = {k for k, f in flags.items() if f}
        want = {"digitalSignature"} if role == "sp" else {"keyCertSign"}
        if on != want:
            out.append(f"CM-08 keyUsage is {sorted(on)}, expected only {sorted(want)}")
    ski = present.get(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if ski is None:
        out.append("CM-09 subjectKeyIdentifier missing")
    elif ski.value.digest != x509.SubjectKeyIdentifier.from_public_key(pub).digest:  # type: ignore[arg-type]
        out.append("CM-09 subjectKeyIdentifier is not the SHA-1 of the public key")
    aki = present.get(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if aki is None and role != "root":
        out.append("CM-10 authorityKeyIdentifier missing")
    elif aki is not None and role == "root" and ski is not None and aki.value.key_identifier != ski.value.digest:
        out.append("CM-10 root authorityKeyIdentifier differs from its subjectKeyIdentifier")
    cp = present.get(ExtensionOID.CERTIFICATE_POLICIES)
    if role == "root":
        if cp is not None:
            out.append("CM-11 root carries certificatePolicies")
    elif cp is None:
        out.append("CM-11 certificatePolicies missing")
    else:
        oids = [p.policy_identifier.dotted_string for p in cp.value]
        ok = len(oids) == 1 and (
            oids[0].startswith(SHAKEN_CP_ARC) or (role == "intermediate" and oids[0] == ANY_POLICY_OID.dotted_string)
        )
        if not ok:
            out.append(f"CM-11 certificatePolicies must hold exactly one SHAKEN policy OID, found {oids}")
        if cp.critical:
            out.append("CM-11 certificatePolicies is critical")
    dp = present.get(ExtensionOID.CRL_DISTRIBUTION_POINTS)
    if role == "root":
        if dp is not None:
            out.append("CM-12 root carries cRLDistributionPoints")
    elif dp is None:
        out.append("CM-12 cRLDistributionPoints missing")
    else:
        points = list(dp.value)
        if len(points) != 1:
            out.append("CM-12 cRLDistributionPoints must hold exactly one DistributionPoint")
        elif not points[0].full_name or not any(
            isinstance(n, x509.UniformResourceIdentifier) and n.value.lower().startswith(("http://", "https://"))
            for n in points[0].full_name
        ):
            out.append("CM-12 DistributionPoint has no HTTP(S) URL")
    tn_ext = present.get(TNAUTHLIST_OID)
    if role == "sp":
        if tn_ext is None:
            out.append("CM-13 TNAuthList missing")
        else:
            if tn_ext.critical:
                out.append("CM-13 TNAuthList is critical")
            try:
                tnal = from_certificate(cert)
                assert tnal is not None
                entries = tnal[0].entries
                if tnal[0].spc is None:  # a delegate certificate (RFC 9060): TN and range entries only
                    out.extend(check_sp_subject(subject, None))
                elif len(entries) != 1:
                    out.append("CM-13 TNAuthList must hold exactly one SPC entry")
                elif not tnal[0].spc.isalnum() or tnal[0].spc != tnal[0].spc.upper():
                    out.append("CM-13 SPC must be digits and upper-case letters")
                else:
                    out.extend(check_sp_subject(subject, tnal[0].spc))
            except TNAuthListError as exc:
                out.append(f"CM-13 TNAuthList is malformed: {exc.description}")
    else:
        if tn_ext is not None:
            out.append("CM-13 CA certificate carries TNAuthList")
        if cns and "SHAKEN" not in cns[0].upper():
            out.append("CM-06 CA CN does not contain 'SHAKEN'")
        if role == "root" and cns and "ROOT" not in cns[0].upper():
            out.append("CM-06 root CN does not contain 'ROOT'")
    for oid, ext in present.items():
        if oid not in _ALLOWED_EXTENSIONS:
            out.append(f"CM-14 extension {oid.dotted_string} is not allowed")
        elif ext.critical and oid not in (ExtensionOID.BASIC_CONSTRAINTS, ExtensionOID.KEY_USAGE) and oid != TNAUTHLIST_OID:
            out.append(f"CM-08 only basicConstraints and keyUsage may be critical ({oid.dotted_string} is)")
    if role == "root" and cert.issuer != cert.subject:
        out.append("CM-05 root issuer differs from its subject")
    if issuer is not None:
        if cert.issuer != issuer.subject:
            out.append("CM-05 issuer is not the subject of the issuing certificate")
        try:
            issuer_ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        except (x509.ExtensionNotFound, *MALFORMED_EXTENSIONS):
            issuer_ski = None
        if aki is not None and issuer_ski is not None and aki.value.key_identifier != issuer_ski:
            out.append("CM-10 authorityKeyIdentifier is not the issuer's subjectKeyIdentifier")
    return out


# --- path validation --------------------------------------------------------------------------


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

    @property
    def spc(self) -> str | None:
        return self.tnauthlist.spc


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
            _check_parsable(cert)
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
