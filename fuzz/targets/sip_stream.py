"""The SIP stream framer (RFC 3261 §18.3, RFC 5626 §3.5.1): :class:`stirshaken.core.sip.StreamFramer`.

The first input byte picks how the rest is cut into reads (one read, fixed sizes, or sizes
taken from the input), as a TCP peer may deliver it.  Properties: only :class:`SipParseError`,
one line, and a failed framer keeps failing; the messages, the keep-alive pings and the failure
do not depend on how the bytes were cut into reads; no message framed exceeds the maximum size.
"""

from __future__ import annotations

from fuzz.harness import Finding, Target, one_line, same, split_reads
from fuzz.material import Material
from fuzz.targets.sip_message import invite
from stirshaken.core.sip import SipParseError, StreamFramer

MAX = 1500  # a small maximum message size, so that the size limits are reached too


def _run(reads: list[bytes]) -> tuple[list[bytes], int, str | None]:
    framer = StreamFramer(max_message_size=MAX)
    out: list[bytes] = []
    error: str | None = None
    for chunk in reads:
        try:
            out += framer.feed(chunk)
        except SipParseError as exc:
            one_line(exc)
            error = str(exc)
            break
        if framer.failed is not None:
            error = framer.failed
            break
    if error is not None:
        try:
            framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n")
        except SipParseError:
            pass
        else:
            raise Finding("a failed framer accepted more bytes")
    return out, framer.pop_pings(), error


def check(data: bytes) -> None:
    stream, reads = split_reads(data)
    whole = _run([stream])
    pieces = _run(reads)
    same("messages (one read vs many)", pieces[0], whole[0])
    same("failed (one read vs many)", pieces[2] is not None, whole[2] is not None)
    if whole[2] is None:
        same("keep-alive pings (one read vs many)", pieces[1], whole[1])
    for msg in whole[0]:
        if len(msg) > MAX:
            raise Finding(f"framed a message of {len(msg)} bytes, above the maximum {MAX}")


def seeds(m: Material) -> list[bytes]:
    one = invite(m)
    options = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 3\r\n\r\nabc"
    return [
        b"\x00" + one + one,
        b"\x01" + b"\r\n\r\n" + options + b"\r\n\r\n\r\n" + options,
        b"\x06" + options + one,
        b"\x03" + bytes([1, 7, 100, 3, 255, 2, 9, 40]) + one + b"\r\n\r\n" + options,
        b"\x00" + options.replace(b"l: 3", b"Content-Length: 3\r\nContent-Length: 3"),
        b"\x00" + b"\r\n\r\n\r\n\r\n",
    ]


TARGET = Target(
    name="sip_stream",
    check=check,
    seeds=seeds,
    tokens=(b"\r\n", b"\n", b"\r\n\r\n", b"\n\n", b"\r", b"Content-Length: ", b"content-length:", b"l:", b"\nl :", b"0", b"99999",
            b"\t", b" "),
    max_len=4096,
    examples=350,
)
