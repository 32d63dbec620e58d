"""core/verification/: the verification decision (RFC 8224 §6.2, ATIS-1000074 §5.3.1, ATIS-1000082)."""

from __future__ import annotations

import ast
import random
from pathlib import Path
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from stirshaken.core import jose
from stirshaken.core import passport as pp
from stirshaken.core import verification as V
from stirshaken.core.b64 import b64url_encode
from stirshaken.core.errors import (
    CompactFormError,
    IdentityMismatchError,
    PassportEncodingError,
    PassportFormatError,
    PassportJSONError,
    SignatureError,
    StirShakenError,
    TNAuthListError,
    UntrustedCertificateError,
    X5UMismatchError,
)
from stirshaken.core.identity import parse_identity
from stirshaken.core.memo import BoundedCache
import datetime as dt
import time
from stirshaken.core import certificates as C
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.errors import VERSTAT_FAILED, VERSTAT_NONE, VERSTAT_PASSED, StirShakenError
from stirshaken.core.passport import Signer, canonical_json
from stirshaken.core.tnauthlist import TNAUTHLIST_OID, TNAuthList
from stirshaken.core.verification import VerificationPolicy, verify_offline
from stirshaken.core.verification.preparation import same_tn, tn_set
from tests import _core_support as S


SRC = Path(__file__).resolve().parents[2] / "src" / "stirshaken"


KEY = ec.derive_private_key(12345, ec.SECP256R1())


X5U = "https://cr.example.net/sp.pem"


NOW = 1_700_000_000


ORIGID = "123e4567-e89b-12d3-a456-426655440000"


SIGNER = pp.Signer(KEY, X5U, deterministic=True)


VALID = SIGNER.identity(orig="12155551212", dest=["12155551213"], attest="A", iat=NOW, origid=ORIGID)


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# characters that matter to the Identity and JWS grammars, and a few that do not belong anywhere
MUTATION_CHARS = "A-_.;=<>\" \t\r\n,:/+0aZz9é\x00"


def mutate(rng: random.Random, value: str) -> str:
    """One to three random replacements, insertions or deletions."""
    s = list(value)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(3)
        i = rng.randrange(len(s) + 1)
        c = rng.choice(MUTATION_CHARS) if rng.random() < 0.6 else chr(rng.randrange(32, 127))
        if op == 0 and i < len(s):
            s[i] = c
        elif op == 1:
            s.insert(i, c)
        elif i < len(s):
            del s[i]
    return "".join(s)


def outcome(value: str, cache: V.VerificationCache | None, *, expected_ppt: str | None = "shaken") -> tuple:
    """prepare's result as comparable data: the checks and passport, or (type, text, check name)."""
    try:
        prep = V.prepare(value, orig=["12155551212"], dest=["12155551213"], now=NOW, expected_ppt=expected_ppt, cache=cache)
    except StirShakenError as err:
        return (type(err).__name__, str(err), V.failed(value, err).checks[-1].name)
    p = prep.passport
    return ("ok", prep.checks, prep.x5u, prep.header, prep.header.problems, dict(p.header), p.claims, p.signature,
            p.signing_input, p.canonical, p.problems)


def warm_cache() -> V.VerificationCache:
    cache = V.VerificationCache()
    assert outcome(VALID, cache)[0] == "ok"
    assert len(cache.tails) == 1 and len(cache.headers) == 1
    return cache


def assert_same_cold_and_warm(value: str, *, expected_ppt: str | None = "shaken") -> tuple:
    plain = outcome(value, None, expected_ppt=expected_ppt)
    cold = outcome(value, V.VerificationCache(), expected_ppt=expected_ppt)
    warm = outcome(value, warm_cache(), expected_ppt=expected_ppt)
    assert cold == plain, value
    assert warm == plain, value
    return plain


# Found by running this mutation harness against fa679e3: the payload's 'J' became 'z' (its
# JSON is no longer UTF-8) and a 'C' was dropped from the signature (85 characters: an impossible
# base64url length).  Cold, prepare decoded all three segments first and reported the signature
# (PassportEncodingError, passport-encoding); warm, the JOSE-header cache path parsed the payload's
# JSON before decoding the signature and reported PassportJSONError (passport-json).  The
# general order (every segment's base64url before any JSON, ATIS-1000082) is the right one.
FA679E3_WARM_COLD_DIVERGENCE = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jci5leGFtcGxlLm5ldC9zcC5wZW0ifQ"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjE1NTU1MTIxMyJdfSwiaWF0IjoxNzAwMDAwMDAwLCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifSwib3zpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0xMmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0"
    ".AJPyxZKMHcVPErNep4Z8BxU7Doa9DdapRonyD6yNDIGhZLgOptleA8Qj6UgBREKvZDYaoI2iZkMk2dsRbUcDQ"
    ";info=<https://cr.example.net/sp.pem>;alg=ES256;ppt=shaken"
)


b64_segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.!", max_size=40)


def _module_level_mutables(path: Path) -> list[str]:
    found = []
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        empty = isinstance(value, (ast.Dict, ast.List, ast.Set)) and not (getattr(value, "keys", None) or getattr(value, "elts", None))
        call = isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in ("dict", "list", "set", "OrderedDict")
        if empty or call:
            found.extend(t.id for t in targets if isinstance(t, ast.Name))
    return found


CHAIN_X5U = "https://cr.example.net/sp-chain.pem"


NOW_DT = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def chain():
    return S.make_chain()


@pytest.fixture(scope="module")
def cred(chain):
    return chain.trust().validate(chain.x5u_chain)


def sign(chain, iat=None, **kw):
    args = dict(orig="12155551212", dest=["12155551213"], attest="A", iat=int(time.time()) if iat is None else iat)
    args.update(kw)
    return Signer(chain.sp_key, CHAIN_X5U).identity(**args)


def credential_or_error(store, certs, **kw):
    try:
        return store.validate(certs, **kw)
    except StirShakenError as err:
        return err


def test_fa679e3_warm_cache_reported_payload_json_before_signature_encoding() -> None:
    expected = ("PassportEncodingError", "438 Invalid Identity Header: PASSporT signature has an impossible base64url length",
                "passport-encoding")
    assert assert_same_cold_and_warm(FA679E3_WARM_COLD_DIVERGENCE) == expected


def test_header_cache_hit_keeps_the_segment_order() -> None:
    """The same defect built by hand: a cached header, a payload that is not JSON and a signature
    of impossible length: the signature's encoding is reported, warm or cold."""
    h64 = VALID.split(".", 1)[0]
    token = f"{h64}.{b64url_encode(b'{not json')}.AAAAA"
    cache = BoundedCache[str, object](8)
    for c in (None, cache, cache):
        with pytest.raises(PassportEncodingError, match="PASSporT signature has an impossible base64url length"):
            pp.parse_jws(token, header_cache=c)  # type: ignore[arg-type]
    pp.parse_jws(VALID.split(";", 1)[0], header_cache=cache)  # type: ignore[arg-type]
    assert h64 in cache
    with pytest.raises(PassportEncodingError, match="signature has an impossible base64url length"):
        pp.parse_jws(token, header_cache=cache)  # type: ignore[arg-type]


def test_mutated_identity_headers_cold_then_warm() -> None:
    """A few hundred mutated Identity headers from one valid header: prepared with a fresh cache
    and again with a warm one (and with none), identical (type, reason text, check name)."""
    rng = random.Random(20240610)
    kinds = set()
    for _ in range(400):
        value = mutate(rng, VALID)
        kinds.add(assert_same_cold_and_warm(value)[0])
    # the probe reaches many checks, not one
    assert {"ok", "PassportEncodingError", "PassportJSONError", "IdentityHeaderSyntaxError", "BadIdentityInfoError"} <= kinds


def test_one_cache_through_many_headers_stays_exact() -> None:
    """One cache shared across a stream of mutated and valid headers (as a Verifier's is): every
    outcome equals the uncached one, whatever the cache holds by then."""
    rng = random.Random(7)
    cache = V.VerificationCache(max_size=16)
    values = [VALID] + [mutate(rng, VALID) for _ in range(300)]
    for value in values + values[::-1]:
        assert outcome(value, cache, expected_ppt=None) == outcome(value, None, expected_ppt=None), value
    assert len(cache.tails) <= 16 and len(cache.headers) <= 16


@SETTINGS
@given(st.randoms(use_true_random=False))
def test_mutated_identity_headers_property(rnd) -> None:
    assert_same_cold_and_warm(mutate(rnd, VALID))


# the tail cache meets a token that is not a whole signed-identity-digest
@SETTINGS
@given(st.sampled_from(["", " ", "Identity: ", "y:", " \r\n "]), st.sampled_from(["", " ", "\t", "é", ":", "\r\n "]),
       st.sampled_from(["", ";info=<https://cr.example.net/sp.pem>", ";alg=ES256", " ;ppt=shaken"]))
@example("Identity: ", "", "")
@example("", " ", "")
def test_tail_cache_never_hides_the_digest_rule(prefix, inside, extra) -> None:
    token, tail = VALID.split(";", 1)
    h64, rest = token.split(".", 1)
    value = f"{prefix}{h64}{inside}.{rest};{tail}{extra}"
    assert_same_cold_and_warm(value)
    cache = BoundedCache[str, object](4)
    parse_identity(VALID, tail_cache=cache)  # type: ignore[arg-type]
    try:
        want = parse_identity(value)
    except StirShakenError as err:
        with pytest.raises(type(err), match=None) as got:
            parse_identity(value, tail_cache=cache)  # type: ignore[arg-type]
        assert str(got.value) == str(err)
    else:
        got_header = parse_identity(value, tail_cache=cache)  # type: ignore[arg-type]
        assert got_header == want and got_header.problems == want.problems


@SETTINGS
@given(b64_segment, b64_segment, st.booleans())
@example("", "", True)
@example("e30", "AAAAA", True)
def test_parse_jws_header_cache_changes_nothing(p64, s64, same_header) -> None:
    h64 = VALID.split(".", 1)[0] if same_header else b64url_encode(b'{"alg":"ES256"}')
    token = f"{h64}.{p64}.{s64}"
    cache = BoundedCache[str, object](4)
    pp.parse_jws(VALID.split(";", 1)[0], header_cache=cache)  # type: ignore[arg-type]

    def run(c):
        try:
            p = pp.parse_jws(token, header_cache=c)
        except StirShakenError as err:
            return (type(err).__name__, str(err))
        return (dict(p.header), p.claims, p.signature, p.signing_input, p.canonical)

    assert run(cache) == run(None) == run(BoundedCache(4))


def test_parse_compact_typed_errors_in_order() -> None:
    class Boom(Exception):
        pass

    ok = jose.parse_compact(VALID.split(";", 1)[0], what="PASSporT", error=Boom)
    assert ok.header["alg"] == "ES256" and ok.payload["origid"] == ORIGID and len(ok.signature) == 64 and ok.canonical
    with pytest.raises(TypeError):
        ok.header["alg"] = "none"  # type: ignore[index]
    cases = [
        (7, Boom, "JWS must be a string"),
        ("a.b", Boom, "JWS must have 3 dot-separated parts, not 2"),
        ("a..c", Boom, "JWS has an empty segment"),
        ("..c", CompactFormError, "Identity header in compact form"),
        ("e30.e30.A", PassportEncodingError, "JWS signature has an impossible base64url length"),
        ("e30.bm90.AAAA", PassportJSONError, "JWS payload is not valid JSON"),
        ("WzFd.e30.AAAA", PassportJSONError, "JWS header is not a JSON object"),
        (b64url_encode(b'{"a":1,"a":2}') + ".e30.AAAA", PassportJSONError, "JWS header has duplicate member names"),
    ]
    for token, error, text in cases:
        with pytest.raises(error, match=text):
            jose.parse_compact(token, error=Boom, encoding_error=PassportEncodingError, json_error=PassportJSONError,
                               detached_error=pp._compact_form)
    with pytest.raises(Boom, match="JWS longer than 4 characters"):
        jose.parse_compact("a.b.c.", error=Boom, max_length=4)


def test_passport_keeps_its_error_types() -> None:
    for token, error in (("a.b", PassportFormatError), ("..c", CompactFormError), ("e30.e30.A", PassportEncodingError),
                         ("e30.bm90.AAAA", PassportJSONError)):
        with pytest.raises(error):
            pp.parse_jws(token)


def test_ca_list_and_spc_token_use_the_one_parser() -> None:
    from stirshaken.vs.trust import CAListError, split_ca_list

    header, payload, signing_input, sig = split_ca_list('{"caList": "' + VALID.split(";", 1)[0] + '"}')
    assert header["x5u"] == X5U and payload["attest"] == "A" and len(sig) == 64 and signing_input.count(b".") == 1
    with pytest.raises(CAListError, match="CA list must have 3 dot-separated parts"):
        split_ca_list("abc")
    with pytest.raises(CAListError, match="CA list payload is not valid JSON"):
        split_ca_list("e30.bm90.AAAA")
    src = "".join((SRC / "pki" / n).read_text() for n in ("ca.py", "ca_auth.py", "ca_config.py", "ca_issuance.py"))
    src += (SRC / "vs" / "trust.py").read_text()
    assert "parse_compact(" in src and ".split(\".\")" not in src


#: every module of the verification package (core/verification/), as paths under core/
VERIFICATION_MODULES = sorted(f"verification/{p.name}" for p in (SRC / "core" / "verification").glob("*.py"))


def test_verification_is_a_package_of_its_stages() -> None:
    assert VERIFICATION_MODULES == ["verification/__init__.py", "verification/completion.py", "verification/decision.py",
                                    "verification/preparation.py", "verification/results.py", "verification/richcalldata.py"]


def test_core_modules_keep_no_module_level_cache() -> None:
    """Empty dicts/lists/sets created at import time are where module-level caches live."""
    owned = [*VERIFICATION_MODULES, "passport.py", "identity.py", "jose.py", "b64.py", "memo.py"]
    found = {name: _module_level_mutables(SRC / "core" / name) for name in owned}
    # the origid pool of pre-drawn random ids is owned by each Signer (passport.OrigidPool)
    assert found == {name: [] for name in owned}


def test_verification_imports_no_private_names() -> None:
    for name in (*VERIFICATION_MODULES, "passport.py", "identity.py", "jose.py"):
        tree = ast.parse((SRC / "core" / name).read_text())
        private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.name.startswith("_")]
        assert private == [], name
    vs = "".join((SRC / "core" / name).read_text() for name in VERIFICATION_MODULES)
    for gone in ("_problems_fast", "_decode_cached", "_decode_slow", "_parse_cached", "parse_identity_cached",
                 "_tail_cache", "_jose_cache", "_PPT_CHECKS", "_ORIG_CHECKS", "_CERT_CHECKS"):
        assert gone not in vs


def test_problems_are_computed_when_read_and_only_after_the_claims_passed() -> None:
    """prepare no longer computes PASSporT.problems on the hot path: they are computed when read,
    with the same value decode() reports; a PASSporT whose claims were never checked has none."""
    import orjson

    h64, p64, s64 = VALID.split(";", 1)[0].split(".")
    claims = orjson.loads(jose.b64url_decode(p64))
    claims["origid"] = "not-a-uuid"
    token = f"{h64}.{b64url_encode(orjson.dumps(claims, option=orjson.OPT_INDENT_2))}.{s64}"
    prep = V.prepare(token + ";info=<https://cr.example.net/sp.pem>;alg=ES256;ppt=shaken", orig=None, dest=None, now=NOW,
                     cache=V.VerificationCache())
    assert "_problems" not in prep.passport.__dict__  # nothing computed yet
    got = prep.passport.problems
    assert got == tuple(pp.problems(prep.passport)) == pp.decode(token).problems
    assert any("deterministic form" in x for x in got) and any("not a UUID" in x for x in got)
    assert pp.parse_jws(token).problems == ()


def test_passes(chain, cred):
    r = verify_offline(sign(chain), cred, orig="+1 215 555 1212", dest="tel:+1-215-555-1213", now=time.time())
    assert r.ok and r.verstat == VERSTAT_PASSED and r.attest == "A" and r.sip_code is None
    names = [c.name for c in r.checks]
    for n in ("identity-syntax", "passport-header", "x5u-equals-info", "claims", "iat-fresh", "orig-matches",
              "dest-matches", "certificate", "signature"):
        assert n in names


def test_bad_signature(chain, cred):
    value = sign(chain)
    token, params = value.split(";", 1)
    h, p, s = token.split(".")
    claims = __import__("orjson").loads(b64url_decode(p))
    claims["attest"] = "B"  # upgrade attempt... downgrade, same thing: the bytes changed
    tampered = f"{h}.{b64url_encode(canonical_json(claims))}.{s};{params}"
    r = verify_offline(tampered, cred, now=time.time())
    assert not r.ok and r.sip_code == 438 and r.verstat == VERSTAT_FAILED and "signature" in r.description.lower()
    other = S.make_chain()
    r = verify_offline(Signer(other.sp_key, CHAIN_X5U).identity(orig="12155551212", dest="12155551213", attest="A"), cred, now=time.time())
    assert r.sip_code == 438 and r.verstat == VERSTAT_FAILED


@pytest.mark.parametrize("age,code", [(0, None), (59, None), (61, 403), (3600, 403), (-5, None), (-3600, 403)])
def test_iat_freshness(chain, cred, age, code):
    now = time.time()
    r = verify_offline(sign(chain, iat=int(now) - age), cred, now=now)
    assert r.sip_code == code
    if code:
        assert r.reason == "Stale Date" and r.verstat == VERSTAT_NONE


def test_freshness_window_is_policy(chain, cred):
    now = time.time()
    r = verify_offline(sign(chain, iat=int(now) - 100), cred, now=now, policy=VerificationPolicy(max_age=300))
    assert r.ok


def test_untrusted_chain(chain):
    other = S.make_chain()
    err = credential_or_error(other.trust(), chain.x5u_chain)
    r = verify_offline(sign(chain), err, now=time.time())
    assert not r.ok and r.sip_code == 437 and r.reason == "Unsupported Credential" and r.verstat == VERSTAT_FAILED


def test_expired_and_not_yet_valid_certificate(chain):
    expired = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234",
                                      not_before=NOW_DT - dt.timedelta(days=30), not_after=NOW_DT - dt.timedelta(days=1))
    r = verify_offline(sign(chain), credential_or_error(chain.trust(), [expired, chain.inter]), now=time.time())
    assert r.sip_code == 437 and "expired" in r.description
    future = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234", not_before=NOW_DT + dt.timedelta(days=2))
    r = verify_offline(sign(chain), credential_or_error(chain.trust(), [future, chain.inter]), now=time.time())
    assert r.sip_code == 437


def test_revoked_by_crl(chain):
    crl = C.create_crl(chain.inter, chain.inter_key, [(chain.sp.serial_number, NOW_DT)])
    r = verify_offline(sign(chain), credential_or_error(chain.trust(crls=[crl]), chain.x5u_chain), now=time.time())
    assert r.sip_code == 437 and "revoked" in r.description and r.verstat == VERSTAT_FAILED


def test_tnauthlist_required(chain):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    sp = chain.sp
    b = (x509.CertificateBuilder().subject_name(sp.subject).issuer_name(sp.issuer).public_key(sp.public_key())
         .serial_number(C.random_serial()).not_valid_before(sp.not_valid_before_utc).not_valid_after(sp.not_valid_after_utc))
    for ext in sp.extensions:
        if ext.oid != TNAUTHLIST_OID:
            b = b.add_extension(ext.value, ext.critical)
    no_tn = b.sign(chain.inter_key, hashes.SHA256())
    r = verify_offline(sign(chain), credential_or_error(chain.trust(), [no_tn, chain.inter]), now=time.time())
    assert r.sip_code == 437 and "TNAuthList" in r.description


def test_identity_and_passport_errors_surface(chain, cred):
    now = time.time()
    good = sign(chain)
    token = good.split(";", 1)[0]
    cases = {
        token: 436,  # no info
        token + ";info=<https://elsewhere.example/x.pem>": 436,  # x5u != info
        good.replace("ppt=shaken", "ppt=div"): 438,
        ".." + token.split(".")[2] + f";info=<{CHAIN_X5U}>": 438,  # compact form
        S.SIGNALWIRE_BAD_PASSPORT + ";info=<http://3.17.177.174/stir_shaken/sp.pem>": 438,
    }
    for value, code in cases.items():
        r = verify_offline(value, cred, now=now)
        assert r.sip_code == code, (value[-60:], r.description)
    r = verify_offline(good, cred, orig="12155550000", now=now)
    assert r.sip_code == 438 and "orig" in r.description
    r = verify_offline(good, cred, dest="19995550000", now=now)
    assert r.sip_code == 438 and "dest" in r.description


def test_several_destinations(chain, cred):
    value = sign(chain, dest=["12155551213", "12155551214"])
    assert verify_offline(value, cred, dest="12155551214", now=time.time()).ok


def test_sp_certificate_for_other_spc_still_verifies_signature(cred):
    assert cred.tnauthlist == TNAuthList.for_spc("1234")


def test_decide_single_valid_shaken_shortcut_equals_general_result(chain, cred):
    """decide() answers one valid SHAKEN PASSporT without the general fold; the result is the
    one the general path builds (VerificationResult(verstat, attest, checks, passports, origid))."""
    from stirshaken.core import verification as VF

    now = time.time()
    prep = VF.prepare(sign(chain, attest="B", origid="123e4567-e89b-12d3-a456-426655440000"),
                      orig="12155551212", dest="12155551213", now=now)
    r = VF.complete(prep, cred)
    got = VF.decide([r])
    assert got == VF.VerificationResult(verstat=VERSTAT_PASSED, attest="B", checks=r.checks, passports=(r,),
                                        origid="123e4567-e89b-12d3-a456-426655440000", reason_header=None)
    # with targets: the destination check is added; a target elsewhere goes the general way (fails)
    bound = VF.decide([r], targets=["12155551213"])
    assert bound.ok and [c.name for c in bound.checks][-1] == "dest-matches"
    assert not VF.decide([r], targets=["19995550000"]).ok


def test_decide_single_shaken_destination_shortcut_equals_bind_destinations(chain, cred):
    """decide()'s shortcut for one SHAKEN PASSporT binds the destination exactly as the general
    bind_destinations does: canonical TNs only (a non-TN string equal to the claim binds nothing)."""
    from stirshaken.core import verification as VF

    now = time.time()
    for claim, targets in ((["12155551213"], ["12155551213"]), (["12155551213"], ["+1 215 555 1213"]),
                           (["sip:bob@example.net"], ["sip:bob@example.net"]), (["12155551213"], ["19995550000"])):
        r = VF.complete(VF.prepare(sign(chain, dest=claim), orig=None, dest=None, now=now), cred)
        assert r.ok
        general = VF.bind_destinations([r], targets)[0].ok
        assert VF.decide([r], targets=targets).ok == general, (claim, targets)
        # targets as a one-shot iterable: read once, the same verdict (not "no targets")
        assert VF.decide([r], targets=iter(targets)).ok == general, (claim, targets)


@pytest.mark.parametrize("iat, code, fragment", [
    (0, 403, "not fresh"),            # RFC 7519 §2: 1970 is a well-formed NumericDate, just stale
    (-5, 403, "not fresh"),
    (1.5, 438, "integer NumericDate"),
    ("1700000000", 438, "integer NumericDate"),
    (True, 438, "integer NumericDate"),
])
def test_numericdate_as_rfc7519_defines_it(iat, code, fragment) -> None:
    """A negative or zero iat is a stale date (403), not a malformed claim; non-integers stay 438
    (issue 11 item 6)."""
    import json

    claims = {"attest": "A", "dest": {"tn": ["12155551213"]}, "iat": iat, "orig": {"tn": "12155551212"}, "origid": ORIGID}
    # written with json (orjson refuses integers beyond 64 bits), keys sorted as RFC 8225 §9 asks
    h64 = b64url_encode(json.dumps(pp.passport_header(X5U), sort_keys=True, separators=(",", ":")).encode())
    p64 = b64url_encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    token = f"{h64}.{p64}." + b64url_encode(jose.es256_sign(KEY, f"{h64}.{p64}".encode()))
    value = f"{token};info=<{X5U}>;alg=ES256;ppt=shaken"
    for cache in (None, V.VerificationCache()):
        with pytest.raises(StirShakenError) as ei:
            V.prepare(value, orig="12155551212", dest="12155551213", now=NOW, cache=cache)
        assert ei.value.sip_code == code and fragment in ei.value.description, ei.value


@pytest.mark.parametrize("err, name", [
    (PassportJSONError("x"), "passport-json"),
    (PassportEncodingError("x"), "passport-encoding"),
    (UntrustedCertificateError("x"), "untrusted-certificate"),
    (TNAuthListError("x"), "tn-auth-list"),
    (X5UMismatchError("x"), "x5-u-mismatch"),
    (SignatureError("x"), "signature"),
])
def test_failed_check_names_keep_acronyms_whole(err, name) -> None:
    assert V.failed("t", err).checks[-1].name == name


def test_div_authority_is_the_diverted_from_number() -> None:
    """RFC 8946 §3: a div PASSporT is signed within the scope of the retargeting entity's
    credential, so a delegate certificate must cover its 'div' claim, not the caller."""
    import datetime as dt

    from stirshaken.core import certificates as certs
    from stirshaken.core.errors import InvalidIdentityError
    from stirshaken.core.tnauthlist import TN
    from stirshaken.core.verification import DEFAULT_POLICY, check_authority

    rk, ik, sk, ek = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    root = certs.create_root(rk)
    inter = certs.create_intermediate(ik, root, rk, path_length=1)
    spca = certs.create_sp_certificate(sk, inter, ik, spc="1234", ca=True)
    deleg = certs.create_delegate_certificate(ek, spca, sk, TNAuthList((TN("12155551213"),)), authority=["1215555"])
    cred = certs.TrustStore([root]).validate([deleg, spca, inter], at=dt.datetime.now(dt.timezone.utc))
    assert cred.delegate

    def div(d: str) -> pp.PASSporT:
        c = pp.div_claims(orig="13105550000", dest="12155559999", div=d, iat=1)
        return pp.decode(pp.Signer(ek, "https://e.example/d.pem", ppt="div").sign_claims(c), ppt="div")

    assert check_authority(div("12155551213"), cred, DEFAULT_POLICY).ok  # the caller 1310... is not the delegate's
    with pytest.raises(InvalidIdentityError) as e:
        check_authority(div("12155550100"), cred, DEFAULT_POLICY)
    assert "does not cover diverted-from number 12155550100" in e.value.description


# TNs as a request or a PASSporT may name them: canonical digits of any length (16 and more are
# no E.164 number), decorated ones, other scripts' digits, and malformed text
_tn_like = st.one_of(
    st.text(st.sampled_from("0123456789"), min_size=0, max_size=22),
    st.builds(lambda p, d: p + d, st.sampled_from(["+", "tel:+", "sip:+", "<sip:"]),
              st.text(st.sampled_from("0123456789-. "), min_size=1, max_size=22)),
    st.text(alphabet="0123456789+-*#() ;<>@sipte:\u0661", max_size=24),
)


@SETTINGS
@given(st.lists(_tn_like, max_size=4), st.lists(_tn_like, max_size=4), st.data())
@example(["1234567890123456789"], ["1234567890123456789"], None)
@example(["1234567890123456"], ["1234567890123456"], None)
@example(["123456789012345"], ["123456789012345"], None)
@example(["\u0661\u0662"], ["\u0661\u0662"], None)
def test_same_tn_equals_the_general_branch(requested, claimed, data) -> None:
    """same_tn's shortcut (a canonical request TN named as such) answers what the general branch
    (tn_set(requested) & tn_set(claimed), RFC 8224 §8.3, at most 15 digits) answers."""
    if data is not None and requested and data.draw(st.booleans()):  # often share a value
        claimed = claimed + [data.draw(st.sampled_from(requested))]
    claimed = tuple(claimed)  # as PASSporT.dest_tns gives it
    assert same_tn(requested, claimed) == bool(tn_set(requested) & tn_set(claimed))


@pytest.mark.parametrize("tn", ["1234567890123456789", "1234567890123456"])
def test_over_long_tns_match_no_request(tn, chain, cred) -> None:
    """E.164 §6.1 / RFC 8224 §8.3: a TN of more than 15 digits is none.  check_claims takes such a
    claim alike on its fast path (the plain SHAKEN payload) and its general branch (an extra
    claim); the binding to the request then fails for orig and for dest, with or without the
    cache, and decide() with targets refuses it on its single-PASSporT shortcut too."""
    now = int(time.time())
    long_dest = sign(chain, dest=[tn], iat=now, origid=ORIGID)
    long_orig = sign(chain, orig=tn, iat=now, origid=ORIGID)
    extra = sign(chain, orig=tn, dest=[tn], iat=now, origid=ORIGID, extra={"crn": "x"})
    for value in (long_dest, long_orig, extra):
        p = pp.parse_jws(value.split(";", 1)[0])
        fast = len(p.claims) == 5 and pp._plain_shaken(p.claims)  # check_claims' own test for its fast path
        assert fast == (value is not extra)
        pp.check_claims(p)  # no TN length rule here, on either branch: the comparisons below decide
    for cache in (None, V.VerificationCache()):
        with pytest.raises(IdentityMismatchError, match="'dest' claim"):
            V.prepare(long_dest, orig="12155551212", dest=tn, now=now, cache=cache)
        with pytest.raises(IdentityMismatchError, match="'orig' claim"):
            V.prepare(long_orig, orig=tn, dest="12155551213", now=now, cache=cache)
    r = V.complete(V.prepare(long_dest, orig="12155551212", dest=None, now=now), cred)
    assert r.ok
    assert not V.decide([r], targets=[tn]).ok
    assert not V.bind_destinations([r], [tn])[0].ok


def test_check_rich_call_data_fails_the_rcd_passport_alone(chain, cred) -> None:
    """Step 2b (RFC 9795, docs/requirements.md RC-02): rcd_fetches names the icon; a wrong digest
    fails the rcd PASSporT (438, the Reason names it) and decide still passes the call on the
    SHAKEN PASSporT; the same rich call data inside the SHAKEN PASSporT only adds a failed check."""
    from stirshaken.core.rcd import integrity, rcd_claims

    now = int(time.time())
    icn = "https://rcd.example.net/logo.png"
    claims = rcd_claims(orig="12155551212", dest="12155551213", nam="Zola", icn=icn, digests={"/icn": integrity(b"logo")}, iat=now)
    rcd = Signer(chain.sp_key, CHAIN_X5U, ppt="rcd").identity_claims(claims)
    results = [V.complete(V.prepare(h, orig="12155551212", dest=None, now=now, expected_ppt=None), cred) for h in (sign(chain, now), rcd)]
    assert V.carries_rcd(results) and V.rcd_fetches(results) == (icn,)
    assert not V.carries_rcd(results[:1])
    good = V.check_rich_call_data(results, {icn: b"logo"})
    assert [r.ok for r in good] == [True, True] and good[1].checks[-1] == V.Check("rcd-integrity", True, "rcdi /icn match")
    bad = V.check_rich_call_data(results, {icn: b"other"})
    assert [r.ok for r in bad] == [True, False] and bad[1].error.sip_code == 438
    verdict = V.decide(bad, targets=["12155551213"])
    assert verdict.verstat == VERSTAT_PASSED and verdict.attest == "A" and "cause=438" in verdict.reason_header
    assert [e["ok"] for e in verdict.rich_call_data] == [False]
    inside = Signer(chain.sp_key, CHAIN_X5U).sign_claims({**claims, "attest": "A", "origid": "123e4567-e89b-12d3-a456-426614174000"})
    res = V.complete(V.prepare(f"{inside};info=<{CHAIN_X5U}>;alg=ES256;ppt=shaken", orig="12155551212", dest=None, now=now), cred)
    (checked,) = V.check_rich_call_data([res], {icn: b"other"})
    assert checked.ok and checked.checks[-1].name == "rcd-integrity" and not checked.checks[-1].ok
    assert V.decide([checked]).ok and V.decide([checked]).rich_call_data[0]["ok"] is False
