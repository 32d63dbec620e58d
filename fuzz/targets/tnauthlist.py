"""TNAuthList (RFC 8226 §9) and the ACME identifier value (RFC 9448 §3):
:meth:`TNAuthList.from_der` and :meth:`TNAuthList.from_identifier`.

Properties: only :class:`TNAuthListError`, one line; decoding is strict DER, so re-encoding gives
the input bytes back (except when a range entry carries extension elements, which are skipped);
the value round-trips through DER, base64url and base64; ``covers`` and ``str`` never raise.
"""

from __future__ import annotations

import base64

from fuzz.harness import Finding, Target, same, text_of, typed
from fuzz.material import Material
from stirshaken.core.errors import TNAuthListError
from stirshaken.core.tnauthlist import TNAuthList


def check(data: bytes) -> None:
    tnal = typed(TNAuthListError, TNAuthList.from_der, data)
    if tnal is not None:
        der = tnal.to_der()
        if b"\xa1" not in data:  # no range entry, so nothing skipped: strict DER is the one encoding
            same("DER round trip", der, data)
        same("value round trip", TNAuthList.from_der(der), tnal)
        same("base64url round trip", TNAuthList.from_identifier(tnal.to_base64url()), tnal)
        same("base64 round trip", TNAuthList.from_identifier(tnal.to_base64()), tnal)
        str(tnal)
        for tn in ("12155551250", "1", "*#1", "١٢٣"):
            tnal.covers(tn)
        if tnal.spc is not None and tnal.spc not in tnal.spcs:
            raise Finding("spc is not among spcs")
    text = text_of(data)
    typed(TNAuthListError, TNAuthList.from_identifier, text)
    typed(TNAuthListError, TNAuthList.from_identifier, base64.urlsafe_b64encode(data).decode().rstrip("="))


def seeds(m: Material) -> list[bytes]:
    from stirshaken.core.tnauthlist import TN, SPC, TNRange

    lists = [
        TNAuthList.for_spc("1234"),
        TNAuthList((SPC("709J"), TNRange("12155551200", 100), TN("12155550000"), TN("*#1"))),
        TNAuthList((TNRange("1", 2**40),)),
    ]
    out = [t.to_der() for t in lists]
    out.append(bytes.fromhex("302ba0071605626f677573a1123010160a3537313535353132313202020314a20c160a37303335353531323132"))
    # a range with an extension element (skipped when decoding)
    out.append(b"\x30\x10\xa1\x0e\x30\x0c" + b"\x16\x03123" + b"\x02\x02\x01\x00" + b"\x02\x01\x01")
    out.append(b"MCugBxYFYm9ndXOhEjAQFgo1NzE1NTUxMjEyAgIDFKIMFgo3MDM1NTUxMjEy")
    out.append(b"MAigBhYEODE4SA==")
    return out


TARGET = Target(
    name="tnauthlist",
    check=check,
    seeds=seeds,
    tokens=(b"\x30", b"\xa0", b"\xa1", b"\xa2", b"\x16", b"\x02", b"\x81", b"\x82\x01\x00", b"\x80", b"\x00", b"\xff", b"#", b"*"),
    max_len=1024,
    examples=400,
)
