"""JOSE for every signed object of the stack: one module, used by the PASSporT, the SPC token, the
STI-PA's CA list and ACME.

* ES256 (RFC 7518 §3.4): :func:`es256_sign` gives the raw 64-byte ``r || s``;
  :func:`verify_signature` checks one (raises :class:`~stirshaken.core.errors.SignatureError`,
  438); :func:`raw_to_der` converts for ``cryptography``.
* JWK (RFC 7517, RFC 7518 §6.2.1) of P-256 keys: :func:`jwk_of`, :func:`jwk_public_key`
  (raises :class:`JWKError`), the RFC 7638 :func:`thumbprint`, and the SubjectPublicKeyInfo
  fingerprint the STI-PA binds an SPC token to (:func:`account_key_fingerprint`).
* Flattened JWS JSON (RFC 7515 §7.2.2) as RFC 8555 §6.2 uses it: :func:`sign_jws` (ES256) and
  :func:`mac_jws` (HS256, RFC 7518 §3.2, the external account binding of RFC 8555 §7.3.4) write
  one; :func:`parse_flattened` is the one parser; :func:`hs256_verify` checks an HS256 MAC.
* The one parser of compact JWS (RFC 7515 §7.1) for the PASSporT, the SPC token and the CA list:
  :func:`split_compact`, :func:`load_json_object`, :func:`parse_compact`.  Callers pass their own
  error types (``error=`` and friends) so that each keeps its typed errors.
* A compact JWS signed by the certificate its ``x5u`` names, chained to configured roots (the SPC
  token, ATIS-1000080 §6.3.5, and the STI-PA's CA list, ATIS-1000080 §6.3.4):
  :func:`check_signer_chain`, :func:`verify_es256_by`, :func:`verify_x5u_jws`.  Callers fetch the
  chain (their I/O differs) and pass ``error=`` so each keeps its own error type; every failure
  raises ``error(f"{what} ...")``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509 import verification as xv

from stirshaken.core.b64 import b64url_decode, b64url_decode_valid, b64url_encode
from stirshaken.core.errors import SignatureError

if TYPE_CHECKING:
    from stirshaken.core.memo import BoundedCache

# --- ES256 (RFC 7518 §3.4) ----------------------------------------------------------------------

# The ECDSA nonce.  By default OpenSSL's own: a hedged nonce derived from the private key, the
# message digest and fresh random bytes (ossl_bn_gen_dsa_nonce_fixed_top), so a weak or repeated
# RNG output cannot repeat k for different messages, the failure RFC 6979 guards against, while the
# random part keeps the fault-attack resistance that purely deterministic signatures lose (CFRG
# draft-irtf-cfrg-det-sigs-with-noise).  It is also what `openssl speed`, libstirshaken and Go's
# crypto/ecdsa (secsipid) use, and about 3 µs cheaper per signature than RFC 6979 here.
# ``deterministic=True`` gives RFC 6979 signatures (RFC 8225 §4.2 SHOULD), e.g. for byte-exact test
# vectors; verifiers cannot tell the two apart.
ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
try:  # RFC 6979 deterministic ECDSA, cryptography >= 43
    ECDSA_SHA256_DETERMINISTIC: ec.ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
except TypeError:  # pragma: no cover - older cryptography
    ECDSA_SHA256_DETERMINISTIC = ECDSA_SHA256
# the concrete (Rust) class of EC public keys: an identity check is ~10x cheaper than isinstance on the ABC
_EC_PUBLIC_TYPE = type(ec.derive_private_key(1, ec.SECP256R1()).public_key())


def es256_sign(key: ec.EllipticCurvePrivateKey, signing_input: bytes, *, deterministic: bool = False) -> bytes:
    """ES256 over ``signing_input``: the raw 64-byte ``r || s`` of RFC 7518 §3.4."""
    return der_to_raw(key.sign(signing_input, ECDSA_SHA256_DETERMINISTIC if deterministic else ECDSA_SHA256))


def der_to_raw(der: bytes) -> bytes:
    """DER ``SEQUENCE { INTEGER r, INTEGER s }`` of a P-256 signature to the 64-byte ``r || s``.

    OpenSSL's encoding of a P-256 signature always uses short-form lengths (at most 72 bytes);
    anything else goes through the general decoder.
    """
    if len(der) < 8 or der[0] != 0x30 or der[1] != len(der) - 2 or der[2] != 0x02:
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    rl = der[3]
    r = der[4 : 4 + rl]
    sl = der[5 + rl]
    s = der[6 + rl : 6 + rl + sl]
    return r[-32:].rjust(32, b"\0") + s[-32:].rjust(32, b"\0")


_DER_INT = (b"\x02\x20", b"\x02\x21\x00")  # INTEGER of 32 bytes, or 33 with a 0x00 before a set top bit
_DER_SEQ = (b"\x30\x44", b"\x30\x45", b"\x30\x46")  # SEQUENCE of 68, 69 or 70 bytes


def _der_int(b: bytes) -> bytes:
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + bytes((len(b),)) + b


def raw_to_der(raw: bytes) -> bytes:
    """The 64-byte ``r || s`` of a P-256 signature as DER ``SEQUENCE { INTEGER r, INTEGER s }``.

    Byte manipulation instead of ``encode_dss_signature(int(r), int(s))``: same bytes (checked
    against it by tests/core/test_passport.py), about 3x cheaper.  DER integers are minimal big-endian
    with a 0x00 prefix when the top bit is set; at most 70 bytes, so every length is short-form.
    """
    r0, s0 = raw[0], raw[32]
    if r0 and s0:  # no leading zero byte to strip (255/256 of signatures each): prefixes from tables
        r, s = r0 >> 7, s0 >> 7
        return b"".join((_DER_SEQ[r + s], _DER_INT[r], raw[:32], _DER_INT[s], raw[32:]))
    body = _der_int(raw[:32]) + _der_int(raw[32:])
    return b"\x30" + bytes((len(body),)) + body


def verify_signature(signing_input: bytes, signature: bytes, public_key: ec.EllipticCurvePublicKey) -> None:
    """Verify a raw ES256 signature; raises :class:`SignatureError` (438, TN-Validation-Failed)."""
    if len(signature) != 64:
        raise SignatureError("signature validation failed: ES256 signature must be 64 bytes r||s")
    if (type(public_key) is not _EC_PUBLIC_TYPE and not isinstance(public_key, ec.EllipticCurvePublicKey)) or (
        public_key.curve.name != "secp256r1"
    ):
        raise SignatureError("signature validation failed: the credential is not a P-256 key")
    der = raw_to_der(signature)
    try:
        public_key.verify(der, signing_input, ECDSA_SHA256)
    except InvalidSignature:
        raise SignatureError("signature validation failed") from None



# --- compact JWS (RFC 7515 §7.1) -------------------------------------------------------------

ErrorFactory = Callable[[str], Exception]


class JOSEHeader(dict):  # type: ignore[type-arg]
    """A decoded JOSE header: a read-only ``dict`` (RFC 7515 §4), shareable between tokens through
    a header cache.  ``verdicts`` holds what a rule function found true of this header (e.g.
    :func:`stirshaken.core.passport.check_header`: the ``ppt`` values it passed for), so that the
    rule need not be re-run: the header never changes, so a verdict once true stays true.
    Every mutator raises :class:`TypeError`."""

    __slots__ = ("verdicts",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verdicts: set[Any] = set()

    def _read_only(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("a decoded JOSE header is read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only  # type: ignore[assignment]

    def __reduce__(self) -> Any:  # pickle / copy as a plain dict (verdicts are a cache)
        return (dict, (dict(self),))


class CompactJWS(NamedTuple):
    """A compact JWS split and decoded; nothing in it is verified yet.

    ``header`` is a read-only mapping (it may be shared through a header cache), ``payload`` the
    decoded JSON object, ``signature`` the raw bytes, ``signing_input`` the received
    ``BASE64URL(header) "." BASE64URL(payload)`` (RFC 7515 §5.2: signatures are checked over the
    bytes as received) and ``canonical`` whether both JSON segments were in the deterministic form
    of RFC 8225 §9 (sorted keys, no whitespace).
    """

    header: Mapping[str, Any]
    payload: dict[str, Any]
    signature: bytes
    signing_input: bytes
    canonical: bool


def split_compact(
    token: Any,
    *,
    what: str = "JWS",
    error: ErrorFactory = ValueError,
    detached_error: ErrorFactory | None = None,
    max_length: int | None = None,
) -> tuple[str, str, str]:
    """The three non-empty segments of a compact JWS ``header.payload.signature`` (RFC 7515 §7.1).

    Raises ``error(f"{what} ...")`` for a value that is not a string, longer than ``max_length``
    characters, not three dot-separated parts or with an empty part; ``detached_error`` (default
    ``error``) for ``..signature``, a JWS whose header and payload are detached (RFC 7515
    Appendix F; the PASSporT compact form of RFC 8225 §7).
    """
    if type(token) is not str:
        if not isinstance(token, str):
            raise error(f"{what} must be a string")
    if max_length is not None and len(token) > max_length:
        raise error(f"{what} longer than {max_length} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise error(f"{what} must have 3 dot-separated parts, not {len(parts)}")
    h64, p64, s64 = parts
    if not h64 or not p64 or not s64:
        if not h64 and not p64:
            raise (detached_error or error)(f"{what} has a detached header and payload (RFC 7515 Appendix F)")
        raise error(f"{what} has an empty segment")
    return h64, p64, s64


class _DuplicateName(Exception):
    """Raised inside :func:`load_json_object`'s second parse (not a ValueError, which means bad JSON)."""


def load_json_object(
    raw: bytes, *, what: str = "JWS", part: str = "", error: ErrorFactory = ValueError
) -> tuple[dict[str, Any], bool]:
    """Parse one JSON object (a JOSE header or a JWS payload); returns it and whether ``raw`` was
    in the deterministic form of RFC 8225 §9 (sorted keys, no whitespace).

    Duplicate member names are rejected (RFC 7515 §4, RFC 8225 §9), which a plain ``dict`` would
    hide; canonical bytes cannot hold any, so only other input takes the second, checking parse.
    Raises ``error(f"{what} {part} ...")`` (``part``, e.g. ``"header"``, may be empty).
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{_name(what, part)} is not valid JSON: {exc}") from None
    if type(obj) is not dict:
        raise error(f"{_name(what, part)} is not a JSON object")
    try:
        canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) == raw
    except TypeError:  # integers beyond 64 bits
        canonical = False
    if not canonical:
        def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            d = dict(pairs)
            if len(d) != len(pairs):
                raise _DuplicateName
            return d

        try:
            json.loads(raw, object_pairs_hook=no_dupes)
        except _DuplicateName:
            raise error(f"{_name(what, part)} has duplicate member names") from None
        except (ValueError, RecursionError):
            raise error(f"{_name(what, part)} is not valid JSON") from None
    return obj, canonical


def _name(what: str, part: str) -> str:
    return f"{what} {part}" if part else what


def parse_compact(
    token: Any,
    *,
    what: str = "JWS",
    error: ErrorFactory = ValueError,
    encoding_error: ErrorFactory | None = None,
    json_error: ErrorFactory | None = None,
    detached_error: ErrorFactory | None = None,
    max_length: int | None = None,
    header_cache: BoundedCache[str, tuple[Mapping[str, Any], bool]] | None = None,
) -> CompactJWS:
    """Split and decode a compact JWS (RFC 7515 §7.1) whose header and payload are JSON objects.

    The errors come in one fixed order, the ATIS-1000082 order of the PASSporT: the structure
    (:func:`split_compact`: ``error``, ``detached_error``), then the base64url of header, payload
    and signature (RFC 7515 §2, strict: ``encoding_error``), then the JSON of header and payload
    (:func:`load_json_object`: ``json_error``); each defaults to ``error`` and is called with
    one line of text beginning with ``what``.

    ``header_cache`` (owned by the caller, e.g. the STI-VS) maps a header segment to its decoded,
    read-only header and canonical flag: signers reuse one header for every token, so a hit saves
    its base64url and JSON decoding.  Only segments that decoded are stored, and a hit skips
    nothing that could fail, so the result and every error are those without the cache.
    """
    h64, p64, s64 = split_compact(token, what=what, error=error, detached_error=detached_error, max_length=max_length)
    cached = header_cache.get(h64) if header_cache is not None else None
    # b64url_decode_valid: the bytes of valid input, else None; b64url_decode then names the defect
    header_raw = b"" if cached is not None else b64url_decode_valid(h64)
    payload_raw = b64url_decode_valid(p64)
    signature = b64url_decode_valid(s64)
    if header_raw is None or payload_raw is None or signature is None:
        enc: Any = encoding_error or error
        if header_raw is None:
            b64url_decode(h64, what=f"{what} header", error=enc)
        if payload_raw is None:
            b64url_decode(p64, what=f"{what} payload", error=enc)
        b64url_decode(s64, what=f"{what} signature", error=enc)
    if cached is None:
        obj, hcanon = load_json_object(header_raw, what=what, part="header", error=json_error or error)  # type: ignore[arg-type]
        header: Mapping[str, Any] = JOSEHeader(obj)
        if header_cache is not None:
            header_cache.put(h64, (header, hcanon))
    else:
        header, hcanon = cached
    payload, pcanon = load_json_object(payload_raw, what=what, part="payload", error=json_error or error)  # type: ignore[arg-type]
    return _tuple_new(CompactJWS, (header, payload, signature, (h64 + "." + p64).encode("ascii"), hcanon and pcanon))


_tuple_new = tuple.__new__  # CompactJWS(...) without the Python-level NamedTuple __new__ (hot path)


# --- JWK (RFC 7517, RFC 7518 §6.2.1, RFC 7638) and flattened JWS (RFC 7515 §7.2.2) ---------------------------------------------------------------------------------------


def _int_b64(n: int) -> str:
    return b64url_encode(n.to_bytes(32, "big"))


def jwk_of(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> dict[str, str]:
    """The public JWK of a P-256 key (RFC 7518 §6.2.1)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    nums = pub.public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": _int_b64(nums.x), "y": _int_b64(nums.y)}


class JWKError(ValueError):
    """The JWK is not a P-256 public key."""


def jwk_public_key(jwk: Any) -> ec.EllipticCurvePublicKey:
    """Decode an EC P-256 public JWK; raises :class:`JWKError`."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise JWKError("only EC P-256 account keys are supported (ES256)")
    if "d" in jwk:
        raise JWKError("the JWK contains a private key")
    try:
        x = b64url_decode(jwk["x"], what="jwk x", error=JWKError)
        y = b64url_decode(jwk["y"], what="jwk y", error=JWKError)
    except (KeyError, TypeError):
        raise JWKError("the JWK lacks x or y") from None
    if len(x) != 32 or len(y) != 32:
        raise JWKError("P-256 JWK coordinates must be 32 bytes")
    try:
        return ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()).public_key()
    except ValueError:
        raise JWKError("the JWK point is not on P-256") from None


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an EC key."""
    canon = orjson.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]}, option=orjson.OPT_SORT_KEYS)
    return b64url_encode(hashlib.sha256(canon).digest())


def sign_jws(key: ec.EllipticCurvePrivateKey, protected: Mapping[str, Any], payload: bytes | None) -> dict[str, str]:
    """Flattened JWS JSON (RFC 7515 §7.2.2) with ES256; ``payload=None`` is POST-as-GET (empty)."""
    prot = b64url_encode(orjson.dumps(dict(protected)))
    pay = "" if payload is None else b64url_encode(payload)
    sig = es256_sign(key, f"{prot}.{pay}".encode("ascii"), deterministic=False)
    return {"protected": prot, "payload": pay, "signature": b64url_encode(sig)}


def hs256(key: bytes, signing_input: bytes) -> bytes:
    """The HS256 MAC (RFC 7518 §3.2: HMAC with SHA-256, 32 bytes) of ``signing_input`` under ``key``."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(signing_input)
    return h.finalize()


def hs256_verify(key: bytes, signing_input: bytes, mac: bytes) -> bool:
    """Whether ``mac`` is the HS256 MAC of ``signing_input`` under ``key`` (RFC 7518 §3.2; compared
    in constant time by ``cryptography``)."""
    h = hmac.HMAC(key, hashes.SHA256())
    h.update(signing_input)
    try:
        h.verify(mac)
    except InvalidSignature:
        return False
    return True


def mac_jws(key: bytes, protected: Mapping[str, Any], payload: bytes) -> dict[str, str]:
    """Flattened JWS JSON (RFC 7515 §7.2.2) with an HS256 MAC (RFC 7518 §3.2) under ``key``: the
    form of an ACME external account binding (RFC 8555 §7.3.4)."""
    prot = b64url_encode(orjson.dumps(dict(protected)))
    pay = b64url_encode(payload)
    return {"protected": prot, "payload": pay, "signature": b64url_encode(hs256(key, f"{prot}.{pay}".encode("ascii")))}


class FlattenedJWS(NamedTuple):
    """A flattened JWS (RFC 7515 §7.2.2) decoded; nothing in it is verified yet.

    ``header`` is the protected header (a JSON object), ``payload`` the decoded payload bytes
    (empty for an ACME POST-as-GET), ``signature`` the raw signature or MAC, and ``protected64``
    / ``payload64`` the members as received, whose ``signing_input`` the signature covers
    (RFC 7515 §5.2).
    """

    header: dict[str, Any]
    payload: bytes
    signature: bytes
    protected64: str
    payload64: str

    @property
    def signing_input(self) -> bytes:
        return f"{self.protected64}.{self.payload64}".encode("ascii")


_FLATTENED_MEMBERS = frozenset(("protected", "payload", "signature"))


def parse_flattened(doc: Any, *, what: str = "JWS", error: ErrorFactory = ValueError) -> FlattenedJWS:
    """Decode a flattened JWS JSON serialization (RFC 7515 §7.2.2) as ACME allows it (RFC 8555
    §6.2: no unprotected header, no detached payload): ``doc`` is the parsed JSON value, an
    object with exactly the string members ``protected``, ``payload`` and ``signature``.

    Every defect raises ``error(f"{what} ...")`` with one line: not such an object, a member that
    is not strict base64url (RFC 7515 §2), a protected header that is not a JSON object without
    duplicate names (RFC 7515 §4).  The payload is returned as bytes (its JSON is the caller's).
    """
    if not isinstance(doc, dict) or doc.keys() != _FLATTENED_MEMBERS:
        raise error(f"{what} must be a flattened JWS, a JSON object with protected, payload and signature only")
    prot, pay, sig = doc["protected"], doc["payload"], doc["signature"]
    if type(prot) is not str or type(pay) is not str or type(sig) is not str:
        raise error(f"{what} members protected, payload and signature must be strings")
    header_raw = b64url_decode(prot, what=f"{what} protected header", error=error)  # type: ignore[arg-type]
    payload = b64url_decode(pay, what=f"{what} payload", error=error)  # type: ignore[arg-type]
    signature = b64url_decode(sig, what=f"{what} signature", error=error)  # type: ignore[arg-type]
    header, _ = load_json_object(header_raw, what=what, part="protected header", error=error)
    return FlattenedJWS(header, payload, signature, prot, pay)


def account_key_fingerprint(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """``SHA256 AA:BB:...`` over the SubjectPublicKeyInfo DER of the ACME account key (PA-05)."""
    pub = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256 " + ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())



# --- JWS signed by an x5u certificate chained to configured roots ----------------------------


def check_signer_chain(
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    error: ErrorFactory,
    what: str,
    root_name: str = "the STI-PA root",
) -> x509.Certificate:
    """Path-validate ``chain`` (signer first, then intermediates) against ``roots`` at ``at``;
    returns the signer certificate."""
    if not roots:
        raise error(f"no trust anchor configured to verify the {what} signer")
    if not chain:
        raise error(f"{what} signer certificate missing")
    verifier = (
        xv.PolicyBuilder()
        .store(xv.Store(list(roots)))
        .time(at)
        .extension_policies(
            ca_policy=xv.ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, xv.Criticality.AGNOSTIC, None),
            ee_policy=xv.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(chain[0], list(chain[1:]))
    except xv.VerificationError as exc:
        raise error(f"{what} signer does not chain to {root_name}: {str(exc)[:160]}") from None
    return chain[0]


def verify_es256_by(signing_input: bytes, signature: bytes, signer: x509.Certificate, *, error: ErrorFactory, what: str) -> None:
    """The raw ES256 ``signature`` over ``signing_input`` must verify with ``signer``'s key."""
    pub = signer.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise error(f"{what} signer key is not an EC key")
    try:
        verify_signature(signing_input, signature, pub)
    except SignatureError:
        raise error(f"{what} signature does not verify with the signer certificate") from None


def verify_x5u_jws(
    signing_input: bytes,
    signature: bytes,
    chain: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
    *,
    at: dt.datetime,
    error: ErrorFactory,
    what: str,
    pinned: Sequence[x509.Certificate] = (),
    root_name: str = "the STI-PA root",
) -> x509.Certificate:
    """Both checks: the signer (``chain[0]``, fetched from the JWS ``x5u``) has the public key of
    a ``pinned`` certificate or chains to ``roots``, and the signature verifies with it.
    Returns the signer certificate."""
    if not chain:
        raise error(f"{what} signer certificate missing")
    pub = chain[0].public_key()
    if any(p.public_key() == pub for p in pinned):
        signer = chain[0]
    else:
        signer = check_signer_chain(chain, roots, at=at, error=error, what=what, root_name=root_name)
    verify_es256_by(signing_input, signature, signer, error=error, what=what)
    return signer


__all__ = [
    "CompactJWS",
    "FlattenedJWS",
    "JWKError",
    "ECDSA_SHA256",
    "ECDSA_SHA256_DETERMINISTIC",
    "account_key_fingerprint",
    "der_to_raw",
    "check_signer_chain",
    "es256_sign",
    "hs256",
    "hs256_verify",
    "jwk_of",
    "jwk_public_key",
    "load_json_object",
    "mac_jws",
    "parse_compact",
    "parse_flattened",
    "raw_to_der",
    "sign_jws",
    "split_compact",
    "thumbprint",
    "verify_es256_by",
    "verify_signature",
    "verify_x5u_jws",
]
