"""The HTTP/1.1 fronts of the ATIS-1000082 REST API (:class:`~stirshaken.serve.rest.RestAPI`).

Two engines answer every request through :meth:`RestAPI.handle`: the lean built-in
:class:`FastHTTPProtocol` (the default; why it is hand-written is in its docstring) and
``aiohttp.web`` (:func:`make_app`, :func:`serve_aiohttp`).  Both obey the same
:class:`~stirshaken.serve.limits.ConnectionLimits` (RFC 9112 framing, slow and idle connections,
per-source caps, bounded buffers).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from stirshaken.serve.batching import LoopBatch
from stirshaken.serve.limits import ConnectionGuard, ConnectionLimits, peer_ip
from stirshaken.serve.rest import _JSON_CT, RestAPI, error_body

__all__ = ["FastHTTPProtocol", "make_app", "serve_aiohttp"]

log = logging.getLogger("stirshaken.serve.http")


# --- aiohttp front --------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """The first line of an aiohttp error's text (its message's, for an HTTP error), ASCII (a
    peer's bytes it quotes written ``\\xNN``), without a trailing colon."""
    text = str(getattr(exc, "message", None) or exc or type(exc).__name__).strip()
    head = ", message:"
    if text[:3].isdigit() and text.startswith(head, 3):  # an HTTP error's str(): "400, message:\n  <message>"
        text = text[3 + len(head):].strip()
    first = " ".join(text.split("\n", 1)[0].split()).rstrip(":")
    return first.encode("ascii", "backslashreplace").decode() or type(exc).__name__


def _octets(fields: Any) -> Any:
    """aiohttp's request fields (values decoded as UTF-8, other bytes kept as lone surrogates)
    as the default engine hands them to :class:`RestAPI`: each value as its octets, one character
    per byte.  A value with bytes that are not UTF-8 thus reaches :class:`RestAPI` (an error
    body, a record) as text that JSON can write, as with the default engine."""
    from multidict import CIMultiDict

    return CIMultiDict((k, v.encode("utf-8", "surrogateescape").decode("latin-1")) for k, v in fields.items())


def _answer_fields(fields: Any) -> dict[str, str]:
    """:class:`RestAPI`'s response fields (values as octets: the ``X-RequestID`` echo) as aiohttp
    writes them: UTF-8 text, a byte that is not UTF-8 as U+FFFD (aiohttp writes a str as UTF-8 and
    cannot send such a byte back; it would leave it out)."""
    out: dict[str, str] = {}
    for k, v in fields:
        if not v.isascii():
            try:
                v = v.encode("latin-1").decode("utf-8", "replace")
            except UnicodeEncodeError:
                pass
        out[k] = v
    return out


def make_app(api: RestAPI, limits: ConnectionLimits | None = None) -> Any:
    """An ``aiohttp.web.Application`` answering every path through :meth:`RestAPI.handle`.

    One catch-all route (no middleware) keeps aiohttp's router out of the way so that unknown
    resources and methods get their ATIS-1000082 bodies (SVC4003 / POL4050).  A body slower than
    ``limits.body_timeout`` is answered 408 (the other limits are applied by :func:`serve_aiohttp`).
    """
    from aiohttp import web
    from aiohttp.web_protocol import RequestPayloadError

    body_timeout = (limits or ConnectionLimits()).body_timeout or None

    async def handler(request: web.Request) -> web.StreamResponse:
        fields: Any = request.headers
        if not all(v.isascii() for v in fields.values()):
            fields = _octets(fields)
        has_length = "Content-Length" in fields
        if has_length and (request.content_length or 0) > api.max_body:  # (not read: aiohttp's own answer is a bare 413)
            status, payload, headers = api.body_too_large(fields, request.path)
            return web.Response(status=status, body=payload, headers={**_answer_fields(headers), "Connection": "close"})
        if request.body_exists:
            try:
                async with asyncio.timeout(body_timeout):
                    body = await request.read()
            except TimeoutError:
                return web.Response(status=408, headers={"Connection": "close"})
            except web.HTTPRequestEntityTooLarge:  # a chunked body past client_max_size: no length, SVC4007 as any chunked one
                body = b""
            except RequestPayloadError as exc:  # (a Content-Encoding it cannot decode: the default engine reads such a body as it came, not JSON)
                status, payload, headers = api.bad_body(fields, request.path, f"the body could not be read: {_first_line(exc)}")
                return web.Response(status=status, body=payload, headers={**_answer_fields(headers), "Connection": "close"})
        else:
            body = b""
        r = api.handle(request.method, request.path, fields, body, has_length, request.remote or "")
        if not isinstance(r, tuple):
            r = await r
        status, payload, headers = r
        return web.Response(status=status, body=payload, headers=_answer_fields(headers))

    app = web.Application(client_max_size=api.max_body + 1, handler_args={"max_field_size": 16384})
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's request handler behind the per-source connection cap (checked at accept time).

    It forwards every asyncio protocol callback to the aiohttp handler; the timeouts are
    aiohttp's own (see :func:`serve_aiohttp`).
    """

    __slots__ = ("inner", "guard", "transport", "source")

    def __init__(self, inner: Any, guard: ConnectionGuard):
        self.inner = inner
        self.guard = guard
        self.transport: Any = None
        self.source: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        source = peer_ip(transport)
        if not self.guard.admit(source):
            transport.abort()  # type: ignore[attr-defined]
            return
        self.transport, self.source = transport, source
        self.guard.conns.add(self)
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.guard.conns.discard(self)
        self.guard.release(self.source)
        self.transport = None
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def expired(self, now: float) -> str | None:
        return None  # aiohttp's keepalive timer closes slow heads and idle connections


async def serve_aiohttp(api: RestAPI, sock: socket.socket, limits: ConnectionLimits, *, shutdown_timeout: float, backlog: int,
                        metrics: Any = None) -> tuple[Any, Any, ConnectionGuard]:
    """Serve ``api`` with aiohttp on a listening socket: (runner, server, guard).

    What aiohttp (3.x) offers is used: its ``keepalive_timeout`` timer runs from the connection's
    start and from each answer until the next request head is complete, so it is both the idle
    and the head timeout; it is set to the smaller of ``limits.keepalive_timeout`` and
    ``limits.header_timeout`` (a separate head timeout would need a patched aiohttp).  The body
    gets ``body_timeout`` (:func:`make_app`), the per-source cap is applied at accept time
    (:class:`_GuardedProtocol`).  aiohttp already pauses reading while its queue of parsed
    requests is full.  ``send_timeout`` and ``max_connection_buffer`` are not applied to it.
    """
    from aiohttp import web

    runner = web.AppRunner(make_app(api, limits), access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout,
                           keepalive_timeout=min([t for t in (limits.keepalive_timeout, limits.header_timeout) if t] or [3630.0]))
    await runner.setup()
    guard = ConnectionGuard(limits, "http", metrics)
    loop = asyncio.get_running_loop()
    factory = runner.server
    assert factory is not None
    server = await loop.create_server(lambda: _GuardedProtocol(factory(), guard), sock=sock, backlog=backlog)
    guard.start(loop)
    return runner, server, guard


# --- lean HTTP/1.1 front ----------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
            408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
_MAX_HEAD = 16384


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode("latin-1")


#: status -> b"HTTP/1.1 <status> <reason>\r\nContent-Type: application/json\r\nX-RequestID: "
_JSON_HEADS: dict[int, bytes] = {s: _status_line(s) + b"Content-Type: application/json\r\nX-RequestID: " for s in _REASONS}
_END_KEEP = b"\r\n\r\n"
_END_CLOSE = b"\r\nConnection: close\r\n\r\n"


def _flush_all(protocols: list["FastHTTPProtocol"]) -> None:
    for proto in protocols:
        proto.flush()


class FastHTTPProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 server protocol (RFC 9112) for :class:`RestAPI`, the default engine.

    Keep-alive, pipelining (responses kept in request order), ``Content-Length`` bodies only:
    a ``Transfer-Encoding`` body is answered 411 SVC4007 (ATIS-1000082 makes Content-Length
    mandatory) and the connection closed, as is any malformed request head (400).

    Why hand-written: the API needs a tiny subset of HTTP/1.1, and per request the ECDSA
    signature (≈ 30 µs) is the only real work.  aiohttp adds ≈ 40 µs of request/response
    objects, middleware and router per request; ``httptools`` (C parser, callbacks per header)
    measured no faster than the few ``str`` operations of :meth:`_process` (≈ 1.8 µs for a
    typical head), and neither does a regular expression (≈ 5 µs), so no extra dependency.

    What costs most beyond the signature is the kernel: on loopback, each ``write`` delivers the
    segment and wakes the client's thread inside the system call.  So responses are not written
    when computed: each connection collects its output, and a :class:`~stirshaken.serve.batching.LoopBatch` writes all
    of it once the event loop has handled every readable connection (``loop.call_soon``), one
    ``write`` per connection.  The clients of a batch are woken together instead of one at a
    time between two signatures (under ``wrk -c16`` on one pinned worker: ≈ +30 % requests/s,
    system time per request 19 → 7 µs).  A response waits at most for the rest of the batch
    (bounded by :data:`~stirshaken.serve.batching.MAX_BATCH` responses).

    Limits (:class:`~stirshaken.serve.limits.ConnectionLimits`, issue 17): reading pauses while
    a verification is pending or the transport holds more than ``max_connection_buffer`` unsent
    bytes (``pause_writing``), so a client that pipelines without reading holds at most about
    that much; a head slower than ``header_timeout`` is answered 408 and closed, likewise a body
    slower than ``body_timeout``; an idle connection is closed after ``keepalive_timeout``, one
    whose answers are not read after ``send_timeout``; connections beyond
    ``max_connections_per_source`` from one address are closed at accept.  The timeouts are
    checked by one sweeper per worker (:class:`~stirshaken.serve.limits.ConnectionGuard`): a
    request only stamps its phase with the sweeper's coarse clock.
    """

    __slots__ = ("api", "transport", "buf", "closing", "pending", "server_state", "out", "out_bytes", "batch", "guard", "source",
                 "phase", "mark", "read_paused", "write_paused", "cap")

    def __init__(self, api: RestAPI, server_state: dict[str, Any] | None = None, limits: ConnectionLimits | None = None):
        self.api = api
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.closing = False
        self.pending: asyncio.Future[Any] | None = None
        self.server_state = server_state if server_state is not None else {}
        self.out: list[bytes] = []  # responses not written yet, in request order
        self.out_bytes = 0
        self.batch: LoopBatch[FastHTTPProtocol] | None = None
        guard = self.server_state.get("guard")
        if guard is None:
            guard = self.server_state["guard"] = ConnectionGuard(limits or ConnectionLimits(), "http")
        self.guard: ConnectionGuard = guard
        self.cap = guard.limits.max_connection_buffer
        self.source: str | None = None
        self.phase = _IDLE  # what the connection waits for, since ``mark`` (guard's coarse clock)
        self.mark = 0.0
        self.read_paused = False
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        guard = self.guard
        source = peer_ip(transport)
        if not guard.admit(source):
            self.transport = None
            transport.abort()  # type: ignore[attr-defined]
            return
        self.source = source
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:  # uvloop sets it already; asyncio's own loop does not on accepted sockets
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass
        transport.set_write_buffer_limits(high=self.cap)  # type: ignore[attr-defined]
        state = self.server_state
        state.setdefault("conns", set()).add(self)
        guard.conns.add(self)
        batch = state.get("batch")
        if batch is None:
            loop = asyncio.get_running_loop()
            batch = state["batch"] = LoopBatch(loop, _flush_all)
            guard.start(loop)
        self.batch = batch
        self.mark = guard.now

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused at accept time
        self.server_state.get("conns", set()).discard(self)
        self.guard.conns.discard(self)
        self.guard.release(self.source)
        self.transport = None
        self.out.clear()
        self.buf = b""

    # --- flow control: a peer that does not read its answers is not read from --------------------

    def pause_writing(self) -> None:
        self.write_paused = True
        self.phase = _SEND
        self.mark = self.guard.now
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.phase == _SEND:
            self.phase = _HEAD if self.buf else _IDLE
            self.mark = self.guard.now
        if self.pending is None and self.buf:
            self._process()
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing and self.pending is None and not self.write_paused:
            self.read_paused = False
            self.transport.resume_reading()

    def expired(self, now: float) -> str | None:
        """Close the connection when its current wait ran out (called by the guard's sweeper)."""
        phase = self.phase
        if self.transport is None or self.pending is not None or phase == _BUSY:
            return None
        lim = self.guard.limits
        limit = (lim.keepalive_timeout if phase == _IDLE else lim.header_timeout if phase == _HEAD
                 else lim.body_timeout if phase == _BODY else lim.send_timeout)
        if not limit or now - self.mark <= limit:
            return None
        if phase == _IDLE:
            self._close()
            return "keepalive_timeout"
        if phase == _SEND:
            self.transport.abort()
            return "send_timeout"
        self._send_close(408, b"")
        return "header_timeout" if phase == _HEAD else "body_timeout"

    # --- input ------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.buf:
            self.buf += data
        else:
            self.buf = data
            if self.phase == _IDLE:
                self.phase = _HEAD
                self.mark = self.guard.now
        if self.pending is None and not self.write_paused:
            self._process()
        else:  # bytes while an answer is pending or unsent: hold at most one read of them
            self._pause_reading()

    def _process(self) -> None:
        cap = self.cap
        while self.buf and not self.closing and self.transport is not None:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0 or end > _MAX_HEAD:  # the same limit however the head arrived: in one read or in many
                if end > _MAX_HEAD or len(buf) >= _MAX_HEAD + 4:
                    self._send_close(431, b"")
                return
            try:
                head = buf[:end].decode("latin-1")
                lines = head.split("\r\n")
                method, target, version = lines[0].split(" ")
                breaks = len(lines) - 1
                if not version.startswith("HTTP/1.") or head.count("\n") != breaks or head.count("\r") != breaks or "\x00" in head:
                    raise ValueError  # also a bare CR or LF (RFC 9112 §2.2), NUL (RFC 9110 §5.5): never echoed back
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if not sep or not name or name[-1] in " \t":
                        raise ValueError
                    k = name.lower()
                    v = value.strip(" \t")  # OWS only (RFC 9110 §5.5): str.strip() would also take 0x85, 0xA0, 0x1C-0x1F, bytes of UTF-8 characters
                    if k in headers:
                        if k == "content-length":
                            raise ValueError
                        headers[k] += ", " + v
                    else:
                        headers[k] = v
            except ValueError:
                self._send_close(400, b"")
                return
            clen = headers.get("content-length")
            if "transfer-encoding" in headers:
                self.buf = b""
                self._respond(self.api.handle(method, target.split("?", 1)[0], headers, b"", False), close=True, keep=False)
                return
            n = 0
            if clen is not None:
                if not (clen.isascii() and clen.isdigit()) or len(clen) > 9:  # RFC 9110 §8.6: 1*DIGIT, ASCII only
                    self._send_close(400, b"")
                    return
                n = int(clen)
                if n > self.api.max_body:
                    self.buf = b""
                    self._respond(self.api.body_too_large(headers, target), close=True, keep=False)
                    return
            total = end + 4 + n
            if len(buf) < total:
                if self.phase != _BODY:
                    self.phase = _BODY
                    self.mark = self.guard.now
                return
            body = buf[end + 4:total]
            self.buf = rest = buf[total:]
            self.phase = _HEAD if rest else _IDLE
            self.mark = self.guard.now
            conn = headers.get("connection")
            if conn is None:
                keep = version == "HTTP/1.1"
            else:
                conn = conn.lower()
                keep = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
            path = target.split("?", 1)[0] if "?" in target else target
            r = self.api.handle(method, path, headers, body, clen is not None, self.source or "")
            if type(r) is tuple:
                self._write(r, keep, method == "HEAD")
                if not keep:
                    self._close()
                    return
                if self.out_bytes > cap:  # answers piling up: hand them to the transport, which may pause us
                    self.flush()
                    if self.write_paused:
                        return
            else:
                self._respond(r, close=not keep, keep=keep, head=method == "HEAD")
                return

    def _respond(self, r: Any, *, close: bool, keep: bool, head: bool = False) -> None:
        if type(r) is tuple:
            self._write(r, keep and not close, head)
            if close:
                self._close()
            return
        fut = asyncio.ensure_future(r)
        self.pending = fut
        self.phase = _BUSY

        def done(f: asyncio.Future[Any]) -> None:
            self.pending = None
            if self.transport is None:
                return
            try:
                res = f.result()
            except Exception:  # noqa: BLE001
                res = (500, error_body("POL5000")[1], (_JSON_CT,))
            self._write(res, keep and not close, head)
            self.phase = _HEAD if self.buf else _IDLE
            self.mark = self.guard.now
            if close or self.closing:  # closing: shutdown() waited for this verification
                self._close()
                return
            if self.buf and not self.write_paused:
                self._process()
            self._resume_reading()

        fut.add_done_callback(done)

    def _write(self, r: Reply, keep: bool, head: bool = False) -> None:
        """Queue one response; :meth:`flush` writes it (end of the loop iteration, or close)."""
        status, body, headers = r
        if self.transport is None:
            return
        end = _END_KEEP if keep else _END_CLOSE
        if len(headers) == 2 and headers[0] is _JSON_CT and status in _JSON_HEADS:  # every JSON reply of RestAPI
            data = _JSON_HEADS[status] + headers[1][1].encode("latin-1") + b"\r\nContent-Length: " + str(len(body)).encode() + end
        else:
            data = (_status_line(status) + "".join(f"{k}: {v}\r\n" for k, v in headers).encode("latin-1")
                    + b"Content-Length: " + str(len(body)).encode() + end)
        if not head:
            data += body
        out = self.out
        out.append(data)
        self.out_bytes += len(data)
        if len(out) == 1 and self.batch is not None:
            self.batch.add(self)

    def flush(self) -> None:
        """Write every queued response in one ``write``."""
        out = self.out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_bytes = 0
        if self.transport is not None:
            self.transport.write(data)

    def _send_close(self, status: int, body: bytes) -> None:
        self._write((status, body, ()), False)
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.buf = b""
        if self.transport is not None:
            self.flush()
            self.transport.close()

    def shutdown(self) -> None:
        """Close when idle (graceful stop): an in-flight verification finishes first."""
        if self.pending is None and self.transport is not None:
            self.flush()
            self.transport.close()
        else:
            self.closing = True


#: what a connection of :class:`FastHTTPProtocol` waits for (its timeout in :class:`ConnectionLimits`)
_IDLE, _HEAD, _BODY, _BUSY, _SEND = range(5)  # keepalive / header / body / none (verification) / send
