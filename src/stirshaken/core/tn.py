"""Telephone-number canonicalization (RFC 8224 §8.3) and extraction from SIP URIs.

The canonical form drops a leading ``+``, visual separators and URI parameters, leaving only the
characters ``0-9``, ``#`` and ``*``.  When a dial plan is configured (``national_prefix`` and
``country_code``), a national number is turned into its E.164 digits (the §8.3 SHOULD); without
one the digits are used as given, which is what SHAKEN peers do.

The user part of a URI is taken by :func:`stirshaken.core.sip.uri_user` (re-exported here), the
one implementation every signing and verification path uses: it percent-decodes (RFC 3261
§19.1.2, ``sip:%2B1215...@h`` is ``+1215...``) and leaves visual separators to
:func:`canonicalize_tn`.
"""

from __future__ import annotations

import re

from stirshaken.core.sip.values import uri_user

__all__ = ["MAX_TN_LENGTH", "TNError", "canonicalize_tn", "national_number", "tn_from_uri", "uri_user"]

#: the longest canonical TN: an E.164 number has at most 15 digits (ITU-T E.164 §6.1, the
#: numbers RFC 8224 §8.3 canonicalizes to); service codes with ``*``/``#`` are shorter still
MAX_TN_LENGTH = 15

_VISUAL = re.compile(r"[\s\-.()\[\]/]")
_CANON = re.compile(r"[0-9#*]+")


class TNError(ValueError):
    """The value does not canonicalize to a telephone number."""


def canonicalize_tn(value: str, *, country_code: str | None = None, national_length: int | None = None) -> str:
    """Canonicalize a telephone number per RFC 8224 §8.3.

    ``"+1 (215) 555-1212"`` → ``"12155551212"``; ``*67`` and ``#31#`` keep their ``*``/``#``.
    With ``country_code="1", national_length=10`` a ten-digit NANP number gets its ``1`` prefixed.

    Raises :class:`TNError` when anything but digits, ``#``, ``*`` and visual separators remain,
    or when the result is longer than :data:`MAX_TN_LENGTH` (15) characters.
    """
    if type(value) is str and value.isdigit() and value.isascii():  # already canonical (the hot path)
        if len(value) > MAX_TN_LENGTH:
            raise TNError(f"{value[:20]!r}... has {len(value)} digits; a telephone number has at most {MAX_TN_LENGTH}")
        if not (country_code and national_length and len(value) == national_length):
            return value
    if not isinstance(value, str):
        raise TNError("telephone number must be a string")
    text = value.strip()
    if "<" in text or text.lower().startswith(("tel:", "sip:", "sips:")):  # URI or name-addr
        user = uri_user(text)
        if user is None:
            raise TNError(f"no user part in {value!r}")
        text = user
    text = text.split(";", 1)[0]
    had_plus = text.startswith("+")
    if had_plus:
        text = text[1:]
    text = _VISUAL.sub("", text)
    if not text or _CANON.fullmatch(text) is None:
        raise TNError(f"{value!r} is not a telephone number")
    if (
        not had_plus
        and country_code
        and national_length
        and len(text) == national_length
        and text.isdigit()
    ):
        text = country_code + text
    if len(text) > MAX_TN_LENGTH:
        raise TNError(f"{value[:20]!r}... has {len(text)} characters; a telephone number has at most {MAX_TN_LENGTH}")
    return text


def national_number(value: str, canonical: str, national_length: int | None) -> str | None:
    """The warning for a number signed as given although it looks national, else ``None``.

    ``value`` is the number as received, ``canonical`` what :func:`canonicalize_tn` made of it
    without a country code.  A value written without ``+`` whose canonical form has exactly
    ``national_length`` digits is most likely a national number (``2155551212`` in the NANP):
    RFC 8224 §8.3 asks for the E.164 form, which needs the country code; without one it is signed
    as given, and verifiers that compare E.164 numbers will not match it.
    """
    if not national_length or len(canonical) != national_length or not canonical.isdigit():
        return None
    text = value.strip()
    if "<" in text or text.lower().startswith(("tel:", "sip:", "sips:")):
        text = uri_user(text) or ""
    if text.startswith("+"):
        return None
    return f"{canonical} looks like a national number ({national_length} digits, no country code): signed as given, not in E.164 form (RFC 8224 §8.3)"


# The usual From/To/P-Asserted-Identity/R-URI value: a sip/sips/tel URI whose user is an optional
# "+" and at most MAX_TN_LENGTH ASCII digits, ended where uri_user ends it ("@" for sip/sips; ";"
# or ">" for a bracketed tel, ";" or the end for a bare one).  With "<" in the value only the first
# "<...>" is read (as uri_user does); without one the URI starts the value.
_TN_DIGITS = "\\+?([0-9]{1,%d}+)" % MAX_TN_LENGTH
_PLAIN_TN_BRACKETED = re.compile(f"[^<]*+<(?:[Ss][Ii][Pp][Ss]?+:{_TN_DIGITS}@|[Tt][Ee][Ll]:{_TN_DIGITS}[;>])")
_PLAIN_TN_BARE = re.compile(f"[Ss][Ii][Pp][Ss]?+:{_TN_DIGITS}@|[Tt][Ee][Ll]:{_TN_DIGITS}(?:;|\\Z)")


def tn_from_uri(uri: str, **dialplan: object) -> str | None:
    """The canonical TN (RFC 8224 §8.3) of a From/To/P-Asserted-Identity URI or name-addr value
    (``str``), or None when it holds no TN: :func:`canonicalize_tn` of :func:`uri_user`, with the
    ``dialplan`` keywords of :func:`canonicalize_tn`.  Never raises for a ``str``.

    The usual value (``<sip:+12155551212@host>``, ``tel:+12155551212``) is answered by one match;
    anything else, and any value when a dial plan is given, falls through to the general branch,
    whose answer the shortcut equals (property-tested, including numbers longer than
    :data:`MAX_TN_LENGTH`).
    """
    if not dialplan:
        m = (_PLAIN_TN_BRACKETED if "<" in uri else _PLAIN_TN_BARE).match(uri)
        if m is not None:
            return m.group(m.lastindex)  # type: ignore[arg-type]
    user = uri_user(uri)
    if user is None:
        return None
    try:
        return canonicalize_tn(user, **dialplan)  # type: ignore[arg-type]
    except TNError:
        return None
