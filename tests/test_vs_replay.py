"""Replay detection (vs/replay.py, the replay step of vs/verifier.py): what is a replay and what
is not, the key made of the signing input (an ECDSA signature twin is a replay), the table
shared by forked workers (a race between processes), and the memory and Redis backends behaving
alike (every verifier-level case runs on both; Redis is the real one on 127.0.0.1:6379).

The same cases through a real ``stirshaken serve`` (SIP over UDP, REST, two workers, two nodes,
a Redis outage) are in tests/test_serve_replay.py."""

from __future__ import annotations

import base64
import os
import time
import uuid
from typing import Any, Iterator

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from stirshaken.core.passport import decode
from stirshaken.vs.replay import ReplayTable, call_context, replay_key
from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig

from tests.test_vs_support import DEST, ORIG, make_pki

X5U = "https://cr.example.net/sp.pem"
#: the order of the P-256 group (SEC 2 §2.4.2)
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
REDIS = "redis://127.0.0.1:6379/0"


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def twin(identity: str, public_key: ec.EllipticCurvePublicKey) -> str:
    """``identity`` with its ES256 signature ``r || s`` replaced by ``r || (n - s)``: another
    valid signature of the same signing input, computed without the private key."""
    token, sep, params = identity.partition(";")
    head, payload, sig = token.split(".")
    raw = unb64u(sig)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    der = encode_dss_signature(r, P256_N - s)
    public_key.verify(der, f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))  # the twin is valid
    r2, s2 = decode_dss_signature(der)
    twin_sig = r2.to_bytes(32, "big") + s2.to_bytes(32, "big")
    assert twin_sig != raw
    return f"{head}.{payload}.{b64u(twin_sig)}{sep}{params}"


def call(identities: list[str], call_id: str | None = "call-1@as.example", from_tag: str | None = "t1") -> CallInfo:
    return CallInfo(identities=identities, from_=f"<sip:+{ORIG}@as.example>;tag={from_tag}", to=f"<sip:{DEST}@vs.example>",
                    ruri=f"sip:{DEST}@vs.example", call_id=call_id, from_tag=from_tag)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("replaypki"))


def identity(pki: Any) -> str:
    return pki.signer(X5U).identity(orig=ORIG, dest=[DEST], attest="A")


@pytest.fixture(params=["memory", "redis"])
def nodes(request: pytest.FixtureRequest, pki: Any) -> Iterator[list[Verifier]]:
    """Two verifiers that share their replay marks as two workers of one node (memory: one
    shared table) or two nodes (redis: one Redis, each node its own table)."""
    chains = {X5U: [pki.sp, pki.inter]}
    base = dict(trust_anchors=[str(pki.dir / "root.pem")], replay_detection=True)
    if request.param == "memory":
        c = VerifierConfig(**base)  # type: ignore[arg-type]
        table = ReplayTable.for_config(c, shared=True)
        vs = [Verifier(c, static_chains=chains, replay_table=table) for _ in range(2)]
    else:
        c = VerifierConfig(**base, redis=REDIS)  # type: ignore[arg-type]
        vs = [Verifier(c, static_chains=chains) for _ in range(2)]
        prefix = f"vs-replay-{uuid.uuid4().hex[:8]}:"
        for v in vs:
            v.redis_prefix = prefix
    yield vs
    for v in vs:
        v.close()


def is_replay(r: Any) -> bool:
    return r.sip_code == 438 and "replay" in (r.description or "")


# --- the table --------------------------------------------------------------------------------


def test_table_marks_one_call_per_key() -> None:
    t = ReplayTable(60, 1024)
    k, a, b = replay_key(b"h.p"), call_context("c1", "t1"), call_context("c2", "t1")
    assert t.claim(k, a, 1000.0) is None  # first sighting: recorded
    assert t.claim(k, a, 1001.0) == a  # the same call again
    assert t.claim(k, b, 1002.0) == a  # another call: the holder is named
    assert t.peek(k, 1059.0) == a and t.peek(k, 1060.0) is None  # a mark lives `window` seconds
    assert t.claim(k, b, 1060.0) is None and t.peek(k, 1061.0) == b


def test_call_context() -> None:
    assert call_context("c1", "t1") == call_context("c1", "t1")
    assert call_context("c1", "t1") != call_context("c1", "t2") != call_context("c2", "t1")
    assert call_context("c1", None) == call_context("c1", "")
    assert call_context(None, "t1") != call_context(None, "t1")  # no Call-ID: a call of its own
    assert len(call_context("c1", "t1")) == 8


def test_table_is_bounded_and_keeps_recent_marks() -> None:
    t = ReplayTable(60, 1024)
    keys = [replay_key(str(i).encode()) for i in range(5000)]
    for i, k in enumerate(keys):
        assert t.claim(k, b"ctx-0001", 1000.0 + i * 0.001) is None
    assert t.evictions >= 5000 - 1024
    assert t.peek(keys[-1], 1010.0) == b"ctx-0001"  # the newest survive
    assert sum(t.peek(k, 1010.0) is not None for k in keys) <= 1024


def test_shared_table_one_winner_per_key_across_processes() -> None:
    """Two forked processes claim the same 2,000 keys, each for its own call, at the same time:
    every key has exactly one holder, and both processes agree on it."""
    t = ReplayTable(60, 1 << 14, shared=True)
    keys = [replay_key(f"k{i}".encode()) for i in range(2000)]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        won = sum(t.claim(k, b"child-01", 1000.0) is None for k in keys)
        os.write(w, str(won).encode())
        os._exit(0)
    os.close(w)
    won_parent = sum(t.claim(k, b"parent-1", 1000.0) is None for k in keys)
    won_child = int(os.read(r, 64).decode())
    os.close(r)
    os.waitpid(pid, 0)
    assert won_parent + won_child == len(keys)
    holders = [t.peek(k, 1000.0) for k in keys]
    assert holders.count(b"parent-1") == won_parent and holders.count(b"child-01") == won_child
    t.close()


def test_key_is_the_signing_input_not_the_signature(pki: Any) -> None:
    ident = identity(pki)
    tw = twin(ident, pki.sp_key.public_key())
    a, b = decode(ident.split(";")[0]), decode(tw.split(";")[0])
    assert a.signature != b.signature and a.signing_input == b.signing_input
    assert replay_key(a.signing_input) == replay_key(b.signing_input)


# --- the verifier, memory and Redis alike ------------------------------------------------------


def test_same_identity_twice_in_one_request_is_not_a_replay(nodes: list[Verifier], pki: Any) -> None:
    ident = identity(pki)
    r = nodes[0].verify(call([ident, ident]))  # two Identity header fields
    assert r.ok and all(p.ok for p in r.passports), r.description
    ident2 = identity(pki)
    r = nodes[0].verify(call([f"{ident2}, {ident2}"], call_id="call-2@as.example"))  # one field, comma-joined
    assert r.ok and len(r.passports) == 2, r.description
    assert nodes[0].stats["replays"] == 0


def test_same_dialog_is_not_a_replay_another_call_is(nodes: list[Verifier], pki: Any) -> None:
    ident = identity(pki)
    first, other = nodes
    assert first.verify(call([ident])).ok
    assert first.verify(call([ident])).ok  # a retransmission verified again (no transaction cache here)
    assert other.verify(call([ident])).ok  # ... on the other worker / node
    r = other.verify(call([ident], call_id="call-9@as.example"))  # another call
    assert is_replay(r)
    assert is_replay(first.verify(call([ident], from_tag="t9")))  # the same Call-ID, another From tag
    assert first.verify(call([ident])).ok  # the original call still passes (a re-INVITE)
    assert first.stats["replays"] + other.stats["replays"] == 2


def test_without_call_id_each_verification_is_its_own_call(nodes: list[Verifier], pki: Any) -> None:
    ident = identity(pki)
    assert nodes[0].verify(call([ident, ident], call_id=None)).ok  # still one request
    assert is_replay(nodes[1].verify(call([ident], call_id=None)))


def test_signature_twin_is_a_replay(nodes: list[Verifier], pki: Any) -> None:
    ident = identity(pki)
    tw = twin(ident, pki.sp_key.public_key())
    assert nodes[0].verify(call([ident])).ok
    r = nodes[1].verify(call([tw], call_id="call-attacker@evil.example"))
    assert is_replay(r), r.to_json()
    assert nodes[1].verify(call([tw])).ok  # the twin in the original call is that call's PASSporT


def test_twin_first_then_original_is_a_replay(nodes: list[Verifier], pki: Any) -> None:
    ident = identity(pki)
    tw = twin(ident, pki.sp_key.public_key())
    assert nodes[0].verify(call([tw], call_id="call-a@as.example")).ok  # a valid signature on its own
    assert is_replay(nodes[1].verify(call([ident], call_id="call-b@as.example")))


def test_forged_token_does_not_burn_the_genuine_one(nodes: list[Verifier], pki: Any) -> None:
    ident = identity(pki)
    token, _, params = ident.partition(";")
    head, payload, sig = token.split(".")
    bad = bytearray(unb64u(sig))
    bad[-1] ^= 1
    forged = f"{head}.{payload}.{b64u(bytes(bad))};{params}"
    r = nodes[0].verify(call([forged], call_id="call-x@evil.example"))
    assert not r.ok and not is_replay(r)
    assert nodes[1].verify(call([ident])).ok
    assert nodes[0].stats["replays"] == 0


async def test_async_path_agrees(nodes: list[Verifier], pki: Any) -> None:
    ident = identity(pki)
    assert (await nodes[0].averify(call([ident, ident]))).ok
    assert (await nodes[1].averify(call([ident]))).ok
    assert is_replay(await nodes[1].averify(call([ident], call_id="call-7@as.example")))


def test_redis_marks_are_learnt_by_the_table(pki: Any) -> None:
    """With Redis, each node's table learns the call that holds a PASSporT, so it still knows
    when Redis is unreachable."""
    c = VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], replay_detection=True, redis=REDIS)
    a, b = (Verifier(c, static_chains={X5U: [pki.sp, pki.inter]}) for _ in range(2))
    prefix = f"vs-replay-{uuid.uuid4().hex[:8]}:"
    a.redis_prefix = b.redis_prefix = prefix
    try:
        ident = identity(pki)
        assert a.verify(call([ident])).ok
        assert is_replay(b.verify(call([ident], call_id="call-5@as.example")))
        key = replay_key(decode(ident.split(";")[0]).signing_input)
        assert b.replay_table is not None and b.replay_table.peek(key, time.time()) == call_context("call-1@as.example", "t1")
    finally:
        a.close()
        b.close()


def test_replay_error_names_the_rule(pki: Any) -> None:
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], replay_detection=True, max_age=30, future_skew=5),
                 static_chains={X5U: [pki.sp, pki.inter]})
    ident = identity(pki)
    assert v.verify(call([ident])).ok
    r = v.verify(call([ident], call_id="other"))
    assert r.sip_code == 438 and r.description is not None and "another call within the last 35 s" in r.description
    assert "RFC 8225 §10.1" in r.description
    v.close()
