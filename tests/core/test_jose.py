"""core/jose.py: ES256 (RFC 7518 §3.4), JWK and thumbprints (RFC 7517, RFC 7638), flattened JWS
(RFC 7515 §7.2.2), compact JWS parsing (RFC 7515 §7.1) and read-only decoded headers."""

from __future__ import annotations

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from stirshaken.core import jose
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.errors import SignatureError

KEY = ec.derive_private_key(4242, ec.SECP256R1())


def test_es256_raw_signature_verifies_and_converts_both_ways() -> None:
    sig = jose.es256_sign(KEY, b"a.b")
    assert len(sig) == 64
    jose.verify_signature(b"a.b", sig, KEY.public_key())
    r, s = decode_dss_signature(jose.raw_to_der(sig))
    assert r.to_bytes(32, "big") + s.to_bytes(32, "big") == sig == jose.der_to_raw(jose.raw_to_der(sig))
    with pytest.raises(SignatureError):
        jose.verify_signature(b"a.c", sig, KEY.public_key())
    with pytest.raises(SignatureError, match="64 bytes"):
        jose.verify_signature(b"a.b", sig[:63], KEY.public_key())


def test_deterministic_es256_repeats() -> None:
    assert jose.es256_sign(KEY, b"x", deterministic=True) == jose.es256_sign(KEY, b"x", deterministic=True)


def test_rfc7638_thumbprint_vector() -> None:
    """RFC 7638 §3.1 uses an RSA key; for EC the members are crv, kty, x, y in order (§3.2)."""
    jwk = jose.jwk_of(KEY)
    canon = orjson.dumps({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]})
    import hashlib

    assert jose.thumbprint(jwk) == b64url_encode(hashlib.sha256(canon).digest())
    assert jose.jwk_public_key(jwk) == KEY.public_key()


@pytest.mark.parametrize("jwk, fragment", [
    ({"kty": "RSA"}, "only EC P-256"),
    ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}, "private key"),
    ({"kty": "EC", "crv": "P-256", "x": "AA"}, "lacks x or y"),
    ({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}, "32 bytes"),
])
def test_bad_jwks_are_one_line_errors(jwk, fragment) -> None:
    with pytest.raises(jose.JWKError, match=fragment):
        jose.jwk_public_key(jwk)


def test_flattened_jws_verifies_over_protected_and_payload() -> None:
    jws = jose.sign_jws(KEY, {"alg": "ES256", "nonce": "n", "url": "https://ca/x"}, b'{"a":1}')
    jose.verify_signature(f"{jws['protected']}.{jws['payload']}".encode(), b64url_decode(jws["signature"]), KEY.public_key())
    empty = jose.sign_jws(KEY, {"alg": "ES256"}, None)  # POST-as-GET (RFC 8555 §6.3)
    assert empty["payload"] == ""


def test_compact_parse_and_read_only_header() -> None:
    h = b64url_encode(b'{"alg":"ES256"}')
    p = b64url_encode(b'{"iat":1}')
    s = b64url_encode(b"\x01" * 64)
    jws = jose.parse_compact(f"{h}.{p}.{s}")
    assert dict(jws.header) == {"alg": "ES256"} and jws.payload == {"iat": 1} and jws.canonical
    assert jws.signing_input == f"{h}.{p}".encode()
    assert isinstance(jws.header, jose.JOSEHeader)
    with pytest.raises(TypeError):
        jws.header["alg"] = "none"  # type: ignore[index]
    with pytest.raises(ValueError, match="3 dot-separated parts"):
        jose.parse_compact(f"{h}.{p}")
    with pytest.raises(ValueError, match="duplicate member names"):
        dup = b64url_encode(b'{"a":1, "a":2}')
        jose.parse_compact(f"{dup}.{p}.{s}")
