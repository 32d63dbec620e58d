"""TNAuthList, the certificate extension of RFC 8226 §9 (OID 1.3.6.1.5.5.7.1.26).

ASN.1 (module with EXPLICIT TAGS)::

    TNAuthorizationList ::= SEQUENCE SIZE (1..MAX) OF TNEntry
    TNEntry ::= CHOICE {
        spc   [0] ServiceProviderCode,        -- IA5String
        range [1] TelephoneNumberRange,       -- SEQUENCE { start TelephoneNumber, count INTEGER (2..MAX), ... }
        one   [2] TelephoneNumber }           -- IA5String (SIZE (1..15)) (FROM ("0123456789#*"))

The DER codec is written by hand: ``cryptography`` exposes unknown extensions only as raw bytes,
and the structure is three short TLV shapes, so a 100-line strict codec beats pulling an ASN.1
compiler onto the hot path (a cache miss reads one TNAuthList per certificate).  Decoding is
strict DER: definite minimal lengths, no trailing bytes, IA5 character sets as defined above.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Union

from cryptography import x509

from stirshaken.core.b64 import b64url_encode
from stirshaken.core.errors import TNAuthListError

#: id-pe-TNAuthList (RFC 8226 §9).
TNAUTHLIST_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26")

#: what cryptography raises when it decodes the extensions of a certificate or CSR (lazily, on
#: first use) and they are malformed or one is repeated (RFC 5280 §4.2); DuplicateExtension is no ValueError
MALFORMED_EXTENSIONS: tuple[type[Exception], ...] = (ValueError, x509.DuplicateExtension)

_TN_RE = re.compile(r"[0-9#*]{1,15}")
_IA5_RE = re.compile(r"[\x00-\x7f]*")


@dataclass(frozen=True)
class SPC:
    """A Service Provider Code entry ([0]); in the US the SP's OCN (ATIS-1000080 §6.4.1)."""

    code: str

    def __post_init__(self) -> None:
        if not self.code or _IA5_RE.fullmatch(self.code) is None:
            raise TNAuthListError("SPC must be a non-empty IA5String")


@dataclass(frozen=True)
class TNRange:
    """A telephone-number range entry ([1]): ``count`` numbers from ``start`` (RFC 8226 §9)."""

    start: str
    count: int

    def __post_init__(self) -> None:
        if _TN_RE.fullmatch(self.start) is None:
            raise TNAuthListError(f"range start {self.start!r} is not a TelephoneNumber")
        if self.count < 2:
            raise TNAuthListError("range count must be at least 2")

    def covers(self, tn: str) -> bool:
        """``start <= tn < start + count`` for numbers of the same length (RFC 8226 §9)."""
        if len(tn) != len(self.start) or not tn.isdigit() or not self.start.isdigit():
            return False
        return int(self.start) <= int(tn) < int(self.start) + self.count


@dataclass(frozen=True)
class TN:
    """A single telephone number entry ([2])."""

    number: str

    def __post_init__(self) -> None:
        if _TN_RE.fullmatch(self.number) is None:
            raise TNAuthListError(f"{self.number!r} is not a TelephoneNumber (1-15 of 0-9#*)")


TNEntry = Union[SPC, TNRange, TN]


@dataclass(frozen=True)
class TNAuthList:
    """An ordered, non-empty list of TNEntry values."""

    entries: tuple[TNEntry, ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise TNAuthListError("TNAuthList must hold at least one entry")

    # --- convenience ------------------------------------------------------------------------
    @classmethod
    def for_spc(cls, code: str) -> "TNAuthList":
        """The SPC-only TNAuthList of a SHAKEN SP certificate."""
        return cls((SPC(code),))

    @property
    def spcs(self) -> tuple[str, ...]:
        return tuple(e.code for e in self.entries if isinstance(e, SPC))

    @property
    def spc(self) -> str | None:
        """The first SPC, or None."""
        codes = self.spcs
        return codes[0] if codes else None

    def covers(self, tn: str) -> bool:
        """True when ``tn`` is named by a TN or TN-range entry (authority check, RFC 8226 §10)."""
        for e in self.entries:
            if isinstance(e, TN) and e.number == tn:
                return True
            if isinstance(e, TNRange) and e.covers(tn):
                return True
        return False

    # --- DER --------------------------------------------------------------------------------
    def to_der(self) -> bytes:
        body = b"".join(_encode_entry(e) for e in self.entries)
        return _tlv(0x30, body)

    @classmethod
    def from_der(cls, data: bytes) -> "TNAuthList":
        """Decode strict DER or raise :class:`TNAuthListError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TNAuthListError("TNAuthList must be bytes")
        data = bytes(data)
        tag, body, rest = _read_tlv(data, 0)
        if tag != 0x30:
            raise TNAuthListError("TNAuthList is not a SEQUENCE")
        if rest != len(data):
            raise TNAuthListError("trailing bytes after TNAuthList")
        entries: list[TNEntry] = []
        pos = 0
        while pos < len(body):
            etag, ebody, pos = _read_tlv(body, pos)
            entries.append(_decode_entry(etag, ebody))
        return cls(tuple(entries))

    # --- ACME identifier value (RFC 9448 §3: base64url; STI-CAs also take base64) -----------
    def to_base64url(self) -> str:
        return b64url_encode(self.to_der())

    def to_base64(self) -> str:
        return base64.b64encode(self.to_der()).decode("ascii")

    @classmethod
    def from_identifier(cls, value: str) -> "TNAuthList":
        """Decode an ACME TNAuthList identifier value given in base64url or base64 (AC-02)."""
        if not isinstance(value, str) or not value or len(value) > 16384:
            raise TNAuthListError("TNAuthList identifier must be a non-empty string")
        text = value.strip().rstrip("=")
        if re.fullmatch(r"[A-Za-z0-9_-]+", text):
            raw = text.encode()
            decoder = base64.urlsafe_b64decode
        elif re.fullmatch(r"[A-Za-z0-9+/]+", text):
            raw = text.encode()
            decoder = base64.b64decode
        else:
            raise TNAuthListError("TNAuthList identifier is neither base64url nor base64")
        try:
            der = decoder(raw + b"=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            raise TNAuthListError("TNAuthList identifier is not valid base64") from None
        return cls.from_der(der)

    def __str__(self) -> str:
        parts = []
        for e in self.entries:
            if isinstance(e, SPC):
                parts.append(f"SPC {e.code}")
            elif isinstance(e, TNRange):
                parts.append(f"range {e.start}+{e.count}")
            else:
                parts.append(f"TN {e.number}")
        return ", ".join(parts)


# --- TLV helpers -------------------------------------------------------------------------------


def _len_bytes(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    out = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(out)]) + out


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _len_bytes(len(body)) + body


def _ia5(text: str) -> bytes:
    return _tlv(0x16, text.encode("ascii"))


def _der_integer(n: int) -> bytes:
    raw = n.to_bytes(n.bit_length() // 8 + 1, "big", signed=True)
    return _tlv(0x02, raw)


def _encode_entry(e: TNEntry) -> bytes:
    if isinstance(e, SPC):
        return _tlv(0xA0, _ia5(e.code))
    if isinstance(e, TNRange):
        return _tlv(0xA1, _tlv(0x30, _ia5(e.start) + _der_integer(e.count)))
    if isinstance(e, TN):
        return _tlv(0xA2, _ia5(e.number))
    raise TNAuthListError(f"unknown TNEntry {e!r}")


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """Read one DER TLV at ``pos``: returns (tag, body, position after it)."""
    if pos + 2 > len(data):
        raise TNAuthListError("TNAuthList DER truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise TNAuthListError("high-tag-number form is not used in TNAuthList")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0:
            raise TNAuthListError("indefinite length is not DER")
        if n > 4 or pos + n > len(data):
            raise TNAuthListError("TNAuthList DER length truncated or too large")
        length = int.from_bytes(data[pos : pos + n], "big")
        if data[pos] == 0 or length < 0x80:
            raise TNAuthListError("non-minimal DER length")
        pos += n
    end = pos + length
    if end > len(data):
        raise TNAuthListError("TNAuthList DER truncated")
    return tag, data[pos:end], end


def _read_only(data: bytes, expected_tag: int, what: str) -> bytes:
    tag, body, end = _read_tlv(data, 0)
    if tag != expected_tag:
        raise TNAuthListError(f"{what}: unexpected tag 0x{tag:02x}")
    if end != len(data):
        raise TNAuthListError(f"{what}: trailing bytes")
    return body


def _read_ia5(body: bytes, what: str) -> str:
    if any(b > 0x7F for b in body):
        raise TNAuthListError(f"{what} is not IA5")
    return body.decode("ascii")


def _decode_entry(tag: int, body: bytes) -> TNEntry:
    if tag == 0xA0:
        return SPC(_read_ia5(_read_only(body, 0x16, "spc"), "spc"))
    if tag == 0xA2:
        return TN(_read_ia5(_read_only(body, 0x16, "one"), "one"))
    if tag == 0xA1:
        seq = _read_only(body, 0x30, "range")
        stag, sbody, pos = _read_tlv(seq, 0)
        if stag != 0x16:
            raise TNAuthListError("range start is not an IA5String")
        start = _read_ia5(sbody, "range start")
        itag, ibody, pos2 = _read_tlv(seq, pos)
        if itag != 0x02 or not ibody:
            raise TNAuthListError("range count is not an INTEGER")
        if len(ibody) > 1 and (
            (ibody[0] == 0 and ibody[1] < 0x80) or (ibody[0] == 0xFF and ibody[1] >= 0x80)
        ):
            raise TNAuthListError("non-minimal INTEGER")
        count = int.from_bytes(ibody, "big", signed=True)
        # The range SEQUENCE is extensible ("..."): later elements are skipped, but must be TLVs.
        while pos2 < len(seq):
            _, _, pos2 = _read_tlv(seq, pos2)
        return TNRange(start, count)
    raise TNAuthListError(f"unknown TNEntry tag 0x{tag:02x}")


def from_certificate(cert: x509.Certificate) -> tuple[TNAuthList, bool] | None:
    """The certificate's TNAuthList and its criticality, or None when absent.

    Raises :class:`TNAuthListError` when the extension is present but malformed.
    """
    try:
        ext = cert.extensions.get_extension_for_oid(TNAUTHLIST_OID)
    except x509.ExtensionNotFound:
        return None
    except MALFORMED_EXTENSIONS as exc:
        raise TNAuthListError(f"certificate extensions are malformed: {exc}") from None
    value = ext.value
    raw = value.value if isinstance(value, x509.UnrecognizedExtension) else value.public_bytes()
    return TNAuthList.from_der(raw), ext.critical


def to_extension(tnal: TNAuthList) -> x509.UnrecognizedExtension:
    """The extension value to add with ``CertificateBuilder.add_extension(..., critical=False)``."""
    return x509.UnrecognizedExtension(TNAUTHLIST_OID, tnal.to_der())
