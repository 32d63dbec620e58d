"""The lean HTTP/1.1 engine (RFC 9112): :class:`stirshaken.serve.http.FastHTTPProtocol` parsing
request heads and framing bodies, over the REST API of the ``rest`` target.

The protocol gets the input as a TCP peer's reads (:func:`fuzz.harness.split_reads`) through an
in-memory transport; the responses of each read are flushed as the event loop would at the end of
its iteration.  Properties: ``data_received`` never raises; what is written is a sequence of
complete HTTP/1.1 responses (status line, headers, ``Content-Length`` body), never a 500; the
statuses and the closing of the connection do not depend on how the bytes were cut into reads.
"""

from __future__ import annotations

import re
from typing import Any

from fuzz.harness import Finding, Target, same, split_reads
from fuzz.material import Material
from fuzz.targets.rest import api
from fuzz.targets.rest import seeds as rest_seeds
from stirshaken.serve.http import FastHTTPProtocol

_STATUS = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*\r\n")
_ALLOWED = {200, 400, 403, 404, 405, 406, 408, 411, 415, 431, 503}


class _Transport:
    """The part of an ``asyncio.Transport`` the protocol uses, writing into memory."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        if self.closed:
            raise Finding("write after close")
        self.out += data

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Batch:
    """Stands for the loop's :class:`~stirshaken.serve.batching.LoopBatch`: flushed after each read."""

    def __init__(self) -> None:
        self.ready: list[FastHTTPProtocol] = []

    def add(self, proto: FastHTTPProtocol) -> None:
        self.ready.append(proto)

    def flush(self) -> None:
        for proto in self.ready:
            proto.flush()
        self.ready.clear()


class _Protocol(FastHTTPProtocol):
    """Notes which responses answer a HEAD request (written without their body, RFC 9110 §9.3.2)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.heads: list[bool] = []

    def _write(self, r: Any, keep: bool, head: bool = False) -> None:
        if self.transport is not None:
            self.heads.append(head)
        super()._write(r, keep, head)


def _serve(reads: list[bytes]) -> tuple[list[int], bool]:
    batch = _Batch()
    proto = _Protocol(api(), {"batch": batch})
    transport = _Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for chunk in reads:
        if transport.closed:
            break
        proto.data_received(chunk)
        batch.flush()
    closed = transport.closed
    proto.connection_lost(None)
    return _responses(bytes(transport.out), proto.heads), closed


def _responses(out: bytes, heads: list[bool]) -> list[int]:
    statuses, pos = [], 0
    while pos < len(out):
        m = _STATUS.match(out, pos)
        if m is None:
            raise Finding(f"not a status line at {pos}: {out[pos:pos + 80]!r}")
        end = out.find(b"\r\n\r\n", pos)
        if end < 0:
            raise Finding(f"response head without its end: {out[pos:pos + 200]!r}")
        head = out[m.end() : end]
        lengths = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
        if len(lengths) != 1 or not lengths[0].isdigit():
            raise Finding(f"response without one Content-Length: {out[pos:end]!r}")
        status = int(m.group(1))
        if status not in _ALLOWED:
            raise Finding(f"status {status}: {out[pos:end + 300]!r}")
        pos = end + 4 + (0 if heads[len(statuses)] else int(lengths[0]))
        statuses.append(status)
        if pos > len(out):
            raise Finding("response body shorter than its Content-Length")
    return statuses


def check(data: bytes) -> None:
    stream, reads = split_reads(data)
    whole = _serve([stream])
    pieces = _serve(reads)
    same("statuses and close (one read vs many)", pieces, whole)


def seeds(m: Material) -> list[bytes]:
    bodies = [s[1:] for s in rest_seeds(m)]
    post = [b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
            for b in bodies]
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    return [
        b"\x00" + post[0],
        b"\x01" + post[0] + get + b"HEAD /openapi.json HTTP/1.1\r\n\r\n",
        b"\x06" + get + b"GET /metrics?x=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + post[1],
        b"\x03" + bytes([1, 9, 200, 3, 17, 2, 5, 64]) + post[3].replace(b"/signing", b"/verification") + get,
        b"\x00" + b"POST /stir/v1/signing HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"\x00" + b"PUT /stir/v1/verification HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"\x00" + b"GET /nowhere HTTP/1.1\r\nConnection: close\r\n\r\n" + get,
    ]


TARGET = Target(
    name="http_head",
    check=check,
    seeds=seeds,
    tokens=(b"\r\n", b"\r\n\r\n", b"\n", b"\r", b": ", b" ", b"HTTP/1.1", b"HTTP/1.0", b"GET ", b"POST ", b"HEAD ",
            b"Content-Length: ", b"Transfer-Encoding: chunked", b"Connection: close", b"Connection: keep-alive",
            b"/stir/v1/signing", b"/stir/v1/verification", b"/healthz", b"/metrics", b"/openapi.json", b"/admin/", b"?",
            b"\x00", b"\xff", b"9999999999"),
    max_len=6144,
    examples=250,
)
