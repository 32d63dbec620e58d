"""ATIS-1000082 REST API of ``stirshaken serve``, black box over loopback with real HTTP clients.

Both HTTP engines (aiohttp and the lean protocol) run as real ``stirshaken serve`` processes
(2 workers each) and must answer identically: every request error of the §8.2.4.6 table, the
signing and verification bodies, X-RequestID, /healthz, /metrics and /openapi.json.
"""

from __future__ import annotations

import asyncio

import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import orjson
import pytest

from stirshaken.serve.metrics import Metrics
from stirshaken.serve.rest import EXCEPTIONS, RestAPI

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("rest")
    pki = make_pki(d / "pki")
    x5u = FileServer(d / "pki")
    servers = {}
    try:
        for engine in ("aiohttp", "fast"):
            port = serve_port()
            servers[engine] = (ServeProcess(d, serve_toml(pki, x5u, http=port, workers=2, engine=engine), port, name=engine), port)
        yield {"pki": pki, "x5u": x5u, "servers": servers, "dir": d}
    finally:
        codes = {e: s.stop() for e, (s, _) in servers.items()}
        x5u.close()
    assert all(c == 0 for c in codes.values()), codes  # graceful SIGTERM exit


@pytest.fixture(params=["aiohttp", "fast"])
def base(request: pytest.FixtureRequest, env: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{env['servers'][request.param][1]}"


def sreq(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG},
                         "origid": "123e4567-e89b-12d3-a456-426614174000"}
    for k, v in over.items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    return {"signingRequest": r}


async def post(base: str, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    h = {"Content-Type": "application/json", "Accept": "application/json"}
    h.update(headers or {})
    data = body if isinstance(body, (bytes, str)) else orjson.dumps(body)
    async with aiohttp.ClientSession() as s:
        async with s.post(base + path, data=data, headers=h) as r:
            raw = await r.read()
            return r.status, (orjson.loads(raw) if raw else None), r.headers


async def sign(base: str, **over: Any) -> str:
    status, body, _ = await post(base, "/stir/v1/signing", sreq(**over))
    assert status == 200, body
    return body["signingResponse"]["identity"]


def exc_of(body: dict[str, Any]) -> dict[str, Any]:
    err = body["requestError"]
    (kind, exc), = err.items()
    assert kind == EXCEPTIONS[exc["messageId"]][2]
    assert exc["text"] == EXCEPTIONS[exc["messageId"]][1]
    return exc


# --- signing -----------------------------------------------------------------------------------


async def test_signing_ok_and_request_id(base: str, env: dict[str, Any]) -> None:
    rid = str(uuid.uuid4())
    status, body, headers = await post(base, "/stir/v1/signing", sreq(), {"X-RequestID": rid})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["X-RequestID"] == rid
    identity = body["signingResponse"]["identity"]
    assert identity.endswith(f";info=<{env['x5u'].url('sp-chain.pem')}>;alg=ES256;ppt=shaken")
    status, _, headers = await post(base, "/stir/v1/signing", sreq(origid=None))
    assert status == 200 and UUID_RE.fullmatch(headers["X-RequestID"])


async def test_signing_generates_origid_and_verifies(base: str) -> None:
    identity = await sign(base, origid=None)
    payload = orjson.loads(__import__("base64").urlsafe_b64decode(identity.split(".")[1] + "=="))
    assert UUID_RE.fullmatch(payload["origid"]) and payload["orig"] == {"tn": ORIG} and payload["attest"] == "A"
    status, body, _ = await post(base, "/stir/v1/verification", vreq(identity))
    assert status == 200 and body == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}


async def test_signing_tenant_by_prefix_and_header(base: str, env: dict[str, Any]) -> None:
    identity = await sign(base, orig={"tn": "19995550100"})
    assert env["x5u"].url("sp2-chain.pem") in identity  # FCC 24-120: that provider's own certificate
    status, body, _ = await post(base, "/stir/v1/signing", sreq(), {"X-Tenant": "5678"})
    assert status == 200 and "sp2-chain.pem" in body["signingResponse"]["identity"]
    status, body, _ = await post(base, "/stir/v1/signing", sreq(), {"X-Tenant": "nobody"})
    assert status == 400 and exc_of(body)["variables"] == ["X-Tenant", "nobody"]


@pytest.mark.parametrize("missing", ["attest", "dest", "iat", "orig"])
async def test_svc4001_missing(base: str, missing: str) -> None:
    status, body, _ = await post(base, "/stir/v1/signing", sreq(**{missing: None}))
    assert status == 400
    exc = exc_of(body)
    assert exc["messageId"] == "SVC4001" and exc["variables"] == [missing]


@pytest.mark.parametrize("field,value", [
    ("attest", "X"), ("attest", 1), ("iat", "now"), ("iat", -5), ("iat", 1000), ("origid", "not-a-uuid"),
    ("orig", {"tn": "12x"}), ("orig", "12155551212"), ("dest", {"tn": []}), ("dest", {"tn": "1215"}), ("ppt", "msec"),
])
async def test_svc4005_invalid(base: str, field: str, value: Any) -> None:
    status, body, _ = await post(base, "/stir/v1/signing", sreq(**{field: value}))
    assert status == 400
    exc = exc_of(body)
    assert exc["messageId"] == "SVC4005" and exc["variables"][0].split(".")[0] == field and len(exc["variables"]) == 2


async def test_stale_iat_is_rejected_not_restamped(base: str) -> None:
    status, body, _ = await post(base, "/stir/v1/signing", sreq(iat=int(time.time()) - 3600))
    assert status == 400 and exc_of(body)["messageId"] == "SVC4005" and "server clock" in exc_of(body)["variables"][1]


async def test_request_errors(base: str) -> None:
    cases = [
        ("/stir/v1/signing", b"", {}, 400, "SVC4000"),
        ("/stir/v1/signing", b"{}", {"Accept": "text/html"}, 406, "SVC4002"),
        ("/stir/v1/nothing", b"{}", {}, 404, "SVC4003"),
        ("/stir/v1/signing", b"x", {"Content-Type": "text/plain"}, 415, "SVC4004"),
        ("/stir/v1/signing", b'{"signingRequest": ', {}, 400, "SVC4006"),
        ("/stir/v1/signing", b"[1]", {}, 400, "SVC4006"),
        ("/stir/v1/signing", b'{"x":1}', {}, 400, "SVC4001"),
        ("/stir/v1/verification", b'{"verificationRequest":{}}', {}, 400, "SVC4001"),
    ]
    for path, body, headers, status, mid in cases:
        got, payload, h = await post(base, path, body, headers)
        assert (got, exc_of(payload)["messageId"]) == (status, mid), (path, body, headers)
        assert UUID_RE.fullmatch(h["X-RequestID"])
    got, payload, _ = await post(base, "/stir/v1/signing", b"{}", {"Accept": "text/html"})
    assert exc_of(payload)["variables"] == ["text/html"]
    got, payload, _ = await post(base, "/stir/v1/signing", b"x", {"Content-Type": "text/plain"})
    assert exc_of(payload)["variables"] == ["application/json"]


async def test_a_body_over_max_body_is_svc4006_with_its_record(base: str, env: dict[str, Any]) -> None:
    """Both engines: a body announced larger than [server] max_body (65,536 bytes) is not read and
    gets the ATIS-1000082 error (400 SVC4006), its X-RequestID and a per-call record (aiohttp's
    own answer was a bare 413 with neither)."""
    rid = str(uuid.uuid4())
    got, payload, h = await post(base, "/stir/v1/signing", b'{"signingRequest":"' + b"x" * 70000 + b'"}', {"X-RequestID": rid})
    assert (got, exc_of(payload)["messageId"], h["X-RequestID"]) == (400, "SVC4006", rid), payload
    assert "larger than 65536 bytes" in exc_of(payload)["variables"][0]
    log = next(p.log for p, port in env["servers"].values() if base.endswith(f":{port}"))
    deadline = time.monotonic() + 5
    while f'"call_id":"{rid}"' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(x for x in log.read_text().splitlines() if f'"call_id":"{rid}"' in x)
    assert '"logger":"stirshaken.records"' in line and '"status":400' in line and '"service":"signing"' in line, line


async def test_pol4050_method_not_allowed(base: str) -> None:
    async with aiohttp.ClientSession() as s:
        for method in ("GET", "PUT", "DELETE"):
            async with s.request(method, base + "/stir/v1/signing") as r:
                body = orjson.loads(await r.read())
                assert r.status == 405 and exc_of(body)["messageId"] == "POL4050" and r.headers["Allow"] == "POST"


def raw_http(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out:
                head, _, rest = out.partition(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length: *(\d+)", head)
                if m and len(rest) >= int(m.group(1)):
                    break
        return out


def test_svc4007_missing_content_length(env: dict[str, Any]) -> None:
    for engine, (_, port) in env["servers"].items():
        body = orjson.dumps(sreq())
        req = (b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + hex(len(body))[2:].encode() + b"\r\n" + body + b"\r\n0\r\n\r\n")
        out = raw_http(port, req)
        assert out.startswith(b"HTTP/1.1 411"), (engine, out[:200])
        assert b"SVC4007" in out


def raw_http_all(port: int, data: bytes) -> bytes:
    """Everything the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_pipelined_requests_answered_in_order(env: dict[str, Any]) -> None:
    """Keep-alive pipelining: one segment with three requests, three responses in request order
    (the last request asks to close, so the server flushes and closes after it)."""
    for engine, (_, port) in env["servers"].items():
        reqs = b""
        rids = [str(uuid.uuid4()) for _ in range(3)]
        for i, rid in enumerate(rids):
            body = orjson.dumps(sreq()) if i != 1 else b"{"
            reqs += (b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-RequestID: "
                     + rid.encode() + b"\r\nContent-Length: " + str(len(body)).encode()
                     + (b"\r\nConnection: close" if i == 2 else b"") + b"\r\n\r\n" + body)
        out = raw_http_all(port, reqs)
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
        echoed = re.findall(rb"(?i)x-requestid: *([0-9a-f-]+)", out)
        assert statuses == [b"200", b"400", b"200"], (engine, out[:300])
        assert [e.decode() for e in echoed] == rids, engine


def test_malformed_heads_get_400_and_close(env: dict[str, Any]) -> None:
    _, port = env["servers"]["fast"]
    body = orjson.dumps(sreq())
    for head in (b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nX-RequestID: a\nInjected: 1\r\n",  # bare LF
                 b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nX-RequestID: a\rb\r\n",  # bare CR
                 b"POST /stir/v1/signing HTTP/1.1\r\nHost : x\r\n",  # space before the colon
                 b"POST /stir/v1/signing HTTP/1.1\r\nno colon\r\n",
                 b"POST /stir/v1/signing\r\nHost: x\r\n",  # no version
                 b"POST /stir/v1/signing HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n"):
        req = head + b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        out = raw_http_all(port, req)
        assert out.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in out and b"Injected" not in out, (head, out)


def test_head_size_limit_does_not_depend_on_the_segments(env: dict[str, Any]) -> None:
    """Fuzz finding (make fuzz, http_head): a head over 16 KiB was answered 431 when it arrived
    in several segments but accepted when it arrived in one; now both are 431, and a head of
    exactly 16 KiB is accepted both ways."""
    _, port = env["servers"]["fast"]
    for size, status in ((16384, b"200"), (16385, b"431")):
        head = b"GET /healthz HTTP/1.1\r\nConnection: close\r\nX-Big: "
        req = head + b"a" * (size - len(head)) + b"\r\n\r\n"
        one = raw_http_all(port, req)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:  # the same head in pieces
            for i in range(0, len(req), 4000):
                s.sendall(req[i : i + 4000])
                time.sleep(0.01)  # pacing only: let the pieces arrive as separate reads
            many = b""
            while chunk := s.recv(65536):
                many += chunk
        assert one.startswith(b"HTTP/1.1 " + status) and many.startswith(b"HTTP/1.1 " + status), (size, one[:80], many[:80])


# --- verification ------------------------------------------------------------------------------


def vreq(identity: str, *, frm: str = ORIG, to: Any = None, when: int | None = None) -> dict[str, Any]:
    return {"verificationRequest": {"from": {"tn": frm}, "to": {"tn": to if to is not None else [DEST]},
                                    "time": when if when is not None else int(time.time()), "identity": identity}}


async def test_verification_failures_answer_200(base: str, env: dict[str, Any]) -> None:
    identity = await sign(base)
    v = "/stir/v1/verification"
    # E16 spoofed from
    status, body, _ = await post(base, v, vreq(identity, frm="12155550000"))
    r = body["verificationResponse"]
    assert status == 200 and r["reasoncode"] == 438 and r["reasontext"] == "Invalid Identity Header" and r["verstat"] == "No-TN-Validation"
    # E3 stale time
    status, body, _ = await post(base, v, vreq(identity, when=int(time.time()) - 300))
    r = body["verificationResponse"]
    assert (r["reasoncode"], r["reasontext"], r["verstat"]) == (403, "Stale Date", "No-TN-Validation")
    assert r["reasondesc"] == "Received 'time' value is not fresh."
    # E18 signature
    h, p, s = identity.split(";")[0].split(".")
    bad = identity.replace(s, s[:-4] + ("AAAA" if not s.endswith("AAAA") else "BBBB"))
    status, body, _ = await post(base, v, vreq(bad))
    r = body["verificationResponse"]
    assert r["reasoncode"] == 438 and r["verstat"] == "TN-Validation-Failed"
    # E4 compact form
    status, body, _ = await post(base, v, vreq(".." + s + identity[identity.index(";"):]))
    assert body["verificationResponse"]["reasoncode"] == 438
    # E6 missing info
    status, body, _ = await post(base, v, vreq(identity.split(";")[0]))
    assert body["verificationResponse"]["reasoncode"] == 436
    # E8 x5u not reachable
    other = identity.replace(env["x5u"].url("sp-chain.pem"), "http://127.0.0.1:9/none.pem")
    status, body, _ = await post(base, v, vreq(other))
    assert body["verificationResponse"]["reasoncode"] in (436, 438)


@pytest.mark.parametrize("field,value", [("from", "1215"), ("to", {"tn": []}), ("time", "now"), ("identity", 5), ("from", {"tn": "abc"})])
async def test_verification_invalid_values(base: str, field: str, value: Any) -> None:
    body = vreq("x.y.z;info=<http://a/b>")
    body["verificationRequest"][field] = value
    status, payload, _ = await post(base, "/stir/v1/verification", body)
    assert status == 400 and exc_of(payload)["messageId"] == "SVC4005"


# --- operations --------------------------------------------------------------------------------


async def test_health_metrics_openapi(base: str) -> None:
    await sign(base)
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/healthz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ok"
        await post(base, "/stir/v1/signing", {"signingRequest": {}})  # one request error (SVC4001)
        want = (re.compile(r'stirshaken_signed_total\{interface="rest",tenant="default",attest="A"\} \d+'),
                re.compile(re.escape('stirshaken_latency_seconds_bucket{op="rest_sign",le="+Inf"}')),
                re.compile("stirshaken_request_errors_total"))
        for _ in range(30):  # the worker that counted may not be the one answering: its snapshot comes within 1 s
            async with s.get(base + "/metrics") as r:
                text = await r.text()
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            if all(w.search(text) for w in want):
                break
            await asyncio.sleep(0.1)
        assert all(w.search(text) for w in want), text
        async with s.get(base + "/openapi.json") as r:
            doc = orjson.loads(await r.read())
            assert doc["openapi"].startswith("3.") and "/stir/v1/signing" in doc["paths"] and "/stir/v1/verification" in doc["paths"]
            assert set(doc["components"]["schemas"]["Exception"]["properties"]["messageId"]["enum"]) == set(EXCEPTIONS)
            # origid: mandatory in ATIS-1000082, optional here (generated), documented as an extension
            sreq_schema = doc["components"]["schemas"]["SigningRequestBody"]["properties"]["signingRequest"]
            assert "origid" not in sreq_schema["required"] and "x-stirshaken-extension" in sreq_schema["properties"]["origid"]
            assert "origid" in doc["info"]["description"]


@pytest.mark.parametrize("when", ["at once", "awaited"])
async def test_pol5000_internal_error(when: str) -> None:
    """A verifier that fails (at once, or in the I/O it awaits) is a POL5000, never a traceback."""
    class Boom:
        async def _later(self) -> Any:
            raise RuntimeError("boom")

        def begin(self, call: Any) -> Any:
            if when == "at once":
                raise RuntimeError("boom")
            return self._later()

    api = RestAPI(signing=None, verifier=Boom(), metrics=Metrics(), call_info=lambda **kw: kw)
    body = orjson.dumps(vreq("a.b.c;info=<http://x/y>"))
    r = api.handle("POST", "/stir/v1/verification", {"content-type": "application/json", "content-length": str(len(body))}, body, True)
    status, payload, headers = r if isinstance(r, tuple) else await r  # type: ignore[misc]
    assert status == 500 and orjson.loads(payload)["requestError"]["policyException"]["messageId"] == "POL5000"


def test_logs_are_json_and_never_hold_keys(env: dict[str, Any]) -> None:
    key_text = env["pki"].sp_key.read_text()
    key_body = "".join(key_text.strip().splitlines()[1:-1])
    for engine, (proc, _) in env["servers"].items():
        text = proc.log.read_text()
        assert key_body[:40] not in text
        lines = [l for l in text.splitlines() if l.strip()]
        assert lines and all(orjson.loads(l)["level"] for l in lines)


# --- issue 12: div requests (an extension of ATIS-1000082) and signing inputs -----------------

NEW = "12155559999"  # the target a call was diverted to


def dreq(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"ppt": "div", "dest": {"tn": [NEW]}, "div": {"tn": DEST}, "iat": int(time.time()), "orig": {"tn": ORIG}}
    for k, v in over.items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    return {"signingRequest": r}


def b64json(segment: str) -> Any:
    import base64

    return orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


async def test_div_request_signs_a_div_passport(base: str, env: dict[str, Any]) -> None:
    """signingRequest with ppt "div": a div PASSporT (RFC 8946 §3) that our verifier chains to the
    call's SHAKEN PASSporT; without it the SHAKEN dest names no target of the diverted call."""
    shaken = await sign(base)
    status, body, _ = await post(base, "/stir/v1/signing", dreq(orig={"tn": "+1 215 555 1212"}))
    assert status == 200, body
    div = body["signingResponse"]["identity"]
    assert div.endswith(f";info=<{env['x5u'].url('sp-chain.pem')}>;alg=ES256;ppt=div")
    h, p, _ = div.split(";")[0].split(".")
    assert b64json(h)["ppt"] == "div"
    c = b64json(p)
    assert set(c) == {"dest", "div", "iat", "orig"} and (c["orig"], c["dest"], c["div"]) == ({"tn": ORIG}, {"tn": [NEW]}, {"tn": DEST})
    v = "/stir/v1/verification"
    status, body, _ = await post(base, v, vreq(f"{shaken}, {div}", to=[NEW]))
    assert body == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}, body
    status, body, _ = await post(base, v, vreq(shaken, to=[NEW]))
    assert body["verificationResponse"]["verstat"] == "No-TN-Validation" and "'dest'" in body["verificationResponse"]["reasondesc"]
    # the tenant of the diverted-from number signs (FCC 24-120 / RFC 8946 §3: its own credential)
    status, body, _ = await post(base, "/stir/v1/signing", dreq(div={"tn": "19995550100"}))
    assert status == 200 and "sp2-chain.pem" in body["signingResponse"]["identity"]


@pytest.mark.parametrize("over,mid,variables", [
    ({"div": None}, "SVC4001", ["div"]),
    ({"div": {"uri": "sip:a@b"}}, "SVC4001", ["div.tn"]),
    ({"div": "12155551213"}, "SVC4005", ["div", "12155551213"]),
    ({"div": {"tn": "12x"}}, "SVC4005", ["div.tn", "'12x' is not a telephone number"]),
    ({"attest": "A"}, "SVC4005", ["attest", "not a claim of a div PASSporT (RFC 8946 §3; only SHAKEN PASSporTs carry it)"]),
    ({"origid": "123e4567-e89b-12d3-a456-426614174000"}, "SVC4005",
     ["origid", "not a claim of a div PASSporT (RFC 8946 §3; only SHAKEN PASSporTs carry it)"]),
    ({"dest": {"tn": [DEST]}}, "SVC4005", ["dest.tn", f"the new destination {DEST} equals the 'div' (previous destination): a retargeting"
                                                      " that leaves the destination unchanged produces no div PASSporT (RFC 8946 §3)"]),
])
async def test_div_request_errors(base: str, over: dict[str, Any], mid: str, variables: list[str]) -> None:
    status, body, _ = await post(base, "/stir/v1/signing", dreq(**over))
    assert status == 400 and exc_of(body)["messageId"] == mid and exc_of(body)["variables"] == variables, body


@pytest.mark.parametrize("over,variables", [
    ({"attest": "D"}, ["attest", "'attest' must be A, B or C, not 'D'"]),
    ({"origid": "not-a-uuid"}, ["origid", "'origid' must be a UUID (RFC 8588 §5), not 'not-a-uuid'"]),
    ({"orig": {"tn": "1215555121212121212"}}, ["orig.tn", "'1215555121212121212'... has 19 digits; a telephone number has at most 15"]),
    ({"dest": {"tn": ["12155551213", "bob"]}}, ["dest.tn", "'bob' is not a telephone number"]),
    ({"ppt": "rcd-nope"}, ["ppt", "'rcd-nope' is not supported (shaken; div and rcd as extensions, RFC 8946, RFC 9795)"]),
])
async def test_signing_inputs_refused_with_the_reason(base: str, over: dict[str, Any], variables: list[str]) -> None:
    """What our verifier would refuse is refused with SVC4005 naming the member and why."""
    status, body, _ = await post(base, "/stir/v1/signing", sreq(**over))
    assert status == 400 and exc_of(body)["messageId"] == "SVC4005" and exc_of(body)["variables"] == variables, body


async def test_national_number_signed_as_given_and_logged(base: str, env: dict[str, Any]) -> None:
    """No [signing] country_code: a 10-digit number is signed as given, with a warning in the log."""
    identity = await sign(base, orig={"tn": "(215) 555-0000"})
    assert b64json(identity.split(".")[1])["orig"] == {"tn": "2155550000"}
    logs = "".join(s.log.read_text() for s, _ in env["servers"].values())
    assert "numbers signed as given without a country code" in logs and "2155550000 looks like a national number" in logs


async def test_openapi_documents_the_div_extension(base: str) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/openapi.json") as r:
            doc = await r.json()
    props = doc["components"]["schemas"]["SigningRequestBody"]["properties"]["signingRequest"]["properties"]
    assert props["ppt"]["enum"] == ["shaken", "div", "rcd"] and "x-stirshaken-extension" in props["div"]
    assert all("x-stirshaken-extension" in props[m] for m in ("rcd", "rcdi", "crn"))
    assert "RFC 8946" in props["div"]["description"]


# --- issue 12: rcd requests (rich call data, RFC 9795; an extension of ATIS-1000082) -------------

JCARD = ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Example Bank"]]]


def rreq(**over: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"ppt": "rcd", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG},
                         "rcd": {"nam": "Example Bank", "jcd": JCARD}}
    for k, v in over.items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    return {"signingRequest": r}


async def test_rcd_request_signs_an_rcd_passport(base: str, env: dict[str, Any]) -> None:
    """signingRequest with ppt "rcd" (nam, jcd, icn with its digest): an rcd PASSporT whose rcdi
    holds the server-computed /jcd digest and the client's /icn one; a verifier that fetches the
    icon passes SHAKEN and rcd, and fails the rcd PASSporT alone once the served icon changes."""
    from stirshaken.core.rcd import integrity, jcs
    from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig

    logo = b"\x89PNG\r\n\x1a\n" + b"rest" * 100
    path = env["dir"] / "pki" / "rest-logo.png"
    path.write_bytes(logo)
    icn = env["x5u"].url("rest-logo.png")
    shaken = await sign(base)
    status, body, _ = await post(base, "/stir/v1/signing", rreq(rcd={"nam": "Example Bank", "jcd": JCARD, "icn": icn},
                                                                 rcdi={"/icn": integrity(logo)}, crn="Statement ready"))
    assert status == 200, body
    rcd = body["signingResponse"]["identity"]
    assert rcd.endswith(f";info=<{env['x5u'].url('sp-chain.pem')}>;alg=ES256;ppt=rcd")
    h, p, _ = rcd.split(";")[0].split(".")
    assert b64json(h)["ppt"] == "rcd"
    c = b64json(p)
    assert set(c) == {"crn", "dest", "iat", "orig", "rcd", "rcdi"}
    assert c["rcdi"] == {"/icn": integrity(logo), "/jcd": integrity(jcs(JCARD))}
    status, body, _ = await post(base, "/stir/v1/verification", vreq(f"{shaken}, {rcd}"))
    assert body == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}, body
    cfg = VerifierConfig(trust_anchors=[str(env["pki"].root)], allow_http_x5u=True, allow_private_x5u=True)
    v = Verifier(cfg)
    try:
        r = await v.averify(CallInfo(identities=[shaken, rcd], from_=ORIG, to=DEST))
        assert r.ok and [x.ok for x in r.passports] == [True, True] and r.rich_call_data[0]["ok"], r.to_json()
        path.write_bytes(logo + b"!")
        r = await v.averify(CallInfo(identities=[shaken, rcd], from_=ORIG, to=DEST))
        assert r.ok and r.attest == "A" and [x.ok for x in r.passports] == [True, False]
        assert r.passports[1].error.description == f"rcdi /icn digest does not match the content at {icn} (RFC 9795)"
    finally:
        await v.aclose()
        path.write_bytes(logo)


@pytest.mark.parametrize("over,mid,variables", [
    ({"rcd": None}, "SVC4001", ["rcd"]),
    ({"rcd": "Example Bank"}, "SVC4005", ["rcd", "not a JSON object"]),
    ({"rcd": {}}, "SVC4005", ["rcd", "rich call data needs at least one of nam, jcd, jcl, icn (RFC 9795)"]),
    ({"rcd": {"nam": 5}}, "SVC4005", ["rcd.nam", "not a string"]),
    ({"rcd": {"logo": "x"}}, "SVC4005", ["rcd.logo", "not a member this signer writes (nam, jcd, jcl, icn)"]),
    ({"rcd": {"icn": "https://rcd.example.net/logo.png"}}, "SVC4005",
     ["rcd", "icn needs the digest of the content it refers to (RFC 9795)"]),
    ({"rcd": {"icn": "ftp://rcd.example.net/logo.png"}, "rcdi": {"/icn": "sha256-" + "A" * 43}}, "SVC4005",
     ["rcd.icn", "rcd.icn ftp://rcd.example.net/logo.png refused: URL scheme 'ftp' is not http(s)"]),
    ({"rcdi": {"/jcd": "sha256-x"}}, "SVC4005", ["rcdi./jcd", "computed by the signer from rcd.jcd; leave it out"]),
    ({"rcd": {"jcd": [0.5]}}, "SVC4005", ["rcd", "jcd/0: a fractional number is not canonicalized here (RFC 8785)"]),
    ({"attest": "A"}, "SVC4005", ["attest", "not a claim of an rcd PASSporT (RFC 9795; the call's SHAKEN PASSporT carries it)"]),
])
async def test_rcd_request_errors(base: str, over: dict[str, Any], mid: str, variables: list[str]) -> None:
    status, body, _ = await post(base, "/stir/v1/signing", rreq(**over))
    assert status == 400 and exc_of(body)["messageId"] == mid and exc_of(body)["variables"] == variables, body
