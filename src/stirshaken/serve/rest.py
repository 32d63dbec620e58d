"""The ATIS-1000082 REST API of the STI-AS and STI-VS, plus health, metrics and OpenAPI.

Resources (ATIS-1000082 §8.2, "SHAKEN APIs for a Centralized Signing and Signature Validation
Server"; shapes as in docs/requirements.md#rest-api):

* ``POST /stir/v1/signing``: ``{"signingRequest": {attest, dest:{tn:[..]}, iat, orig:{tn}, origid}}``
  → 200 ``{"signingResponse": {"identity": "<jws>;info=<x5u>;alg=ES256;ppt=shaken"}}``.
  Extension: ``origid`` is mandatory in ATIS-1000082 but optional here (a new UUID is used).
* ``POST /stir/v1/verification``: ``{"verificationRequest": {from:{tn}, to:{tn:[..]}, time, identity}}``
  → always 200 ``{"verificationResponse": {"verstat": ..., [reasoncode, reasontext, reasondesc]}}``.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /openapi.json`` (OpenAPI 3.0).

Request errors follow the exception table of ATIS-1000082 §8.2.4.6 (OMA-style
``requestError`` / ``serviceException`` or ``policyException`` with ``messageId``, ``text`` with
``%1`` placeholders and ``variables``), see :data:`EXCEPTIONS`.  ``X-RequestID`` is echoed, or
generated when absent.

The protocol logic is :class:`RestAPI`, independent of the HTTP server.  Two fronts serve it
(``[server] http_engine``):

* ``"fast"`` (default): :class:`FastHTTPProtocol`, a hand-written HTTP/1.1 ``asyncio.Protocol``.
  The API needs a small part of HTTP/1.1, and per signing request the ECDSA signature (≈ 30 µs)
  should be the main cost; aiohttp's per-request overhead (≈ 40 µs) exceeds it.  A C parser
  (``httptools``) measured no faster on these short heads than the few ``str`` operations used
  here, so there is no extra dependency.  Beyond the signature the kernel costs most (each
  ``write`` on loopback wakes the client inside the system call), hence the responses of one
  event-loop iteration are written together, see :class:`FastHTTPProtocol`.
* ``"aiohttp"``: :func:`make_app` mounts the API on ``aiohttp.web``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, Awaitable, Callable, Mapping

import orjson

from stirshaken.serve.batching import LoopBatch
from stirshaken.serve.config import SigningConfig
from stirshaken.serve.limits import ConnectionGuard, ConnectionLimits, peer_ip
from stirshaken.core.errors import SIP_REASONS, VERSTAT_NONE
from stirshaken.serve.metrics import Metrics
from stirshaken.core.passport import new_origid
from stirshaken.serve.signing import ATTEST, DnoRefused, SigningError, SigningService
from stirshaken.core.tn import MAX_TN_LENGTH, TNError, canonicalize_tn

log = logging.getLogger("stirshaken.serve.rest")

__all__ = ["EXCEPTIONS", "FastHTTPProtocol", "RestAPI", "make_app", "openapi_document", "serve_aiohttp"]

SIGNING_PATH = "/stir/v1/signing"
VERIFICATION_PATH = "/stir/v1/verification"

#: ATIS-1000082 §8.2.4.6 exception table: messageId -> (HTTP status, text, exception kind)
EXCEPTIONS: dict[str, tuple[int, str, str]] = {
    "SVC4000": (400, "Missing request body.", "serviceException"),
    "SVC4001": (400, "Missing mandatory parameter '%1'", "serviceException"),
    "SVC4002": (406, "Requested response body type '%1' is not supported", "serviceException"),
    "SVC4003": (404, "Requested resource was not found.", "serviceException"),
    "SVC4004": (415, "Unsupported request body type, expected '%1'", "serviceException"),
    "SVC4005": (400, "Invalid '%1' parameter value: %2", "serviceException"),
    "SVC4006": (400, "Failed to parse received message body: %1", "serviceException"),
    "SVC4007": (411, "Missing mandatory Content-Length header.", "serviceException"),
    "POL4003": (403, "Calling number '%1' is on a Do-Not-Originate list; not signed.", "policyException"),
    "POL4050": (405, "Method not allowed.", "policyException"),
    "POL5000": (500, "Internal Server Error. Please try again later.", "policyException"),
}

_UUID_CHARS = frozenset("0123456789abcdefABCDEF-")
_TN_CHARS = frozenset("0123456789*#+.-() ")

#: (status, body, extra headers)
Reply = tuple[int, bytes, tuple[tuple[str, str], ...]]

#: the Content-Type header of every JSON reply (the same object, so that the lean HTTP front
#: recognises these replies and writes them from a prebuilt head)
_JSON_CT = ("Content-Type", "application/json")
_SIGNED_200 = (("endpoint", "signing"), ("status", "200"))
_VERIFIED_200 = (("endpoint", "verification"), ("status", "200"))


class RequestError(Exception):
    """An ATIS-1000082 request error."""

    def __init__(self, message_id: str, *variables: str):
        super().__init__(message_id)
        self.message_id = message_id
        self.variables = [str(v) for v in variables]


def error_body(message_id: str, variables: list[str] | tuple[str, ...] = ()) -> tuple[int, bytes]:
    """``{"requestError": {"serviceException": {messageId, text, variables}}}`` and its status."""
    status, text, kind = EXCEPTIONS[message_id]
    exc: dict[str, Any] = {"messageId": message_id, "text": text}
    if variables:
        exc["variables"] = list(variables)
    return status, orjson.dumps({"requestError": {kind: exc}})


def _accept_ok(accept: str | None) -> bool:
    if not accept or accept == "application/json" or accept == "*/*":
        return True
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        if media in ("application/json", "application/*", "*/*", "*") and "q=0" not in params.replace(" ", "").split(";")[-1:]:
            return True
    return False


def _ctype_ok(ctype: str | None) -> bool:
    if ctype == "application/json":
        return True
    return bool(ctype) and ctype.partition(";")[0].strip().lower() == "application/json"  # type: ignore[union-attr]


class RestAPI:
    """HTTP-server-independent implementation of the API.

    :meth:`handle` returns a :data:`Reply` for everything that is synchronous (signing, errors,
    health) and an awaitable of one for verification, which may fetch x5u certificates.
    """

    def __init__(
        self,
        *,
        signing: SigningService | None,
        verifier: Any | None,
        metrics: Metrics,
        max_age: int = 60,
        future_skew: int = 10,
        max_body: int = 65536,
        call_info: Callable[..., Any] | None = None,
        ready: Callable[[], bool] = lambda: True,
        access_log: bool = False,
        admin: Any | None = None,
    ):
        self.signing = signing
        self.verifier = verifier
        self.metrics = metrics
        self.max_age = max_age
        self.future_skew = future_skew
        self.max_body = max_body
        self.call_info = call_info
        self.ready = ready
        self.access_log = access_log
        self.admin = admin  # the inventory admin API (serve/inventory/admin.py), handed every /admin/ path
        self.customer_header = (signing.cfg.customer_header.lower() if signing and signing.cfg.customer_header else "")
        self.tenant_header = (signing.cfg.tenant_header.lower() if signing and signing.cfg.tenant_header else "")
        self.max_iat_skew = (signing.cfg if signing else SigningConfig()).max_iat_skew
        self._openapi = orjson.dumps(openapi_document())
        self._static_errors = {mid: error_body(mid) for mid in ("SVC4000", "SVC4003", "SVC4007", "POL4050", "POL5000")}
        self._signed_labels: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        #: the web inspector answering /inspect (stirshaken.serve.inspect), when enabled
        self.inspector: Any = None

    @staticmethod
    def new_request_id() -> str:
        """A random v4 UUID for a request without X-RequestID."""
        return new_origid()

    # --- entry point ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes, has_length: bool,
               peer: str = "") -> Reply | Awaitable[Reply]:
        """Dispatch one request.  ``headers`` is looked up with lower-case names; ``peer`` is the
        client's address (the web inspector's rate limit)."""
        rid = headers.get("x-requestid") or self.new_request_id()
        t0 = time.perf_counter()
        try:
            if path == SIGNING_PATH or path == VERIFICATION_PATH:
                if method != "POST":
                    return self._error("POL4050", rid, path, allow=True)
                if not has_length:
                    return self._error("SVC4007", rid, path)
                if not _accept_ok(headers.get("accept")):
                    return self._error("SVC4002", rid, path, headers.get("accept", ""))
                if not _ctype_ok(headers.get("content-type")):
                    return self._error("SVC4004", rid, path, "application/json")
                if not body:
                    return self._error("SVC4000", rid, path)
                if len(body) > self.max_body:
                    return self._error("SVC4006", rid, path, f"body larger than {self.max_body} bytes")
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    return self._error("SVC4006", rid, path, str(exc)[:200])
                if path == SIGNING_PATH:
                    reply = self._sign(doc, headers, rid)
                    self.metrics.observe("rest_sign", time.perf_counter() - t0)
                    self.metrics.inc("stirshaken_http_requests_total", _SIGNED_200)  # _sign answers 200 or raises
                    return reply
                return self._verify(doc, rid, t0)
            if self.admin is not None and path.startswith("/admin/"):
                return self.admin.handle(method, path, headers, body, rid)
            if method == "GET" or method == "HEAD":
                if path == "/healthz":
                    ok = self.ready()
                    return self._plain(200 if ok else 503, b'{"status":"ok"}' if ok else b'{"status":"starting"}', rid, "application/json")
                if path == "/metrics":
                    return self._plain(200, self.metrics.render(), rid, "text/plain; version=0.0.4; charset=utf-8")
                if path == "/openapi.json":
                    return self._plain(200, self._openapi, rid, "application/json")
            elif path in ("/healthz", "/metrics", "/openapi.json"):
                return self._error("POL4050", rid, path, allow=True, allowed="GET, HEAD")
            if path == "/inspect" and self.inspector is not None:
                return self.inspector.handle(method, headers, body, peer)
            return self._error("SVC4003", rid, path)
        except RequestError as exc:
            return self._error(exc.message_id, rid, path, *exc.variables)
        except Exception:  # noqa: BLE001 - POL5000 is the answer to anything unexpected
            log.exception("internal error", extra={"request_id": rid, "path": path})
            return self._error("POL5000", rid, path)

    # --- replies --------------------------------------------------------------------------------

    def _plain(self, status: int, body: bytes, rid: str, ctype: str) -> Reply:
        return status, body, (_JSON_CT if ctype == "application/json" else ("Content-Type", ctype), ("X-RequestID", rid))

    def _error(self, mid: str, rid: str, path: str, *variables: str, allow: bool = False, allowed: str = "POST") -> Reply:
        if variables:
            status, body = error_body(mid, variables)
        else:
            status, body = self._static_errors.get(mid) or error_body(mid)
        endpoint = "signing" if path == SIGNING_PATH else "verification" if path == VERIFICATION_PATH else "other"
        self.metrics.inc("stirshaken_request_errors_total", (("endpoint", endpoint), ("messageId", mid)))
        self.metrics.inc("stirshaken_http_requests_total", (("endpoint", endpoint), ("status", str(status))))
        log.info("request error", extra={"request_id": rid, "path": path[:200], "messageId": mid, "variables": list(variables)})
        headers: tuple[tuple[str, str], ...] = (_JSON_CT, ("X-RequestID", rid))
        if allow:
            headers += (("Allow", allowed),)
        return status, body, headers

    # --- signing (ATIS-1000082 §8.2.3) ------------------------------------------------------------

    @staticmethod
    def _envelope(doc: Any, name: str, mandatory: tuple[str, ...]) -> dict[str, Any]:
        """``doc[name]``, checked to be an object holding every ``mandatory`` member (§8.2.4.6:
        SVC4006 not an object, SVC4001 missing, SVC4005 wrong type)."""
        if not isinstance(doc, dict):
            raise RequestError("SVC4006", "the body is not a JSON object")
        req = doc.get(name)
        if req is None:
            raise RequestError("SVC4001", name)
        if not isinstance(req, dict):
            raise RequestError("SVC4005", name, "not a JSON object")
        for member in mandatory:
            if member not in req:
                raise RequestError("SVC4001", member)
        return req

    def _sign(self, doc: Any, headers: Mapping[str, str], rid: str) -> Reply:
        req = self._envelope(doc, "signingRequest", ("attest", "dest", "iat", "orig"))
        svc = self.signing
        if svc is None:
            raise RequestError("SVC4003")
        attest = req["attest"]
        if type(attest) is not str or attest not in ATTEST:  # 5, [..], {..}: SVC4005, not a 500
            raise RequestError("SVC4005", "attest", str(attest)[:64])
        orig = req["orig"]
        if not isinstance(orig, dict) or "tn" not in orig:
            if isinstance(orig, dict):
                raise RequestError("SVC4001", "orig.tn")
            raise RequestError("SVC4005", "orig", str(orig)[:64])
        orig_tn = self._tn(orig["tn"], "orig.tn")
        dest = req["dest"]
        if not isinstance(dest, dict) or "tn" not in dest:
            if isinstance(dest, dict):
                raise RequestError("SVC4001", "dest.tn")
            raise RequestError("SVC4005", "dest", str(dest)[:64])
        dtn = dest["tn"]
        if not isinstance(dtn, list) or not dtn:
            raise RequestError("SVC4005", "dest.tn", "must be a non-empty array of telephone numbers")
        dest_tns = [self._tn(t, "dest.tn") for t in dtn]
        iat = req["iat"]
        if type(iat) is not int or iat <= 0:
            raise RequestError("SVC4005", "iat", str(iat)[:64])
        skew = abs(time.time() - iat)
        if skew > self.max_iat_skew:
            raise RequestError("SVC4005", "iat", f"{iat} is {int(skew)} s away from the server clock (max {self.max_iat_skew} s)")
        origid = req.get("origid")
        if origid is not None:
            if not isinstance(origid, str) or len(origid) != 36 or not _UUID_CHARS.issuperset(origid) or origid.count("-") != 4:
                raise RequestError("SVC4005", "origid", str(origid)[:64])
        ppt = req.get("ppt")
        if ppt is not None and ppt != "shaken":
            raise RequestError("SVC4005", "ppt", str(ppt)[:64])
        try:
            tenant = svc.tenant_for(orig_tn, headers.get(self.tenant_header) if self.tenant_header else None)
        except SigningError as exc:
            name = svc.cfg.tenant_header if exc.param == "tenant" else "orig.tn"
            raise RequestError("SVC4005", name, exc.value) from None
        if svc.inventory is not None:  # attestation from the TN inventory; DNO never A/B
            auth = headers.get("authorization") or ""
            try:
                attest = svc.decide(tenant, orig_tn, requested=attest, credential=auth[7:].strip() if auth[:6].lower() == "bearer" else None,
                                    customer=headers.get(self.customer_header) if self.customer_header else None)
            except DnoRefused:
                raise RequestError("POL4003", orig_tn) from None
        identity = svc.sign(tenant, orig=orig_tn, dest=dest_tns, attest=attest, iat=iat, origid=origid)
        labels = self._signed_labels.get((tenant.name, attest))
        if labels is None:
            labels = self._signed_labels[(tenant.name, attest)] = (("interface", "rest"), ("tenant", tenant.name), ("attest", attest))
        self.metrics.inc("stirshaken_signed_total", labels)
        body = b'{"signingResponse":{"identity":' + orjson.dumps(identity) + b"}}"
        return 200, body, (_JSON_CT, ("X-RequestID", rid))

    @staticmethod
    def _tn(value: Any, name: str) -> str:
        if type(value) is str and value.isascii() and value.isdigit() and len(value) <= MAX_TN_LENGTH:
            return value  # already canonical (RFC 8224 §8.3)
        if not isinstance(value, str) or not value or not _TN_CHARS.issuperset(value):
            raise RequestError("SVC4005", name, str(value)[:64])
        try:
            return canonicalize_tn(value)
        except TNError:
            raise RequestError("SVC4005", name, value[:64]) from None

    # --- verification (ATIS-1000082 §8.2.4) -------------------------------------------------------

    def _verify(self, doc: Any, rid: str, t0: float) -> Reply | Awaitable[Reply]:
        req = self._envelope(doc, "verificationRequest", ("from", "to", "time", "identity"))  # E1
        frm, to, when, identity = req["from"], req["to"], req["time"], req["identity"]
        # E2: invalid values
        if not isinstance(frm, dict) or "tn" not in frm:
            raise RequestError("SVC4005", "from", str(frm)[:64])
        from_tn = self._tn(frm["tn"], "from.tn")
        if not isinstance(to, dict) or "tn" not in to:
            raise RequestError("SVC4005", "to", str(to)[:64])
        tos = to["tn"]
        if isinstance(tos, str):
            tos = [tos]
        if not isinstance(tos, list) or not tos:
            raise RequestError("SVC4005", "to.tn", str(tos)[:64])
        to_tns = [self._tn(t, "to.tn") for t in tos]
        if type(when) is not int or when <= 0:
            raise RequestError("SVC4005", "time", str(when)[:64])
        if not isinstance(identity, str) or not identity.strip():
            raise RequestError("SVC4005", "identity", str(identity)[:64])
        if self.verifier is None or self.call_info is None:
            raise RequestError("SVC4003")
        now = time.time()
        if now - when > self.max_age or when - now > max(self.future_skew, self.max_age):  # E3
            return self._verified(rid, t0, VERSTAT_NONE, 403, "Received 'time' value is not fresh.", None)
        return self._verify_async(from_tn, to_tns, when, identity, rid, t0)

    async def _verify_async(self, from_tn: str, to_tns: list[str], when: int, identity: str, rid: str, t0: float) -> Reply:
        try:
            call = self.call_info(identities=[identity], from_=from_tn, to=to_tns, date=float(when))
            result = await self.verifier.averify(call)
        except RequestError as exc:
            return self._error(exc.message_id, rid, VERIFICATION_PATH, *exc.variables)
        except Exception:  # noqa: BLE001
            log.exception("verification failed internally", extra={"request_id": rid})
            return self._error("POL5000", rid, VERIFICATION_PATH)
        return self._verified(rid, t0, result.verstat, result.sip_code, result.description, result.attest)

    def _verified(self, rid: str, t0: float, verstat: str, code: int | None, desc: str | None, attest: str | None) -> Reply:
        out: dict[str, Any] = {"verstat": verstat}
        if code is not None:
            out["reasoncode"] = code
            out["reasontext"] = SIP_REASONS.get(code, "Invalid Identity Header")
            out["reasondesc"] = desc or ""
        m = self.metrics
        m.inc("stirshaken_verified_total", (("interface", "rest"), ("verstat", verstat), ("reason", str(code or 0))))
        m.inc("stirshaken_http_requests_total", _VERIFIED_200)
        m.observe("rest_verify", time.perf_counter() - t0)
        if self.access_log:
            log.info("verification", extra={"request_id": rid, "verstat": verstat, "reasoncode": code, "attest": attest})
        return 200, orjson.dumps({"verificationResponse": out}), (_JSON_CT, ("X-RequestID", rid))


# --- aiohttp front --------------------------------------------------------------------------------


def make_app(api: RestAPI, limits: ConnectionLimits | None = None) -> Any:
    """An ``aiohttp.web.Application`` answering every path through :meth:`RestAPI.handle`.

    One catch-all route (no middleware) keeps aiohttp's router out of the way so that unknown
    resources and methods get their ATIS-1000082 bodies (SVC4003 / POL4050).  A body slower than
    ``limits.body_timeout`` is answered 408 (the other limits are applied by :func:`serve_aiohttp`).
    """
    from aiohttp import web

    body_timeout = (limits or ConnectionLimits()).body_timeout or None

    async def handler(request: web.Request) -> web.StreamResponse:
        has_length = "Content-Length" in request.headers
        if request.body_exists:
            try:
                async with asyncio.timeout(body_timeout):
                    body = await request.read()
            except TimeoutError:
                return web.Response(status=408, headers={"Connection": "close"})
        else:
            body = b""
        r = api.handle(request.method, request.path, request.headers, body, has_length, request.remote or "")
        if not isinstance(r, tuple):
            r = await r
        status, payload, headers = r
        return web.Response(status=status, body=payload, headers=dict(headers))

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
            408: "Request Timeout", 411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
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
            if end < 0:
                if len(buf) > _MAX_HEAD:
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
                    v = value.strip()
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
                    _, body, hdrs = self.api._error("SVC4006", headers.get("x-requestid") or self.api.new_request_id(), target,
                                                   f"body larger than {self.api.max_body} bytes")
                    self._respond((400, body, hdrs), close=True, keep=False)
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


# --- OpenAPI 3 --------------------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.0 description of the ATIS-1000082 resources served here."""
    tn = {"type": "string", "pattern": "^[0-9*#+().-]+$", "example": "12155551212"}
    err_ref = {"$ref": "#/components/schemas/RequestError"}

    def errors(*codes: int) -> dict[str, Any]:
        out = {}
        for code in codes:
            ids = [m for m, (s, _, _) in EXCEPTIONS.items() if s == code]
            out[str(code)] = {"description": " / ".join(ids), "content": {"application/json": {"schema": err_ref}}}
        return out

    from stirshaken.serve.inventory.admin import openapi_paths

    admin_paths, admin_schemas = openapi_paths()
    req_id = {"name": "X-RequestID", "in": "header", "required": False, "schema": {"type": "string", "format": "uuid"},
              "description": "Echoed in the response; generated by the server when absent."}
    return {
        "openapi": "3.0.3",
        "info": {"title": "stirshaken STI-AS / STI-VS (ATIS-1000082)", "version": "1.0.0",
                 "description": "SHAKEN signing and verification API after ATIS-1000082 §8.2. Request errors use the "
                                "exception table of §8.2.4.6. Extension: signingRequest.origid may be omitted (a UUID is "
                                "generated), although ATIS-1000082 makes it mandatory."},
        "paths": {
            SIGNING_PATH: {"post": {
                "operationId": "signing", "summary": "Sign a call (STI-AS)", "parameters": [req_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SigningRequestBody"}}}},
                "responses": {"200": {"description": "Identity header value", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SigningResponseBody"}}}},
                              **errors(400, 403, 404, 405, 406, 411, 415, 500)}}},
            VERIFICATION_PATH: {"post": {
                "operationId": "verification", "summary": "Verify a call (STI-VS)", "parameters": [req_id],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VerificationRequestBody"}}}},
                "responses": {"200": {"description": "verstat, with reasoncode/reasontext/reasondesc on failure", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/VerificationResponseBody"}}}},
                              **errors(400, 404, 405, 406, 411, 415, 500)}}},
            "/healthz": {"get": {"summary": "Liveness/readiness", "responses": {"200": {"description": "ready"}, "503": {"description": "starting"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}}}},
            **admin_paths,
        },
        "components": {"securitySchemes": {"adminBearer": {"type": "http", "scheme": "bearer",
                                                           "description": "[inventory] admin_token (file or environment variable)"}},
                       "schemas": {
            **admin_schemas,
            "SigningRequestBody": {"type": "object", "required": ["signingRequest"], "properties": {"signingRequest": {
                "type": "object", "required": ["attest", "dest", "iat", "orig"],
                "properties": {
                    "attest": {"type": "string", "enum": ["A", "B", "C"]},
                    "dest": {"type": "object", "required": ["tn"], "properties": {"tn": {"type": "array", "minItems": 1, "items": tn}}},
                    "iat": {"type": "integer", "minimum": 1, "description": "must be within [signing].max_iat_skew of the server clock"},
                    "orig": {"type": "object", "required": ["tn"], "properties": {"tn": tn}},
                    "origid": {"type": "string", "format": "uuid",
                               "description": "Extension: ATIS-1000082 lists origid as mandatory in signingRequest; this server also accepts a "
                                              "request without it and then puts a new random UUID in the PASSporT (RFC 8588 §5). "
                                              "A client that needs strict conformance always sends it.",
                               "x-stirshaken-extension": "optional here, mandatory in ATIS-1000082"},
                    "ppt": {"type": "string", "enum": ["shaken"]}}}}},
            "SigningResponseBody": {"type": "object", "properties": {"signingResponse": {"type": "object", "properties": {
                "identity": {"type": "string", "example": "eyJ...;info=<https://cr.example.net/sp.pem>;alg=ES256;ppt=shaken"}}}}},
            "VerificationRequestBody": {"type": "object", "required": ["verificationRequest"], "properties": {"verificationRequest": {
                "type": "object", "required": ["from", "to", "time", "identity"],
                "properties": {
                    "from": {"type": "object", "required": ["tn"], "properties": {"tn": tn}},
                    "to": {"type": "object", "required": ["tn"], "properties": {"tn": {"type": "array", "minItems": 1, "items": tn}}},
                    "time": {"type": "integer", "description": "SIP Date as epoch seconds"},
                    "identity": {"type": "string", "description": "full Identity header value"}}}}},
            "VerificationResponseBody": {"type": "object", "properties": {"verificationResponse": {"type": "object", "required": ["verstat"], "properties": {
                "verstat": {"type": "string", "enum": ["TN-Validation-Passed", "TN-Validation-Failed", "No-TN-Validation"]},
                "reasoncode": {"type": "integer", "enum": [403, 428, 436, 437, 438]},
                "reasontext": {"type": "string"}, "reasondesc": {"type": "string"}}}}},
            "RequestError": {"type": "object", "properties": {"requestError": {"type": "object", "properties": {
                "serviceException": {"$ref": "#/components/schemas/Exception"},
                "policyException": {"$ref": "#/components/schemas/Exception"}}}}},
            "Exception": {"type": "object", "required": ["messageId", "text"], "properties": {
                "messageId": {"type": "string", "enum": list(EXCEPTIONS)}, "text": {"type": "string"},
                "variables": {"type": "array", "items": {"type": "string"}}}},
        }},
    }
