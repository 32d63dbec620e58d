"""The PASSporT, a compact JWS (RFC 8225, RFC 7515 §7.1): :func:`stirshaken.core.passport.parse_jws`,
``check_header``, ``check_claims``, ``problems`` and ``decode``.

Properties: only :class:`StirShakenError`, one line; the JOSE header cache changes no result or
error; the segments round-trip (base64url is strict, so re-encoding the decoded bytes gives the
received text back; a token flagged canonical re-serializes to its own bytes, RFC 8225 §9);
``problems`` and ``to_json`` never raise once the claims are checked; a token we sign from the
decoded header and claims decodes to the same header and claims.
"""

from __future__ import annotations

import orjson

from fuzz.harness import Finding, Target, outcome, passes, same, text_of, typed
from fuzz.material import Material
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.errors import SignatureError, StirShakenError
from stirshaken.core.memo import BoundedCache
from stirshaken.core.passport import canonical_json, check_claims, check_header, decode, encode_token, parse_jws, problems

_HEADERS: BoundedCache = BoundedCache(256)


def _view(p):
    return (dict(p.header), p.claims, p.signature, p.signing_input, p.canonical)


def token_of(data: bytes) -> str:
    """The token text; an input holding NUL bytes is ``header NUL payload [NUL signature]`` as
    raw bytes, base64url-encoded here, so that mutations reach the JSON inside the token."""
    if b"\0" not in data:
        return text_of(data)
    parts = data.split(b"\0", 2)
    if len(parts) == 2:
        parts.append(b"\x01" * 64)
    return ".".join(b64url_encode(part) for part in parts)


def check(data: bytes) -> None:
    from fuzz.material import material

    token = token_of(data)
    plain = outcome(StirShakenError, parse_jws, token)
    for _ in range(2):  # a miss, then a hit of the header cache
        cached = outcome(StirShakenError, parse_jws, token, header_cache=_HEADERS)
        if plain[0] != cached[0]:
            raise Finding(f"header cache changes the outcome: {plain!r:.200} vs {cached!r:.200}")
        same("header cache", _view(plain[1]) if plain[0] == "ok" else plain[1], _view(cached[1]) if cached[0] == "ok" else cached[1])
    if plain[0] != "ok":
        return
    p = plain[1]
    h64, p64, s64 = token.split(".")
    same("signature segment round trip", b64url_encode(p.signature), s64)
    if p.canonical:
        same("canonical header round trip", b64url_encode(canonical_json(dict(p.header))), h64)
        same("canonical payload round trip", b64url_encode(canonical_json(p.claims)), p64)
    m = material()
    typed(SignatureError, p.verify, m.sp_key.public_key())
    for ppt in ("shaken", None, "div", frozenset({"shaken", "div"})):
        for require_x5u in (True, False):
            typed(StirShakenError, check_header, p, ppt=ppt, require_x5u=require_x5u)
    if not passes(StirShakenError, check_claims, p):
        return
    p.claims_checked()
    for line in problems(p) + list(p.problems):
        if not isinstance(line, str) or "\n" in line:
            raise Finding(f"problem line {line!r:.200}")
    orjson.dumps(p.to_json())
    decoded = typed(StirShakenError, decode, token, ppt=None, require_x5u=False)
    resigned = encode_token(m.sp_key, dict(p.header), p.claims)
    again = parse_jws(resigned)
    same("re-signed header", dict(again.header), dict(p.header))
    same("re-signed claims", again.claims, p.claims)
    if decoded is not None:
        decode(resigned, ppt=None, require_x5u=False)


def seeds(m: Material) -> list[bytes]:
    from stirshaken.core.passport import div_claims, passport_header, shaken_claims

    key = m.sp_key
    tokens = [
        m.identity().partition(";")[0],
        m.identity(dest=["12155551213", "12155551214"], attest="C").partition(";")[0],
        encode_token(key, passport_header(m.signer.x5u, "div"), div_claims(orig="12155551212", dest="12155551213", div="12155551299", iat=1700000000)),
        encode_token(key, passport_header(m.signer.x5u, "rcd"), {**shaken_claims(orig="12155551212", dest="1", attest="B", iat=1, origid="x"),
                                                               "rcd": {"nam": "Alice"}, "crn": "why", "rcdi": {"/nam": "x"}}),
        encode_token(key, {**passport_header(m.signer.x5u), "crit": ["x"]}, {"mky": [{"alg": "a", "dig": "d"}], "iat": 1, "orig": {"uri": "sip:a@b"}, "dest": {"uri": ["sip:b@c"]}}),
        # RFC 8225 §7.1: whitespace in the JSON, a string iat (not canonical)
        "eyJhbGciOiJFUzI1NiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jZXJ0LmV4YW1wbGUub3JnL3Bhc3Nwb3J0LmNlciJ9"
        ".eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6IjE0NDMyMDgzNDUiLCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifX0"
        ".rq3pjT1hoRwakEGjHCnWSwUnshd0-zJ6F1VOgFWSjHBr8Qjpjlk-cpFYpFYsojNCpTzO3QfPOlckGaS6hEck7w",
        "..rq3pjT1hoRwakEGjHCnWSwUnshd0-zJ6F1VOgFWSjHBr8Qjpjlk-cpFYpFYsojNCpTzO3QfPOlckGaS6hEck7w",
    ]
    out = [t.encode() for t in tokens]
    for t in tokens[:5]:
        h64, p64, _ = t.split(".")
        out.append(b64url_decode(h64) + b"\0" + b64url_decode(p64))
    return out


TARGET = Target(
    name="passport",
    check=check,
    seeds=seeds,
    tokens=(b".", b"..", b"eyJ", b"In0", b"fQ", b"-", b"_", b"=", b"+", b"/", b"\0", b'"alg"', b'"ES256"', b'"typ"', b'"passport"',
            b'"ppt"', b'"shaken"', b'"div"', b'"rcd"', b'"x5u"', b'"crit"', b'"attest"', b'"dest"', b'"orig"', b'"tn"', b'"uri"',
            b'"iat"', b'"origid"', b'"mky"', b"{", b"}", b"[", b"]", b":", b",", b"null", b"true", b"1e9", b"-1", b'"\\u0000"'),
    max_len=4096,
    examples=450,
)
