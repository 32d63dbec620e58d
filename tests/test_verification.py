"""The caller-owned caches of the core change no result (issue 10 items 5 and 6).

Each fast path sits inside the function that owns its rule and is fed by a cache the caller passes
(core.memo.BoundedCache; verification.VerificationCache for the STI-VS).  For every input the
outcome must be the same with no cache, a fresh (cold) cache and a warm one: the same value, or the
same error class, reason text and check name.  Mutated Identity headers (the 545-case finding: at
fa679e3 prepare's module-level caches made warm and cold disagree) are the main probe.
"""

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
    PassportEncodingError,
    PassportFormatError,
    PassportJSONError,
    StirShakenError,
)
from stirshaken.core.identity import parse_identity
from stirshaken.core.memo import BoundedCache

SRC = Path(__file__).resolve().parents[1] / "src" / "stirshaken"
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


# --- the named regression --------------------------------------------------------------------

# Found by running this mutation harness against fa679e3: the payload's 'J' became 'z' (its
# JSON is no longer UTF-8) and a 'C' was dropped from the signature (85 characters: an impossible
# base64url length).  Cold, prepare decoded all three segments first and reported the signature
# (PassportEncodingError, passport-encoding); warm, the JOSE-header cache path parsed the payload's
# JSON before decoding the signature and reported PassportJSONError (passport-j-s-o-n).  The
# general order (every segment's base64url before any JSON, ATIS-1000082) is the right one.
FA679E3_WARM_COLD_DIVERGENCE = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0IiwieDV1IjoiaHR0cHM6Ly9jci5leGFtcGxlLm5ldC9zcC5wZW0ifQ"
    ".eyJhdHRlc3QiOiJBIiwiZGVzdCI6eyJ0biI6WyIxMjE1NTU1MTIxMyJdfSwiaWF0IjoxNzAwMDAwMDAwLCJvcmlnIjp7InRuIjoiMTIxNTU1NTEyMTIifSwib3zpZ2lkIjoiMTIzZTQ1NjctZTg5Yi0xMmQzLWE0NTYtNDI2NjU1NDQwMDAwIn0"
    ".AJPyxZKMHcVPErNep4Z8BxU7Doa9DdapRonyD6yNDIGhZLgOptleA8Qj6UgBREKvZDYaoI2iZkMk2dsRbUcDQ"
    ";info=<https://cr.example.net/sp.pem>;alg=ES256;ppt=shaken"
)


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


# --- mutation tests of prepare: no cache, cold, warm -----------------------------------------


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


b64_segment = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.!", max_size=40)


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


# --- the one compact-JWS parser ------------------------------------------------------------------


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
    src = (SRC / "pki" / "ca.py").read_text() + (SRC / "vs" / "trust.py").read_text()
    assert "parse_compact(" in src and ".split(\".\")" not in src


# --- the bounded cache -------------------------------------------------------------------------


def test_bounded_cache_keeps_its_bound() -> None:
    c = BoundedCache[int, int](3)
    for i in range(10):
        c.put(i, i * i)
    assert len(c) == 3 and c.get(9) == 81 and c.get(0) is None and 7 in c
    c.put(9, 0)  # replacing a key drops nothing
    assert len(c) == 3 and c.get(7) == 49 and c.get(9) == 0
    with pytest.raises(ValueError):
        BoundedCache(0)


# --- no module-level caches, no private imports ----------------------------------------------


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


def test_core_modules_keep_no_module_level_cache() -> None:
    """Empty dicts/lists/sets created at import time are where module-level caches live."""
    owned = ["verification.py", "passport.py", "identity.py", "jose.py", "b64.py", "memo.py"]
    found = {name: _module_level_mutables(SRC / "core" / name) for name in owned}
    # the UUID pool is a buffer of pre-drawn random ids (emptied at fork), not a cache of results
    assert found == {name: (["_uuid_pool"] if name == "passport.py" else []) for name in owned}


def test_verification_imports_no_private_names() -> None:
    for name in ("verification.py", "passport.py", "identity.py", "jose.py"):
        tree = ast.parse((SRC / "core" / name).read_text())
        private = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names if a.name.startswith("_")]
        assert private == [], name
    vs = (SRC / "core" / "verification.py").read_text()
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
