"""Replay detection through a real ``stirshaken serve`` (SIP over UDP and REST), with the memory
backend (one node, two workers sharing the UDP socket and the replay table) and the Redis
backend (two nodes of two workers sharing a private ``redis-server``), and a Redis outage.

What must hold (issue 11 item 4): an INVITE carrying the same Identity header twice, the
retransmissions of an INVITE (whichever worker or node receives them) and a re-INVITE of the
dialog are not replays and get the original's answer; the same PASSporT in another call is a 438,
also when its signature was changed to its ``(r, n - s)`` twin; after Redis returns from an
outage, replays across nodes are rejected again within a few seconds.  Replays are answered with
the 438 itself (``reject_codes = [438]``); a passing call gets a 302 with
``verstat=TN-Validation-Passed``.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import orjson
import pytest
import urllib.request

from stirshaken.core import sip
from stirshaken.core.passport import Signer

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml
from tests.test_vs_replay import twin

PASSED = "TN-Validation-Passed"


# --- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` (no persistence) on ``port``, which can be stopped and started."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Node(NamedTuple):
    sip: int
    http: int


class Answer(NamedTuple):
    status: int
    verstat: str | None
    reason: str | None  # X-Verification-Reason
    to_tag: str | None

    @property
    def summary(self) -> tuple[int, str | None, str | None]:
        """What the caller acts on (the To tag of a fresh answer is new each time)."""
        return self.status, self.verstat, self.reason


def invite(node: Node, identities: list[str], *, call_id: str, from_tag: str = "ft1", branch: str | None = None, cseq: int = 1,
           to_tag: str | None = None) -> bytes:
    branch = branch or "z9hG4bK" + secrets.token_hex(8)
    to = f"<sip:+{DEST}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    lines = [f"INVITE sip:+{DEST}@127.0.0.1:{node.sip} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch={branch};rport",
             f"From: <sip:+{ORIG}@127.0.0.1>;tag={from_tag}",
             f"To: {to}",
             f"Call-ID: {call_id}",
             f"CSeq: {cseq} INVITE",
             "Max-Forwards: 70"]
    lines += [f"Identity: {i}" for i in identities]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


class Phone:
    """A UDP SIP client on one socket: sends a request, waits for its answer."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5.0)

    def ask(self, node: Node, data: bytes) -> Answer:
        self.sock.sendto(data, ("127.0.0.1", node.sip))
        r = sip.parse_message(self.sock.recvfrom(65536)[0])
        assert isinstance(r, sip.SipResponse)
        pai = r.headers.get("P-Asserted-Identity") or ""
        verstat = pai.split("verstat=", 1)[1].split(";")[0].split(">")[0] if "verstat=" in pai else None
        return Answer(r.status, verstat, r.headers.get("X-Verification-Reason"), r.to_addr.tag)

    def burst(self, node: Node, data: bytes, n: int) -> list[Answer]:
        """Send ``data`` ``n`` times back to back, then read the answers (datagrams queued together
        are read by whichever workers are free, so the workers sharing the socket both take some,
        also on an idle machine where one worker would otherwise win every race).  A copy that
        reaches a worker while it still verifies an earlier copy is absorbed without an answer
        (RFC 3261 §17.2.1: no final response yet to repeat), so fewer than ``n`` may come."""
        for _ in range(n):
            self.sock.sendto(data, ("127.0.0.1", node.sip))
        out: list[Answer] = []
        self.sock.settimeout(1.0)
        try:
            for _ in range(n):
                try:
                    raw = self.sock.recvfrom(65536)[0]
                except socket.timeout:
                    break
                r = sip.parse_message(raw)
                assert isinstance(r, sip.SipResponse)
                pai = r.headers.get("P-Asserted-Identity") or ""
                verstat = pai.split("verstat=", 1)[1].split(";")[0].split(">")[0] if "verstat=" in pai else None
                out.append(Answer(r.status, verstat, r.headers.get("X-Verification-Reason"), r.to_addr.tag))
        finally:
            self.sock.settimeout(5.0)
        return out

    def close(self) -> None:
        self.sock.close()


def rest_verify(node: Node, identity: str, **dialog: Any) -> dict[str, Any]:
    body = {"verificationRequest": {"from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": int(time.time()), "identity": identity, **dialog}}
    req = urllib.request.Request(f"http://127.0.0.1:{node.http}/stir/v1/verification", data=orjson.dumps(body),
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return {"status": r.status, **orjson.loads(r.read())}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, **orjson.loads(exc.read())}


def is_replay(a: Answer) -> bool:
    return a.status == 438 and a.reason is not None and "replay" in a.reason


def passed(a: Answer) -> bool:
    return a.status == 302 and a.verstat == PASSED


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    d = tmp_path_factory.mktemp("replay")
    pki = make_pki(d / "pki")
    x5u = FileServer(d / "pki")
    try:
        yield {"dir": d, "pki": pki, "x5u": x5u, "signer": Signer(pki.sp_key_obj, x5u.url("sp-chain.pem"))}
    finally:
        x5u.close()


def start_nodes(lab: dict[str, Any], count: int, workers: int, redis: RedisServer | None, name: str) -> tuple[list[Node], list[ServeProcess]]:
    extra = "replay_detection = true\nreject_codes = [438]\n" + (f'redis = "{redis.url}"\n' if redis else "")
    nodes, procs = [], []
    try:
        for i in range(count):
            node = Node(serve_port(), serve_port())
            procs.append(ServeProcess(lab["dir"], serve_toml(lab["pki"], lab["x5u"], http=node.http, sip_verification=node.sip,
                                                             workers=workers, extra_verification=extra), node.http, name=f"{name}{i}"))
            nodes.append(node)
    except BaseException:
        for p in procs:
            p.stop()
        raise
    return nodes, procs


@pytest.fixture(scope="module", params=["memory", "redis"])
def nodes(request: pytest.FixtureRequest, lab: dict[str, Any]) -> Iterator[list[Node]]:
    """memory: one node with two workers; redis: two nodes with two workers each, one Redis."""
    redis = RedisServer(free_port()) if request.param == "redis" else None
    try:
        found, procs = start_nodes(lab, 2 if redis else 1, 2, redis, f"replay-{request.param}-")
        try:
            yield found
        finally:
            codes = [p.stop() for p in procs]
        assert codes == [0] * len(procs)
    finally:
        if redis is not None:
            redis.stop()


@pytest.fixture
def phone() -> Iterator[Phone]:
    p = Phone()
    yield p
    p.close()


def identity(lab: dict[str, Any]) -> str:
    return lab["signer"].identity(orig=ORIG, dest=[DEST], attest="A")


def new_call_id() -> str:
    return secrets.token_hex(8) + "@as.example"


# --- SIP ------------------------------------------------------------------------------------------


def test_same_identity_twice_in_one_invite_is_not_a_replay(lab: dict[str, Any], nodes: list[Node], phone: Phone) -> None:
    ident = identity(lab)
    a = phone.ask(nodes[0], invite(nodes[0], [ident, ident], call_id=new_call_id()))  # two header fields
    assert passed(a), a
    ident = identity(lab)
    a = phone.ask(nodes[-1], invite(nodes[-1], [f"{ident}, {ident}"], call_id=new_call_id()))  # one field, comma-joined
    assert passed(a), a


def test_retransmissions_get_the_original_answer_on_every_worker(lab: dict[str, Any], nodes: list[Node], phone: Phone) -> None:
    """Retransmissions (the same bytes) of verified INVITEs: every answer is the original's.  A
    retransmission read by the other worker is verified there again (a new To tag shows it);
    calls are made until that happened a few times, so the case is exercised, not assumed."""
    crossed = 0
    for _ in range(40):
        node = nodes[0]
        data = invite(node, [identity(lab)], call_id=new_call_id())
        first = phone.ask(node, data)
        assert passed(first), first
        tags = {first.to_tag}
        answers = phone.burst(node, data, 4)
        assert answers, "no retransmission was answered"
        for again in answers:
            assert again.summary == first.summary, (first, again)
            tags.add(again.to_tag)
        crossed += len(tags) > 1
        if crossed >= 3:
            break
    assert crossed >= 3, "no retransmission reached the other worker"


def test_reinvite_of_the_dialog_is_not_a_replay(lab: dict[str, Any], nodes: list[Node], phone: Phone) -> None:
    ident, call_id = identity(lab), new_call_id()
    first = phone.ask(nodes[0], invite(nodes[0], [ident], call_id=call_id, from_tag="alice"))
    assert passed(first), first
    for cseq, node in enumerate(nodes + nodes, start=2):  # re-INVITEs: To tag, new CSeq and branch, every node
        a = phone.ask(node, invite(node, [ident], call_id=call_id, from_tag="alice", to_tag=first.to_tag, cseq=cseq))
        assert passed(a), a


def test_same_passport_in_another_call_is_438_on_every_worker(lab: dict[str, Any], nodes: list[Node], phone: Phone) -> None:
    ident = identity(lab)
    assert passed(phone.ask(nodes[0], invite(nodes[0], [ident], call_id=new_call_id())))
    answers = [phone.ask(n, invite(n, [ident], call_id=new_call_id())) for _ in range(6) for n in nodes]
    assert all(is_replay(a) for a in answers), answers
    # the same Call-ID with another From tag is another call too
    call_id = new_call_id()
    ident = identity(lab)
    assert passed(phone.ask(nodes[0], invite(nodes[0], [ident], call_id=call_id, from_tag="a")))
    assert is_replay(phone.ask(nodes[-1], invite(nodes[-1], [ident], call_id=call_id, from_tag="b")))


def test_signature_twin_is_a_replay(lab: dict[str, Any], nodes: list[Node], phone: Phone) -> None:
    ident = identity(lab)
    tw = twin(ident, lab["pki"].sp_key_obj.public_key())
    assert passed(phone.ask(nodes[0], invite(nodes[0], [ident], call_id=new_call_id())))
    answers = [phone.ask(n, invite(n, [tw], call_id=new_call_id())) for _ in range(3) for n in nodes]
    assert all(is_replay(a) for a in answers), answers


def test_call_verified_at_one_node_replayed_to_another(lab: dict[str, Any], nodes: list[Node], phone: Phone) -> None:
    """nodes[0] verifies call A; nodes[-1] (another node with Redis) gets the PASSporT in call B:
    438; and call A's retransmission: the answer nodes[0] gave."""
    ident = identity(lab)
    data = invite(nodes[0], [ident], call_id=new_call_id())
    first = phone.ask(nodes[0], data)
    assert passed(first), first
    assert is_replay(phone.ask(nodes[-1], invite(nodes[-1], [ident], call_id=new_call_id())))
    again = phone.ask(nodes[-1], data)
    assert again.summary == first.summary, (first, again)


# --- REST -----------------------------------------------------------------------------------------


def test_rest_replay_and_dialog(lab: dict[str, Any], nodes: list[Node], phone: Phone) -> None:
    ident = identity(lab)
    assert rest_verify(nodes[0], ident)["verificationResponse"] == {"verstat": PASSED}
    r = rest_verify(nodes[-1], ident)["verificationResponse"]  # no dialog: each request is its own call
    assert r["reasoncode"] == 438 and "replay" in r["reasondesc"], r
    ident, call_id = identity(lab), new_call_id()
    for n in nodes + nodes:  # one dialog: the same call, wherever it is verified
        assert rest_verify(n, ident, callId=call_id, fromTag="x1")["verificationResponse"] == {"verstat": PASSED}
    assert passed(phone.ask(nodes[0], invite(nodes[0], [ident], call_id=call_id, from_tag="x1")))  # and over SIP
    r = rest_verify(nodes[-1], ident, callId=new_call_id(), fromTag="x1")["verificationResponse"]
    assert r["reasoncode"] == 438, r
    bad = rest_verify(nodes[0], ident, callId=5)
    assert bad["status"] == 400 and bad["requestError"]["serviceException"]["messageId"] == "SVC4005", bad


# --- a Redis outage ---------------------------------------------------------------------------------


def test_replay_detection_resumes_after_a_redis_outage(lab: dict[str, Any], phone: Phone) -> None:
    """Two nodes share a private Redis, which is stopped and started again (empty).  Each round
    signs a new PASSporT, verifies it at node 1 in one call and replays it to node 2 in another:
    once Redis is back, the replay must be a 438 again within a bounded wait (the old circuit
    breaker kept Redis unused for 30 s), and stay so."""
    redis = RedisServer(free_port())
    (n1, n2), procs = start_nodes(lab, 2, 1, redis, "outage-")
    try:

        def round_trip() -> Answer:
            ident = identity(lab)
            a = phone.ask(n1, invite(n1, [ident], call_id=new_call_id()))
            assert passed(a), a  # the original call always passes, Redis or not
            return phone.ask(n2, invite(n2, [ident], call_id=new_call_id()))

        assert is_replay(round_trip())  # Redis shared by both nodes
        redis.stop()
        for _ in range(3):  # both nodes find Redis gone (and go on with their own tables)
            round_trip()
        redis.start()
        restarted = time.monotonic()
        deadline = restarted + 10.0  # a bound, not a speed claim: each node retries every ≤ 2 s
        while not is_replay(round_trip()):
            assert time.monotonic() < deadline, "replays across nodes still pass 10 s after Redis returned"
            time.sleep(0.1)
        print(f"replay detection across nodes resumed {time.monotonic() - restarted:.1f} s after Redis restarted")
        assert all(is_replay(round_trip()) for _ in range(5))  # and stays on
    finally:
        codes = [p.stop() for p in procs]
        redis.stop()
    assert codes == [0, 0]
