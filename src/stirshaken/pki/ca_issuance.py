"""STI-CA certificate issuance: the finalize CSR check and the SP certificate (RFC 8555 §7.4 /
§11.1, RFC 9448 §6, ATIS-1000080 §6.4.1, CM-12, AC-04).

:func:`check_csr` decides whether a finalize request's CSR may be issued (``badCSR`` otherwise);
:func:`issue_certificate` makes the SP certificate for the order's authorized TNAuthList, with
the STI-PA's CRL distribution point and ``cRLIssuer`` (CM-12).  The relaxation
:attr:`~stirshaken.pki.ca_config.CAConfig.allow_account_key_reuse` is logged (WARNING, logger
``stirshaken.pki.ca``) every time it is used.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_decode
from stirshaken.core.errors import CertificateError, PassportEncodingError, TNAuthListError
from stirshaken.core.jose import jwk_public_key
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.pki.acme import AcmeProblem, Finalize
from stirshaken.pki.ca_config import CAConfig, CAKeys
from stirshaken.pki.store import Row

log = logging.getLogger("stirshaken.pki.ca")  # the STI-CA's logger (docs/pki.md)


def check_csr(config: CAConfig, payload: Mapping[str, Any] | None, order: Row, account: Row) -> x509.CertificateSigningRequest:
    """The finalize request's CSR (RFC 8555 §7.4) if it may be issued: DER, a P-256 key signed with
    ecdsa-with-SHA256 (ATIS-1000080 §6.4.1), not the account key (RFC 8555 §11.1, unless
    :attr:`CAConfig.allow_account_key_reuse`), the order's TNAuthList (RFC 9448 §6), an SP
    subject and no CA; ``badCSR`` otherwise."""
    csr_b64 = Finalize.from_json(payload).csr
    try:
        der = b64url_decode(csr_b64, what="csr")
    except PassportEncodingError as exc:
        raise AcmeProblem("badCSR", f"csr is not base64url: {exc.description}") from None
    if der.lstrip().startswith(b"-----"):
        raise AcmeProblem("badCSR", "csr must be DER, not PEM")
    try:
        csr = certs.load_csr(der)
    except CertificateError as exc:
        raise AcmeProblem("badCSR", exc.description) from None
    pub = csr.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
        raise AcmeProblem("badCSR", "CSR key must be P-256 (ATIS-1000080 §6.4.1)")
    if csr.signature_hash_algorithm is None or csr.signature_hash_algorithm.name != "sha256":
        raise AcmeProblem("badCSR", "CSR must be signed with ecdsa-with-SHA256")
    if pub == jwk_public_key(account.jwk):
        if not config.allow_account_key_reuse:
            raise AcmeProblem("badCSR", "the CSR key is the account key; use a new key for the certificate (RFC 8555 §11.1)")
        log.warning("allow_account_key_reuse: issuing for order %s with the key of account %s (RFC 8555 §11.1 says refuse)",
                    order.id, account.id)
    try:
        tnal = certs.csr_tnauthlist(csr)
    except TNAuthListError as exc:
        raise AcmeProblem("badCSR", exc.description) from None
    if tnal.to_der() != order.tnauthlist:
        raise AcmeProblem("badCSR", "CSR TNAuthList differs from the authorized identifier (RFC 9448 §6)")
    spc = tnal.spc
    for finding in certs.check_sp_subject(csr.subject, spc):  # ATIS-1000080 §6.4.1: the subject is kept as asked
        raise AcmeProblem("badCSR", f"CSR subject: {finding.removeprefix('CM-06 ')} (ATIS-1000080 §6.4.1)")
    try:
        bc = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise AcmeProblem("badCSR", "CSR asks for a CA certificate; the SPC token authorizes an end entity")
    except x509.ExtensionNotFound:
        pass
    return csr


def issue_certificate(
    config: CAConfig, keys: CAKeys, csr: x509.CertificateSigningRequest, order: Row
) -> tuple[x509.Certificate, TNAuthList, bytes]:
    """The SP certificate for ``csr`` (checked by :func:`check_csr`) under the order's TNAuthList
    and validity, signed by the intermediate (ATIS-1000080 §6.4.1); returns the certificate, the
    TNAuthList and the PEM chain (certificate, intermediate).  Raises what
    :func:`~stirshaken.core.certificates.create_sp_certificate` raises."""
    tnal = TNAuthList.from_der(order.tnauthlist)
    cert = certs.create_sp_certificate(
        csr, keys.intermediate, keys.intermediate_key,
        tnauthlist=tnal, subject=csr.subject, days=config.cert_days,
        crl_url=config.crl_url, crl_issuer=config.crl_issuer,
        not_before=order.not_before, not_after=order.not_after,
    )
    return cert, tnal, certs.pem([cert, keys.intermediate])


__all__ = ["check_csr", "issue_certificate"]
