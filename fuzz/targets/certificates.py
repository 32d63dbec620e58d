"""Certificates, CRLs, CSRs and private keys: the loaders of :mod:`stirshaken.core.certificates`
and :mod:`stirshaken.core.keys`, and what the STI-VS and the STI-CA do with what they load
(path validation with CRLs, the ATIS-1000080 profile check, the TNAuthList of a certificate or a
CSR, the CRL store's refresh times).

The first byte picks the mode: raw bytes to every loader (PEM and DER), or the input as the
to-be-signed part of a certificate, a CSR or a CRL, which the harness signs (with the
intermediate's key, or the SP key for a CSR) so that the checks after the signature are reached.
Properties: only :class:`StirShakenError` (``CertificateError`` and its subclasses), one line;
``check_profile``, ``crl_urls`` and the CRL store never raise on what the loaders accepted; a
loaded bundle round-trips through PEM.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fuzz.harness import Finding, Target, same, typed
from fuzz.material import Material, material
from stirshaken.core import certificates as certs
from stirshaken.core.errors import StirShakenError
from stirshaken.core.keys import load_private_key
from stirshaken.core.tnauthlist import from_certificate
from stirshaken.vs.crl import CRLStore

_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier ecdsa-with-SHA256 (RFC 5758 §3.2)


def _tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        head = bytes([tag, n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([tag, 0x80 | len(raw)]) + raw
    return head + body


def signed(tbs: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """``SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING signature }``: a certificate, CSR or CRL
    (RFC 5280 §4.1, §5.1; RFC 2986 §4.2) whose signature over ``tbs`` is valid."""
    sig = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return _tlv(0x30, tbs + _ECDSA_SHA256 + _tlv(0x03, b"\x00" + sig))


def _pem(label: str, der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def _certificates(m: Material, data: bytes) -> None:
    loaded = typed(StirShakenError, certs.load_certificates, data)
    if not loaded:
        return
    same("PEM round trip", certs.load_certificates(certs.pem(loaded)), loaded)
    for cert in loaded:
        for role in (None, "sp", "intermediate", "root"):
            found = certs.check_profile(cert, role, issuer=m.inter)
            if not all(isinstance(f, str) and "\n" not in f for f in found):
                raise Finding(f"check_profile finding is not one line: {found!r:.300}")
        typed(StirShakenError, from_certificate, cert)
        certs.crl_urls(cert)
    trust = certs.TrustStore([m.root], crls=[m.crl])
    typed(StirShakenError, trust.validate, loaded, at=m.at)
    typed(StirShakenError, trust.validate, [loaded[0], m.inter], at=m.at)
    CRLStore(fetch_distribution_points=True).missing_for(loaded)


def _crl(m: Material, data: bytes) -> None:
    crl = typed(StirShakenError, certs.load_crl, data)
    if crl is None:
        return
    store = CRLStore()
    store.add("fuzz", crl, now=1.7e9)
    store.stale(1.7e9)
    store.fresh_until(1.7e9)
    store.due(1.7e9)
    trust = certs.TrustStore([m.root]).with_crls([crl])
    typed(StirShakenError, trust.validate, m.chain, at=m.at)


def _csr(m: Material, data: bytes) -> None:
    csr = typed(StirShakenError, certs.load_csr, data)
    if csr is None:
        return
    # what the STI-CA reads of an accepted CSR (pki/ca.py, finalize)
    csr.public_key()
    csr.signature_hash_algorithm
    tnal = typed(StirShakenError, certs.csr_tnauthlist, csr)
    certs.check_sp_subject(csr.subject, tnal.spc if tnal else None)
    try:
        csr.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        pass
    if tnal is not None and tnal.spc is not None:
        cert = typed(StirShakenError, certs.create_sp_certificate, csr, m.inter, m.inter_key, tnauthlist=tnal)
        if cert is not None:
            same("issued certificate round trip", certs.load_certificates(certs.pem([cert])), [cert])


def check(data: bytes) -> None:
    m = material()
    mode, body = (data[0] % 5, data[1:]) if data else (0, b"")
    if mode == 0:  # raw bytes, DER or PEM, to every loader
        _certificates(m, body)
        _crl(m, body)
        _csr(m, body)
        typed(StirShakenError, load_private_key, body)
        if b"-----" not in body:
            _certificates(m, _pem("CERTIFICATE", body))
            _crl(m, _pem("X509 CRL", body))
            _csr(m, _pem("CERTIFICATE REQUEST", body))
            typed(StirShakenError, load_private_key, _pem("PRIVATE KEY", body))
            typed(StirShakenError, load_private_key, _pem("EC PRIVATE KEY", body))
    elif mode == 1:
        _certificates(m, signed(body, m.inter_key))
    elif mode == 2:
        _certificates(m, certs.pem([m.sp]) + _pem("CERTIFICATE", signed(body, m.inter_key)))
    elif mode == 3:
        _csr(m, signed(body, m.sp_key))
    else:
        _crl(m, signed(body, m.inter_key))


def seeds(m: Material) -> list[bytes]:
    der = serialization.Encoding.DER
    key_pem = m.sp_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    sec1 = m.sp_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    return [
        b"\x00" + m.sp.public_bytes(der),
        b"\x00" + certs.pem(m.chain),
        b"\x00" + m.crl.public_bytes(der),
        b"\x00" + m.csr.public_bytes(der),
        b"\x00" + key_pem,
        b"\x00" + sec1,
        b"\x01" + m.sp.tbs_certificate_bytes,
        b"\x01" + m.delegate.tbs_certificate_bytes,
        b"\x01" + m.inter.tbs_certificate_bytes,
        b"\x02" + m.sp.tbs_certificate_bytes,
        b"\x03" + m.csr.tbs_certrequest_bytes,
        b"\x04" + m.crl.tbs_certlist_bytes,
    ]


TARGET = Target(
    name="certificates",
    check=check,
    seeds=seeds,
    tokens=(b"\x30\x82", b"\x30\x81", b"\xa0\x03\x02\x01\x02", b"\x06\x08\x2b\x06\x01\x05\x05\x07\x01\x1a", b"\x01\x01\xff", b"\x04",
            b"\x17\x0d", b"\x18\x0f", b"\x02\x01\x00", b"\x05\x00", b"\x0c", b"\x13", b"-----BEGIN CERTIFICATE-----\n",
            b"-----END CERTIFICATE-----\n"),
    max_len=4096,
    examples=300,
)
