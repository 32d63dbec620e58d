"""STI-VS decision logic: the ATIS-1000082 error table (E3-E19), 428, several Identity headers
(SHAKEN + div + rcd), freshness, authority, trust sources (anchors, CA list), robustness."""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.test_vs_support import DEST, ORIG, Repo, div_identity, make_pki  # noqa: E402

from stirshaken.core.b64 import b64url_encode  # noqa: E402
from stirshaken.core.certificates import SHAKEN_CP_OID, create_root, make_name, pem  # noqa: E402
from stirshaken.core.passport import encode_token, passport_header, shaken_claims  # noqa: E402
from stirshaken.core.tnauthlist import TN, TNAuthList, TNRange, SPC, to_extension  # noqa: E402
from stirshaken.core.verification import Check  # noqa: E402
from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig, call_tn  # noqa: E402

X5U = "https://cr.example.net/sp.pem"
DIV_X5U = "https://cr.retarget.example/div.pem"
NOW = int(time.time())


@pytest.fixture(scope="module", autouse=True)
def _module_clock() -> None:
    """NOW is this module's clock: set when its first test runs, not when the suite was collected
    (in a long run that can be many minutes earlier than the certificates the fixtures make)."""
    global NOW
    NOW = int(time.time())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def verifier(pki):
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]), static_chains={X5U: [pki.sp, pki.inter]})
    yield v
    v.close()


def ident(pki, *, header=None, claims=None, x5u=X5U, params=None, key=None, **kw) -> str:
    h = header or passport_header(x5u)
    c = claims or shaken_claims(orig=kw.pop("orig", ORIG), dest=kw.pop("dest", [DEST]), attest=kw.pop("attest", "A"),
                                iat=kw.pop("iat", NOW))
    tok = encode_token(key or pki.sp_key, h, c)
    return tok + (params if params is not None else f";info=<{x5u}>;alg=ES256;ppt=shaken")


def call(*identities: str, orig: str = ORIG, dest: str = DEST, **kw) -> CallInfo:
    return CallInfo(identities=list(identities), from_=f"sip:+{orig}@as.example", to=f"sip:{dest}@vs.example", **kw)


def test_valid_call(verifier, pki) -> None:
    r = verifier.verify(call(ident(pki)), now=NOW)
    assert r.ok and r.verstat == "TN-Validation-Passed" and r.attest == "A"
    assert r.sip_code is None and r.reason_header is None
    assert r.passports[0].ok and r.passports[0].credential.spc == "1234"
    j = r.to_json()
    assert j["verstat"] == "TN-Validation-Passed" and "reasoncode" not in j


def test_no_identity_is_428(verifier) -> None:
    r = verifier.verify(CallInfo(identities=[]), now=NOW)
    assert (r.sip_code, r.reason, r.verstat) == (428, "Use Identity Header", "No-TN-Validation")
    assert r.reason_header == 'STIR ;cause=428 ;text="Use Identity Header"'


def _tok(pki, header: dict, claims: dict) -> str:
    return encode_token(pki.sp_key, header, claims)


def _base_claims(**over):
    c = shaken_claims(orig=ORIG, dest=[DEST], attest="A", iat=NOW)
    c.update(over)
    return c


@pytest.mark.parametrize(
    "case, build, code, verstat, fragment",
    [
        ("E3 Date stale", lambda p: (ident(p), {"date": NOW - 120}), 403, "No-TN-Validation", "Date"),
        ("E4 compact form", lambda p: (".." + ident(p).split(".", 2)[2], {}), 438, "No-TN-Validation", "compact"),
        ("E5 ppt param", lambda p: (ident(p, params=f";info=<{X5U}>;alg=ES256;ppt=div"), {}), 438, "No-TN-Validation", "ppt"),
        ("E6 no info", lambda p: (ident(p, params=";alg=ES256;ppt=shaken"), {}), 436, "No-TN-Validation", "info"),
        ("E7 bad info", lambda p: (ident(p, params=";info=<notauri>;alg=ES256;ppt=shaken"), {}), 436, "No-TN-Validation", "Invalid 'info' URI"),
        ("E9 no x5u", lambda p: (_tok(p, {"alg": "ES256", "ppt": "shaken", "typ": "passport"}, _base_claims()) + f";info=<{X5U}>;ppt=shaken", {}), 436, "No-TN-Validation", "x5u"),
        ("E10 x5u!=info", lambda p: (ident(p, params=";info=<https://other.example/x.pem>;alg=ES256;ppt=shaken"), {}), 436, "No-TN-Validation", "x5u"),
        ("E11 typ", lambda p: (_tok(p, {**passport_header(X5U), "typ": "JWT"}, _base_claims()) + f";info=<{X5U}>", {}), 437, "No-TN-Validation", "typ"),
        ("E12 alg", lambda p: (_tok(p, {**passport_header(X5U), "alg": "ES384"}, _base_claims()) + f";info=<{X5U}>", {}), 437, "No-TN-Validation", "alg"),
        ("E13 ppt header", lambda p: (_tok(p, passport_header(X5U, "foo"), _base_claims()) + f";info=<{X5U}>", {}), 438, "No-TN-Validation", "ppt"),
        ("E14 missing origid", lambda p: (_tok(p, passport_header(X5U), {k: v for k, v in _base_claims().items() if k != "origid"}) + f";info=<{X5U}>;ppt=shaken", {}), 438, "No-TN-Validation", "origid"),
        ("E14 payload not JSON", lambda p: (_bad_json(p), {}), 438, "No-TN-Validation", "JSON"),
        ("E15 iat stale", lambda p: (ident(p, iat=NOW - 61), {}), 403, "No-TN-Validation", "iat"),
        ("E15 iat future", lambda p: (ident(p, iat=NOW + 30), {}), 403, "No-TN-Validation", "future"),
        ("E16 orig", lambda p: (ident(p, orig="12155550000"), {}), 438, "No-TN-Validation", "orig"),
        ("E16 dest", lambda p: (ident(p, dest=["12155550000"]), {}), 438, "No-TN-Validation", "dest"),
        ("E18 signature", lambda p: (_tampered(p), {}), 438, "TN-Validation-Failed", "signature"),
        ("E19 attest", lambda p: (_tok(p, passport_header(X5U), _base_claims(attest="Z")) + f";info=<{X5U}>;ppt=shaken", {}), 438, "No-TN-Validation", "attest"),
    ],
)
def test_error_table(verifier, pki, case, build, code, verstat, fragment) -> None:
    identity, extra = build(pki)
    r = verifier.verify(call(identity, **extra), now=NOW)
    assert r.sip_code == code, (case, r.description)
    assert r.verstat == verstat, case
    assert fragment in (r.description or ""), (case, r.description)
    assert r.reason_header and f"cause={code}" in r.reason_header


def _bad_json(pki) -> str:
    a = ident(pki)
    return a.replace(a.split(".")[1], b64url_encode(b"{nope"))


def _tampered(pki) -> str:
    a = ident(pki)
    b = ident(pki, attest="B")
    return a.replace(a.split(".")[1], b.split(".")[1])


def test_freshness_window(pki) -> None:
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], max_age=300, future_skew=5, require_date=True),
                 static_chains={X5U: [pki.sp, pki.inter]})
    assert v.verify(call(ident(pki, iat=NOW - 250), date=NOW - 250), now=NOW).ok
    assert v.verify(call(ident(pki, iat=NOW + 4), date=NOW), now=NOW).ok  # slightly future iat
    assert v.verify(call(ident(pki, iat=NOW + 6), date=NOW), now=NOW).sip_code == 403
    r = v.verify(call(ident(pki)), now=NOW)  # no Date but required
    assert r.sip_code == 403 and "Date" in (r.description or "")
    v.close()


def test_header_forms(verifier, pki) -> None:
    one = ident(pki)
    assert verifier.verify(CallInfo(identities=one, from_=ORIG, to=DEST), now=NOW).ok  # a bare string
    assert verifier.verify(CallInfo(identities=["Identity: " + one], pai=f"<tel:+{ORIG}>", to=[f"tel:{DEST}"]), now=NOW).ok
    # orig may come from P-Asserted-Identity when From is anonymous
    assert verifier.verify(CallInfo(identities=[one], from_="sip:anonymous@anonymous.invalid", pai=f"sip:+{ORIG}@x", ruri=f"sip:{DEST}@y"), now=NOW).ok
    r = verifier.verify(CallInfo(identities=[one], from_="sip:alice@example.com", to=DEST), now=NOW)
    assert r.sip_code == 438 and "orig" in (r.description or "")
    r = verifier.verify(CallInfo(identities=[one], from_=ORIG, to="sip:bob@example.com"), now=NOW)
    assert r.sip_code == 438 and "dest" in (r.description or "")


def test_call_tn_forms() -> None:
    assert call_tn('"Alice <x>" <sip:+1-215-555-1212@a.example;user=phone>;tag=9') == "12155551212"
    assert call_tn("tel:+12155551212;verstat=TN-Validation-Passed") == "12155551212"
    assert call_tn("+1 (215) 555-1212") == "12155551212"
    assert call_tn("sip:alice@example.com") == "sip:alice@example.com"
    assert call_tn(None) is None and call_tn("  ") is None


def _call_tn_general(value: str) -> str | None:
    """call_tn's rule without its shortcuts: a quoted display name removed, then the canonical TN
    of the URI's user or of the bare number, else the value (stripped), None when empty."""
    import re

    from stirshaken.core.tn import TNError, canonicalize_tn, uri_user

    v = re.sub(r'^"(?:[^"\\]|\\.)*"\s*', "", value.strip(), count=1)
    if not v:
        return None
    user = uri_user(v) if "<" in v or v.lower().startswith(("sip:", "sips:", "tel:")) else v
    if user is None:
        return v
    try:
        return canonicalize_tn(user)
    except TNError:
        return v


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["{}", "sip:{}@a.example", "sip:{};verstat=x@a.example;user=phone", "tel:{}", "tel:{};ext=2",
                        "<sip:{}@a.example>", '"Alice" <sip:{}@a.example>;tag=1', '"A<b" <sip:{}@h>', "Bob <tel:{}>",
                        "sips:{}:pw@h", "sip:{}", "tel:{}@h", "sip:{}@h<x>", " {} ", '"x <sip:5@h>" <sip:{}@h>',
                        '"x"sip:{}@h', "<tel:{}", "SIP:{}@h", "\t<sip:{}@h>;tag=1"]),
       st.sampled_from(["", "+", "%2B", "%2b", "++"]),
       st.text(st.sampled_from("0123456789"), min_size=1, max_size=25),
       st.sampled_from(["", "-", ".", " ", "a", "\u0661"]))
@example("sip:{}@a", "+", "1234567890123456789", "")
def test_call_tn_equals_its_general_rule(template: str, plus: str, digits: str, sep: str) -> None:
    """call_tn takes tn_from_uri's fast path for the usual URI; whatever the value (numbers of any
    length, malformed URIs, display names holding "<"), the answer is the general rule's."""
    number = plus + (digits[:3] + sep + digits[3:] if len(digits) > 3 else digits + sep)
    value = template.format(number)
    assert call_tn(value) == _call_tn_general(value), value


def test_call_tn_over_long_number_is_no_tn() -> None:
    """E.164 §6.1 / RFC 8224 §8.3: 19 digits are no telephone number, so the value stays as given
    and matches no PASSporT TN (the former shortcut returned the digits)."""
    value = "sip:+1234567890123456789@a"
    assert call_tn(value) == value
    assert call_tn("sip:+123456789012345@a") == "123456789012345"


# --- several Identity headers ----------------------------------------------------------------


@pytest.fixture(scope="module")
def div_pki(pki):
    key, cert = pki.sp_cert(spc="5678")
    return key, cert


@pytest.fixture(scope="module")
def mverifier(pki, div_pki):
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]),
                 static_chains={X5U: [pki.sp, pki.inter], DIV_X5U: [div_pki[1], pki.inter]})
    yield v
    v.close()


NEW = "12155559999"  # the retargeted destination


def test_div_chain_retargeted_call(mverifier, pki, div_pki) -> None:
    shaken = ident(pki)  # orig -> DEST
    div = div_identity(div_pki[0], DIV_X5U, orig=ORIG, div=DEST, dest=NEW, iat=NOW)
    # To stays the original target, R-URI is the new one (RFC 8946 §4 / RFC 3261 retargeting)
    c = CallInfo(identities=[shaken, div], from_=ORIG, to=f"sip:{DEST}@x", ruri=f"sip:{NEW}@y")
    r = mverifier.verify(c, now=NOW)
    assert r.ok and [p.ok for p in r.passports] == [True, True]
    assert any(ch.name == "div-chain" and ch.ok for ch in r.passports[1].checks)
    # To changed as well: the SHAKEN dest is only bound through the div PASSporT
    c2 = CallInfo(identities=[shaken, div], from_=ORIG, to=f"sip:{NEW}@y", ruri=f"sip:{NEW}@y")
    r2 = mverifier.verify(c2, now=NOW)
    assert r2.ok and "div" in r2.passports[0].checks[-1].detail
    # without the div PASSporT the retargeted call does not match
    r3 = mverifier.verify(CallInfo(identities=[shaken], from_=ORIG, to=NEW), now=NOW)
    assert r3.sip_code == 438 and "dest" in (r3.description or "")


def test_div_two_hops_and_comma_joined(mverifier, pki, div_pki) -> None:
    third = "12155558888"
    shaken = ident(pki)
    d1 = div_identity(div_pki[0], DIV_X5U, orig=ORIG, div=DEST, dest=NEW, iat=NOW)
    d2 = div_identity(div_pki[0], DIV_X5U, orig=ORIG, div=NEW, dest=third, iat=NOW)
    r = mverifier.verify(CallInfo(identities=[f"{d2}, {shaken}", d1], from_=ORIG, to=third), now=NOW)
    assert r.ok and all(p.ok for p in r.passports) and len(r.passports) == 3


def test_div_not_chained_is_reported(mverifier, pki, div_pki) -> None:
    shaken = ident(pki)
    bad_div = div_identity(div_pki[0], DIV_X5U, orig=ORIG, div="12155550000", dest=NEW, iat=NOW)
    bad_orig = div_identity(div_pki[0], DIV_X5U, orig="12155550001", div=DEST, dest=NEW, iat=NOW)
    r = mverifier.verify(CallInfo(identities=[shaken, bad_div, bad_orig], from_=ORIG, to=DEST), now=NOW)
    # the call itself passes (SHAKEN matches To), each div failure is reported with a ppi Reason
    assert r.ok
    assert [p.ok for p in r.passports] == [True, False, False]
    assert r.reason_header and r.reason_header.count("cause=438") == 2 and ";ppi=" in r.reason_header


def test_div_chaining_without_request_targets(mverifier, pki, div_pki) -> None:
    """decide(targets=None) and chain_div only chain the div PASSporTs (RFC 8946 §4); a div that
    does not continue the chain fails with its own 438 while the call passes on its SHAKEN one."""
    from dataclasses import replace

    from stirshaken.core.verification import bind_destinations, chain_div, decide

    shaken = ident(pki)
    good = div_identity(div_pki[0], DIV_X5U, orig=ORIG, div=DEST, dest=NEW, iat=NOW)
    bad_div = div_identity(div_pki[0], DIV_X5U, orig=ORIG, div="12155550000", dest=NEW, iat=NOW)
    r = mverifier.verify(CallInfo(identities=[shaken, good, bad_div], from_=ORIG, to=DEST, ruri=f"sip:{NEW}@y"), now=NOW)
    s_res, g_res, b_res = r.passports
    assert [p.ok for p in r.passports] == [True, True, False]
    # undo the binding's verdict on the bad div, as a caller holding per-header results would have it
    b_raw = replace(b_res, ok=True, error=None, checks=b_res.checks[:-1])
    chained = chain_div(s_res, [g_res, b_raw])
    assert [d.ok for d in chained] == [True, False]
    assert chained[1].checks[-1].name == "div-chain" and chained[1].error is not None
    assert chained[1].error.sip_code == 438
    def view(rs):  # exceptions compare by identity: compare what they say
        return [(d.ok, d.checks, d.error and (d.error.sip_code, d.error.description)) for d in rs]

    assert view(chained) == view(bind_destinations([s_res, g_res, b_raw], ())[1:])
    v = decide([s_res, g_res, b_raw])
    assert v.ok and [p.ok for p in v.passports] == [True, True, False]
    assert v.reason_header and v.reason_header.count("cause=438") == 1
    # a SHAKEN result that failed leaves nothing to chain to; one that did not decode changes nothing
    failed_shaken = replace(s_res, ok=False)
    assert [d.ok for d in chain_div(failed_shaken, [g_res])] == [False]
    assert chain_div(replace(s_res, passport=None), [g_res, b_raw]) == [g_res, b_raw]


def test_div_alone_or_broken_shaken(mverifier, pki, div_pki) -> None:
    div = div_identity(div_pki[0], DIV_X5U, orig=ORIG, div=DEST, dest=NEW, iat=NOW)
    r = mverifier.verify(CallInfo(identities=[div], from_=ORIG, to=NEW), now=NOW)
    assert r.sip_code == 438 and r.verstat == "No-TN-Validation"
    r = mverifier.verify(CallInfo(identities=[_tampered(pki), div], from_=ORIG, to=NEW), now=NOW)
    assert r.sip_code == 438 and r.verstat == "TN-Validation-Failed" and [p.ok for p in r.passports] == [False, False]


def test_rcd_passport_and_failed_second_header(mverifier, pki) -> None:
    rcd_claims = {"dest": {"tn": [DEST]}, "iat": NOW, "orig": {"tn": ORIG}, "rcd": {"nam": "Alice"}}
    rcd = encode_token(pki.sp_key, passport_header(X5U, "rcd"), rcd_claims) + f";info=<{X5U}>;alg=ES256;ppt=rcd"
    r = mverifier.verify(CallInfo(identities=[ident(pki), rcd], from_=ORIG, to=DEST), now=NOW)
    assert r.ok and [p.ppt for p in r.passports] == ["shaken", "rcd"] and all(p.ok for p in r.passports)
    bad_rcd = encode_token(pki.sp_key, passport_header(X5U, "rcd"), {**rcd_claims, "dest": {"tn": ["19999999999"]}}) + f";info=<{X5U}>;ppt=rcd"
    r = mverifier.verify(CallInfo(identities=[ident(pki), bad_rcd, "garbage;;;"], from_=ORIG, to=DEST), now=NOW)
    assert r.ok and [p.ok for p in r.passports] == [True, False, False]
    assert r.reason_header and r.reason_header.count("STIR ;cause=") == 2


def test_first_valid_shaken_wins_and_reason_for_others(mverifier, pki) -> None:
    r = mverifier.verify(CallInfo(identities=[_tampered(pki), ident(pki, attest="B")], from_=ORIG, to=DEST), now=NOW)
    assert r.ok and r.attest == "B"
    assert r.reason_header and "cause=438" in r.reason_header and ";ppi=\"..".replace("\\", "") in r.reason_header


# --- certificates, authority, trust sources --------------------------------------------------


def _cert_with(pki, tnal: TNAuthList | None, critical: bool = False):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    b = (
        x509.CertificateBuilder().subject_name(make_name("SHAKEN 1234", "SP")).issuer_name(pki.inter.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(SHAKEN_CP_OID, None)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pki.inter.public_key()), critical=False)
    )
    if tnal is not None:
        b = b.add_extension(to_extension(tnal), critical=critical)
    return key, b.sign(pki.inter_key, hashes.SHA256())


@pytest.mark.parametrize("tnal, critical, fragment", [
    (None, False, "no TNAuthList"),
    (TNAuthList((SPC("1234"),)), True, "critical"),
    (TNAuthList((TN("12155551212"),)), False, "no SPC"),
])
def test_tnauthlist_rules(pki, tnal, critical, fragment) -> None:
    key, cert = _cert_with(pki, tnal, critical)
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]), static_chains={X5U: [cert, pki.inter]})
    r = v.verify(call(ident(pki, key=key)), now=NOW)
    assert r.sip_code == 437 and fragment in (r.description or "")
    v.close()


def test_untrusted_root_and_missing_anchors(pki, tmp_path) -> None:
    other_root = create_root(ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "other.pem").write_bytes(pem([other_root]))
    v = Verifier(VerifierConfig(trust_anchors=[str(tmp_path / "d")]), static_chains={X5U: [pki.sp, pki.inter]})
    r = v.verify(call(ident(pki)), now=NOW)
    assert r.sip_code == 437 and r.verstat == "TN-Validation-Failed"
    v.close()
    v = Verifier(VerifierConfig(), static_chains={X5U: [pki.sp, pki.inter]})
    r = v.verify(call(ident(pki)), now=NOW)
    assert r.sip_code == 437 and "no trust anchors" in (r.description or "")
    v.close()
    # a directory of anchors works too
    (tmp_path / "d" / "root.pem").write_bytes(pem([pki.root]))
    v = Verifier(VerifierConfig(trust_anchors=[str(tmp_path / "d")]), static_chains={X5U: [pki.sp, pki.inter]})
    assert v.verify(call(ident(pki)), now=NOW).ok
    v.close()


def test_authority_check(pki) -> None:
    key, cert = _cert_with(pki, TNAuthList((SPC("1234"), TNRange("12155551200", 100))))
    chains = {X5U: [cert, pki.inter]}
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], check_authority=True), static_chains=chains)
    assert v.verify(call(ident(pki, key=key)), now=NOW).ok  # 12155551212 within the range
    r = v.verify(call(ident(pki, key=key, orig="13035550000"), orig="13035550000"), now=NOW)
    assert r.sip_code == 437 and "not authorized" in (r.description or "")
    v.close()
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], check_authority=True,
                                authority_blocks={"1234": ["1303"]}), static_chains={X5U: [pki.sp, pki.inter]})
    assert v.verify(call(ident(pki, orig="13035550000"), orig="13035550000"), now=NOW).ok
    assert v.verify(call(ident(pki)), now=NOW).sip_code == 437
    v.close()


def _pa(tmp_path):
    from stirshaken.core.certificates import create_intermediate

    pa_root_key = ec.generate_private_key(ec.SECP256R1())
    pa_root = create_root(pa_root_key, cn="STI-PA ROOT", org="STI-PA")
    pa_key = ec.generate_private_key(ec.SECP256R1())
    pa_cert = create_intermediate(pa_key, pa_root, pa_root_key, cn="STI-PA SHAKEN signer", org="STI-PA")
    (tmp_path / "pa-root.pem").write_bytes(pem([pa_root]))
    return pa_key, pa_cert


def _ca_list(pa_key, x5u: str, anchors: list, exp: int) -> str:
    payload = {"version": 1, "sequence": 7, "exp": exp, "trustList": [pem([a]).decode() for a in anchors]}
    return encode_token(pa_key, {"alg": "ES256", "typ": "JWT", "x5u": x5u}, payload)


async def test_ca_list_trust_source(pki, tmp_path) -> None:
    pa_key, pa_cert = _pa(tmp_path)
    repo = Repo()
    repo.files["pa.pem"] = (pem([pa_cert]), "application/pem-certificate-chain")
    await repo.start()
    pa_x5u = repo.url("/files/pa.pem")
    good = _ca_list(pa_key, pa_x5u, [pki.root], NOW + 3600)
    (tmp_path / "calist.jws").write_text(good)
    repo.files["ca-list"] = (f'{{"status":"success","caList":"{good}"}}'.encode(), "application/json")
    chains = {X5U: [pki.sp, pki.inter]}
    base = dict(ca_list_trust=[str(tmp_path / "pa-root.pem")], allow_private_x5u=True, allow_http_x5u=True)
    try:
        for src in (str(tmp_path / "calist.jws"), repo.url("/files/ca-list")):
            v = Verifier(VerifierConfig(ca_list=src, **base), static_chains=chains)
            r = await v.averify(call(ident(pki)), now=NOW)
            assert r.ok, (src, r.description)
            assert v.trust.ca_list is not None and v.trust.ca_list.sequence == 7
            await v.aclose()
        # a CA list signed by someone else, or expired: no anchors, 437
        rogue_key = ec.generate_private_key(ec.SECP256R1())
        bad = {"forged": _ca_list(rogue_key, pa_x5u, [pki.root], NOW + 3600), "expired": _ca_list(pa_key, pa_x5u, [pki.root], NOW - 10)}
        for name, text in bad.items():
            (tmp_path / f"{name}.jws").write_text(text)
            v = Verifier(VerifierConfig(ca_list=str(tmp_path / f"{name}.jws"), **base), static_chains=chains)
            r = await v.averify(call(ident(pki)), now=NOW)
            assert r.sip_code == 437 and "CA list" in (r.description or ""), (name, r.description)
            await v.aclose()
    finally:
        await repo.stop()


# --- robustness ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.text(max_size=300), st.from_regex(r"[A-Za-z0-9_\-]{0,40}\.[A-Za-z0-9_\-.]{0,80};info=<[^>]{0,30}>(;[a-z]{1,5}=[^;]{0,10})*", fullmatch=True)), max_size=3),
       st.one_of(st.none(), st.text(max_size=40)), st.one_of(st.none(), st.text(max_size=40)), st.one_of(st.none(), st.floats(allow_nan=True)))
def test_malformed_anything_gives_typed_result(verifier, identities, from_, to, date) -> None:
    r = verifier.verify(CallInfo(identities=identities, from_=from_, to=to, date=date), now=NOW)
    assert r.verstat in ("No-TN-Validation", "TN-Validation-Failed")
    assert r.sip_code in (403, 428, 436, 437, 438)


async def test_bad_types_do_not_escape(verifier, pki) -> None:
    for bad in (CallInfo(identities=[None, 3]), CallInfo(identities=None), CallInfo(identities=[ident(pki)], to=[None, 5], from_=7)):  # type: ignore[list-item, arg-type]
        r = await verifier.averify(bad, now=NOW)
        assert r.sip_code in (428, 438)
    r = await verifier.averify(call(ident(pki, iat=int(time.time()))), now=float("nan"))  # a NaN clock falls back to time.time()
    assert r.ok
    r = await verifier.averify(call(ident(pki), date=float("inf")), now=NOW)
    assert r.sip_code == 403


def test_static_chain_fetches_nothing(pki) -> None:
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]))
    v.add_static_chain(X5U, [pki.sp, pki.inter])
    assert v.verify(call(ident(pki)), now=NOW).ok
    assert v.stats["fetches"] == 0 and v._io is None  # no I/O thread was even started
    v.close()




# --- rich call data (RFC 9795; docs/requirements.md RC-01, RC-02) ----------------------------------

JCARD = ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Example Bank"], ["org", {}, "text", "Example Bank, Inc."]]]
LOGO = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # an icon's bytes, served by the loopback repository


@pytest.fixture
def rcd_repo():
    from tests.test_vs_support import ThreadedRepo

    repo = Repo()
    repo.files["logo.png"] = (LOGO, "image/png")
    served = ThreadedRepo(repo)
    yield repo
    served.stop()


def rcd_ident(pki, icn: str | None, *, jcd=JCARD, logo: bytes = LOGO, shaken: bool = False) -> str:
    from stirshaken.core.rcd import integrity, rcd_claims

    claims = rcd_claims(orig=ORIG, dest=[DEST], nam="Example Bank", jcd=jcd, icn=icn, crn="Your statement is ready",
                        digests={"/icn": integrity(logo)} if icn else None, iat=NOW)
    if shaken:  # rich call data inside the SHAKEN PASSporT (as ATIS-1000094 does)
        claims.update(attest="A", origid=str(uuid.uuid4()))
        return ident(pki, claims=claims)
    return encode_token(pki.sp_key, passport_header(X5U, "rcd"), claims) + f";info=<{X5U}>;alg=ES256;ppt=rcd"


def rcd_verifier(pki, **kw) -> Verifier:
    return Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")], allow_private_x5u=True, allow_http_x5u=True, **kw),
                    static_chains={X5U: [pki.sp, pki.inter]})


def test_rcd_digests_checked_against_jcd_and_fetched_icon(pki, rcd_repo) -> None:
    """SHAKEN + rcd (nam, jcd, icn on a loopback server): both pass, the icon is fetched once; a
    changed icon or jCard fails the rcd PASSporT alone, 438 with a reason naming the member, and
    the call stays TN-Validation-Passed with the SHAKEN attestation."""
    icn = rcd_repo.url("/files/logo.png")
    with rcd_verifier(pki) as v:
        r = v.verify(call(ident(pki), rcd_ident(pki, icn)), now=NOW)
        assert r.ok and r.attest == "A" and [p.ok for p in r.passports] == [True, True], r.to_json()
        (entry,) = r.rich_call_data
        assert entry["ok"] and entry["rcd"]["nam"] == "Example Bank" and entry["crn"] == "Your statement is ready"
        assert entry["detail"] == "rcdi /icn, /jcd match"
        assert rcd_repo.hits["/files/logo.png"] == 1
        assert r.to_json()["rcd"][0]["ok"] is True

        rcd_repo.files["logo.png"] = (LOGO + b"tampered", "image/png")
        r = v.verify(call(ident(pki), rcd_ident(pki, icn)), now=NOW)
        assert r.ok and r.verstat == "TN-Validation-Passed" and r.attest == "A"
        shaken, rcd = r.passports
        assert shaken.ok and not rcd.ok and rcd.error.sip_code == 438
        assert rcd.error.description == f"rcdi /icn digest does not match the content at {icn} (RFC 9795)"
        assert "STIR ;cause=438" in r.reason_header and ";ppi=" in r.reason_header
        assert not r.rich_call_data[0]["ok"]

        rcd_repo.files["logo.png"] = (LOGO, "image/png")
        token, params = rcd_ident(pki, icn).split(";", 1)
        signed = rcd_ident(pki, icn, jcd=[*JCARD[:1], [*JCARD[1], ["tel", {}, "uri", "tel:+12155551212"]]]).split(";", 1)[0]
        # the jCard of one token with the rcdi of another: re-signed, so only the digest can tell
        from stirshaken.core.passport import parse_jws

        claims = parse_jws(signed).claims
        claims["rcdi"] = parse_jws(token).claims["rcdi"]
        forged = encode_token(pki.sp_key, passport_header(X5U, "rcd"), claims) + ";" + params
        r = v.verify(call(ident(pki), forged), now=NOW)
        assert r.ok and not r.passports[1].ok
        assert r.passports[1].error.description == "rcdi /jcd digest does not match rcd/jcd (RFC 8785 form) (RFC 9795)"


def test_rcd_content_not_fetchable_and_inside_shaken(pki, rcd_repo) -> None:
    """An icon that cannot be fetched fails the rcd PASSporT with the fetch's 436 and its reason;
    rich call data inside the SHAKEN PASSporT is checked too, and a failed digest there adds a
    failed rcd-integrity check without failing the SHAKEN PASSporT."""
    missing = rcd_repo.url("/files/none.png")
    with rcd_verifier(pki) as v:
        r = v.verify(call(ident(pki), rcd_ident(pki, missing)), now=NOW)
        assert r.ok and not r.passports[1].ok and r.passports[1].error.sip_code == 436
        assert r.passports[1].error.description == "rcdi /icn not checked: Failed to dereference rich call data URI: HTTP 404"
        r = v.verify(call(rcd_ident(pki, missing, shaken=True)), now=NOW)
        assert r.ok and r.passports[0].ok and r.attest == "A"
        assert Check("rcd-integrity", False, "rcdi /icn not checked: Failed to dereference rich call data URI: HTTP 404") in r.passports[0].checks
        assert r.rich_call_data[0]["ok"] is False


def test_rcd_fetches_follow_the_x5u_rules(pki, rcd_repo) -> None:
    """Rich call data content is fetched under the x5u policy: a loopback icon is refused by a
    default verifier (SSRF guard), and the fetches count against max_fetches_per_request."""
    icn = rcd_repo.url("/files/logo.png")
    with Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]), static_chains={X5U: [pki.sp, pki.inter]}) as v:
        r = v.verify(call(ident(pki), rcd_ident(pki, icn)), now=NOW)
        assert r.ok and not r.passports[1].ok and r.passports[1].error.sip_code == 436
        assert r.passports[1].error.description.startswith(f"rcdi /icn not checked: rich call data {icn} refused: not https")
    assert rcd_repo.hits.get("/files/logo.png", 0) == 0
    with rcd_verifier(pki, max_fetches_per_request=1) as v:
        two = [rcd_ident(pki, rcd_repo.url("/files/logo.png"), jcd=None), rcd_ident(pki, rcd_repo.url("/files/logo.png", host="localhost"), jcd=None)]
        r = v.verify(call(ident(pki), *two), now=NOW)
        assert r.ok and [p.ok for p in r.passports] == [True, True, False]
        assert "max_fetches_per_request" in r.passports[2].error.description


def test_rcd_name_only_needs_no_fetch(pki) -> None:
    """nam alone (no digest to check, no URL): verified on the direct path, no I/O."""
    from stirshaken.core.rcd import rcd_claims

    claims = rcd_claims(orig=ORIG, dest=[DEST], nam="Alice", iat=NOW)
    rcd = encode_token(pki.sp_key, passport_header(X5U, "rcd"), claims) + f";info=<{X5U}>;alg=ES256;ppt=rcd"
    with rcd_verifier(pki) as v:
        r = v.verify(call(ident(pki), rcd), now=NOW)
        assert r.ok and r.passports[1].ok and r.rich_call_data[0]["detail"] == "no rcdi digests"
