"""Reading certificates, CSRs and CRLs: the X.509 structures of RFC 5280 (§4 certificates, §5
CRLs) and the PKCS #10 CSR (RFC 2986), in PEM (RFC 7468) or DER.

Every loader parses the fields cryptography decodes lazily at once, so that a malformed one is a
:class:`CertificateError` at the border and never a ``ValueError`` inside a later check; a file of
the wrong kind is named for what it is (:func:`content_problem`), not by a parser's message.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from typing import Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from stirshaken.core.errors import CertificateError, TNAuthListError
from stirshaken.core.tnauthlist import MALFORMED_EXTENSIONS, TNAUTHLIST_OID, TNAuthList


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC: the default instant of validity periods and of path
    validation (RFC 5280 §4.1.2.5, §6.1.3 (a)(2))."""
    return dt.datetime.now(dt.timezone.utc)


#: what cryptography raises when it decodes a malformed field lazily: ValueError mostly; TypeError
#: for a name attribute of BIT STRING type that is not an X500UniqueIdentifier
_MALFORMED_FIELD = (ValueError, TypeError, x509.InvalidVersion, UnsupportedAlgorithm)


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
        check_parsable(cert)
    return certs


def check_parsable(cert: x509.Certificate) -> None:
    """Parse the lazily decoded fields of ``cert`` now, so that a malformed name, key or validity
    is a :class:`CertificateError` here and not a ``ValueError`` deep inside a later check (the
    loaders, the profile check and path validation call it on every certificate they read)."""
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


# --- CSRs (RFC 2986) -------------------------------------------------------------------------


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
