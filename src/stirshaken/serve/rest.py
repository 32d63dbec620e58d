"""The ATIS-1000082 REST API of the STI-AS and STI-VS, plus health, metrics and OpenAPI.

Resources (ATIS-1000082 §8.2, "SHAKEN APIs for a Centralized Signing and Signature Validation
Server"; shapes as in docs/requirements.md#rest-api):

* ``POST /stir/v1/signing``: ``{"signingRequest": {attest, dest:{tn:[..]}, iat, orig:{tn}, origid}}``
  → 200 ``{"signingResponse": {"identity": "<jws>;info=<x5u>;alg=ES256;ppt=shaken"}}``.
  Extension: ``origid`` is mandatory in ATIS-1000082 but optional here (a new UUID is used).
  Extension (ATIS-1000082 has no div request): ``{"signingRequest": {"ppt": "div", orig:{tn},
  dest:{tn:[..]}, div:{tn}, iat}}`` → the Identity header value of a ``div`` PASSporT (RFC 8946
  §3), signed by the tenant of ``div.tn``; ``attest``/``origid`` are refused there.
  Extension (ATIS-1000082 has no rich call data request): ``{"signingRequest": {"ppt": "rcd",
  orig:{tn}, dest:{tn:[..]}, iat, rcd:{nam, jcd | jcl, icn}, rcdi:{"/jcl" | "/icn": "sha256-…"},
  crn}}`` → the Identity header value of an ``rcd`` PASSporT (RFC 9795) with the ``rcdi`` digests,
  signed by the tenant of ``orig.tn``.
  Every input is checked as this project's verifier would judge it (SVC4005 with the member and
  the reason: an attestation other than A/B/C, an origid that is not a UUID, a TN that is not a
  TN or has more than 15 digits); a national number is completed with ``[signing]
  country_code``, or signed as given and logged.
* ``POST /stir/v1/verification``: ``{"verificationRequest": {from:{tn}, to:{tn:[..]}, time, identity}}``
  → always 200 ``{"verificationResponse": {"verstat": ..., [reasoncode, reasontext, reasondesc]}}``.
  Extension: optional ``callId`` and ``fromTag`` name the SIP dialog, for replay detection.
* ``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /openapi.json`` (OpenAPI 3.0).

Request errors follow the exception table of ATIS-1000082 §8.2.4.6 (OMA-style
``requestError`` / ``serviceException`` or ``policyException`` with ``messageId``, ``text`` with
``%1`` placeholders and ``variables``), see :data:`EXCEPTIONS`.  ``X-RequestID`` is echoed, or
generated when absent.

The protocol logic is :class:`RestAPI`, independent of the HTTP server.  Two fronts serve it
(``[server] http_engine``):

* ``"fast"`` (default): :class:`~stirshaken.serve.http.FastHTTPProtocol`, a hand-written HTTP/1.1 ``asyncio.Protocol``.
  The API needs a small part of HTTP/1.1, and per signing request the ECDSA signature (≈ 30 µs)
  should be the main cost; aiohttp's per-request overhead (≈ 40 µs) exceeds it.  A C parser
  (``httptools``) measured no faster on these short heads than the few ``str`` operations used
  here, so there is no extra dependency.  Beyond the signature the kernel costs most (each
  ``write`` on loopback wakes the client inside the system call), hence the responses of one
  event-loop iteration are written together (:mod:`stirshaken.serve.http`).
* ``"aiohttp"``: :func:`~stirshaken.serve.http.make_app` mounts the API on ``aiohttp.web``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Mapping

import orjson

from stirshaken.serve.config import SigningConfig
from stirshaken.serve.inventory.index import REMEMBER_MAX
from stirshaken.core.errors import SIP_REASONS, VERSTAT_NONE
from stirshaken.serve.metrics import LabelSets, Metrics
from stirshaken.serve.records import verification_fields
from stirshaken.core.passport import OrigidPool
from stirshaken.serve.signing import ATTEST, DnoRefused, SigningError, SigningService
from stirshaken.core.tn import MAX_TN_LENGTH, TNError, canonicalize_tn
from stirshaken.core.verification import VerificationResult

log = logging.getLogger("stirshaken.serve.rest")


def header_text(value: str) -> str:
    """An HTTP field value (``X-RequestID``, ``X-Tenant``) as text: what a record, a log line and
    the tenant lookup see.  Both HTTP engines hand field values to :class:`RestAPI` as their
    octets, one character per byte (ISO 8859-1; RFC 9110 §5.5: a field value is octets; the
    echo writes them back as they came); as text they are UTF-8, a byte that is not UTF-8 as
    ``\\xNN``."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # (not octets: kept as given)
        return value


__all__ = ["EXCEPTIONS", "RestAPI", "header_text", "openapi_document"]

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
    """Whether ``Accept`` admits ``application/json`` with a weight above 0 (RFC 9110 §12.5.1)."""
    if not accept or accept == "application/json" or accept == "*/*":
        return True
    for part in accept.split(","):
        media, _, params = part.strip(" \t").partition(";")
        media = media.strip(" \t").lower()
        if media in ("application/json", "application/*", "*/*", "*") and not _weight_zero(params):
            return True
    return False


def _weight_zero(params: str) -> bool:
    """Whether the parameters of a media range give it the weight 0: ``q=0``, ``q=0.0``,
    ``q=0.000``, with spaces or tabs around ``;`` (RFC 9110 §12.4.2: qvalue)."""
    for param in params.split(";"):
        name, _, value = param.strip(" \t").partition("=")
        if name.strip(" \t").lower() == "q":
            v = value.strip(" \t")
            return v[:1] == "0" and v[1:2] in ("", ".") and not v[2:].strip("0")
    return False


def _ctype_ok(ctype: str | None) -> bool:
    if ctype == "application/json":
        return True
    return bool(ctype) and ctype.partition(";")[0].strip(" \t").lower() == "application/json"  # type: ignore[union-attr]


class BearerTokens(dict[str, "str | None"]):
    """``Authorization`` header value -> its bearer token (RFC 6750 §2.1), None when the value is
    not a bearer credential (or ``""``, no header): ``tokens[value]`` parses a value once and
    remembers it (at most 4,096 values), so that a client sending the same header on every request
    has it parsed once.  A dict read, not a method call, on the inventory's REST path: measured
    (callgrind) ≈ 580 instructions a request less than the method with its own cache it replaces,
    itself ≈ 2,000 less than parsing every time."""

    def __missing__(self, auth: str) -> str | None:
        # "Bearer" 1*SP token (RFC 6750 §2.1; the scheme case-insensitive, RFC 9110 §11.1): not "BearerXtok"
        token = auth[7:].strip(" \t") if auth[:7].lower() == "bearer " else ""
        if len(auth) <= REMEMBER_MAX:  # bounded in bytes too (new 16 KiB values grew a worker by 130 MB)
            if len(self) >= 4096:
                self.clear()
            self[auth] = token or None
        return token or None


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
        health: Any | None = None,
        records: Any | None = None,
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
        self.health = health  # serve.health.Health: /healthz "ok" or "degraded" with reasons
        self.admin = admin  # the inventory admin API (serve/inventory/admin.py), handed every /admin/ path
        self.records = records  # serve.records.Records: one record per request to the signing or verification resource
        self.customer_header = (signing.cfg.customer_header.lower() if signing and signing.cfg.customer_header else "")
        self.tenant_header = (signing.cfg.tenant_header.lower() if signing and signing.cfg.tenant_header else "")
        self.max_iat_skew = (signing.cfg if signing else SigningConfig()).max_iat_skew
        self._openapi = orjson.dumps(openapi_document())
        self._static_errors = {mid: error_body(mid) for mid in ("SVC4000", "SVC4003", "SVC4007", "POL4050", "POL5000")}
        self._signed_labels = LabelSets(lambda k: (("interface", "rest"), ("tenant", k[0]), ("attest", k[1])))
        #: Authorization header value -> its bearer token (None: not a bearer credential)
        self._bearer = BearerTokens()
        self._request_ids = OrigidPool()
        #: the web inspector answering /inspect (stirshaken.serve.inspect), when enabled
        self.inspector: Any = None

    def new_request_id(self) -> str:
        """A random v4 UUID for a request without X-RequestID, from this API's pool (256 drawn
        per ``os.urandom`` call).  Measured (py-spy, REST signing under wrk without X-RequestID,
        2026-11-29): one ``getrandom`` system call per request was 3 % of the worker's time."""
        return self._request_ids()

    # --- entry point ----------------------------------------------------------------------------

    def body_too_large(self, headers: Mapping[str, str], path: str) -> Reply:
        """The answer to a request whose body is announced larger than :attr:`max_body` bytes,
        which the HTTP engine does not read: 400 SVC4006 (ATIS-1000082 §8.3), its record and
        counters, as for any other request error.  ``headers`` with lower-case names."""
        return self.bad_body(headers, path, f"body larger than {self.max_body} bytes")

    def bad_body(self, headers: Mapping[str, str], path: str, reason: str) -> Reply:
        """The answer to a request whose body the HTTP engine could not read as sent (``reason``:
        too large, a ``Content-Encoding`` it cannot decode): 400 SVC4006 (ATIS-1000082 §8.3), its
        record and counters, as for any other request error."""
        return self._error("SVC4006", headers.get("x-requestid") or self.new_request_id(), path, reason)

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes, has_length: bool,
               peer: str = "") -> Reply | Awaitable[Reply]:
        """Dispatch one request.  ``headers`` is looked up with lower-case names; ``peer`` is the
        client's address (the web inspector's rate limit)."""
        rid = headers.get("x-requestid") or self.new_request_id()
        t0 = time.perf_counter()
        try:
            if path == SIGNING_PATH or path == VERIFICATION_PATH:
                if method != "POST":
                    return self._error("POL4050", rid, path, allow=True, t0=t0)
                if not has_length:
                    return self._error("SVC4007", rid, path, t0=t0)
                if not _accept_ok(headers.get("accept")):
                    return self._error("SVC4002", rid, path, header_text(headers.get("accept", "")), t0=t0)
                if not _ctype_ok(headers.get("content-type")):
                    return self._error("SVC4004", rid, path, "application/json", t0=t0)
                if not body:
                    return self._error("SVC4000", rid, path, t0=t0)
                if len(body) > self.max_body:
                    return self._error("SVC4006", rid, path, f"body larger than {self.max_body} bytes", t0=t0)
                try:
                    doc = orjson.loads(body)
                except orjson.JSONDecodeError as exc:
                    return self._error("SVC4006", rid, path, str(exc)[:200], t0=t0)
                if path == SIGNING_PATH:
                    reply = self._sign(doc, headers, rid, t0)
                    self.metrics.observe("rest_sign", time.perf_counter() - t0)
                    self.metrics.inc("stirshaken_http_requests_total", _SIGNED_200)  # _sign answers 200 or raises
                    return reply
                return self._verify(doc, rid, t0)
            if self.admin is not None and path.startswith("/admin/"):
                return self.admin.handle(method, path, headers, body, rid)
            if method == "GET" or method == "HEAD":
                if path == "/healthz":
                    if not self.ready():
                        return self._plain(503, b'{"status":"starting","reasons":["starting"]}', rid, "application/json")
                    reasons = list(self.health.reasons) if self.health is not None else []
                    return self._plain(200, orjson.dumps({"status": "degraded" if reasons else "ok", "reasons": reasons}), rid, "application/json")
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
            return self._error(exc.message_id, rid, path, *exc.variables, t0=t0)
        except Exception:  # noqa: BLE001 - POL5000 is the answer to anything unexpected
            log.exception("internal error", extra={"request_id": header_text(rid), "path": path})
            return self._error("POL5000", rid, path, t0=t0)

    # --- replies --------------------------------------------------------------------------------

    def _plain(self, status: int, body: bytes, rid: str, ctype: str) -> Reply:
        return status, body, (_JSON_CT if ctype == "application/json" else ("Content-Type", ctype), ("X-RequestID", rid))

    def _error(self, mid: str, rid: str, path: str, *variables: str, allow: bool = False, allowed: str = "POST",
               t0: float | None = None) -> Reply:
        if variables:
            status, body = error_body(mid, variables)
        else:
            status, body = self._static_errors.get(mid) or error_body(mid)
        endpoint = "signing" if path == SIGNING_PATH else "verification" if path == VERIFICATION_PATH else "other"
        self.metrics.inc("stirshaken_request_errors_total", (("endpoint", endpoint), ("messageId", mid)))
        self.metrics.inc("stirshaken_http_requests_total", (("endpoint", endpoint), ("status", str(status))))
        log.info("request error", extra={"request_id": header_text(rid), "path": path[:200], "messageId": mid, "variables": list(variables)})
        if self.records is not None and endpoint != "other":
            text = EXCEPTIONS[mid][1]
            for i, v in enumerate(variables, 1):
                text = text.replace(f"%{i}", v)
            self.records.add({"interface": "rest", "service": endpoint, "call_id": header_text(rid), "orig": variables[0] if mid == "POL4003" else None,
                              "status": status, "code": 403 if mid == "POL4003" else None, "reason": f"{mid}: {text}",
                              "latency": time.perf_counter() - t0 if t0 is not None else None})
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

    def _sign(self, doc: Any, headers: Mapping[str, str], rid: str, t0: float) -> Reply:
        req = self._envelope(doc, "signingRequest", ())
        ppt = req.get("ppt")
        if ppt is not None and ppt != "shaken":
            if ppt == "div":
                return self._sign_div(req, headers, rid, t0)
            if ppt == "rcd":
                return self._sign_rcd(req, headers, rid, t0)
            raise RequestError("SVC4005", "ppt", f"{str(ppt)[:40]!r} is not supported (shaken; div and rcd as extensions, RFC 8946, RFC 9795)")
        for member in ("attest", "dest", "iat", "orig"):
            if member not in req:
                raise RequestError("SVC4001", member)
        svc = self.signing
        if svc is None:
            raise RequestError("SVC4003")
        attest = req["attest"]
        if type(attest) is not str or attest not in ATTEST:  # 5, [..], {..}: SVC4005, not a 500
            raise RequestError("SVC4005", "attest", self._problem(svc.attest_input, attest, "attest"))
        orig_tn, dest_tns, iat = self._call(req, svc)
        origid = req.get("origid")
        if origid is not None:
            try:
                origid = svc.origid_input(origid, "origid")
            except SigningError as exc:
                raise RequestError("SVC4005", "origid", exc.message) from None
        tenant = self._tenant(svc, orig_tn, headers, "orig.tn")
        if svc.inventory is not None:  # attestation from the TN inventory; DNO never A/B
            customer = headers.get(self.customer_header) if self.customer_header else None
            if customer and not customer.isascii():  # (a customer named in UTF-8 found by its name, as a tenant)
                customer = header_text(customer)
            try:
                attest = svc.decide(tenant, orig_tn, attest, None, customer,  # by position: see SigningService.decide
                                    self._bearer[headers.get("authorization", "")])
            except DnoRefused:
                raise RequestError("POL4003", orig_tn) from None
        # here rather than in the signer, which would draw it from the same pool: the record names it
        origid = origid or tenant.signer.origids()
        identity = svc.sign(tenant, orig=orig_tn, dest=dest_tns, attest=attest, iat=iat, origid=origid)
        self.metrics.inc("stirshaken_signed_total", self._signed_labels((tenant.name, attest)))
        if self.records is not None:
            self.records.add((tenant.rest_shared, {"call_id": rid if rid.isascii() else header_text(rid), "origid": origid, "orig": orig_tn,
                                                   "dest": dest_tns, "attest": attest, "latency": time.perf_counter() - t0}))
        body = b'{"signingResponse":{"identity":' + orjson.dumps(identity) + b"}}"
        return 200, body, (_JSON_CT, ("X-RequestID", rid))

    def _record_extension(self, ppt: str, rid: str, tenant: Any, orig: str, dest: list[str], t0: float) -> None:
        """The per-call record of a signed ``div`` or ``rcd`` PASSporT: no attestation (not a
        SHAKEN claim); ``reason`` says which PASSporT was signed."""
        if self.records is not None:
            self.records.add({"interface": "rest", "service": "signing", "call_id": header_text(rid), "origid": None, "orig": orig,
                              "dest": dest, "tenant": tenant.name, "attest": None, "x5u": tenant.config.x5u, "verstat": None,
                              "status": 200, "code": None, "reason": f"{ppt} PASSporT signed ({'RFC 8946' if ppt == 'div' else 'RFC 9795'})",
                              "spc": tenant.spc, "serial": tenant.serial, "latency": time.perf_counter() - t0})

    def _sign_div(self, req: dict[str, Any], headers: Mapping[str, str], rid: str, t0: float) -> Reply:
        """Extension of ATIS-1000082 (which has no div request): ``{"signingRequest": {"ppt":
        "div", "orig": {"tn"}, "dest": {"tn": [..]}, "div": {"tn"}, "iat"}}`` signs a ``div``
        PASSporT (RFC 8946 §3) with the certificate of the tenant ``div.tn`` belongs to (or the
        tenant header's).  ``attest`` and ``origid`` are SHAKEN claims and are refused here."""
        for member in ("dest", "div", "iat", "orig"):
            if member not in req:
                raise RequestError("SVC4001", member)
        for member in ("attest", "origid"):
            if member in req:
                raise RequestError("SVC4005", member, "not a claim of a div PASSporT (RFC 8946 §3; only SHAKEN PASSporTs carry it)")
        svc = self.signing
        if svc is None:
            raise RequestError("SVC4003")
        orig_tn, dest_tns, iat = self._call(req, svc)
        div = req["div"]
        if not isinstance(div, dict) or "tn" not in div:
            if isinstance(div, dict):
                raise RequestError("SVC4001", "div.tn")
            raise RequestError("SVC4005", "div", str(div)[:64])
        div_tn = self._canon(svc, div["tn"], "div.tn")
        tenant = self._tenant(svc, div_tn, headers, "div.tn")
        try:
            identity = svc.sign_div(tenant, orig=orig_tn, dest=dest_tns, div=div_tn, iat=iat)
        except SigningError as exc:
            raise RequestError("SVC4005", "dest.tn", exc.message) from None
        self.metrics.inc("stirshaken_div_total", (("interface", "rest"), ("tenant", tenant.name), ("result", "signed")))
        self._record_extension("div", rid, tenant, orig_tn, dest_tns, t0)
        body = b'{"signingResponse":{"identity":' + orjson.dumps(identity) + b"}}"
        return 200, body, (_JSON_CT, ("X-RequestID", rid))

    def _sign_rcd(self, req: dict[str, Any], headers: Mapping[str, str], rid: str, t0: float) -> Reply:
        """Extension of ATIS-1000082 (which has no rich call data request): ``{"signingRequest":
        {"ppt": "rcd", "orig": {"tn"}, "dest": {"tn": [..]}, "iat", "rcd": {nam, jcd | jcl, icn},
        "rcdi": {"/jcl" | "/icn": "sha256-…"}, "crn"}}`` signs an ``rcd`` PASSporT (RFC 9795) with
        the certificate of the tenant ``orig.tn`` belongs to.  The digest of ``jcd`` is computed
        here; those of the content at ``jcl``/``icn`` are the client's (nothing is fetched).
        ``attest`` and ``origid`` are SHAKEN claims and are refused here."""
        for member in ("dest", "iat", "orig", "rcd"):
            if member not in req:
                raise RequestError("SVC4001", member)
        for member in ("attest", "origid"):
            if member in req:
                raise RequestError("SVC4005", member, "not a claim of an rcd PASSporT (RFC 9795; the call's SHAKEN PASSporT carries it)")
        svc = self.signing
        if svc is None:
            raise RequestError("SVC4003")
        orig_tn, dest_tns, iat = self._call(req, svc)
        rcd, rcdi, crn = req["rcd"], req.get("rcdi", {}), req.get("crn")
        if not isinstance(rcd, dict):
            raise RequestError("SVC4005", "rcd", "not a JSON object")
        if not isinstance(rcdi, dict) or not all(type(v) is str for v in rcdi.values()):
            raise RequestError("SVC4005", "rcdi", "not a JSON object of integrity strings")
        if "/jcd" in rcdi:
            raise RequestError("SVC4005", "rcdi./jcd", "computed by the signer from rcd.jcd; leave it out")
        if crn is not None and type(crn) is not str:
            raise RequestError("SVC4005", "crn", "not a string")
        tenant = self._tenant(svc, orig_tn, headers, "orig.tn")
        try:
            identity = svc.sign_rcd(tenant, orig=orig_tn, dest=dest_tns, rcd=rcd, digests=rcdi, crn=crn, iat=iat)
        except SigningError as exc:
            raise RequestError("SVC4005", exc.param, exc.message) from None
        self._record_extension("rcd", rid, tenant, orig_tn, dest_tns, t0)
        body = b'{"signingResponse":{"identity":' + orjson.dumps(identity) + b"}}"
        return 200, body, (_JSON_CT, ("X-RequestID", rid))

    def _call(self, req: dict[str, Any], svc: SigningService) -> tuple[str, list[str], int]:
        """``orig.tn``, ``dest.tn`` (canonical, RFC 8224 §8.3) and ``iat`` of a signing request,
        checked as the verifier would judge them (SVC4001 / SVC4005 naming the member and why)."""
        orig = req["orig"]
        if not isinstance(orig, dict) or "tn" not in orig:
            if isinstance(orig, dict):
                raise RequestError("SVC4001", "orig.tn")
            raise RequestError("SVC4005", "orig", str(orig)[:64])
        orig_tn = self._canon(svc, orig["tn"], "orig.tn")
        dest = req["dest"]
        if not isinstance(dest, dict) or "tn" not in dest:
            if isinstance(dest, dict):
                raise RequestError("SVC4001", "dest.tn")
            raise RequestError("SVC4005", "dest", str(dest)[:64])
        dtn = dest["tn"]
        if not isinstance(dtn, list) or not dtn:
            raise RequestError("SVC4005", "dest.tn", "must be a non-empty array of telephone numbers")
        dest_tns = [self._canon(svc, t, "dest.tn") for t in dtn]
        iat = req["iat"]
        if type(iat) is not int or iat <= 0:
            raise RequestError("SVC4005", "iat", str(iat)[:64])
        skew = abs(time.time() - iat)
        if skew > self.max_iat_skew:
            raise RequestError("SVC4005", "iat", f"{iat} is {int(skew)} s away from the server clock (max {self.max_iat_skew} s)")
        return orig_tn, dest_tns, iat

    @staticmethod
    def _canon(svc: SigningService, value: Any, name: str) -> str:
        """A canonical TN for signing (the ``[signing]`` dial plan), or SVC4005 naming ``name`` and
        why; a number of national length signed as given is logged (no ``country_code``)."""
        if type(value) is str and value.isascii() and value.isdigit() and len(value) <= MAX_TN_LENGTH and len(value) != svc.national_length:
            return value  # already canonical (RFC 8224 §8.3), and not a national number to complete or warn about
        try:
            tn = svc.canon(value, name)
        except SigningError as exc:
            raise RequestError("SVC4005", name, exc.message) from None
        if svc.warn_length is not None and len(tn) == svc.warn_length:
            w = svc.national_warning(value, tn)
            if w is not None:
                svc.note_national("rest", w)
        return tn

    def _tenant(self, svc: SigningService, tn: str, headers: Mapping[str, str], param: str) -> Any:
        try:
            hint = headers.get(self.tenant_header) if self.tenant_header else None
            return svc.tenant_for(tn, header_text(hint) if hint else hint)  # (a tenant named in UTF-8 found by its name)
        except SigningError as exc:
            name = svc.cfg.tenant_header if exc.param == "tenant" else param
            raise RequestError("SVC4005", name, exc.value) from None

    @staticmethod
    def _problem(check: Callable[[Any, str], str], value: Any, param: str) -> str:
        """The message of the core rule that ``value`` breaks."""
        try:
            check(value, param)
        except SigningError as exc:
            return exc.message
        return str(value)[:64]  # pragma: no cover - called only for a value the rule refuses

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
        # optional (an extension): the SIP dialog the identity came in, for replay detection
        dialog = (req.get("callId"), req.get("fromTag"))
        for name, v in zip(("callId", "fromTag"), dialog):
            if v is not None and (not isinstance(v, str) or not v or len(v) > 256):
                raise RequestError("SVC4005", name, str(v)[:64])
        if self.verifier is None or self.call_info is None:
            raise RequestError("SVC4003")
        now = time.time()
        if now - when > self.max_age or when - now > max(self.future_skew, self.max_age):  # E3
            return self._verified(rid, t0, VERSTAT_NONE, 403, "Received 'time' value is not fresh.", None, from_tn, to_tns)
        # the answer at once when the verifier needs no I/O (Verifier.begin: no coroutine and task
        # per request), else a coroutine finishing the same verification
        try:
            call = self.call_info(identities=[identity], from_=from_tn, to=to_tns, date=float(when), call_id=dialog[0],
                                  from_tag=dialog[1])
            started = self.verifier.begin(call)
        except Exception as exc:  # noqa: BLE001
            return self._verification_failed(exc, rid, t0)
        if isinstance(started, VerificationResult):
            return self._result(started, rid, t0, from_tn, to_tns)
        return self._verify_async(started, from_tn, to_tns, rid, t0)

    async def _verify_async(self, started: Awaitable[Any], from_tn: str, to_tns: list[str], rid: str, t0: float) -> Reply:
        try:
            result = await started
        except Exception as exc:  # noqa: BLE001
            return self._verification_failed(exc, rid, t0)
        return self._result(result, rid, t0, from_tn, to_tns)

    def _verification_failed(self, exc: Exception, rid: str, t0: float) -> Reply:
        """The answer to a verification that raised: its request error, or POL5000 (logged)."""
        if isinstance(exc, RequestError):
            return self._error(exc.message_id, rid, VERIFICATION_PATH, *exc.variables, t0=t0)
        log.error("verification failed internally", exc_info=exc, extra={"request_id": header_text(rid)})
        return self._error("POL5000", rid, VERIFICATION_PATH, t0=t0)

    def _result(self, result: Any, rid: str, t0: float, from_tn: str, to_tns: list[str]) -> Reply:
        return self._verified(rid, t0, result.verstat, result.sip_code, result.description, result.attest, from_tn, to_tns, result,
                              result.warnings)

    def _verified(self, rid: str, t0: float, verstat: str, code: int | None, desc: str | None, attest: str | None,
                  from_tn: str, to_tns: list[str], result: Any = None, warnings: tuple[str, ...] = ()) -> Reply:
        out: dict[str, Any] = {"verstat": verstat}
        if code is not None:
            out["reasoncode"] = code
            out["reasontext"] = SIP_REASONS.get(code, "Invalid Identity Header")
            out["reasondesc"] = desc or ""
        m = self.metrics
        m.inc("stirshaken_verified_total", (("interface", "rest"), ("verstat", verstat), ("reason_code", str(code or 0)), ("attest", attest or "-")))
        m.inc("stirshaken_http_requests_total", _VERIFIED_200)
        m.observe("rest_verify", time.perf_counter() - t0)
        if self.access_log:
            extra: dict[str, Any] = {"request_id": header_text(rid), "verstat": verstat, "reasoncode": code, "attest": attest}
            if warnings:  # trust problems the result relied on (docs/requirements.md VS-10)
                extra["warnings"] = list(warnings)
            log.info("verification", extra=extra)
        if self.records is not None:
            origid, x5u, spc, serial = verification_fields(result)
            self.records.add({"interface": "rest", "service": "verification", "call_id": header_text(rid), "origid": origid, "orig": from_tn,
                              "dest": to_tns, "tenant": None, "attest": attest, "x5u": x5u, "verstat": verstat, "status": 200,
                              "code": code, "reason": desc if code is not None else None, "spc": spc, "serial": serial,
                              "latency": time.perf_counter() - t0})
        return 200, orjson.dumps({"verificationResponse": out}), (_JSON_CT, ("X-RequestID", rid))


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
                                "exception table of §8.2.4.6. Extensions: signingRequest.origid may be omitted (a UUID is "
                                "generated), although ATIS-1000082 makes it mandatory; signingRequest.ppt \"div\" with "
                                "signingRequest.div signs a div PASSporT for a diverted call (RFC 8946 §3), for which "
                                "ATIS-1000082 defines no request; signingRequest.ppt \"rcd\" with signingRequest.rcd (and "
                                "rcdi, crn) signs an rcd PASSporT of rich call data (RFC 9795), for which ATIS-1000082 defines "
                                "no request either."},
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
            "/healthz": {"get": {"summary": "Liveness/readiness", "responses": {
                "200": {"description": 'ready: {"status": "ok"|"degraded", "reasons": [...]} (degraded: Redis unreachable, '
                                       'a signing certificate expired or expiring within [signing] expiry_warning_days, the records database down)'},
                "503": {"description": "starting"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format", "content": {"text/plain": {}}}}}},
            **admin_paths,
        },
        "components": {"securitySchemes": {"adminBearer": {"type": "http", "scheme": "bearer",
                                                           "description": "[inventory] admin_token (file or environment variable)"}},
                       "schemas": {
            **admin_schemas,
            "SigningRequestBody": {"type": "object", "required": ["signingRequest"], "properties": {"signingRequest": {
                "type": "object", "required": ["dest", "iat", "orig"],
                "description": "A SHAKEN request (ppt absent or \"shaken\") also requires attest; a div request (ppt \"div\") "
                               "requires div and refuses attest and origid; an rcd request (ppt \"rcd\") requires rcd and "
                               "refuses attest and origid.",
                "properties": {
                    "attest": {"type": "string", "enum": ["A", "B", "C"], "description": "required for a SHAKEN PASSporT (ATIS-1000082)"},
                    "dest": {"type": "object", "required": ["tn"], "properties": {"tn": {"type": "array", "minItems": 1, "items": tn}}},
                    "iat": {"type": "integer", "minimum": 1, "description": "must be within [signing].max_iat_skew of the server clock"},
                    "orig": {"type": "object", "required": ["tn"], "properties": {"tn": tn}},
                    "origid": {"type": "string", "format": "uuid",
                               "description": "Extension: ATIS-1000082 lists origid as mandatory in signingRequest; this server also accepts a "
                                              "request without it and then puts a new random UUID in the PASSporT (RFC 8588 §5). "
                                              "A client that needs strict conformance always sends it.",
                               "x-stirshaken-extension": "optional here, mandatory in ATIS-1000082"},
                    "ppt": {"type": "string", "enum": ["shaken", "div", "rcd"], "description": "default shaken; div, rcd: the extensions below"},
                    "rcd": {"type": "object", "minProperties": 1, "properties": {
                                "nam": {"type": "string", "description": "display name"},
                                "jcd": {"type": "array", "description": "a jCard (RFC 7095) inline; its rcdi digest is computed by the server (RFC 8785 form)"},
                                "jcl": {"type": "string", "format": "uri", "description": "URL of a jCard (exclusive with jcd); rcdi./jcl required"},
                                "icn": {"type": "string", "format": "uri", "description": "URL of an icon; rcdi./icn required"}},
                            "description": "Extension (ATIS-1000082 has no rich call data request): with ppt \"rcd\", the rich call data "
                                           "of the call, signed as an rcd PASSporT (RFC 9795) beside the call's SHAKEN PASSporT with the "
                                           "certificate of the tenant orig.tn belongs to. jcl and icn must pass the x5u URL rule (a "
                                           "verifier fetches them under it).",
                            "x-stirshaken-extension": "rcd PASSporT request (RFC 9795), not in ATIS-1000082"},
                    "rcdi": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^sha(256|384|512)-"},
                             "description": "Extension, with ppt \"rcd\": the digests of the content at rcd.jcl and rcd.icn, keyed "
                                            "\"/jcl\" and \"/icn\" (sha256- and the base64 SHA-256 of the bytes served there); the "
                                            "server fetches nothing.",
                             "x-stirshaken-extension": "rcd PASSporT request (RFC 9795), not in ATIS-1000082"},
                    "crn": {"type": "string", "description": "Extension, with ppt \"rcd\": the call reason (RFC 9795)",
                            "x-stirshaken-extension": "rcd PASSporT request (RFC 9795), not in ATIS-1000082"},
                    "div": {"type": "object", "required": ["tn"], "properties": {"tn": tn},
                            "description": "Extension (ATIS-1000082 has no div request): with ppt \"div\", the number the call was "
                                           "diverted from, i.e. the previous destination; orig is the caller as in the call's "
                                           "SHAKEN PASSporT and dest the new target. Signed as a div PASSporT (RFC 8946 §3) with the "
                                           "certificate of the tenant this number belongs to; dest equal to div is refused (no "
                                           "div PASSporT for an unchanged destination).",
                            "x-stirshaken-extension": "div PASSporT request (RFC 8946), not in ATIS-1000082"}}}}},
            "SigningResponseBody": {"type": "object", "properties": {"signingResponse": {"type": "object", "properties": {
                "identity": {"type": "string", "example": "eyJ...;info=<https://cr.example.net/sp.pem>;alg=ES256;ppt=shaken"}}}}},
            "VerificationRequestBody": {"type": "object", "required": ["verificationRequest"], "properties": {"verificationRequest": {
                "type": "object", "required": ["from", "to", "time", "identity"],
                "properties": {
                    "from": {"type": "object", "required": ["tn"], "properties": {"tn": tn}},
                    "to": {"type": "object", "required": ["tn"], "properties": {"tn": {"type": "array", "minItems": 1, "items": tn}}},
                    "time": {"type": "integer", "description": "SIP Date as epoch seconds"},
                    "identity": {"type": "string", "description": "full Identity header value"},
                    "callId": {"type": "string", "maxLength": 256, "x-stirshaken-extension": "not in ATIS-1000082",
                               "description": "Call-ID of the SIP request (with fromTag: its dialog). Replay detection "
                                              "treats requests of one dialog as one call; without it each request is a call of its own."},
                    "fromTag": {"type": "string", "maxLength": 256, "x-stirshaken-extension": "not in ATIS-1000082",
                                "description": "From tag of the SIP request"}}}}},
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
