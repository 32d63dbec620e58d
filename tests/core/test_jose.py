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


def test_parse_flattened_reads_what_sign_jws_and_mac_jws_write() -> None:
    """RFC 7515 §7.2.2: the one flattened parser gives back the header, payload and the signing
    input the ES256 signature (RFC 7518 §3.4) or HS256 MAC (§3.2) covers."""
    signed = jose.sign_jws(KEY, {"alg": "ES256", "nonce": "n", "url": "https://ca/x"}, b'{"a":1}')
    jws = jose.parse_flattened(signed)
    assert jws.header == {"alg": "ES256", "nonce": "n", "url": "https://ca/x"} and jws.payload == b'{"a":1}'
    assert jws.signing_input == f"{signed['protected']}.{signed['payload']}".encode()
    jose.verify_signature(jws.signing_input, jws.signature, KEY.public_key())
    assert jose.parse_flattened(jose.sign_jws(KEY, {"alg": "ES256"}, None)).payload == b""  # POST-as-GET
    key = b"k" * 32
    maced = jose.parse_flattened(jose.mac_jws(key, {"alg": "HS256", "kid": "kid-1"}, b"{}"))
    assert jose.hs256_verify(key, maced.signing_input, maced.signature)
    assert not jose.hs256_verify(b"x" * 32, maced.signing_input, maced.signature)
    assert not jose.hs256_verify(key, maced.signing_input + b"x", maced.signature)
    assert not jose.hs256_verify(key, maced.signing_input, maced.signature[:-1])


def test_hs256_is_rfc7515_appendix_a1() -> None:
    """RFC 7515 Appendix A.1: the HMAC SHA-256 example, its key, signing input and MAC."""
    k = b64url_decode("AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow")
    signing_input = (b"eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
                     b".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ")
    mac = jose.hs256(k, signing_input)
    assert b64url_encode(mac) == "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert jose.hs256_verify(k, signing_input, mac)


@pytest.mark.parametrize("doc, fragment", [
    ("jws", "must be a flattened JWS"),
    ({"protected": "e30", "payload": ""}, "must be a flattened JWS"),
    ({"protected": "e30", "payload": "", "signature": "", "header": {}}, "must be a flattened JWS"),  # RFC 8555 §6.2
    ({"protected": "e30", "payload": 1, "signature": ""}, "must be strings"),
    ({"protected": "e30=", "payload": "", "signature": ""}, "X protected header is not base64url"),
    ({"protected": "e30", "payload": "e", "signature": ""}, "X payload has an impossible base64url length"),
    ({"protected": "e30", "payload": "", "signature": "AB"}, "X signature is not canonical base64url"),
    ({"protected": b64url_encode(b"[]"), "payload": "", "signature": ""}, "X protected header is not a JSON object"),
    ({"protected": b64url_encode(b'{"a":1,"a":2}'), "payload": "", "signature": ""}, "duplicate member names"),
    ({"protected": "", "payload": "", "signature": ""}, "X protected header is not valid JSON"),
])
def test_parse_flattened_names_the_defect_in_one_line(doc, fragment) -> None:
    with pytest.raises(KeyError, match=fragment) as err:
        jose.parse_flattened(doc, what="X", error=KeyError)
    assert "\n" not in str(err.value)


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
