"""SIP interface (sipservice.py): the 302 redirect model of the STI-AS and STI-VS.

In-process tests drive :class:`SipService` with bytes (RFC 3261 response construction, the
transaction cache, methods, policy); a hypothesis fuzz test throws garbage and mutated INVITEs
at it; a UDP/TCP test runs the real server and sends garbage over the wire before checking it
still answers.  The sipp tests (``interop``) use the Debian sip-tester against a running
``stirshaken serve``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import socket
import subprocess
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stirshaken.core import sip
from stirshaken.serve.config import parse_config
from stirshaken.serve.metrics import Metrics
from stirshaken.serve.signing import SigningService
from stirshaken.serve.sip import SipService, TransactionCache
from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml

PEERS = Path(__file__).resolve().parent / "peers"  # test PKI script, sipp scenarios, Kamailio configs
X5U = "https://cr.example.net/sp-chain.pem"


def invite(*, orig: str = ORIG, dest: str = DEST, branch: str = "z9hG4bK-1", extra: str = "", method: str = "INVITE",
           ruri: str | None = None, cseq: int = 1) -> bytes:
    ruri = ruri or f"sip:{dest}@127.0.0.1:5060"
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch={branch}\r\n"
            f"From: <sip:{orig}@127.0.0.1:5090>;tag=abc\r\n"
            f"To: <sip:{dest}@127.0.0.1:5060>\r\n"
            f"Call-ID: call-{branch}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Max-Forwards: 70\r\n{extra}"
            f"Content-Length: 0\r\n\r\n").encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("sippki"))


def services(pki: Any, verification: str = "", signing: str = "") -> tuple[SipService, SipService, Verifier]:
    import tomllib

    from stirshaken.core.certificates import load_certificates

    c = parse_config(tomllib.loads(f"""
[server]
sip_signing = "127.0.0.1:5060"
sip_verification = "127.0.0.1:5062"
[signing]
key = "sp.key"
x5u = "{X5U}"
{signing}
[[signing.customer]]
name = "pbx"
sources = ["127.0.0.0/8"]
tns = ["1215"]
[verification]
trust_anchors = ["root.pem"]
{verification}
"""), pki.dir)
    m = Metrics()
    signer = SipService("signing", metrics=m, signing=SigningService(c.signing))
    verifier = Verifier(VerifierConfig(trust_anchors=[str(pki.root)], replay_detection=c.verification.replay_detection), static_chains={X5U: load_certificates(pki.sp_chain.read_bytes())})
    vs = SipService("verification", metrics=m, verifier=verifier, vcfg=c.verification, call_info=CallInfo)
    return signer, vs, verifier


def resp(data: bytes | None) -> sip.SipResponse:
    assert data
    r = sip.parse_message(data)
    assert isinstance(r, sip.SipResponse)
    return r


async def answer(svc: SipService, data: bytes, peer: tuple[str, int] = ("127.0.0.1", 5090), transport: str = "UDP") -> bytes | None:
    r = svc.handle(data, peer, transport)
    if r is None or isinstance(r, bytes):
        return r
    return await r


def claims(identity: str) -> dict[str, Any]:
    p = identity.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.one_of(
    st.binary(max_size=300),
    st.builds(lambda b, extra: invite(method="ACK", branch=f"z9hG4bK-{b}", extra=extra)[4:],
              st.text("abcdef0123456789", min_size=1, max_size=12),
              st.sampled_from(["", "Content-Length: zz\r\n", "Via: SIP/2.0/UDP \"x,\r\n", "Identity: x\r\n"])),
))
def test_ack_fast_path_answers_as_the_general_branch(pki: Any, tail: bytes) -> None:
    """SipService.handle drops anything that starts with "ACK " unparsed; the general branch (full
    parse, then per method) must give the same answer: none (RFC 3261 §17.2.1, §8.2.6)."""
    signer, vs, _ = _ACK_SERVICES.setdefault("s", services(pki))
    data = b"ACK " + tail
    for svc in (signer, vs):
        assert svc.handle(data, ("127.0.0.1", 5090), "UDP") is None
        assert svc.handle_general(data, ("127.0.0.1", 5090), "UDP") is None


_ACK_SERVICES: dict[str, Any] = {}


async def test_signing_302(pki: Any) -> None:
    signer, _, v = services(pki)
    req = invite()
    first = await answer(signer, req)
    r = resp(first)
    q = sip.parse_message(req)
    assert (r.status, r.reason) == (302, "Moved Temporarily")
    assert r.headers["Contact"] == f"<{q.request_uri}>"
    assert r.headers.get_all("Via") == q.headers.get_all("Via") and r.call_id == q.call_id and r.cseq == (1, "INVITE")
    assert r.to_addr.tag and r.from_addr.tag == "abc"
    ident = r.headers["Identity"]
    assert ident.endswith(f";info=<{X5U}>;alg=ES256;ppt=shaken")
    c = claims(ident)
    assert c["orig"] == {"tn": ORIG} and c["dest"] == {"tn": [DEST]} and c["attest"] == "A"  # customer source + own TN
    # retransmission: the very same bytes from the transaction cache
    assert await answer(signer, req) == first
    assert signer.cache.hits == 1
    # policy: foreign number from the customer -> B; unknown source -> C; header overrides
    assert claims(resp(await answer(signer, invite(orig="13105550000", branch="z9hG4bK-2"))).headers["Identity"])["attest"] == "B"
    assert claims(resp(await answer(signer, invite(branch="z9hG4bK-3"), ("192.0.2.1", 5090))).headers["Identity"])["attest"] == "C"
    r = resp(await answer(signer, invite(branch="z9hG4bK-4", extra="X-Attest: B\r\nP-Asserted-Identity: <tel:+1-215-555-0000>\r\n")))
    c = claims(r.headers["Identity"])
    assert c["attest"] == "B" and c["orig"] == {"tn": "12155550000"}  # PAI preferred (RFC 8224 §4.1, use_pai)
    await v.aclose()


async def test_verification_302_and_reject(pki: Any) -> None:
    signer, vs, v = services(pki)
    ident = resp(await answer(signer, invite(branch="z9hG4bK-s1"))).headers["Identity"]
    r = resp(await answer(vs, invite(branch="z9hG4bK-v1", extra=f"Identity: {ident}\r\n")))
    assert r.status == 302
    assert "verstat=TN-Validation-Passed" in r.headers["P-Asserted-Identity"] and ";tag=" not in r.headers["P-Asserted-Identity"]
    assert "verstat=TN-Validation-Passed" in r.headers["From"] and r.from_addr.tag == "abc"
    assert r.headers["X-Attestation"] == "A" and "Reason" not in r.headers
    # spoofed caller: 302 with verstat failure and an RFC 9410 Reason
    r = resp(await answer(vs, invite(orig="12155550000", branch="z9hG4bK-v2", extra=f"Identity: {ident}\r\n")))
    assert r.status == 302 and "verstat=No-TN-Validation" in r.headers["P-Asserted-Identity"]
    assert r.headers["Reason"].startswith("STIR ;cause=438")
    assert "orig" in r.headers["X-Verification-Reason"] and "match" in r.headers["X-Verification-Reason"]  # the specific cause
    # no Identity: 302 No-TN-Validation
    r = resp(await answer(vs, invite(branch="z9hG4bK-v3")))
    assert r.status == 302 and "verstat=No-TN-Validation" in r.headers["P-Asserted-Identity"]
    await v.aclose()
    _, vs, v = services(pki, "reject_codes = [438]\nrequire_identity = true\n")
    r = resp(await answer(vs, invite(orig="12155550000", branch="z9hG4bK-v4", extra=f"Identity: {ident}\r\n")))
    assert (r.status, r.reason) == (438, "Invalid Identity Header") and "cause=438" in r.headers["Reason"]
    assert "orig" in r.headers["X-Verification-Reason"]
    r = resp(await answer(vs, invite(branch="z9hG4bK-v5")))
    assert (r.status, r.reason) == (428, "Use Identity Header")
    await v.aclose()


async def test_methods(pki: Any) -> None:
    signer, _, v = services(pki)
    assert resp(await answer(signer, invite(method="OPTIONS", branch="z9hG4bK-o"))).status == 200
    assert await answer(signer, invite(method="ACK", branch="z9hG4bK-1")) is None
    r = resp(await answer(signer, invite(method="REGISTER", branch="z9hG4bK-r")))
    assert r.status == 405 and r.headers["Allow"] == "INVITE, ACK, CANCEL, OPTIONS"
    assert resp(await answer(signer, invite(method="FOO", branch="z9hG4bK-f"))).status == 501
    assert resp(await answer(signer, invite(method="BYE", branch="z9hG4bK-b"))).status == 481
    assert resp(await answer(signer, invite(method="CANCEL", branch="z9hG4bK-none"))).status == 481
    await answer(signer, invite(branch="z9hG4bK-c"))
    assert resp(await answer(signer, invite(method="CANCEL", branch="z9hG4bK-c"))).status == 200
    assert resp(await answer(signer, invite(branch="z9hG4bK-u", ruri="mailto:a@b"))).status == 416
    assert resp(await answer(signer, invite(branch="z9hG4bK-mf").replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))).status == 483
    assert resp(await answer(signer, invite(branch="z9hG4bK-rq", extra="Require: 100rel\r\n"))).status == 420
    # not a TN: forwarded unsigned
    r = resp(await answer(signer, invite(orig="alice", branch="z9hG4bK-n", ruri="sip:bob@example.com")))
    assert r.status == 302 and "Identity" not in r.headers
    # received/rport (RFC 3261 §18.2.1, RFC 3581)
    r = resp(await answer(signer, invite(branch="z9hG4bK-rp").replace(b";branch", b";rport;branch"), ("10.1.2.3", 40000)))
    via = r.headers.get_all("Via")[0]
    assert "rport=40000" in via and "received=10.1.2.3" in via
    await v.aclose()


@pytest.mark.parametrize("mutate, problem", [
    (lambda m: m.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "CSeq method 'BYE' does not match request method 'INVITE'"),
    (lambda m: m.replace(b"Content-Length: 0", b"Content-Length: zz"), "Malformed Content-Length 'zz'"),
    (lambda m: m.replace(b"Max-Forwards: 70", b"Max Forwards: 70"), "Invalid header name 'Max Forwards'"),
    (lambda m: m.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "Header line without ':'"),
    (lambda m: m.replace(b"To: <sip:12155551213@127.0.0.1:5060>", b"To: <sip:12155551213@127.0.0.1:5060"), "Malformed"),
    (lambda m: m.replace(b"Content-Length: 0", b"Content-Length: 10"), "Body shorter than Content-Length"),
    (lambda m: m.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nContent-Length: 0\r\n"), "Multiple Content-Length"),
])
async def test_unparsable_request_gets_400_naming_the_problem(pki: Any, mutate: Any, problem: str) -> None:
    """RFC 3261 §8.2 / §21.4.1: a request with Via, From, To, Call-ID and CSeq is answered 400 whose
    reason phrase says what is wrong; the fields are copied as received, To gets a tag."""
    signer, _, v = services(pki)
    bad = mutate(invite(branch="z9hG4bK-bad").replace(b";branch", b";rport;branch"))
    with pytest.raises(sip.SipParseError):
        sip.parse_message(bad)
    raw = await answer(signer, bad, ("10.9.8.7", 4444))
    assert raw is not None and raw.startswith(b"SIP/2.0 400 Bad Request (") and raw.endswith(b"\r\n\r\n"), raw
    status_line, _, rest = raw.partition(b"\r\n")
    assert problem.encode() in status_line, status_line
    fields = dict(line.split(": ", 1) for line in rest.decode().split("\r\n") if line)
    assert fields["Via"] == "SIP/2.0/UDP 127.0.0.1:5090;rport=4444;branch=z9hG4bK-bad;received=10.9.8.7"
    assert fields["From"] == "<sip:12155551212@127.0.0.1:5090>;tag=abc" and fields["Call-ID"] == "call-z9hG4bK-bad"
    assert ";tag=" in fields["To"] and fields["Content-Length"] == "0"
    assert fields["CSeq"] == bad.split(b"CSeq: ")[1].split(b"\r\n")[0].decode()
    assert signer.metrics.counters["stirshaken_sip_parse_errors_total"][(("service", "signing"),)] == 1
    assert signer.metrics.counters["stirshaken_sip_responses_total"][(("service", "signing"), ("status", "400"))] == 1
    await v.aclose()


@pytest.mark.parametrize("data", [
    invite(branch="z9hG4bK-x").replace(b"Call-ID: call-z9hG4bK-x\r\n", b"").replace(b"Max-Forwards: 70", b"Max Forwards: 70"),
    invite(branch="z9hG4bK-x").replace(b"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-x\r\n", b""),
    invite(branch="z9hG4bK-x").replace(b"CSeq: 1 INVITE\r\n", b""),
    invite(method="ACK", branch="z9hG4bK-x").replace(b"Content-Length: 0", b"Content-Length: zz"),  # never answer an ACK
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\nFrom: <sip:a@h>\r\nTo: <sip:b@h>\r\nCall-ID: 1\r\nCSeq: 1 FOO BAR\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage",
    b"hello world\r\n\r\n",
    invite(branch="z9hG4bK-x").replace(b"INVITE sip:", b"INVITE\x01sip:", 1),
])
async def test_unanswerable_garbage_is_dropped_and_counted(pki: Any, data: bytes) -> None:
    signer, _, v = services(pki)
    assert await answer(signer, data) is None
    if data.startswith(b"ACK "):  # dropped unparsed by the ACK fast path: counted as an ACK (SipService.handle)
        assert signer.metrics.counters["stirshaken_sip_requests_total"][(("service", "signing"), ("method", "ACK"))] == 1
        assert signer.handle_general(data, ("127.0.0.1", 5090), "UDP") is None
    assert signer.metrics.counters["stirshaken_sip_parse_errors_total"][(("service", "signing"),)] == 1
    await v.aclose()


class _Records:
    """What SipService writes to serve.records.Records, kept."""

    def __init__(self) -> None:
        self.added: list[dict[str, Any]] = []

    def add(self, rec: dict[str, Any]) -> None:
        self.added.append(rec)


async def test_an_answer_above_its_cap_is_replaced_and_recorded_as_sent(pki: Any) -> None:
    """Over TCP an answer may be as large as ``sip_max_message`` (here its least, 1024 bytes): a
    302 above it is replaced by ``500`` naming the problem (no 513: the request came over TCP
    already), or by nothing when even that does not fit; either way the INVITE's one record says
    what was sent and why, the 302 is neither counted nor recorded, and a retransmission gets the
    same answer from the transaction cache without a second record."""
    signer, _, v = services(pki)
    signer.max_message = 1024
    signer.records = rec = _Records()
    def padded(branch: str, size: int) -> bytes:  # an INVITE of about ``size`` bytes, with Via fields an answer copies
        req, i = invite(branch=branch), 0
        while len(req) < size:
            req = req.replace(b"Max-Forwards", f"Via: SIP/2.0/TCP 192.0.2.{i}:5060;branch=z9hG4bK-hop{i}\r\n".encode() + b"Max-Forwards")
            i += 1
        return req

    req = padded("z9hG4bK-cap1", 700)
    r = await answer(signer, req, transport="TCP")
    assert r is not None and len(r) <= 1024
    assert re.match(rb"SIP/2\.0 500 Server Internal Error \(Answer of \d+ bytes exceeds 1024 bytes over TCP\)\r\n", r), r
    assert resp(r).headers.get_all("Via") == sip.parse_message(req).headers.get_all("Via") and resp(r).call_id == "call-z9hG4bK-cap1"
    assert await answer(signer, req, transport="TCP") == r  # a retransmission
    assert len(rec.added) == 1 and rec.added[0]["call_id"] == "call-z9hG4bK-cap1" and rec.added[0]["status"] == 500, rec.added
    assert re.fullmatch(r"answer of \d+ bytes exceeds 1024 bytes over TCP: replaced by 500 Server Internal Error", rec.added[0]["reason"])
    # even the 500 is above the cap: no answer, and the record says so
    req = padded("z9hG4bK-cap2", 970)
    assert len(req) <= 1024 and await answer(signer, req, transport="TCP") is None
    assert rec.added[1]["status"] is None and rec.added[1]["reason"].endswith(": not answered (even a 500 does not fit)"), rec.added
    counters = signer.metrics.counters
    assert counters["stirshaken_sip_oversize_answers_total"][(("service", "signing"),)] == 2
    assert counters["stirshaken_sip_responses_total"].get((("service", "signing"), ("status", "500"))) == 1
    assert (("service", "signing"), ("status", "302")) not in counters["stirshaken_sip_responses_total"]
    assert not any(k[1][1] != "-" for k in counters.get("stirshaken_signed_total", {})), counters.get("stirshaken_signed_total")
    await v.aclose()


def test_transaction_cache_bounds() -> None:
    c = TransactionCache(ttl=1.0, size=3)
    for i in range(5):
        c.put(i, b"x", 0.0)
    assert len(c) == 3 and c.get(0, 0.0) is None and c.get(4, 0.5) == b"x"
    assert c.get(4, 2.0) is None  # expired


class _FakeDatagramTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Any]] = []

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def is_closing(self) -> bool:
        return False


async def test_udp_responses_sent_together_after_the_loop_iteration(pki: Any) -> None:
    """UDP answers are queued and sent once the loop has handled the ready datagrams (one flush
    per iteration, at most _MAX_BATCH queued), each to its own peer; a retransmission inside
    the same batch gets the same bytes from the transaction cache."""
    from stirshaken.serve.batching import MAX_BATCH as _MAX_BATCH
    from stirshaken.serve.sip import _UDP

    signer, _, _ = services(pki)
    proto = _UDP(signer)
    tr = _FakeDatagramTransport()
    proto.connection_made(tr)
    peers = [("127.0.0.1", 6000 + i) for i in range(3)]
    for i, peer in enumerate(peers):
        proto.datagram_received(invite(branch=f"z9hG4bK-batch{i}"), peer)
    proto.datagram_received(invite(branch="z9hG4bK-batch0"), peers[0])  # retransmission
    proto.datagram_received(invite(method="ACK", branch="z9hG4bK-batch1"), peers[1])  # absorbed
    assert tr.sent == []  # nothing before the end of the iteration
    await asyncio.sleep(0)
    assert [a for _, a in tr.sent] == peers + [peers[0]]
    assert all(resp(d).status == 302 for d, _ in tr.sent)
    assert tr.sent[3][0] == tr.sent[0][0]
    tr.sent.clear()
    for i in range(_MAX_BATCH + 1):  # a full batch is sent without waiting
        proto.datagram_received(invite(method="OPTIONS", branch=f"z9hG4bK-full{i}"), peers[2])
    assert len(tr.sent) == _MAX_BATCH
    await asyncio.sleep(0)
    assert len(tr.sent) == _MAX_BATCH + 1
    proto.datagram_received(invite(method="OPTIONS", branch="z9hG4bK-lost"), peers[2])
    proto.connection_lost(None)  # queued answers die with the socket, without raising
    await asyncio.sleep(0)
    assert len(tr.sent) == _MAX_BATCH + 1


_invite_template = invite()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=600),
    st.builds(lambda i, b: _invite_template[:i] + b + _invite_template[i + len(b):],
              st.integers(0, len(_invite_template)), st.binary(min_size=1, max_size=12)),
    st.builds(lambda i: _invite_template[:i], st.integers(0, len(_invite_template))),
))
def test_fuzz_never_raises(pki: Any, data: bytes) -> None:
    signer = _FUZZ.get("signer")
    if signer is None:
        signer = _FUZZ["signer"] = services(pki)[0]
    for transport in ("UDP", "TCP"):
        r = signer.handle(data, ("127.0.0.1", 5090), transport)
        assert r is None or isinstance(r, bytes)
        if r is not None and r.startswith(b"SIP/2.0 400 "):  # an answered parse failure: one well-framed message
            assert r.endswith(b"\r\n\r\n") and r.count(b"\r\n\r\n") == 1 and b"\nCall-ID: " in r and b"\nCSeq: " in r
        if r is not None:  # whatever a peer sent, no answer carries a control character or bytes that are not UTF-8
            r.decode("utf-8")
            assert re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n", r) is None, r


_FUZZ: dict[str, Any] = {}


_VERIFY_STATE: dict[str, Any] = {}


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(orig=st.sampled_from([ORIG, "12155550000"]), which=st.sampled_from(["good", "good", "none", "garbage", "two"]),
       extra=st.sampled_from(["", "P-Asserted-Identity: <tel:+12155551212>\r\n", "P-Asserted-Identity: \"A\" <sip:+12155550000@h;user=phone>\r\n",
                              "Date: Mon, 01 Jan 2001 00:00:00 GMT\r\n", "Date: garbage\r\n"]),
       mutate=st.tuples(st.integers(0, 900), st.binary(min_size=0, max_size=3)), cfg=st.sampled_from(["", "verstat_in_from = false\nuse_pai = false\n", "replay_detection = true\n"]))
def test_verification_answer_at_once_equals_awaited(pki: Any, orig: str, which: str, extra: str, mutate: tuple[int, bytes], cfg: str) -> None:
    """SipService._verify answers at once when the verifier has the result (Verifier.begin);
    the general branch awaits averify: both give the same answer (RFC 8224 §6.2) but the To tag."""
    st_ = _VERIFY_STATE.get(cfg)
    if st_ is None:
        signer, vs, v = services(pki, cfg)
        idents = [resp(asyncio.run(answer(signer, invite(branch=f"z9hG4bK-pv{i}")))).headers["Identity"] for i in range(2)]
        st_ = _VERIFY_STATE[cfg] = (vs, idents, asyncio.new_event_loop())
    vs, idents, loop = st_
    ident = {"good": f"Identity: {idents[0]}\r\n", "none": "", "garbage": "Identity: x.y.z;info=<https://cr.example.net/sp-chain.pem>\r\n",
             "two": f"Identity: {idents[0]}\r\nIdentity: {idents[1]}\r\n"}[which]
    data = invite(orig=orig, branch="z9hG4bK-pvx", extra=extra + ident)
    i, b = mutate
    data = data[:i] + b + data[i + len(b):]
    try:
        req = sip.parse_message(data)
    except sip.SipParseError:
        return
    if not isinstance(req, sip.SipRequest) or req.method != "INVITE":
        return
    at_once = vs._verify(req, time.perf_counter())
    if not isinstance(at_once, bytes):  # not ready (first use: setup): the general branch
        at_once = loop.run_until_complete(at_once)
    else:
        _VERIFY_STATE["ready"] = True
    awaited = vs._verify(req, time.perf_counter(), wait=True)  # bytes only for an answer before verification (a bad Date)
    if not isinstance(awaited, bytes):
        awaited = loop.run_until_complete(awaited)
    mask = re.compile(rb"(\r\nTo: [^\r]*;tag=)[0-9a-f]{16}\r\n")
    assert mask.sub(rb"\1X\r\n", at_once) == mask.sub(rb"\1X\r\n", awaited)


def test_verification_with_replay_detection_answers_at_once(pki: Any) -> None:
    """With replay detection on and no Redis, a warm verifier still answers at once
    (Verifier.begin runs the general flow, which needs no I/O): the same dialog passes again, the
    same PASSporT in another call is a replay (438, RFC 8224 §6.2.2 / RFC 8225 §10.1; by default
    the 302 marks it No-TN-Validation with the Reason)."""
    signer, vs, v = services(pki, "replay_detection = true\n")
    assert v.replay_table is not None
    ident = resp(asyncio.run(answer(signer, invite(branch="z9hG4bK-r0")))).headers["Identity"]
    warm = vs.handle(invite(branch="z9hG4bK-r1", extra=f"Identity: {ident}\r\n"), ("127.0.0.1", 5090), "UDP")
    if not isinstance(warm, (bytes, type(None))):
        asyncio.run(warm)  # type: ignore[arg-type]
    again = vs.handle(invite(branch="z9hG4bK-r2", extra=f"Identity: {ident}\r\n").replace(b"call-z9hG4bK-r2", b"call-z9hG4bK-r1"),
                      ("127.0.0.1", 5090), "UDP")
    assert isinstance(again, bytes) and b"verstat=TN-Validation-Passed" in again  # a re-INVITE of the dialog
    other = vs.handle(invite(branch="z9hG4bK-r3", extra=f"Identity: {ident}\r\n"), ("127.0.0.1", 5090), "UDP")
    assert isinstance(other, bytes) and b"verstat=No-TN-Validation" in other and b"cause=438" in other, other  # marked, forwarded
    assert b"verified in another call" in other


def test_verification_answers_at_once_when_warm(pki: Any) -> None:
    """A warm verifier answers the INVITE without a coroutine (Verifier.begin)."""
    signer, vs, v = services(pki)
    ident = resp(asyncio.run(answer(signer, invite(branch="z9hG4bK-w0")))).headers["Identity"]
    first = vs.handle(invite(branch="z9hG4bK-w1", extra=f"Identity: {ident}\r\n"), ("127.0.0.1", 5090), "UDP")
    if not isinstance(first, (bytes, type(None))):
        asyncio.run(first)  # type: ignore[arg-type]
    r = vs.handle(invite(branch="z9hG4bK-w2", extra=f"Identity: {ident}\r\n"), ("127.0.0.1", 5090), "UDP")
    assert isinstance(r, bytes) and b"verstat=TN-Validation-Passed" in r


# --- the real server ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Any) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("sipserve")
    x5u = FileServer(pki.dir)
    http, s1, s2 = serve_port(), serve_port(), serve_port()
    p = ServeProcess(d, serve_toml(pki, x5u, http=http, sip_signing=s1, sip_verification=s2, workers=2), http)
    try:
        yield {"http": http, "sign": s1, "verify": s2, "dir": d, "pki": pki, "x5u": x5u}
    finally:
        code = p.stop()
        x5u.close()
    assert code == 0


def udp_exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recvfrom(65536)[0]
        except socket.timeout:
            return None


def test_wire_garbage_then_still_answers(server: dict[str, Any]) -> None:
    import random

    rnd = random.Random(7)
    for port in (server["sign"], server["verify"]):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(200):
                s.sendto(bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 300))), ("127.0.0.1", port))
            s.sendto(_invite_template[:80], ("127.0.0.1", port))
            s.sendto(b"\r\n\r\n", ("127.0.0.1", port))
        for _ in range(5):  # TCP: garbage, then a connection that sends a bad Content-Length
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(bytes(rnd.getrandbits(8) for _ in range(500)) + b"\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port)) as c:
            c.sendall(invite(branch="z9hG4bK-tcpx").replace(b"Content-Length: 0", b"Content-Length: zz"))
        r = udp_exchange(port, invite(method="OPTIONS", branch=f"z9hG4bK-alive{port}"))
        assert r is not None and r.startswith(b"SIP/2.0 200 OK")


def test_wire_unparsable_requests_get_400(server: dict[str, Any]) -> None:
    """Over UDP and TCP: 400 with the problem in the reason phrase; over TCP a parse error inside a
    well-framed message keeps the connection, a framing error (no Content-Length) closes it after
    the 400; garbage gets no answer and the service still works."""
    for port in (server["sign"], server["verify"]):
        bad = invite(branch=f"z9hG4bK-u400{port}").replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
        r = udp_exchange(port, bad)
        assert r is not None and r.startswith(b"SIP/2.0 400 Bad Request (CSeq method 'BYE' does not match"), r
        assert udp_exchange(port, b"\x00\x01garbage that is not SIP\r\n\r\n", timeout=0.5) is None
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            framer = sip.StreamFramer()
            tcp = lambda m: m.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")  # noqa: E731
            c.sendall(tcp(invite(branch=f"z9hG4bK-t400{port}").replace(b"Max-Forwards: 70", b"Max Forwards: 70")))
            c.sendall(tcp(invite(method="OPTIONS", branch=f"z9hG4bK-t200{port}")))
            msgs: list[bytes] = []
            while len(msgs) < 2:
                data = c.recv(65536)
                assert data, "connection closed"
                msgs += framer.feed(data)
            assert msgs[0].startswith(b"SIP/2.0 400 Bad Request (Invalid header name 'Max Forwards')"), msgs[0]
            assert b"SIP/2.0/TCP" in msgs[0]
            assert resp(msgs[1]).status == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(invite(branch=f"z9hG4bK-ncl{port}").replace(b"Content-Length: 0\r\n", b""))
            data = b""
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break  # closed after the answer
                data += chunk
            assert data.startswith(b"SIP/2.0 400 Bad Request (Missing Content-Length"), data
    want = ('stirshaken_sip_responses_total{service="signing",status="400"}', 'stirshaken_sip_parse_errors_total{service="verification"}')
    deadline = time.monotonic() + 5  # other workers' numbers arrive with their next snapshot (1 s)
    while not all(w in (text := metrics_text(server["http"])) for w in want) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(w in text for w in want), text


def _bad(old: bytes, new: bytes) -> Any:
    return lambda m: m.replace(old, new, 1)


#: requests refused for their bytes: (name, mutation of an INVITE, its 400 reason phrase or None: no answer, the fault logged)
_BAD_BYTES = [
    ("callid-nul", _bad(b"Call-ID: call-", b"Call-ID: call-\x00"), None,
     "a NUL byte in the Call-ID header field, which an answer must copy (RFC 3261 §8.2.6.2)"),
    ("callid-utf8", _bad(b"Call-ID: call-", b"Call-ID: call-\xff\xfe"), None,
     "bytes that are not UTF-8 (0xff at column 15) in the Call-ID header field, which an answer must copy (RFC 3261 §8.2.6.2)"),
    ("compact-callid-utf8", _bad(b"Call-ID: call-", b"i: \xc3("), None,
     "bytes that are not UTF-8 (0xc3 at column 4) in the Call-ID header field, which an answer must copy (RFC 3261 §8.2.6.2)"),
    ("to-nul", _bad(b"To: <sip:", b"To: \x00<sip:"), None,
     "a NUL byte in the To header field, which an answer must copy (RFC 3261 §8.2.6.2)"),
    ("from-folded-ctl", _bad(b"From: <sip:", b"From: A\r\n \x01 <sip:"), None,
     "a control character (0x01) in the From header field, which an answer must copy (RFC 3261 §8.2.6.2)"),
    ("cseq-utf8", _bad(b"CSeq: 1 ", b"CSeq: 1\x80 "), None,
     "bytes that are not UTF-8 (0x80 at column 8) in the CSeq header field, which an answer must copy (RFC 3261 §8.2.6.2)"),
    # the second Via was left out of the 400, which then could not reach the peer through its proxy
    ("via2-utf8", _bad(b"From: ", b"Via: SIP/2.0/UDP proxy\xe9.example;branch=z9hG4bK-p\r\nFrom: "), None,
     "bytes that are not UTF-8 (0xe9 at column 23) in the Via header field, which an answer must copy (RFC 3261 §8.2.6.2)"),
    # not copied by an answer: 400 naming the fault
    ("ruri-utf8", _bad(b" sip:", b" sip:\xff"), "Bytes that are not UTF-8 (0xff at column 12) in the request line",
     "bytes that are not UTF-8 (0xff at column 12) in the request line"),
    ("subject-nul", _bad(b"Max-Forwards: 70", b"Subject: a\x00b\r\nMax-Forwards: 70"), "A NUL byte in the Subject header field",
     "a NUL byte in the Subject header field"),
]


def udp_from(port: int, data: bytes, timeout: float) -> tuple[bytes | None, int]:
    """Send ``data`` to ``port`` over UDP: (the answer or None, our source port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(data, ("127.0.0.1", port))
        try:
            return s.recvfrom(65536)[0], s.getsockname()[1]
        except socket.timeout:
            return None, s.getsockname()[1]


def log_docs(server: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (server["dir"] / "serve.log").read_text(errors="strict").splitlines() if line.startswith("{")]


@pytest.mark.parametrize("name, mutate, phrase, fault", _BAD_BYTES, ids=[c[0] for c in _BAD_BYTES])
def test_wire_request_refused_for_its_bytes(server: dict[str, Any], name: str, mutate: Any, phrase: str | None, fault: str) -> None:
    """A NUL, another control character or bytes that are not UTF-8 (RFC 3261 §7.3.1, §25.1; a
    Call-ID is ``word [ "@" word ]``, ASCII): in a field an answer must copy as received (Via,
    From, To, Call-ID, CSeq, §8.2.6.2) no answer can be formed, so none is sent; elsewhere the
    request is answered ``400 Bad Request (<the fault>)`` (§8.2, §21.4.1).  Either way one
    WARNING line names the peer and the fault, without the bytes or a traceback, and nothing is
    recorded.  Both used to be silent (no answer, no line), or the 400 left out a Via."""
    for port in (server["sign"], server["verify"]):
        bad = mutate(invite(branch=f"z9hG4bK-bytes-{name}-{port}"))
        with pytest.raises(sip.SipParseError):
            sip.parse_message(bad)
        r, ours = udp_from(port, bad, timeout=1.0 if phrase is None else 5.0)
        if phrase is None:
            assert r is None, r
        else:
            assert r is not None and r.split(b"\r\n", 1)[0] == f"SIP/2.0 400 Bad Request ({phrase})".encode(), r
            assert resp(r).call_id == f"call-z9hG4bK-bytes-{name}-{port}"
        deadline = time.monotonic() + 5
        while not (lines := [d for d in log_docs(server) if d.get("peer") == f"127.0.0.1:{ours}"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(lines) == 1, lines
        assert (lines[0]["level"], lines[0]["msg"], lines[0]["problem"], lines[0]["transport"]) == (
            "WARNING", "SIP request refused for its bytes", fault, "UDP"), lines[0]
        assert lines[0]["answer"] == ("none" if phrase is None else "400 Bad Request")
    raw = (server["dir"] / "serve.log").read_bytes()
    assert b"\x00" not in raw and b"\\u0000" not in raw and b"Traceback" not in raw
    assert not [d for d in log_docs(server) if d.get("logger") == "stirshaken.records" and "bytes" in (d.get("call_id") or "")]


def test_wire_tcp_request_with_a_nul_call_id_keeps_the_connection(server: dict[str, Any]) -> None:
    """Over TCP the message is framed (its Content-Length is right): not answered, one warning,
    and the connection goes on."""
    port = server["sign"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        ours = c.getsockname()[1]
        tcp = lambda m: m.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")  # noqa: E731
        c.sendall(tcp(invite(branch="z9hG4bK-tcpnul").replace(b"Call-ID: call-", b"Call-ID: \x00call-")))
        c.sendall(tcp(invite(method="OPTIONS", branch="z9hG4bK-tcpnul2")))
        framer = sip.StreamFramer()
        msgs: list[bytes] = []
        while not msgs:
            data = c.recv(65536)
            assert data, "connection closed"
            msgs += framer.feed(data)
        assert resp(msgs[0]).status == 200 and resp(msgs[0]).cseq[1] == "OPTIONS"
    deadline = time.monotonic() + 5  # (a worker's log thread writes the line: it may come after the answer)
    while not (lines := [d for d in log_docs(server) if d.get("peer") == f"127.0.0.1:{ours}"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(lines) == 1 and lines[0]["transport"] == "TCP" and lines[0]["problem"].startswith("a NUL byte in the Call-ID header field")


def metrics_text(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_tcp_signing(server: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", server["sign"]), timeout=5) as c:
        framer = sip.StreamFramer()
        c.sendall(b"\r\n\r\n" + invite(branch="z9hG4bK-tcp1").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP"))
        msgs: list[bytes] = []
        while not msgs:
            msgs = framer.feed(c.recv(65536).lstrip(b"\r\n"))
        r = resp(msgs[0])
        assert r.status == 302 and "Identity" in r.headers


def test_wire_percent_encoded_caller_is_signed_and_verified(server: dict[str, Any]) -> None:
    """RFC 3261 §19.1.2: ``sip:%2B12155551212@...`` is the user ``+12155551212``.  The signing
    address signs it with orig tn 12155551212 (it used to forward it unsigned), and the
    verification address accepts the result for the same percent-encoded From."""
    r = resp(udp_exchange(server["sign"], invite(orig="%2B" + ORIG, dest="%2B" + DEST, branch="z9hG4bK-pct1")))
    assert r.status == 302 and "X-Identity-Result" not in r.headers
    ident = r.headers["Identity"]
    c = claims(ident)
    assert c["orig"] == {"tn": ORIG} and c["dest"] == {"tn": [DEST]}
    v = resp(udp_exchange(server["verify"], invite(orig="%2B" + ORIG, dest="%2B" + DEST, branch="z9hG4bK-pct2",
                                                   extra=f"Identity: {ident}\r\n")))
    assert v.status == 302
    assert "verstat=TN-Validation-Passed" in v.headers["P-Asserted-Identity"], v.headers["P-Asserted-Identity"]


def test_wire_rich_call_data_is_checked_apart_from_the_shaken_verdict(server: dict[str, Any]) -> None:
    """RFC 9795 over SIP (docs/requirements.md RC-02): an INVITE with the SHAKEN PASSporT signed by
    the SIP signing address and an ``rcd`` PASSporT signed by the REST API of the same ``serve``
    (nam + inline jCard, ``rcdi`` computed by the signer) is TN-Validation-Passed with no Reason;
    the same rcd PASSporT with a changed jCard under the original ``rcdi`` (re-signed with the
    signer's key, so only the digest can tell) keeps TN-Validation-Passed and the SHAKEN attestation, and
    the 302 names the failed rcd PASSporT in an RFC 9410 Reason (cause 438, its ``ppi``)."""
    import urllib.request

    from stirshaken.core.passport import encode_token, parse_jws
    from stirshaken.core.keys import load_private_key

    jcard = ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Example Bank"]]]
    shaken = resp(udp_exchange(server["sign"], invite(branch="z9hG4bK-rcd0"))).headers["Identity"]
    body = json.dumps({"signingRequest": {"ppt": "rcd", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]}, "iat": int(time.time()),
                                          "rcd": {"nam": "Example Bank", "jcd": jcard}}}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{server['http']}/stir/v1/signing", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        rcd = json.loads(r.read())["signingResponse"]["identity"]
    assert rcd.endswith(";ppt=rcd") and claims(rcd)["rcd"]["nam"] == "Example Bank"

    def verify(branch: str, *identities: str) -> sip.SipResponse:
        extra = "".join(f"Identity: {i}\r\n" for i in identities)
        return resp(udp_exchange(server["verify"], invite(branch=branch, extra=extra)))

    v = verify("z9hG4bK-rcd1", shaken, rcd)
    assert v.status == 302 and "verstat=TN-Validation-Passed" in v.headers["P-Asserted-Identity"]
    assert v.headers.get("X-Attestation") == claims(shaken)["attest"] and "Reason" not in v.headers, v.headers

    token, params = rcd.split(";", 1)
    jws = parse_jws(token)
    forged_claims = dict(jws.claims)
    forged_claims["rcd"] = {**jws.claims["rcd"], "jcd": ["vcard", [*jcard[1], ["tel", {}, "uri", "tel:+19995550100"]]]}
    key = load_private_key(Path(server["pki"].sp_key).read_bytes())
    forged = encode_token(key, jws.header, forged_claims) + ";" + params
    shaken2 = resp(udp_exchange(server["sign"], invite(branch="z9hG4bK-rcd2"))).headers["Identity"]
    v = verify("z9hG4bK-rcd3", shaken2, forged)
    assert v.status == 302 and "verstat=TN-Validation-Passed" in v.headers["P-Asserted-Identity"], v.headers
    assert v.headers.get("X-Attestation") == claims(shaken2)["attest"]
    reason = v.headers["Reason"]
    assert "STIR ;cause=438" in reason and ";ppi=" in reason and "X-Verification-Reason" not in v.headers, reason


def sipp(*args: str, cwd: Path, timeout: int = 40) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("sipp")
    assert exe, "sipp (sip-tester) is not installed: run scripts/install-deps.sh"
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


UAC_VERIFY = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="VS redirect">
  <send retrans="500"><![CDATA[

      INVITE sip:[dest_tn]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-vs-[pid]-[call_number]
      From: <sip:[orig_tn]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[dest_tn]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[orig_tn]@[local_ip]:[local_port]>
      Max-Forwards: 70
      [identity_hdr]
      Content-Length: 0

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="302" optional="true" next="ack"><action>
    <ereg regexp="^SIP/2.0 ([0-9]+)" search_in="msg" assign_to="d1,code"/>
    <ereg regexp="verstat=([A-Za-z-]+)" search_in="msg" check_it="false" assign_to="d2,verstat"/>
  </action></recv>
  <recv response="438" optional="true" next="ack"><action>
    <ereg regexp="^SIP/2.0 ([0-9]+)" search_in="msg" assign_to="d1,code"/>
    <ereg regexp="verstat=([A-Za-z-]+)" search_in="msg" check_it="false" assign_to="d2,verstat"/>
  </action></recv>
  <recv response="428" next="ack"><action>
    <ereg regexp="^SIP/2.0 ([0-9]+)" search_in="msg" assign_to="d1,code"/>
    <ereg regexp="verstat=([A-Za-z-]+)" search_in="msg" check_it="false" assign_to="d2,verstat"/>
  </action></recv>
  <label id="ack"/>
  <send><![CDATA[

      ACK sip:[dest_tn]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-vs-[pid]-[call_number]
      From: <sip:[orig_tn]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[dest_tn]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <nop><action><log message="RESULT code=[$code] verstat=[$verstat] [$d1] [$d2]"/></action></nop>
</scenario>
"""


def sipp_sign(server: dict[str, Any], transport: str) -> str:
    d = server["dir"]
    args = [f"127.0.0.1:{server['sign']}", "-sf", str(PEERS / "sipp/sipp_as_redirect.xml"), "-i", "127.0.0.1",
            "-p", str(serve_port()), "-m", "1", "-nostdin", "-timeout", "15", "-timeout_error", "-recv_timeout", "5000",
            "-trace_logs", "-log_file", str(d / f"as-{transport}.log"), "-key", "orig_tn", ORIG, "-key", "dest_tn", DEST]
    if transport == "tcp":
        args += ["-t", "t1"]
    r = sipp(*args, cwd=d)
    line = [l for l in (d / f"as-{transport}.log").read_text().splitlines() if "RESULT code=" in l][-1]
    assert "code=302" in line, (r.stdout[-500:], line)
    return line.split("identity=", 1)[1].split(" ")[0]


@pytest.mark.interop
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_signing_secsipidx_accepts(server: dict[str, Any], transport: str) -> None:
    identity = sipp_sign(server, transport)
    exe = shutil.which("secsipidx")
    assert exe, "secsipidx missing: run scripts/install-deps.sh"
    r = subprocess.run([exe, "-check", "-expire", "60", "-identity", identity, "-fpubkey", str(server["pki"].sp_cert)],
                       capture_output=True, text=True, timeout=20)
    assert r.stdout.strip() == "ok", r.stdout + r.stderr
    assert claims(identity)["orig"] == {"tn": ORIG}


@pytest.mark.interop
@pytest.mark.parametrize("case,hdr,orig,want", [
    ("good", "sign", ORIG, "code=302 verstat=TN-Validation-Passed"),
    ("spoofed", "sign", "12155550000", "code=302 verstat=No-TN-Validation"),
    ("garbage", "Identity: not-a-passport;info=<http://127.0.0.1:9/x.pem>", ORIG, "code=302 verstat=No-TN-Validation"),
    ("none", "X-Nothing: 1", ORIG, "code=302 verstat=No-TN-Validation"),
])
def test_sipp_verification(server: dict[str, Any], case: str, hdr: str, orig: str, want: str) -> None:
    d = server["dir"]
    if hdr == "sign":
        hdr = "Identity: " + sipp_sign(server, "udp")
    scen = d / "uac_verify.xml"
    scen.write_text(UAC_VERIFY)
    log = d / f"vs-{case}.log"
    sipp(f"127.0.0.1:{server['verify']}", "-sf", str(scen), "-i", "127.0.0.1", "-p", str(serve_port()), "-m", "1", "-nostdin",
         "-timeout", "15", "-timeout_error", "-recv_timeout", "5000", "-trace_logs", "-log_file", str(log),
         "-key", "orig_tn", orig, "-key", "dest_tn", DEST, "-key", "identity_hdr", hdr, cwd=d)
    line = [l for l in log.read_text().splitlines() if "RESULT code=" in l][-1]
    assert want in line, line


@pytest.mark.interop
def test_sipp_load_no_failures(server: dict[str, Any]) -> None:
    """A short bounded load (500 calls at 250 calls/s) of INVITE/302/ACK: no failed call, no retransmission."""
    d = server["dir"] / "load"
    d.mkdir(exist_ok=True)
    r = sipp(f"127.0.0.1:{server['sign']}", "-sf", str(PEERS / "sipp/uac_redirect_load.xml"), "-i", "127.0.0.1",
             "-p", str(serve_port()), "-nostdin", "-r", "250", "-m", "500", "-timeout", "30s", "-timeout_error", "-max_retrans", "3",
             "-buff_size", "4194304", "-key", "orig_tn", ORIG, "-key", "dest_tn", DEST, "-trace_stat", "-stf", "stat.csv", cwd=d)
    assert r.returncode == 0, r.stdout[-1000:]
    rows = [l.split(";") for l in (d / "stat.csv").read_text().splitlines()]
    h, last = rows[0], rows[-1]
    assert last[h.index("SuccessfulCall(C)")] == "500" and last[h.index("FailedCall(C)")] == "0"
    assert last[h.index("Retransmissions(C)")] == "0"


def test_header_text_is_safe() -> None:
    from stirshaken.serve.sip import header_text
    assert header_text('a "b"\r\nInjected: x\\') == 'a \\"b\\" Injected: x\\\\'
    long = header_text("x" * 500)
    assert len(long) == 200 and long.endswith("...")


async def test_unknown_tenant_says_so(pki: Any) -> None:
    import tomllib
    c = parse_config(tomllib.loads(f"""
[server]
sip_signing = "127.0.0.1:5060"
[signing]
key = "sp.key"
x5u = "{X5U}"
tenant_header = "X-Tenant"
"""), pki.dir)
    signer = SipService("signing", metrics=Metrics(), signing=SigningService(c.signing))
    r = resp(await answer(signer, invite(branch="z9hG4bK-t1", extra="X-Tenant: nobody\r\n")))
    assert (r.status, r.reason) == (403, "Forbidden (unknown tenant)")
    assert r.headers["Reason"].startswith("SIP;cause=403;text=") and "no signing tenant named 'nobody'" in r.headers["Reason"]


async def test_signing_302_carries_the_date_it_signed_with(pki: Any) -> None:
    """RFC 8224 §6.1 (issue 12 item 1): without a Date the signer adds one, the 302 carries it and
    iat equals it; a Date within the window is the iat and the 302 adds none; a stale or future
    Date is refused 403 Stale Date with the reason; an unparsable one 400."""
    import email.utils as eu

    signer, vs, _ = services(pki)
    r = resp(await answer(signer, invite(branch="z9hG4bK-date1")))
    assert r.status == 302
    added = r.headers["Date"]
    assert eu.parsedate_to_datetime(added).timestamp() == claims(r.headers["Identity"])["iat"]
    assert abs(claims(r.headers["Identity"])["iat"] - time.time()) < 5
    # the forwarded INVITE with the 302's Identity and Date passes a verifier that requires Date
    fwd = invite(branch="z9hG4bK-date1v", extra=f"Identity: {r.headers['Identity']}\r\nDate: {added}\r\n")
    assert resp(await answer(vs, fwd)).status == 302
    own = eu.formatdate(time.time() - 20, usegmt=True)
    r = resp(await answer(signer, invite(branch="z9hG4bK-date2", extra=f"Date: {own}\r\n")))
    assert r.status == 302 and "Date" not in r.headers
    assert claims(r.headers["Identity"])["iat"] == int(eu.parsedate_to_datetime(own).timestamp())
    for branch, when, word in (("z9hG4bK-date3", time.time() - 300, "behind"), ("z9hG4bK-date4", time.time() + 300, "ahead of")):
        r = resp(await answer(signer, invite(branch=branch, extra=f"Date: {eu.formatdate(when, usegmt=True)}\r\n")))
        assert (r.status, r.reason) == (403, "Stale Date") and "Identity" not in r.headers
        assert f"s {word} the signer's clock (max 60 s)" in r.headers["Reason"]
    r = resp(await answer(signer, invite(branch="z9hG4bK-date5", extra="Date: yesterday\r\n")))
    assert (r.status, r.reason) == (400, "Bad Date Header")


# --- issue 12 item 2: diverted calls (RFC 8946) ------------------------------------------------

NEW = "12155559999"  # the target the call is diverted to


def header_of(identity: str) -> dict[str, Any]:
    h = identity.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))


DIVERSION = f"Diversion: <sip:+{DEST}@127.0.0.1>;reason=unconditional;counter=1\r\n"
HISTORY = f"History-Info: <sip:{DEST}@127.0.0.1>;index=1, <sip:{NEW}@127.0.0.1;cause=302>;index=1.1;mp=1\r\n"


@pytest.mark.parametrize("retarget", [DIVERSION, HISTORY], ids=["Diversion", "History-Info"])
async def test_diverted_call_gets_a_div_passport(pki: Any, retarget: str) -> None:
    """An INVITE with a SHAKEN Identity and retargeting information gets a 302 whose first
    Identity is a div PASSporT (orig copied, dest the R-URI, div the diverted-from number, no
    attest/origid), then the original Identity unchanged; the forwarded call passes our
    verifier, which needs the div: without it the SHAKEN dest names no target of the request."""
    signer, vs, v = services(pki)
    shaken = resp(await answer(signer, invite(branch="z9hG4bK-dv0"))).headers["Identity"]
    tag = "h" if retarget is HISTORY else "d"
    r = resp(await answer(signer, invite(ruri=f"sip:{NEW}@127.0.0.1", branch=f"z9hG4bK-dv1{tag}", extra=f"Identity: {shaken}\r\n{retarget}")))
    assert r.status == 302 and "X-Identity-Result" not in r.headers
    ids = r.headers.get_all("Identity")
    assert len(ids) == 2 and ids[1] == shaken
    assert ids[0].endswith(f";info=<{X5U}>;alg=ES256;ppt=div")
    assert header_of(ids[0]) == {"alg": "ES256", "ppt": "div", "typ": "passport", "x5u": X5U}
    c = claims(ids[0])
    assert set(c) == {"dest", "div", "iat", "orig"} and abs(c["iat"] - time.time()) < 5
    assert (c["orig"], c["dest"], c["div"]) == ({"tn": ORIG}, {"tn": [NEW]}, {"tn": DEST})
    assert r.headers["Date"]  # the INVITE had no Date: the iat's Date comes with the 302 (RFC 8224 §6.1)
    # forwarded as the integration recipe does: the INVITE keeps its Identity and adds the first one
    # of the 302; To names the new target too, so only the div chain binds the SHAKEN dest
    to_new = lambda m: m.replace(f"To: <sip:{DEST}@".encode(), f"To: <sip:{NEW}@".encode())  # noqa: E731
    fwd = invite(ruri=f"sip:{NEW}@127.0.0.1", branch=f"z9hG4bK-dv2{tag}",
                 extra=f"Identity: {shaken}\r\nIdentity: {ids[0]}\r\nDate: {r.headers['Date']}\r\n{retarget}")
    vr = resp(await answer(vs, to_new(fwd)))
    assert "verstat=TN-Validation-Passed" in vr.headers["P-Asserted-Identity"], vr.headers
    alone = invite(ruri=f"sip:{NEW}@127.0.0.1", branch=f"z9hG4bK-dv3{tag}", extra=f"Identity: {shaken}\r\n{retarget}")
    vr = resp(await answer(vs, to_new(alone)))
    assert "verstat=No-TN-Validation" in vr.headers["P-Asserted-Identity"] and "'dest'" in vr.headers["X-Verification-Reason"]
    await v.aclose()


async def test_diverted_call_without_a_div(pki: Any) -> None:
    """When no div may be signed the 302 carries the original Identity and says why; without a
    SHAKEN PASSporT to divert (or with div_passport = false) the call is signed as a new one."""
    signer, _, v = services(pki)
    shaken = resp(await answer(signer, invite(branch="z9hG4bK-nd0"))).headers["Identity"]
    # RFC 8946 §3: the destination did not change -> no div PASSporT
    r = resp(await answer(signer, invite(branch="z9hG4bK-nd1", extra=f"Identity: {shaken}\r\n{DIVERSION}")))
    assert r.headers.get_all("Identity") == [shaken]
    assert r.headers["X-Identity-Result"] == f"no-div: the destination {DEST} did not change (RFC 8946 §3: no div PASSporT)"
    # diverted from a number the PASSporT does not name
    r = resp(await answer(signer, invite(ruri=f"sip:{NEW}@127.0.0.1", branch="z9hG4bK-nd2",
                                         extra=f"Identity: {shaken}\r\nDiversion: <sip:13105550000@127.0.0.1>\r\n")))
    assert r.headers.get_all("Identity") == [shaken]
    assert r.headers["X-Identity-Result"] == (f"no-div: the call was diverted from 13105550000, which is not a destination of its"
                                              f" PASSporTs ({DEST}; RFC 8946 §3)")
    # diverted from something that is no telephone number
    r = resp(await answer(signer, invite(ruri=f"sip:{NEW}@127.0.0.1", branch="z9hG4bK-nd3",
                                         extra=f"Identity: {shaken}\r\nDiversion: <sip:alice@127.0.0.1>\r\n")))
    assert r.headers["X-Identity-Result"] == "no-div: the diverted-from target: 'alice' is not a telephone number"
    # an Identity that is no SHAKEN PASSporT, or History-Info without a retargeting (mp): a new call
    for branch, extra in (("z9hG4bK-nd4", f"Identity: garbage;info=<{X5U}>\r\n{DIVERSION}"),
                          ("z9hG4bK-nd5", f"Identity: {shaken}\r\nHistory-Info: <sip:{DEST}@127.0.0.1>;index=1\r\n")):
        r = resp(await answer(signer, invite(ruri=f"sip:{NEW}@127.0.0.1", branch=branch, extra=extra)))
        ids = r.headers.get_all("Identity")
        assert len(ids) == 1 and ids[0] != shaken and header_of(ids[0])["ppt"] == "shaken"
    off, _, v2 = services(pki, signing="div_passport = false")
    r = resp(await answer(off, invite(ruri=f"sip:{NEW}@127.0.0.1", branch="z9hG4bK-nd6", extra=f"Identity: {shaken}\r\n{DIVERSION}")))
    ids = r.headers.get_all("Identity")
    assert len(ids) == 1 and header_of(ids[0])["ppt"] == "shaken" and claims(ids[0])["dest"] == {"tn": [DEST]}
    await v.aclose()
    await v2.aclose()


async def test_div_signed_by_the_tenant_of_the_diverted_number(pki: Any) -> None:
    """RFC 8946 §3: the div identifier must be within the retargeting entity's credential: the
    tenant whose numbers hold the diverted-from number signs, not the caller's."""
    signer, _, v = services(pki, signing=f'[[signing.tenant]]\nname = "fwd"\nkey = "sp2.key"\nx5u = "https://cr.example.net/sp2.pem"\n'
                                          f'tns = ["{DEST}"]')
    shaken = resp(await answer(signer, invite(branch="z9hG4bK-tn0"))).headers["Identity"]
    assert header_of(shaken)["x5u"] == X5U
    r = resp(await answer(signer, invite(ruri=f"sip:{NEW}@127.0.0.1", branch="z9hG4bK-tn1", extra=f"Identity: {shaken}\r\n{DIVERSION}")))
    assert header_of(r.headers.get_all("Identity")[0]) == {"alg": "ES256", "ppt": "div", "typ": "passport", "x5u": "https://cr.example.net/sp2.pem"}
    await v.aclose()


# --- issue 12 item 4: signing inputs checked as the verifier would judge them -----------------


async def test_sip_refuses_what_the_verifier_would_refuse(pki: Any) -> None:
    signer, _, v = services(pki)
    r = resp(await answer(signer, invite(branch="z9hG4bK-in1", extra="X-Attest: D\r\n")))
    assert (r.status, r.reason) == (400, "Bad Request (X-Attest: 'attest' must be A, B or C, not 'D')")
    r = resp(await answer(signer, invite(branch="z9hG4bK-in2", extra="X-Origid: not-a-uuid\r\n")))
    assert (r.status, r.reason) == (400, "Bad Request (X-Origid: 'origid' must be a UUID (RFC 8588 §5), not 'not-a-uuid')")
    r = resp(await answer(signer, invite(branch="z9hG4bK-in3", extra="X-Origid: 123e4567-e89b-12d3-a456-426614174000\r\n")))
    assert claims(r.headers["Identity"])["origid"] == "123e4567-e89b-12d3-a456-426614174000"
    r = resp(await answer(signer, invite(orig="1215555121212121212", branch="z9hG4bK-in4")))
    assert r.status == 302 and "Identity" not in r.headers
    assert r.headers["X-Identity-Result"] == ("not-signed: the calling party: '1215555121212121212'... has 19 digits; a telephone"
                                              " number has at most 15")
    r = resp(await answer(signer, invite(dest="bob", branch="z9hG4bK-in5", ruri="sip:bob@127.0.0.1")))
    assert r.headers["X-Identity-Result"] == "not-signed: the called party: 'bob' is not a telephone number"
    # one uri_user for every path: %2B and visual separators
    r = resp(await answer(signer, invite(orig="%2B1-215-555-0000", branch="z9hG4bK-in6")))
    assert claims(r.headers["Identity"])["orig"] == {"tn": "12155550000"}
    await v.aclose()


async def test_sip_national_numbers(pki: Any) -> None:
    """A 10-digit national number: without a country code signed as given with a Warning; with
    [signing] country_code completed to E.164 (RFC 8224 §8.3)."""
    signer, _, v = services(pki)
    r = resp(await answer(signer, invite(orig="2155550000", branch="z9hG4bK-na1")))
    assert claims(r.headers["Identity"])["orig"] == {"tn": "2155550000"}
    assert r.headers["Warning"] == ('399 stirshaken "2155550000 looks like a national number (10 digits, no country code): signed as'
                                    ' given, not in E.164 form (RFC 8224 §8.3)"')
    r = resp(await answer(signer, invite(orig="+2155550000", branch="z9hG4bK-na2")))  # E.164 as written: no warning
    assert "Warning" not in r.headers
    cc, _, v2 = services(pki, signing='country_code = "1"')
    r = resp(await answer(cc, invite(orig="2155550000", branch="z9hG4bK-na3")))
    assert claims(r.headers["Identity"])["orig"] == {"tn": "12155550000"} and "Warning" not in r.headers
    await v.aclose()
    await v2.aclose()


def test_to_tags_are_random_and_distinct(pki: Any) -> None:
    """The To tags of our answers (RFC 3261 §19.3: at least 32 random bits), drawn from the
    service's pool: 16 lowercase hex digits, never the same twice, and a tag the request already
    carries is kept."""
    import re as _re

    signer, vs, _ = services(pki)
    tags = set()
    for i in range(600):
        r = signer.handle(invite(branch=f"z9hG4bK-tag{i}", method="OPTIONS"), ("127.0.0.1", 5090), "UDP")
        assert isinstance(r, bytes)
        m = _re.search(rb"\r\nTo: [^\r]*;tag=([^;\r]*)\r\n", r)
        assert m and _re.fullmatch(rb"[0-9a-f]{16}", m.group(1)), r
        tags.add(m.group(1))
    assert len(tags) == 600
    r = signer.handle(invite(branch="z9hG4bK-tagged", method="OPTIONS").replace(b"To: <sip:12155551213@127.0.0.1:5060>",
                                                                               b"To: <sip:12155551213@127.0.0.1:5060>;tag=theirs"),
                      ("127.0.0.1", 5090), "UDP")
    assert isinstance(r, bytes) and b";tag=theirs\r\n" in r and r.count(b";tag=") == 2  # From's and To's own


def test_refused_bytes_warnings_are_bounded(pki: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A flood of requests refused for their bytes cannot fill the log: one line per source per
    10 s, at most 100 lines per 10 s in all; the next line says how many were left out."""
    from stirshaken.serve.sip import LineLimiter

    signer, _, _ = services(pki)
    bad = invite(branch="z9hG4bK-flood").replace(b"Max-Forwards:", b"X-Bad: \x00\r\nMax-Forwards:")
    assert b"X-Bad" in bad
    with caplog.at_level(logging.WARNING, logger="stirshaken.serve"):
        for _ in range(50):  # one source
            signer.unparsable(bad, "x", ("192.0.2.1", 5060), "UDP")
        for port in range(200):  # many sources (spoofed UDP)
            signer.unparsable(bad, "x", ("192.0.2.2", 10000 + port), "UDP")
    lines = [r for r in caplog.records if r.getMessage() == "SIP request refused for its bytes"]
    assert len(lines) == 100
    assert lines[0].not_logged_before == 0 and lines[1].not_logged_before == 49  # type: ignore[attr-defined]
    lim = LineLimiter(every=0.2, most=2)
    assert [lim.allow("a"), lim.allow("a"), lim.allow("b"), lim.allow("c")] == [True, False, True, False]
    assert lim.take_quiet() == 2 and lim.take_quiet() == 0
    time.sleep(0.25)
    assert lim.allow("a") and lim.allow("c")


def test_a_long_x5u_still_fits_the_udp_answer(pki: Any) -> None:
    """The reflection limit of a UDP answer (twice the request, at least 1,300 bytes) does not
    count the Identity header the 302 exists to carry: with an x5u of 300 characters (the
    configuration allows 2,048) a usual INVITE over UDP still gets its signed 302, not a 500."""
    long_x5u = "https://cr.example.net/" + "a" * 270 + "/sp.pem"
    import tomllib

    c = parse_config(tomllib.loads(f"""
[server]
sip_signing = "127.0.0.1:5060"
[signing]
key = "sp.key"
x5u = "{long_x5u}"
[[signing.customer]]
name = "pbx"
sources = ["127.0.0.0/8"]
tns = ["1215"]
"""), pki.dir)
    svc = SipService("signing", metrics=Metrics(), signing=SigningService(c.signing))
    data = invite(branch="z9hG4bK-longx5u")
    assert len(data) < 1000
    r = svc.handle(data, ("127.0.0.1", 5070), "UDP")
    assert isinstance(r, bytes) and len(r) > 1300, r
    m = resp(r)
    assert m.status == 302 and long_x5u in m.headers.get("Identity", ""), r[:200]
    # a small request still cannot be answered with much more than its Identity: the limit stands
    from stirshaken.serve.sip import answer_cap

    assert len(r) <= answer_cap(len(data), "UDP", 65536) + len(m.headers["Identity"])


async def test_a_long_x5u_still_fits_the_udp_answer_of_a_diverted_call(pki: Any) -> None:
    """The same allowance for the div PASSporT a diverted call's 302 carries (RFC 8946 §3): with
    an x5u of 900 characters the 302 (the INVITE's own Identity copied, the new one added) is
    over the reflection limit of a usual INVITE by the new header alone; it was a 500."""
    import tomllib

    long_x5u = "https://cr.example.net/" + "d" * 870 + "/sp.pem"
    c = parse_config(tomllib.loads(f'[server]\nsip_signing = "127.0.0.1:5060"\n[signing]\nkey = "sp.key"\nx5u = "{long_x5u}"\n'), pki.dir)
    long_signer = SipService("signing", metrics=Metrics(), signing=SigningService(c.signing))
    signer, _vs, v = services(pki)
    shaken = resp(await answer(signer, invite(branch="z9hG4bK-ldv0"))).headers["Identity"]  # the usual x5u
    data = invite(ruri=f"sip:{NEW}@127.0.0.1", branch="z9hG4bK-ldv1", extra=f"Identity: {shaken}\r\n{DIVERSION}")
    from stirshaken.serve.sip import answer_cap

    r = long_signer.handle(data, ("127.0.0.1", 5070), "UDP")
    assert isinstance(r, bytes) and len(r) > answer_cap(len(data), "UDP", 65536), (len(r), len(data))
    m = resp(r)
    ids = m.headers.get_all("Identity")
    assert m.status == 302 and len(ids) == 2 and ids[1] == shaken and ids[0].endswith(f";info=<{long_x5u}>;alg=ES256;ppt=div")
    assert len(r) <= answer_cap(len(data), "UDP", 65536) + len(ids[0])  # the limit stands for the rest
    await v.aclose()
