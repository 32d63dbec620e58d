"""Review fixes of the STI-VS: the direct warm path agrees with the generator flow, no attest on
failure, read-only shared JOSE header, ASCII-only TN digits, CRL signers are no path anchors,
stale CRL warnings, periodic CA list reload, the shared x5u-signed JWS check (stirshaken.core.jose)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import math
import time

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.test_vs_support import DEST, ORIG, crl_der, div_identity, make_pki  # noqa: E402
from tests.test_vs_verify import X5U, DIV_X5U, _ca_list, _pa, call, ident  # noqa: E402

from stirshaken.core import verification as V  # noqa: E402
from stirshaken.core.verification.preparation import canon  # noqa: E402
from stirshaken.core.certificates import create_crl, create_root, pem  # noqa: E402
from stirshaken.core.errors import UntrustedCertificateError  # noqa: E402
from stirshaken.core.jose import verify_x5u_jws  # noqa: E402
from stirshaken.core.passport import encode_token, passport_header, problems, shaken_claims  # noqa: E402
from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig  # noqa: E402

NOW = int(time.time())


@pytest.fixture(scope="module", autouse=True)
def _module_clock() -> None:
    """NOW is this module's clock: set when its first test runs, not when the suite was collected
    (in a long run that can be many minutes earlier than the certificates the fixtures make)."""
    global NOW
    NOW = int(time.time())
    import tests.test_vs_verify as vv  # its ident() signs with its own NOW: the same clock

    vv.NOW = NOW


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def div_pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("divpki"))


def _tamper(identity: str) -> str:
    token, params = identity.split(";", 1)
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["attest"] = "B"
    p2 = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()).rstrip(b"=").decode()
    return f"{h}.{p2}.{s};{params}"


def _verifiers(pki, div_pki, **cfg):
    chains = {X5U: [pki.sp, pki.inter], DIV_X5U: [div_pki.sp, div_pki.inter]}
    anchors = [str(pki.dir / "root.pem"), str(div_pki.dir / "root.pem")]
    fast = Verifier(VerifierConfig(trust_anchors=anchors, **cfg), static_chains=chains)
    slow = Verifier(VerifierConfig(trust_anchors=anchors, **cfg), static_chains=chains)
    slow.fast_path = False
    return fast, slow


def test_fast_path_agrees_with_flow(pki, div_pki) -> None:
    """Verifier._fast (direct) and Verifier._flow (generator) give the same results and stats on
    chosen calls (the generated ones follow)."""
    good = ident(pki)
    dv = div_identity(div_pki.sp_key, DIV_X5U, orig=ORIG, div=DEST, dest="12155550000", iat=NOW)
    cases = [
        call(good),
        call(_tamper(good)),
        call(ident(pki, iat=NOW - 3600)),
        call(ident(pki), dest="19995550000"),
        call(ident(pki), orig="19995550000"),
        call(),
        call(good + ", " + ident(pki, attest="B")),
        CallInfo(identities=[good, dv], from_=f"sip:+{ORIG}@a", to=f"sip:{DEST}@b", ruri="sip:12155550000@c"),
        call(good, date=NOW),
        call(good, date=float("nan")),
        call("garbage;info=<x>"),
        CallInfo(identities=[good], from_=f'"Alice" <sip:+{ORIG}@a>;tag=1', pai=f"<tel:+{ORIG}>", to=[f"<sip:+{DEST}@b>", None]),
        CallInfo(identities=[good], from_=f"sip:+{ORIG}@a", to=f"sip:{DEST}@b", ruri=f"sip:+{DEST}@b;user=phone"),
        CallInfo(identities=[123], from_=f"sip:+{ORIG}@a"),  # type: ignore[list-item]
        call(ident(pki, x5u="https://unknown.example/x.pem")),
    ]
    fast, slow = _verifiers(pki, div_pki, allow_private_x5u=False)
    try:
        for now in (NOW, float("nan"), None):
            for c in cases:
                a = fast.verify(c, now=now)
                b = slow.verify(c, now=now)
                assert orjson.dumps(a.to_json()) == orjson.dumps(b.to_json()), c
                assert (a.attest, a.origid) == (b.attest, b.origid)
        assert fast.stats == slow.stats
        assert fast.stats["static_hits"] > 0
    finally:
        fast.close()
        slow.close()


def _mutate(rnd, value: str) -> str:
    """One to three random edits of an Identity header value: a character replaced, dropped or
    doubled, with characters that matter to its grammar (RFC 8224 §4.1, RFC 7515 §7.1)."""
    chars = ".;,=<>\"_-+/ Aa0é\r\n"
    for _ in range(rnd.randint(1, 3)):
        if not value:
            break
        i = rnd.randrange(len(value))
        op = rnd.randrange(3)
        if op == 0:
            value = value[:i] + rnd.choice(chars) + value[i + 1:]
        elif op == 1:
            value = value[:i] + value[i + 1:]
        else:
            value = value[:i] + value[i] + value[i:]
    return value


@pytest.mark.parametrize("replay", [False, True])
def test_fast_path_agrees_with_flow_on_generated_calls(pki, div_pki, replay: bool) -> None:
    """Property: for generated calls (valid, tampered and mutated Identity headers, several
    headers, orig/dest in every form including 16+ digit and malformed numbers, Dates, clocks;
    with replay detection, dialogs drawn from a few so that the same PASSporT comes again in the
    same and in other calls), Verifier._fast gives exactly the result of Verifier._flow (JSON,
    attest, origid) and the same stats; and it does answer most of them (the comparison is not
    vacuous)."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    good = ident(pki)
    pool = [
        good, ident(pki, attest="B"), ident(pki, attest="C", dest=[DEST, "12155550000"]), _tamper(good),
        ident(pki, iat=NOW - 3600), ident(pki, iat=NOW + 600), ident(pki, dest=["1234567890123456789"]),
        ident(pki, orig="1234567890123456"), ident(pki, orig="19995550000"), ident(pki, params=""),
        ident(pki, params=f";info=<{X5U}>;alg=ES256;ppt=div"), ident(pki, params=f";info=<{X5U}x>;alg=ES256;ppt=shaken"),
        div_identity(div_pki.sp_key, DIV_X5U, orig=ORIG, div=DEST, dest="12155550000", iat=NOW),
        ".." + good.split(".", 2)[2], "garbage;info=<x>", "",
    ]
    others = ["12155550000", "19995550000", "1234567890123456789", "1234567890123456", "", "abc", "\u0661\u0662",
              "+1 (215) 555-1212"]
    forms = st.sampled_from(["{}", "sip:+{}@a", "sip:{}@b;user=phone", '"Alice" <sip:+{}@a>;tag=1', "<tel:+{}>",
                             "tel:{};x=1", "Bob <sip:{}@h>", "sip:{}", '"a<b" <sip:+{}@h>', "sip:%2B{}@h"])

    def party(*usual: str):  # mostly the numbers the PASSporTs name, in any form; sometimes absent
        return st.one_of(st.none(), st.builds(str.format, forms, st.sampled_from([*usual, *usual, *usual, *others])))

    # mostly valid headers, so that the binding of orig and dest is what decides
    identity = st.one_of(st.sampled_from([good] * 4 + pool), st.builds(_mutate, st.randoms(use_true_random=False), st.sampled_from(pool)))
    calls = st.builds(
        CallInfo,
        identities=st.one_of(st.lists(identity, max_size=3), st.builds(lambda a, b: a + ", " + b, identity, identity)),
        from_=party(ORIG), pai=party(ORIG),
        to=st.one_of(party(DEST, "12155550000"), st.lists(party(DEST, "12155550000"), max_size=2)),
        ruri=party(DEST, "12155550000"),
        date=st.sampled_from([None, None, NOW, NOW - 3600, NOW + 3600, float("nan"), float("inf")]),
        call_id=st.sampled_from(["c1", "c2", "c3", None]), from_tag=st.sampled_from(["t1", "t2", None]),
    )
    fast, slow = _verifiers(pki, div_pki, allow_private_x5u=False, replay_detection=replay)
    answered = [0, 0]  # calls, of which _fast answered

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
    @given(calls, st.sampled_from([NOW, NOW + 30, NOW + 7200, float("nan"), None]))
    @example(CallInfo(identities=[good], from_=f"sip:+{ORIG}@a", to="sip:+1234567890123456789@b"), NOW)
    @example(CallInfo(identities=[ident(pki, dest=["1234567890123456789"])], from_=ORIG, to="1234567890123456789"), NOW)
    def agree(c: CallInfo, now) -> None:
        direct = fast._fast(c, now)  # None: the flow must run (setup, a refresh due, I/O, odd clock)
        flow = slow.verify(c, now=now)
        answered[0] += 1
        if direct is None:
            direct = fast.verify(c, now=now)
        else:
            answered[1] += 1
        assert orjson.dumps(direct.to_json()) == orjson.dumps(flow.to_json()), c
        assert (direct.attest, direct.origid, direct.ok) == (flow.attest, flow.origid, flow.ok)
        assert fast.stats == slow.stats

    try:
        fast.verify(call(good), now=NOW)  # setup, as a serving verifier has done before its calls
        slow.verify(call(good), now=NOW)
        agree()
        assert answered[1] > answered[0] // 2, answered
        if replay:  # replays were among the calls, and the direct path judged some of them
            assert fast.stats["replays"] > 0 and fast.stats["replays"] == slow.stats["replays"]
    finally:
        fast.close()
        slow.close()


async def test_fast_path_agrees_async(pki, div_pki) -> None:
    fast, slow = _verifiers(pki, div_pki)
    try:
        for c in (call(ident(pki)), call(_tamper(ident(pki))), call()):
            a, b = await fast.averify(c, now=NOW), await slow.averify(c, now=NOW)
            assert a.to_json() == b.to_json()
        assert fast.stats == slow.stats
    finally:
        await fast.aclose()
        await slow.aclose()


def test_replay_detection_takes_the_direct_path_without_redis(pki) -> None:
    """Replay marks in the node's table need no I/O: the direct path runs them (and a second
    call with the same PASSporT is a replay there too); with Redis, only the flow does."""
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], replay_detection=True), static_chains={X5U: [pki.sp, pki.inter]})
    assert v.fast_path
    c = call(ident(pki))
    v.verify(c, now=NOW)  # setup
    c2 = CallInfo(identities=c.identities, from_=c.from_, to=c.to, call_id="other-call", from_tag="t")
    first = v._fast(CallInfo(identities=[ident(pki)], from_=c.from_, to=c.to, call_id="a", from_tag="1"), NOW)
    assert first is not None and first.ok
    replayed = v._fast(c2, NOW)
    assert replayed is not None and not replayed.ok and replayed.sip_code == 438 and v.stats["replays"] == 1
    v.close()
    r = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], replay_detection=True, redis="redis://127.0.0.1:6379/0"),
                 static_chains={X5U: [pki.sp, pki.inter]})
    assert not r.fast_path
    r.close()


def test_failure_reports_no_attest(pki) -> None:
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]), static_chains={X5U: [pki.sp, pki.inter]})
    r = v.verify(call(_tamper(ident(pki))), now=NOW)
    assert not r.ok and r.sip_code == 438 and r.attest is None and "attest" not in r.to_json()
    assert r.origid is None  # the signature did not verify: nothing of the token is reported
    r = v.verify(call(ident(pki), dest="19995550000"), now=NOW)  # signature fine, binding fails
    assert not r.ok and r.attest is None and r.origid is not None
    v.close()


def test_shared_header_is_read_only(pki) -> None:
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]), static_chains={X5U: [pki.sp, pki.inter]})
    results = [v.verify(call(ident(pki)), now=NOW) for _ in range(3)]
    p = results[-1].passports[0].passport
    assert p is not None and p.header["x5u"] == X5U and dict(p.header)["ppt"] == "shaken"
    with pytest.raises(TypeError):
        p.header["x5u"] = "https://evil.example/x.pem"  # type: ignore[index]
    assert orjson.loads(orjson.dumps(results[-1].to_json()))["passports"][0]["header"]["x5u"] == X5U
    assert orjson.loads(orjson.dumps(p.to_json()))["header"]["alg"] == "ES256"
    assert v.verify(call(ident(pki)), now=NOW).ok
    v.close()


def test_ascii_digits_only(pki) -> None:
    token = encode_token(pki.sp_key, passport_header(X5U), shaken_claims(orig="١٢٣", dest=[DEST], attest="A", iat=NOW))
    p = V.prepare(token + f";info=<{X5U}>", orig=None, dest=None, now=NOW).passport
    found = problems(p)
    assert found and any("not canonical" in f for f in found)
    assert canon("١٢٣") is None and canon("123") == "123"


def test_crl_signer_is_not_a_path_anchor(pki, tmp_path) -> None:
    other = create_root(ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "other.pem").write_bytes(pem([other]))
    chains = {X5U: [pki.sp, pki.inter]}
    v = Verifier(VerifierConfig(trust_anchors=[str(tmp_path / "other.pem")], crl_signers=[str(pki.dir / "root.pem")]), static_chains=chains)
    r = v.verify(call(ident(pki)), now=NOW)
    assert r.sip_code == 437 and not r.ok, r.description
    assert v.trust.store().crl_signers == (pki.root,) and pki.root not in v.trust.store().anchors
    v.close()
    # a CRL from the configured signer (an indirect CRL naming the leaf) revokes it
    (tmp_path / "signer.pem").write_bytes(pem([pki.inter]))
    crl = create_crl(pki.inter, pki.inter_key, [(pki.sp.serial_number, dt.datetime.now(dt.timezone.utc))])
    (tmp_path / "x.crl").write_bytes(crl_der(crl))
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], crl_signers=[str(tmp_path / "signer.pem")],
                                crls=[str(tmp_path / "x.crl")]), static_chains=chains)
    r = v.verify(call(ident(pki)), now=NOW)
    assert r.sip_code == 437 and "revoked" in (r.description or "")
    v.close()


def test_stale_crl_gives_a_warning_check(pki, tmp_path) -> None:
    crl = create_crl(pki.inter, pki.inter_key, [], next_update=dt.timedelta(seconds=-30))  # past nextUpdate
    (tmp_path / "stale.crl").write_bytes(crl_der(crl))
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], crls=[str(tmp_path / "stale.crl")]),
                 static_chains={X5U: [pki.sp, pki.inter]})
    now = time.time()
    assert v.crls.next_due < now + 120  # a stale file is re-read soon, not in a day
    r = v.verify(call(ident(pki, iat=int(now))), now=now)
    assert r.ok, r.description
    warnings = [c for c in r.checks if c.name == "warning"]
    assert warnings and "nextUpdate" in warnings[0].detail
    fresh = create_crl(pki.inter, pki.inter_key, [])
    (tmp_path / "fresh.crl").write_bytes(crl_der(fresh))
    v2 = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], crls=[str(tmp_path / "fresh.crl")]),
                  static_chains={X5U: [pki.sp, pki.inter]})
    r2 = v2.verify(call(ident(pki, iat=int(now))), now=now)
    assert r2.ok and not [c for c in r2.checks if c.name == "warning"]
    v.close()
    v2.close()


async def test_ca_list_is_reloaded(pki, tmp_path) -> None:
    pa_key, pa_cert = _pa(tmp_path)
    (tmp_path / "pa.pem").write_bytes(pem([pa_cert]))
    path = tmp_path / "calist.jws"
    path.write_text(_ca_list(pa_key, str(tmp_path / "pa.pem"), [pki.root], NOW + 3600))
    v = Verifier(VerifierConfig(ca_list=str(path), ca_list_trust=[str(tmp_path / "pa-root.pem")], ca_list_refresh=1),
                 static_chains={X5U: [pki.sp, pki.inter]})
    try:
        assert (await v.averify(call(ident(pki)), now=NOW)).ok
        assert v.trust.ca_list is not None and v.trust.ca_list.sequence == 7
        assert math.isfinite(v._ca_list_refresh_at)
        payload = {"version": 1, "sequence": 8, "exp": NOW + 3600, "trustList": [pem([pki.root]).decode()]}
        path.write_text(encode_token(pa_key, {"alg": "ES256", "typ": "JWT", "x5u": str(tmp_path / "pa.pem")}, payload))
        await asyncio.sleep(1.1)
        for _ in range(50):
            await v.averify(call(ident(pki)), now=time.time())
            if v.trust.ca_list.sequence == 8:
                break
            await asyncio.sleep(0.1)
        assert v.trust.ca_list.sequence == 8
        # a broken reload keeps the list in use
        path.write_text("not a jws")
        v._ca_list_refresh_at = 0.0
        await v.averify(call(ident(pki)), now=time.time())
        await asyncio.sleep(0.3)
        assert v.trust.ca_list is not None and v.trust.ca_list.sequence == 8
        assert (await v.averify(call(ident(pki, iat=int(time.time()))), now=time.time())).ok
    finally:
        await v.aclose()


def test_x5u_jws_shared_check(pki) -> None:
    at = dt.datetime.now(dt.timezone.utc)
    si = b"header.payload"
    from stirshaken.core.passport import es256_sign
    sig = es256_sign(pki.sp_key, si)
    chain = [pki.sp, pki.inter]
    assert verify_x5u_jws(si, sig, chain, [pki.root], at=at, error=UntrustedCertificateError, what="T") == pki.sp
    with pytest.raises(UntrustedCertificateError, match="T signature does not verify"):
        verify_x5u_jws(si + b"x", sig, chain, [pki.root], at=at, error=UntrustedCertificateError, what="T")
    other = create_root(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(UntrustedCertificateError, match="T signer does not chain"):
        verify_x5u_jws(si, sig, chain, [other], at=at, error=UntrustedCertificateError, what="T")
    # a pinned certificate's key is accepted without a path
    assert verify_x5u_jws(si, sig, [pki.sp], [], at=at, error=UntrustedCertificateError, what="T", pinned=[pki.sp]) == pki.sp
    with pytest.raises(UntrustedCertificateError, match="no trust anchor"):
        verify_x5u_jws(si, sig, [pki.sp], [], at=at, error=UntrustedCertificateError, what="T")
