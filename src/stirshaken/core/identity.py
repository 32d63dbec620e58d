"""The SIP Identity header field (RFC 8224 §4).

ABNF (RFC 8224 §4, with Erratum 6499: the digest is base64url)::

    Identity           = "Identity" HCOLON signed-identity-digest SEMI ident-info
                         *( SEMI ident-info-params )
    signed-identity-digest = 1*(base64-char / ".")
    ident-info         = "info" EQUAL ident-info-uri
    ident-info-uri     = LAQUOT absoluteURI RAQUOT
    ident-info-params  = ident-info-alg / ident-type / ident-info-extension
    ident-info-alg     = "alg" EQUAL token
    ident-type         = "ppt" EQUAL token
    ident-info-extension = generic-param

The parser accepts parameters in any order, linear white space around ``;`` and ``=``, quoted
parameter values, and keeps unknown parameters.  ``info`` without angle brackets is accepted (as
secsipidx and Kamailio do) and reported in :attr:`IdentityHeader.problems`.  Several Identity
header fields may be repeated or joined by commas (RFC 3261 §7.3.1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from stirshaken.core.errors import BadIdentityInfoError, IdentityHeaderSyntaxError
from stirshaken.core.sip.abnf import TOKEN, TOKEN_RE

if TYPE_CHECKING:
    from stirshaken.core.memo import BoundedCache

# RFC 3261 §25.1 building blocks: TOKEN comes from the one transcription (core/sip/abnf.py);
# this quoted-string is the Identity parser's own, which tolerates any character but CR and LF,
# escaped or not (quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)): a value always prints back.
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"'
DIGEST = r"[A-Za-z0-9\-_+/=]*\.[A-Za-z0-9\-_+/=.]*"

_HEADER_NAME = re.compile(rf"^\s*(?:Identity|y)\s*:\s*", re.IGNORECASE)
_DIGEST_RE = re.compile(rf"\s*({DIGEST})\s*")
#: bytes -> b"a" for the characters of a signed-identity-digest (DIGEST), b"!" for all others:
#: one C translate screens a whole token (the tail-cache hit of parse_identity)
_DIGEST_SCREEN = bytes(97 if chr(i) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=." else 33 for i in range(256))
_PARAM_RE = re.compile(
    rf"\s*;\s*({TOKEN})(?:\s*=\s*(<[^<>\s]*>|{QUOTED_STRING}|[^;,\s<>\"]+))?\s*"
)
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"]+")
MAX_HEADER_LENGTH = 16384


@dataclass(frozen=True)
class IdentityHeader:
    """One Identity header field value.

    ``params`` keeps every parameter in received order (names lower-cased, values unquoted and,
    for ``info``, without angle brackets).
    """

    token: str
    params: tuple[tuple[str, str | None], ...] = ()
    problems: tuple[str, ...] = field(default=(), compare=False)

    def param(self, name: str) -> str | None:
        return self._get(name.lower())

    def _get(self, name: str) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return None

    def info_alg_ppt(self) -> tuple[str | None, str | None, str | None]:
        """``(info, alg, ppt)`` in one pass over the parameters (the verifier's hot path)."""
        params = self.params
        if len(params) == 3:  # the usual order first (build_identity)
            (k1, info), (k2, alg), (k3, ppt) = params
            if k1 == "info" and k2 == "alg" and k3 == "ppt":
                return info, alg, ppt
        info = alg = ppt = None
        for k, v in params:
            if k == "info":
                info = v
            elif k == "alg":
                alg = v
            elif k == "ppt":
                ppt = v
        return info, alg, ppt

    @property
    def info(self) -> str | None:
        return self._get("info")

    @property
    def alg(self) -> str | None:
        return self._get("alg")

    @property
    def ppt(self) -> str | None:
        return self._get("ppt")

    @property
    def is_compact(self) -> bool:
        return self.token.startswith("..")

    def __str__(self) -> str:
        out = [self.token]
        for k, v in self.params:
            if v is None:
                out.append(f";{k}")
            elif k == "info":
                out.append(f";info=<{v}>")
            elif TOKEN_RE.fullmatch(v):
                out.append(f";{k}={v}")
            else:
                out.append(';{}="{}"'.format(k, v.replace("\\", "\\\\").replace('"', '\\"')))
        return "".join(out)


def build_identity(token: str, x5u: str, *, alg: str = "ES256", ppt: str | None = "shaken") -> str:
    """``token;info=<x5u>;alg=ES256;ppt=shaken`` as SHAKEN peers emit it (ATIS-1000074 §5.2)."""
    if _ABSOLUTE_URI.fullmatch(x5u) is None:
        raise BadIdentityInfoError(f"info URI {x5u!r} is not an absolute URI")
    value = f"{token};info=<{x5u}>;alg={alg}"
    return value + (f";ppt={ppt}" if ppt else "")


def _unquote(v: str) -> str:
    return re.sub(r"\\(.)", r"\1", v[1:-1])


def parse_identity(
    value: str,
    *,
    tail_cache: BoundedCache[str, tuple[tuple[tuple[str, str | None], ...], tuple[str, ...]]] | None = None,
    token_checked_later: bool = False,
) -> IdentityHeader:
    """Parse one Identity header value (a leading ``Identity:`` or ``y:`` is allowed).

    Raises :class:`IdentityHeaderSyntaxError` (438) for a malformed value and
    :class:`BadIdentityInfoError` (436) when ``info`` is missing or not an absolute URI
    (ATIS-1000082 E6/E7).

    ``tail_cache`` (owned by the caller, e.g. the STI-VS) maps the parameter tail of a value,
    from its first ``;`` (``;info=<x5u>;alg=ES256;ppt=shaken``, the same for every header of a
    signer), to its parsed parameters and problems.  A value ``token;tail`` whose tail is stored
    and whose token is a whole signed-identity-digest parses exactly as without the cache: the
    token then holds no white space, ``:``, ``;`` or line break, so the header name, folding and
    the digest rule cannot reach across the ``;``, and the tail alone decides the rest.  Only tails
    of values that parsed, directly after their token, are stored.

    ``token_checked_later`` (with ``tail_cache``): on a cache hit the token is not screened
    against the digest rule here.  The caller promises to decode the token strictly (base64url of
    all three segments, which implies the rule) and, when anything fails before that decoding
    succeeded, to call ``parse_identity(value)`` first, so that the general parse decides which
    error comes first exactly as without the cache (:func:`stirshaken.core.verification.prepare`
    does so).
    """
    if tail_cache is not None and type(value) is str and len(value) <= MAX_HEADER_LENGTH:
        i = value.find(";")
        if i > 0:
            hit = tail_cache.get(value[i:])
            if hit is not None:
                token = value[:i]
                # token fullmatches DIGEST: ASCII, only digest characters, a "." somewhere
                if token_checked_later or (token.isascii() and b"!" not in token.encode("ascii").translate(_DIGEST_SCREEN) and "." in token):
                    # IdentityHeader(token, *hit) without the frozen dataclass's field-by-field __init__
                    header = object.__new__(IdentityHeader)
                    object.__setattr__(header, "__dict__", {"token": token, "params": hit[0], "problems": hit[1]})
                    return header
    # the general parse
    if not isinstance(value, str):
        raise IdentityHeaderSyntaxError("Identity header must be text")
    if len(value) > MAX_HEADER_LENGTH:
        raise IdentityHeaderSyntaxError(f"Identity header longer than {MAX_HEADER_LENGTH} characters")
    text = re.sub(r"\r?\n[ \t]+", " ", value)  # unfold (RFC 3261 §7.3.1)
    m = _HEADER_NAME.match(text)
    pos = m.end() if m else 0
    dm = _DIGEST_RE.match(text, pos)
    if dm is None or not dm.group(1):
        raise IdentityHeaderSyntaxError("Identity header does not start with a signed-identity-digest")
    token = dm.group(1)
    pos = dm.end()
    params: list[tuple[str, str | None]] = []
    problems: list[str] = []
    seen: set[str] = set()
    while pos < len(text):
        pm = _PARAM_RE.match(text, pos)
        if pm is None:
            raise IdentityHeaderSyntaxError(f"malformed Identity header parameter near {text[pos:pos + 30]!r}")
        name = pm.group(1).lower()
        raw = pm.group(2)
        if name in seen:
            raise IdentityHeaderSyntaxError(f"Identity header parameter '{name}' repeated")
        seen.add(name)
        val: str | None
        if raw is None:
            val = None
        elif raw.startswith("<"):
            val = raw[1:-1]
        elif raw.startswith('"'):
            val = _unquote(raw)
        else:
            val = raw
            if name == "info":
                problems.append("'info' URI is not enclosed in angle brackets (RFC 8224 §4)")
        if name == "info" and raw is not None and raw.startswith('"'):
            problems.append("'info' URI is quoted instead of enclosed in angle brackets")
        params.append((name, val))
        pos = pm.end()
    info = dict(params).get("info")
    if "info" not in seen or info is None:
        raise BadIdentityInfoError("Missing 'info' parameter in the 'identity'")
    if _ABSOLUTE_URI.fullmatch(info) is None:
        raise BadIdentityInfoError("Invalid 'info' URI")
    header = IdentityHeader(token=token, params=tuple(params), problems=tuple(problems))
    if tail_cache is not None:
        i = value.find(";")
        if i > 0 and value[:i] == token:
            tail_cache.put(value[i:], (header.params, header.problems))
    return header


def split_header_values(value: str) -> list[str]:
    """Split a comma-joined header field into its values, respecting quotes and ``<...>``."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == "," and not depth:
            out.append(value[start:i])
            start = i + 1
        i += 1
    out.append(value[start:])
    return [v.strip() for v in out if v.strip()]


def parse_identity_headers(values: Iterable[str] | str) -> list[IdentityHeader]:
    """Parse every Identity header of a request: repeated fields and comma-joined values."""
    if isinstance(values, str):
        values = [values]
    result: list[IdentityHeader] = []
    for v in values:
        for part in split_header_values(v):
            result.append(parse_identity(part))
    return result
