"""Strict base64url without padding (RFC 7515 §2, RFC 4648 §5).

Written by hand because the standard library's decoder silently accepts padding, characters of
the other alphabet and non-zero trailing bits; a PASSporT verifier must reject all three so that
one token has exactly one encoding.
"""

from __future__ import annotations

import base64
import binascii
import re

from stirshaken.core.errors import PassportEncodingError

_ALPHABET = re.compile(rb"[A-Za-z0-9_-]*")


_TO_URL = bytes.maketrans(b"+/", b"-_")


def b64url_encode_bytes(data: bytes) -> bytes:
    """base64url without padding, as ASCII bytes (the hot path of signing)."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=")


def b64url_encode(data: bytes) -> str:
    """Encode ``data`` as base64url with the trailing ``=`` removed."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).rstrip(b"=").decode("ascii")


#: base64url -> base64 for binascii; '+', '/' and '=' become '!', which strict mode rejects
_URL_TO_STD = bytes.maketrans(b"-_+/=", b"+/!!!")
_PAD = (b"", b"", b"==", b"=")


_INDEX = {c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
#: by input length mod 4 (2 or 3): the final characters whose unused low bits (4 or 2) are zero;
#: any other final character makes a second spelling of the same bytes
_TAIL_OK = (
    frozenset(),
    frozenset(),
    frozenset(c for c, i in _INDEX.items() if not i & 0x0F),
    frozenset(c for c, i in _INDEX.items() if not i & 0x03),
)


def b64url_decode_valid(text: str | bytes) -> bytes | None:
    """The bytes of canonical unpadded base64url, or None for anything else (the hot path of
    :func:`b64url_decode`, which then names the defect): one translate, one strict C decode."""
    try:
        raw = text.encode("ascii") if type(text) is str else text
        rem = len(raw) & 3
        data = binascii.a2b_base64(raw.translate(_URL_TO_STD) + _PAD[rem], strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError, TypeError, AttributeError):
        return None
    if rem and raw[-1] not in _TAIL_OK[rem]:
        return None  # non-zero unused bits: not the canonical encoding
    return data


def b64url_decode(text: str | bytes, *, what: str = "segment", error: type[Exception] = PassportEncodingError) -> bytes:
    """Decode canonical unpadded base64url or raise ``error``.

    Rejects padding, ``+``/``/``, whitespace, a length of 1 mod 4 and non-zero unused bits
    (the last two make several strings decode to the same bytes).  The usual valid input takes
    one translate and one strict C decode; anything else goes through the checks that name the
    defect.
    """
    if isinstance(text, str):
        data = b64url_decode_valid(text)
        if data is not None:
            return data
        raw = text.encode("ascii", "replace")
    elif isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        data = b64url_decode_valid(raw)
        if data is not None:
            return data
    else:
        raise error(f"{what} must be text, not {type(text).__name__}")
    rem = len(raw) & 3
    if _ALPHABET.fullmatch(raw) is None:
        raise error(f"{what} is not base64url: characters outside [A-Za-z0-9_-]")
    if rem == 1:
        raise error(f"{what} has an impossible base64url length")
    if rem and raw[-1] not in _TAIL_OK[rem]:
        raise error(f"{what} is not canonical base64url (non-zero trailing bits)")
    try:  # pragma: no cover - every defect is named above
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover
        raise error(f"{what} is not base64url: {exc}") from None
