"""Rich call data (RFC 9795): the ``rcd`` claim, its ``rcdi`` integrity digests and the ``rcd``
PASSporT.  Pure: the content a URL refers to is handed in by the caller (the signer reads a file,
the verifier fetches through :mod:`stirshaken.vs.x5u`); nothing here fetches.

Claims (RFC 9795):

* ``rcd``, an object: ``nam`` (display name, a string), ``jcd`` (a jCard, RFC 7095, inline: a JSON
  array), ``jcl`` (the URL of a jCard), ``icn`` (the URL of an icon); ``jcd`` and ``jcl`` are
  exclusive.  Other members are extensions and are carried as they are.
* ``crn`` (call reason, a string) beside ``rcd``.
* ``rcdi``, an object: each member names an element of ``rcd`` by JSON pointer (RFC 6901, relative
  to the ``rcd`` object: ``/icn``, ``/jcd``, ``/jcd/1/3/3``) and gives its digest as an integrity
  string ``ALG-BASE64`` (the W3C Subresource Integrity form: ``sha256-…``, ``sha384-…``,
  ``sha512-…``).

What a digest covers (RFC 9795): for an element whose value is a URL (``jcl``, ``icn``, a URL
inside a jCard), the bytes of the content it refers to; for any other element (``jcd``), its JSON
serialized by the JSON Canonicalization Scheme (RFC 8785).  :func:`jcs` implements RFC 8785 for
the JSON a jCard holds (strings, integers up to 2^53, booleans, null, arrays, objects whose member
names lie in the Basic Multilingual Plane), where it coincides with ``orjson``'s sorted compact
output (same escapes, same member order); other JSON (fractional numbers) is refused rather than
digested differently from other implementations.

Decision (docs/requirements.md RC-01): rich call data is signed as its own PASSporT, ``ppt`` ``rcd``
(RFC 9795), beside the call's SHAKEN PASSporT, so that a failed digest fails the ``rcd``
PASSporT alone.  The verifier also checks ``rcd`` claims found in a PASSporT of another type (a
``shaken`` one, as ATIS-1000094 allows); there a failed digest is reported as a failed
``rcd-integrity`` check without failing that PASSporT.

Digests this implementation writes are ``sha256-`` with standard base64 and its padding (the SRI
form); one it checks may use either base64 alphabet, with or without padding (the decoded bytes
are compared).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
from typing import Any, Mapping, Sequence

import orjson

from stirshaken.core.errors import InvalidClaimError, InvalidIdentityError, MissingClaimError, StirShakenError

__all__ = [
    "RCD_MEMBERS", "RichCallDataError", "check_rcd_claims", "integrity", "jcs", "rcd_claims", "rcd_urls", "resolve_pointer",
    "verify_rcdi",
]

#: the members of the ``rcd`` object this implementation knows (RFC 9795)
RCD_MEMBERS = ("nam", "jcd", "jcl", "icn")
_HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
_INTEGRITY = re.compile(r"(sha256|sha384|sha512)-([A-Za-z0-9+/_-]+={0,2})")
_URL = re.compile(r"https?://", re.IGNORECASE)
_MAX_SAFE = 1 << 53


class RichCallDataError(InvalidIdentityError):
    """Rich call data that cannot be trusted (RFC 9795): a malformed ``rcd``/``rcdi`` claim, a
    digest that does not match, or content that could not be obtained (then with the fetch's 436).
    A 438 by default."""


def _is_url(value: Any) -> bool:
    return type(value) is str and _URL.match(value) is not None


def _bmp(text: str) -> bool:
    return all(ord(ch) < 0x10000 for ch in text)


def _jcs_subset(value: Any, where: str) -> None:
    t = type(value)
    if t is str or t is bool or value is None:
        return
    if t is int:
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return
        raise InvalidClaimError(f"{where}: integer {value} is outside the range RFC 8785 serializes exactly")
    if t is list:
        for i, v in enumerate(value):
            _jcs_subset(v, f"{where}/{i}")
        return
    if t is dict:
        for k, v in value.items():
            if not _bmp(k):
                raise InvalidClaimError(f"{where}: member name outside the Basic Multilingual Plane is not canonicalized here")
            _jcs_subset(v, f"{where}/{k}")
        return
    raise InvalidClaimError(f"{where}: a {'fractional number' if t is float else t.__name__} is not canonicalized here (RFC 8785)")


def jcs(value: Any, where: str = "value") -> bytes:
    """The RFC 8785 (JCS) serialization of ``value`` (bytes, UTF-8); raises
    :class:`InvalidClaimError` for JSON outside the subset described in the module docstring."""
    _jcs_subset(value, where)
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def integrity(content: bytes, alg: str = "sha256") -> str:
    """The integrity string of ``content``: ``sha256-`` + base64 of its SHA-256 digest (RFC 9795,
    in the W3C SRI form)."""
    return f"{alg}-{base64.b64encode(_HASHES[alg](content).digest()).decode('ascii')}"


def _digest_bytes(value: str) -> tuple[str, bytes] | None:
    """``(alg, digest)`` of an integrity string, or None when it is not one."""
    m = _INTEGRITY.fullmatch(value) if type(value) is str else None
    if m is None:
        return None
    b64 = m.group(2).rstrip("=").replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _HASHES[m.group(1)]().digest_size:
        return None
    return m.group(1), raw


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """The element of ``doc`` that the JSON pointer ``pointer`` names (RFC 6901 §4: ``~1`` is
    ``/``, ``~0`` is ``~``; array indexes in decimal without leading zeros).  Raises
    :class:`KeyError` when it names nothing."""
    if pointer == "":
        return doc
    if not pointer.startswith("/"):
        raise KeyError(pointer)
    node = doc
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if type(node) is dict:
            node = node[token]
        elif type(node) is list:
            if not token.isdigit() or (len(token) > 1 and token[0] == "0") or int(token) >= len(node):
                raise KeyError(pointer)
            node = node[int(token)]
        else:
            raise KeyError(pointer)
    return node


def check_rcd_claims(claims: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``rcd`` and ``rcdi`` claims of a PASSporT, checked for shape (RFC 9795):
    ``rcd`` a non-empty object whose ``nam`` is a string, ``jcd`` an array, ``jcl`` and ``icn``
    http(s) URLs, not both ``jcd`` and ``jcl``; ``rcdi`` (when present) an object of JSON pointers
    naming elements of ``rcd`` and integrity strings; ``crn`` a string.  Raises
    :class:`RichCallDataError` naming the fault."""
    rcd = claims.get("rcd")
    if rcd is None:
        raise RichCallDataError("Missing 'rcd' claim (RFC 9795)")
    if type(rcd) is not dict or not rcd:
        raise RichCallDataError("'rcd' claim must be a non-empty JSON object (RFC 9795)")
    if "nam" in rcd and type(rcd["nam"]) is not str:
        raise RichCallDataError("'rcd.nam' must be a string (RFC 9795)")
    if "jcd" in rcd and type(rcd["jcd"]) is not list:
        raise RichCallDataError("'rcd.jcd' must be a jCard, a JSON array (RFC 9795, RFC 7095)")
    if "jcd" in rcd and "jcl" in rcd:
        raise RichCallDataError("'rcd' holds both 'jcd' and 'jcl'; they are exclusive (RFC 9795)")
    for name in ("jcl", "icn"):
        if name in rcd and not _is_url(rcd[name]):
            raise RichCallDataError(f"'rcd.{name}' must be an http(s) URL (RFC 9795)")
    if "crn" in claims and type(claims["crn"]) is not str:
        raise RichCallDataError("'crn' claim must be a string (RFC 9795)")
    rcdi = claims.get("rcdi", {})
    if type(rcdi) is not dict:
        raise RichCallDataError("'rcdi' claim must be a JSON object (RFC 9795)")
    for pointer, value in rcdi.items():
        try:
            resolve_pointer(rcd, pointer)
        except KeyError:
            raise RichCallDataError(f"'rcdi' names {pointer[:60]!r}, which is not an element of 'rcd' (RFC 9795)") from None
        if _digest_bytes(value) is None:
            raise RichCallDataError(f"'rcdi' {pointer[:60]!r}: {str(value)[:60]!r} is not an integrity string "
                                    "(sha256-, sha384- or sha512- and the base64 digest; RFC 9795)")
    return rcd, rcdi


def rcd_urls(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The URLs whose content the ``rcdi`` digests of ``claims`` cover (what a verifier must
    fetch), each once; ``()`` for claims that are not well formed (:func:`verify_rcdi` says why)."""
    try:
        rcd, rcdi = check_rcd_claims(claims)
    except RichCallDataError:
        return ()
    out: dict[str, None] = {}
    for pointer in rcdi:
        target = resolve_pointer(rcd, pointer)
        if _is_url(target):
            out[target] = None
    return tuple(out)


def verify_rcdi(claims: Mapping[str, Any], contents: Mapping[str, bytes | StirShakenError]) -> str:
    """Check every ``rcdi`` digest of ``claims`` (RFC 9795) against ``jcd`` (inline, RFC 8785)
    and the fetched ``contents`` (URL -> bytes, or the error that prevented fetching it).

    Returns a short detail for the passing check ("rcdi /icn, /jcd match"; or that nothing was
    digested).  Raises :class:`RichCallDataError`: claims malformed, a digest that does not match
    (438), content missing (with the fetch error's code, 436)."""
    rcd, rcdi = check_rcd_claims(claims)
    checked: list[str] = []
    for pointer, value in rcdi.items():
        alg, want = _digest_bytes(value)  # type: ignore[misc]  # checked by check_rcd_claims
        target = resolve_pointer(rcd, pointer)
        if _is_url(target):
            got = contents.get(target)
            if isinstance(got, StirShakenError):
                raise RichCallDataError(f"rcdi {pointer} not checked: {got.description}", sip_code=got.sip_code)
            if got is None:
                raise RichCallDataError(f"rcdi {pointer} not checked: the content of {target[:80]} was not fetched", sip_code=436)
            data = got
            what = f"the content at {target[:80]}"
        else:
            try:
                data = jcs(target, f"rcd{pointer}")
            except InvalidClaimError as exc:
                raise RichCallDataError(f"rcdi {pointer} not checked: {exc.description}") from None
            what = f"rcd{pointer} (RFC 8785 form)"
        if _HASHES[alg](data).digest() != want:
            raise RichCallDataError(f"rcdi {pointer} digest does not match {what} (RFC 9795)")
        checked.append(pointer)
    undigested = [f"/{n}" for n in ("jcl", "icn") if n in rcd and f"/{n}" not in rcdi]
    detail = f"rcdi {', '.join(checked)} match" if checked else "no rcdi digests"
    if undigested:
        detail += f"; {', '.join(undigested)} not integrity-protected (no rcdi member)"
    return detail


def rcd_claims(
    *,
    orig: str,
    dest: str | Sequence[str],
    nam: str | None = None,
    jcd: list[Any] | None = None,
    jcl: str | None = None,
    icn: str | None = None,
    crn: str | None = None,
    digests: Mapping[str, str] | None = None,
    iat: int | None = None,
) -> dict[str, Any]:
    """The claims of an ``rcd`` PASSporT (RFC 9795): ``orig``, ``dest`` (canonical TNs),
    ``iat`` (default now), ``rcd`` from ``nam``/``jcd``/``jcl``/``icn``, ``crn``, and ``rcdi``
    with a digest of every element that has one: ``/jcd`` computed here (RFC 8785), ``/jcl`` and
    ``/icn`` taken from ``digests`` (keyed by the URL's pointer, ``"/icn"``; the signer computes them
    with :func:`integrity` from the content it publishes there).

    Raises :class:`MissingClaimError` (no rich call data, no destination) and
    :class:`InvalidClaimError` naming the fault (a URL that is not http(s), ``jcd`` with ``jcl``,
    a URL without its digest, a digest that is not an integrity string)."""
    dests = [dest] if isinstance(dest, str) else sorted(dest)
    if not dests:
        raise MissingClaimError("'dest' must name at least one identity")
    rcd: dict[str, Any] = {}
    if nam is not None:
        rcd["nam"] = nam
    if jcd is not None:
        if type(jcd) is not list:
            raise InvalidClaimError("jcd must be a jCard, a JSON array (RFC 7095)")
        rcd["jcd"] = jcd
    if jcl is not None:
        rcd["jcl"] = jcl
    if icn is not None:
        rcd["icn"] = icn
    if not rcd:
        raise MissingClaimError("rich call data needs at least one of nam, jcd, jcl, icn (RFC 9795)")
    if jcd is not None and jcl is not None:
        raise InvalidClaimError("jcd and jcl are exclusive: give the jCard inline or by URL (RFC 9795)")
    rcdi: dict[str, str] = {}
    if jcd is not None:
        rcdi["/jcd"] = integrity(jcs(jcd, "jcd"))
    digests = dict(digests or {})
    for name, url in (("jcl", jcl), ("icn", icn)):
        pointer = f"/{name}"
        if url is None:
            if pointer in digests:
                raise InvalidClaimError(f"a digest for {pointer} without {name}")
            continue
        if not _is_url(url):
            raise InvalidClaimError(f"{name} {url[:80]!r} is not an http(s) URL (RFC 9795)")
        given = digests.pop(pointer, None)
        if given is None:
            raise InvalidClaimError(f"{name} needs the digest of the content it refers to (RFC 9795)")
        if _digest_bytes(given) is None:
            raise InvalidClaimError(f"digest for {pointer} {given[:60]!r} is not an integrity string (sha256-BASE64)")
        rcdi[pointer] = given
    if digests:
        raise InvalidClaimError(f"a digest for {sorted(digests)[0][:40]!r}, which is not an element given here")
    claims: dict[str, Any] = {
        "dest": {"tn": dests},
        "iat": int(time.time()) if iat is None else int(iat),
        "orig": {"tn": orig},
        "rcd": rcd,
        "rcdi": rcdi,
    }
    if crn is not None:
        claims["crn"] = crn
    if not rcdi:
        del claims["rcdi"]
    return claims
