"""Issue 17: ``stirshaken serve`` under load, faults and hostile input (real serve on loopback).

Each test holds one finding of the attack campaign with its right value; the short stress run
(bench/stress.py --short) is the last test."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from stirshaken.core import passport as P
from stirshaken.core.errors import InvalidIdentityError
from stirshaken.core.tn import MAX_TN_LENGTH, TNError, canonicalize_tn
from stirshaken.serve.limits import ConnectionLimits

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("hardening")
    pki = make_pki(d / "pki")
    x5u = FileServer(pki.dir)
    http, s1, s2 = serve_port(), serve_port(), serve_port()
    p = ServeProcess(d, serve_toml(pki, x5u, http=http, sip_signing=s1, sip_verification=s2), http)
    try:
        yield {"http": http, "sign": s1, "verify": s2, "proc": p, "pki": pki, "x5u": x5u, "dir": d}
    finally:
        p.stop()
        x5u.close()


def exchange(port: int, data: bytes, timeout: float = 5.0, sip_answers: int = 0) -> bytes:
    """Send ``data`` on a new TCP connection and read the answer: until ``sip_answers`` SIP
    answers have arrived (when given), else until the first complete answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
            if sip_answers:
                if got.count(b"SIP/2.0 ") >= sip_answers and got.endswith(b"\r\n\r\n"):
                    break
            elif b"\r\n\r\n" in got and (b"Content-Length: 0\r\n" in got or got.rstrip().endswith(b"}")):
                break
        return got


def post(port: int, path: str, doc: Any) -> tuple[int, Any]:
    body = json.dumps(doc).encode()
    raw = exchange(port, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest) if rest else None


def sign_doc(orig: Any = ORIG, attest: Any = "A") -> dict[str, Any]:
    return {"signingRequest": {"attest": attest, "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": orig}}}


def sip_invite(branch: str, transport: str = "TCP") -> bytes:
    return (f"INVITE sip:{DEST}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:5090;branch=z9hG4bK{branch}\r\n"
            f"From: <sip:{ORIG}@127.0.0.1>;tag=a\r\nTo: <sip:{DEST}@127.0.0.1>\r\nCall-ID: {branch}\r\nCSeq: 1 INVITE\r\n"
            f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


# --- item 4: one bad message costs one message ------------------------------------------------------


def test_unicode_content_length_is_400(served: dict[str, Any]) -> None:
    r = exchange(served["http"], "POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Length: ²\r\n\r\nx".encode("utf-8"))
    assert r.startswith(b"HTTP/1.1 400 ")


def test_nul_in_header_value_is_400(served: dict[str, Any]) -> None:
    r = exchange(served["http"], b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize("attest", [5, ["A"], {"a": 1}, None])
def test_non_string_attest_is_svc4005(served: dict[str, Any], attest: Any) -> None:
    status, doc = post(served["http"], "/stir/v1/signing", sign_doc(attest=attest))
    assert status == 400
    assert doc["requestError"]["serviceException"]["messageId"] == "SVC4005"
    assert doc["requestError"]["serviceException"]["variables"][0] == "attest"


def test_long_tn_is_refused_on_every_path(served: dict[str, Any]) -> None:
    status, doc = post(served["http"], "/stir/v1/signing", sign_doc(orig="1" * 60000))
    assert status == 400 and doc["requestError"]["serviceException"]["variables"][0] == "orig.tn"
    status, _ = post(served["http"], "/stir/v1/signing", sign_doc(orig="1" * MAX_TN_LENGTH))
    assert status == 200
    with pytest.raises(TNError):
        canonicalize_tn("+1 " + "2" * 15)
    # SIP: a 16-digit caller is not a TN: forwarded unsigned
    inv = sip_invite("longtn").replace(f"sip:{ORIG}@".encode(), b"sip:" + b"1" * 16 + b"@")
    r = exchange(served["sign"], inv)
    assert r.startswith(b"SIP/2.0 302") and b"\r\nIdentity:" not in r and b"not-signed" in r


def test_crit_naming_unknown_extension_is_438(served: dict[str, Any]) -> None:
    from stirshaken.core.b64 import b64url_encode_bytes
    from stirshaken.core.keys import load_private_key

    key = load_private_key(served["pki"].sp_key)
    x5u = served["x5u"].url("sp-chain.pem")
    hdr = {"alg": "ES256", "crit": ["bogus"], "ppt": "shaken", "typ": "passport", "x5u": x5u}
    claims = {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}, "origid": P.new_origid()}
    signing_input = (b64url_encode_bytes(json.dumps(hdr, separators=(",", ":")).encode()) + b"."
                     + b64url_encode_bytes(json.dumps(claims, separators=(",", ":")).encode()))
    sig = P.es256_sign(key, signing_input)
    token = (signing_input + b"." + b64url_encode_bytes(sig)).decode()
    with pytest.raises(InvalidIdentityError) as ei:
        P.check_header(P.parse_jws(token))
    assert ei.value.sip_code == 438
    status, doc = post(served["http"], "/stir/v1/verification", {"verificationRequest": {
        "from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": int(time.time()), "identity": f"{token};info=<{x5u}>;alg=ES256;ppt=shaken"}})
    assert status == 200 and doc["verificationResponse"]["reasoncode"] == 438, doc
    assert "crit" in doc["verificationResponse"]["reasondesc"], doc


def test_sip_tcp_bad_message_between_two_good_ones(served: dict[str, Any]) -> None:
    bad = sip_invite("bad").replace(b"branch=z9hG4bKbad", b'branch=z9hG4bKbad;x="a,b')
    r = exchange(served["sign"], sip_invite("g1") + bad + sip_invite("g2"), timeout=5, sip_answers=3)
    assert r.count(b"SIP/2.0 302") == 2 and r.count(b"SIP/2.0 400") == 1
    # good + unframeable: the good one answered, then 400 (the stream is lost)
    r = exchange(served["sign"], sip_invite("g3") + sip_invite("cl").replace(b"Content-Length: 0", b"Content-Length: x"), timeout=5, sip_answers=2)
    assert r.count(b"SIP/2.0 302") == 1 and b"SIP/2.0 400" in r


def test_sip_udp_malformed_via_gets_400(served: dict[str, Any]) -> None:
    bad = sip_invite("badudp", "UDP").replace(b"branch=z9hG4bKbadudp", b'branch=z9hG4bKbadudp;x="a,b')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(bad, ("127.0.0.1", served["sign"]))
        assert s.recvfrom(65536)[0].startswith(b"SIP/2.0 400 Bad Request (Unterminated quoted string")
    assert b"error handling SIP message" not in served["proc"].log.read_bytes()


def test_sip_answer_never_much_larger_than_its_udp_request() -> None:
    """The cap of an answer (SipService._reply replaces one above it: tests/test_sip_service.py,
    tests/test_serve_records.py)."""
    from stirshaken.serve.sip import UDP_ANSWER_FLOOR, answer_cap

    assert answer_cap(300, "UDP", 65536) == UDP_ANSWER_FLOOR
    assert answer_cap(10000, "UDP", 65536) == 20000
    assert answer_cap(60000, "UDP", 65536) == 65507
    assert answer_cap(60000, "TCP", 65536) == 65536


# --- items 1 and 2: memory and time per connection -------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_pipelining_client_that_does_not_read_stays_bounded(served: dict[str, Any]) -> None:
    pid = served["proc"].proc.pid
    body = json.dumps(sign_doc()).encode()
    one = (b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
           + str(len(body)).encode() + b"\r\n\r\n" + body)
    before = rss_mb(pid)
    peak = before
    sent = 0
    with socket.create_connection(("127.0.0.1", served["http"])) as s:
        s.settimeout(0.3)
        end = time.monotonic() + 4
        while time.monotonic() < end:
            try:
                s.sendall(one * 200)
                sent += len(one) * 200
            except OSError:
                time.sleep(0.05)
            peak = max(peak, rss_mb(pid))
        with socket.create_connection(("127.0.0.1", served["http"]), timeout=2) as h:
            h.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert h.recv(4096).startswith(b"HTTP/1.1 200")
    assert peak - before < 48, f"RSS {before:.0f} -> {peak:.0f} MiB"
    assert sent < 64 * 2**20  # the server stopped reading (kernel buffers only)


def test_slowloris_closed_after_header_timeout_while_health_answers(served: dict[str, Any]) -> None:
    limit = ConnectionLimits().header_timeout
    conns = [socket.create_connection(("127.0.0.1", served["http"]), timeout=2) for _ in range(60)]
    for c in conns:
        c.sendall(b"POST /stir/v1/signing HTTP/1.1\r\n")
    t0 = time.monotonic()
    answered = 0
    while time.monotonic() - t0 < limit + 2.5:
        for c in conns:
            try:
                c.send(b"X")
            except OSError:
                pass
        with socket.create_connection(("127.0.0.1", served["http"]), timeout=2, source_address=("127.0.0.2", 0)) as h:
            h.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answered += h.recv(4096).startswith(b"HTTP/1.1 200")
        time.sleep(1)
    closed = 0
    for c in conns:
        c.settimeout(1)
        try:
            data = c.recv(4096)
            closed += data.startswith(b"HTTP/1.1 408") or data == b""
        except OSError:
            closed += 1
        c.close()
    assert closed == len(conns)
    assert answered >= int(limit + 2)


def test_per_source_cap() -> None:
    import asyncio

    from stirshaken.serve.limits import ConnectionGuard

    g = ConnectionGuard(ConnectionLimits(max_connections_per_source=2), "t")
    assert g.admit("10.0.0.1") and g.admit("10.0.0.1") and not g.admit("10.0.0.1") and g.admit("10.0.0.2")
    g.release("10.0.0.1")
    assert g.admit("10.0.0.1")
    assert g.counts == {"max_connections_per_source": 1}
    with pytest.raises(Exception):
        ConnectionLimits(bogus=1)  # type: ignore[call-arg]
    with pytest.raises(Exception):
        ConnectionLimits().header_timeout = 1  # type: ignore[misc]
    asyncio.run(asyncio.sleep(0))


# --- item 5: supervisor ------------------------------------------------------------------------------


def test_second_serve_on_the_same_ports_is_refused(served: dict[str, Any], tmp_path: Path) -> None:
    toml = serve_toml(served["pki"], served["x5u"], http=served["http"], sip_signing=served["sign"],
                      sip_verification=served["verify"], workers=2)
    p = ServeProcess(tmp_path, toml, None, name="second")
    code = p.proc.wait(30)
    p.stop()
    out = p.log.read_text().strip().splitlines()
    assert code == 2
    assert out[-1] == f"error: cannot listen on 127.0.0.1:{served['http']} (TCP): address already in use"


# --- the short stress run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_stress_run() -> None:
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "stress.py"), "--short"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert r.stdout.count("\nok ") + r.stdout.startswith("ok ") == 6, r.stdout
