"""P-256 key pairs for ES256 (RFC 7518 §3.4; ATIS-1000080 §6.4.1 requires P-256).

Private keys are written as PKCS#8 PEM with mode 0600 from the moment the file exists (it is
created with ``os.open(..., 0o600)``, never chmod-ed afterwards), optionally encrypted with a
passphrase.  Nothing here logs key material.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core.certificates import content_problem
from stirshaken.core.errors import CertificateError


class KeyError_(CertificateError):
    """A key file is missing, unreadable, encrypted without a passphrase, or not P-256."""


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | str | None = None) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def public_key_pem(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> bytes:
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_secret(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by the owner only (0600), replacing it atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def public_path_for(path: str | Path) -> Path:
    """Where the public key of ``sp.key`` is written: ``sp.pub``."""
    p = Path(path)
    return p.with_suffix(".pub") if p.suffix else p.with_name(p.name + ".pub")


def write_private_key(
    path: str | Path, key: ec.EllipticCurvePrivateKey, passphrase: bytes | str | None = None, *, public: bool = True
) -> Path | None:
    """Write the key (0600) and, unless ``public=False``, its public key beside it; returns that path."""
    write_secret(path, private_key_pem(key, passphrase))
    if not public:
        return None
    pub = public_path_for(path)
    pub.write_bytes(public_key_pem(key))
    return pub


def load_private_key(path: str | Path | bytes, passphrase: bytes | str | None = None) -> ec.EllipticCurvePrivateKey:
    """Load a PEM (PKCS#8 or SEC1) P-256 private key from a file path or PEM bytes.

    Raises :class:`KeyError_` with one line naming the file: unreadable, encrypted without a
    passphrase, something else than a private key (``root.pem: a certificate, not a private
    key``), or not P-256."""
    if isinstance(passphrase, str):
        passphrase = passphrase.encode()
    if isinstance(path, bytes):
        data = path
        where = "key"
    else:
        where = str(path)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise KeyError_(f"cannot read private key {where}: {exc.strerror}") from None
    try:
        try:
            key = serialization.load_pem_private_key(data, password=passphrase or None)
        except TypeError:
            if not passphrase:
                raise KeyError_(f"private key {where} is encrypted: a passphrase is needed") from None
            # a passphrase was given for a key that is not encrypted (one passphrase option shared by
            # several keys, e.g. an issuer key and a subject key): the key is usable as it is
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyError_(f"private key {where} cannot be decrypted") from None
    except ValueError:
        wrong = content_problem(data, "a private key") or (None if b"-----BEGIN" in data else "not a PEM private key")
        if wrong:
            raise KeyError_(f"{where}: {wrong}") from None
        raise KeyError_(f"{where} is not a readable PEM private key (or the passphrase is wrong)") from None
    except UnsupportedAlgorithm:
        raise KeyError_(f"{where} holds a key of a type cryptography does not support, not a P-256 (secp256r1) key as ES256 requires") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyError_(f"{where} is not a P-256 (secp256r1) key as ES256 requires")
    return key
