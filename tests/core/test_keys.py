"""core/keys.py: P-256 keys for ES256, written 0600."""

from __future__ import annotations

import base64
import datetime as dt
import os
import stat
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from stirshaken.core import certificates as C
from stirshaken.core import keys as K
from stirshaken.core.errors import CertificateError, TNAuthListError, UntrustedCertificateError, VERSTAT_FAILED
from stirshaken.core.tnauthlist import TN, TNAUTHLIST_OID, TNAuthList, TNRange, from_certificate
from tests import _core_support as V


def test_private_key_written_0600_pkcs8(tmp_path):
    key = K.generate_private_key()
    path = tmp_path / "sp.key"
    old = os.umask(0)  # even with a permissive umask the file must be 0600
    try:
        pub = K.write_private_key(path, key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    assert pub == tmp_path / "sp.pub" and pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    loaded = K.load_private_key(path)
    assert loaded.private_numbers() == key.private_numbers()
    assert K.load_private_key(data).private_numbers() == key.private_numbers()
    # overwriting keeps 0600 and leaves no temporary file behind
    path.chmod(0o644)
    K.write_private_key(path, key, public=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sp.key", "sp.pub"]


def test_encrypted_private_key(tmp_path):
    key = K.generate_private_key()
    path = tmp_path / "enc.key"
    K.write_private_key(path, key, "s3cret", public=False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert K.load_private_key(path, "s3cret").private_numbers() == key.private_numbers()
    assert K.load_private_key(path, b"s3cret").private_numbers() == key.private_numbers()
    with pytest.raises(K.KeyError_, match="passphrase"):
        K.load_private_key(path)
    with pytest.raises(K.KeyError_):
        K.load_private_key(path, "wrong")


def test_key_load_errors(tmp_path):
    with pytest.raises(K.KeyError_):
        K.load_private_key(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_bytes(b"not a key")
    with pytest.raises(K.KeyError_):
        K.load_private_key(tmp_path / "junk.key")
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(K.KeyError_, match="P-256"):
        K.load_private_key(K.private_key_pem(p384))  # type: ignore[arg-type]
    sec1 = K.generate_private_key()
    pem = sec1.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    assert K.load_private_key(pem).private_numbers() == sec1.private_numbers()
    assert isinstance(K.KeyError_("x"), CertificateError)


def test_key_of_an_unknown_type_is_a_key_error():
    """Fuzz finding (make fuzz, certificates): a PKCS#8 key whose algorithm OID cryptography does
    not know raised cryptography's UnsupportedAlgorithm instead of the typed error."""
    der = bytearray(K.generate_private_key().private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    oid = bytes.fromhex("2a8648ce3d0201")  # id-ecPublicKey, 1.2.840.10045.2.1
    at = der.index(oid)
    der[at : at + len(oid)] = bytes.fromhex("2a8648ce3c0201")  # 1.2.840.10044.2.1: no such key type
    pem = b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(bytes(der)) + b"-----END PRIVATE KEY-----\n"
    with pytest.raises(K.KeyError_, match="not support"):
        K.load_private_key(pem)


def test_public_key_pem():
    key = K.generate_private_key()
    assert K.public_key_pem(key) == K.public_key_pem(key.public_key())
