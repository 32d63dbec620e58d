"""The Identity header (RFC 8224 §4): :func:`stirshaken.core.identity.parse_identity`.

Properties: only :class:`StirShakenError` (438 syntax, 436 info), one line; the parameter-tail
cache of the STI-VS changes no result or error; ``str(header)`` parses back to the same token
and parameters; a comma-joined field splits into values that each parse or fail typed.
"""

from __future__ import annotations

from fuzz.harness import Finding, Target, outcome, same, text_of, typed
from fuzz.material import Material
from stirshaken.core.errors import StirShakenError
from stirshaken.core.identity import parse_identity, parse_identity_headers
from stirshaken.core.memo import BoundedCache

# one cache for the whole run, as the STI-VS keeps one: entries of earlier inputs must not leak
_TAILS: BoundedCache = BoundedCache(256)


def _view(h):  # what a parse decides: token, parameters, problems
    return (h.token, h.params, h.problems)


def check(data: bytes) -> None:
    value = text_of(data)
    plain = outcome(StirShakenError, parse_identity, value)
    cached = outcome(StirShakenError, parse_identity, value, tail_cache=_TAILS)
    cached_again = outcome(StirShakenError, parse_identity, value, tail_cache=_TAILS)
    for what, other in (("tail cache (miss)", cached), ("tail cache (hit)", cached_again)):
        if plain[0] != other[0]:
            raise Finding(f"{what} changes the outcome: {plain!r:.200} vs {other!r:.200}")
        same(what, _view(plain[1]) if plain[0] == "ok" else plain[1], _view(other[1]) if other[0] == "ok" else other[1])
    if plain[0] == "ok":
        header = plain[1]
        text = str(header)
        again = typed(StirShakenError, parse_identity, text)
        if again is None:
            raise Finding(f"str(header) does not parse back: {text[:200]!r}")
        same("round trip", (again.token, again.params), (header.token, header.params))
        header.info_alg_ppt()
    if "," in value:  # split_header_values is a loop over characters: only where it has work
        typed(StirShakenError, parse_identity_headers, value)


def seeds(m: Material) -> list[bytes]:
    ident = m.identity()
    token, _, tail = ident.partition(";")
    return [s.encode() for s in (
        ident,
        f"Identity: {ident}",
        f"y: {token} ;info=<{m.signer.x5u}> ; alg=ES256 ;ppt=\"shaken\"",
        f"{token};info={m.signer.x5u};alg=ES256;ppt=shaken;foo;bar=\"a\\\"b\"",
        f"{ident}, {ident}",
        f"{token}\r\n ;info=<{m.signer.x5u}>;alg=ES256",
        f"..{token.rsplit('.', 1)[1]};{tail}",
    )]


TARGET = Target(
    name="identity",
    check=check,
    seeds=seeds,
    tokens=(b";", b"=", b"<", b">", b'"', b"\\", b",", b".", b" ", b"\r\n ", b"info", b"alg", b"ppt", b"ES256", b"shaken",
            b"https://", b"Identity:", b"y:"),
    max_len=4096,
    examples=400,
)
