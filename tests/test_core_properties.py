"""Property tests (hypothesis): every structure round-trips, and no random input makes a parser
raise anything but its typed error (StirShakenError subclasses; TNError for canonicalize_tn)."""

from __future__ import annotations

import base64
import string

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from stirshaken.core import certificates as C
from stirshaken.core import passport as pp
from stirshaken.core.b64 import b64url_decode, b64url_decode_valid, b64url_encode
from stirshaken.core.errors import StirShakenError
from stirshaken.core.identity import TOKEN, IdentityHeader, parse_identity, parse_identity_headers
from stirshaken.core.tn import TNError, canonicalize_tn
from stirshaken.core.tnauthlist import SPC, TN, TNAuthList, TNRange

try:
    from tests import _core_support as V
except ImportError:
    import _core_support as V  # type: ignore[no-redef]

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEY = ec.generate_private_key(ec.SECP256R1())
TN_CHARS = "0123456789#*"
tn_text = st.text(alphabet=TN_CHARS, min_size=1, max_size=15)
digits = st.text(alphabet="0123456789", min_size=1, max_size=15)

# --- strategies -----------------------------------------------------------------------------------

spc = st.builds(SPC, st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=40))
tn_entry = st.builds(TN, tn_text)
tn_range = st.builds(TNRange, tn_text, st.integers(min_value=2, max_value=2**70))
tnauthlist = st.builds(lambda e: TNAuthList(tuple(e)), st.lists(st.one_of(spc, tn_entry, tn_range), min_size=1, max_size=8))

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=12)

uuid_text = st.uuids().map(str)
shaken_claims = st.builds(
    lambda orig, dests, uris, attest, iat, origid, extra: pp.shaken_claims(
        orig=orig, dest=dests, dest_uris=uris, attest=attest, iat=iat, origid=origid, extra=extra
    ),
    tn_text,
    st.lists(tn_text, min_size=1, max_size=5),
    st.lists(st.text(alphabet=string.ascii_letters + ":@.", min_size=1, max_size=20), max_size=3),
    st.sampled_from("ABC"),
    st.integers(min_value=0, max_value=2**40),
    uuid_text,
    st.fixed_dictionaries(
        {},
        optional={
            "rcd": st.fixed_dictionaries({"nam": st.text(max_size=30)}),
            "crn": st.text(max_size=30),
            "rcdi": st.dictionaries(st.sampled_from(["/icn", "/jcl"]), st.text(max_size=10), max_size=2),
            "mky": st.lists(st.fixed_dictionaries({"alg": st.just("sha-256"), "dig": st.text(alphabet="0123456789ABCDEF", max_size=64)}), max_size=2),
            "x-extra": json_value,
        },
    ),
)

param_name = st.from_regex(TOKEN, fullmatch=True).map(str.lower).filter(lambda n: n not in ("info",))
param_value = st.one_of(st.none(), st.from_regex(TOKEN, fullmatch=True),
                        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20))
b64url_text = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=60)


# --- round trips ----------------------------------------------------------------------------------


@FAST
@given(tnauthlist)
def test_tnauthlist_roundtrip(t):
    der = t.to_der()
    assert TNAuthList.from_der(der) == t
    assert TNAuthList.from_identifier(t.to_base64url()) == t
    assert TNAuthList.from_identifier(t.to_base64()) == t


@FAST
@given(shaken_claims, st.booleans())
def test_passport_claims_roundtrip(claims, deterministic):
    signer = pp.Signer(KEY, "https://cr.example.net/sp.pem", deterministic=deterministic)
    token = signer.sign_claims(claims)
    p = pp.decode(token)
    assert p.claims == orjson.loads(orjson.dumps(claims))
    assert p.canonical
    p.verify(KEY.public_key())
    assert p.compact == ".." + token.split(".")[2]
    h, pl, s = token.split(".")
    assert b64url_encode(b64url_decode(pl)) == pl and "=" not in token


# TNs, and strings JSON must escape: quotes, backslashes, control characters, non-ASCII
any_tn = st.one_of(tn_text, st.text(alphabet='12"\\\x01\x7f/é ~', max_size=6), st.text(max_size=12))


@FAST
@given(any_tn, st.lists(any_tn, min_size=1, max_size=4), st.sampled_from("ABC"),
       st.one_of(st.none(), st.integers(min_value=-(2**64), max_value=2**64)), st.one_of(st.none(), uuid_text, st.text(min_size=1, max_size=12)))
def test_signing_hot_path_writes_the_same_bytes_as_orjson(orig, dests, attest, iat, origid):
    """Signer.identity_for writes plain claims straight into their RFC 8225 §9 form; for every input
    the bytes equal orjson's canonical serialization of the same claims (deterministic signer), and
    an input orjson rejects is rejected alike."""
    signer = pp.Signer(KEY, "https://cr.example.net/sp.pem", deterministic=True)
    origid = origid or pp.new_origid()
    iat_used = 1_700_000_000 if iat is None else iat
    claims = {"attest": attest, "dest": {"tn": sorted(dests)}, "iat": iat_used, "orig": {"tn": orig}, "origid": origid}
    try:
        expected = signer.sign_claims(claims) + signer._params
    except TypeError:  # beyond orjson's 64-bit integers
        with pytest.raises(TypeError):
            signer.identity_for(orig, dests, attest, iat_used, origid)
        return
    assert signer.identity_for(orig, dests, attest, iat_used, origid) == expected
    if len(dests) == 1:
        assert signer.identity_for(orig, dests[0], attest, iat_used, origid) == expected


near_tn = st.one_of(tn_text, st.sampled_from(["+12155551212", "١٢٣", "", "12-34", " 1", "1#"]), st.integers(0, 99))
# a valid SHAKEN payload with up to two fields replaced by near misses (or dropped, or one added)
near_field = st.one_of(
    st.tuples(st.just("attest"), st.one_of(st.sampled_from("ABCD"), st.just(["A"]))),
    st.tuples(st.just("dest"), st.one_of(st.fixed_dictionaries({"tn": st.lists(near_tn, max_size=3)}),
                                         st.fixed_dictionaries({"tn": st.lists(digits, min_size=2, max_size=3)}),  # order as drawn
                                         st.fixed_dictionaries({"tn": st.lists(tn_text, max_size=2), "uri": st.just(["sip:a@b"])}))),
    st.tuples(st.just("iat"), st.one_of(st.integers(min_value=-5, max_value=2**40), st.booleans(), st.just("1"))),
    st.tuples(st.just("orig"), st.one_of(st.fixed_dictionaries({"tn": near_tn}), st.just({"uri": "sip:a@b"}))),
    st.tuples(st.just("origid"), st.one_of(uuid_text.map(str.upper), st.sampled_from(
        ["", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "123e4567e89b12d3a456426655440000----", 7]))),
    st.tuples(st.sampled_from(["attest", "dest", "iat", "orig", "origid"]), st.just(None)),  # None: drop the claim
    st.tuples(st.just("crn"), st.just("x")),
)


def _near(base: dict, changes: list) -> dict:
    c = dict(base)
    for k, v in changes:
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


near_claims = st.builds(
    _near,
    st.builds(lambda o, d, a, i, u: {"attest": a, "dest": {"tn": sorted(d)}, "iat": i, "orig": {"tn": o}, "origid": u},
              digits, st.lists(digits, min_size=1, max_size=3), st.sampled_from("ABC"), st.integers(0, 2**40), uuid_text),
    st.lists(near_field, max_size=2),
)


_CLEAN = {"attest": "A", "dest": {"tn": ["12155551213"]}, "iat": 5, "orig": {"tn": "12155551212"},
          "origid": "123e4567-e89b-12d3-a456-426655440000"}


def _problems_by_the_rules(p: pp.PASSporT) -> list[str]:
    """What passport.problems must report, spelled out from the rules (RFC 8225 §9, RFC 8588 §5,
    RFC 8224 §8.3, RFC 8225 §5.2.1) with no shortcut: the oracle of its fast path."""
    import re as _re

    out = []
    if not p.canonical:
        out.append("JSON is not in the deterministic form of RFC 8225 §9 (sorted keys, no whitespace)")
    origid = p.claims.get("origid")
    if isinstance(origid, str) and not _re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", origid):
        out.append("'origid' is not a UUID (RFC 8588 §5)")
    for tn in ([p.orig_tn] if p.orig_tn else []) + list(p.dest_tns):
        if not _re.fullmatch(r"[0-9#*]+", tn):
            out.append(f"TN {tn!r} is not canonical (RFC 8224 §8.3)")
    if list(p.dest_tns) != sorted(p.dest_tns):
        out.append("'dest.tn' is not in lexicographic order (RFC 8225 §5.2.1)")
    return out


@FUZZ
@given(near_claims, st.booleans())
@example({**_CLEAN, "dest": {"tn": ["2", "1"]}}, True)
@example({**_CLEAN, "origid": "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz"}, True)
@example({**_CLEAN, "orig": {"tn": "١٢٣"}}, True)
@example({**_CLEAN, "dest": {"tn": ["١٢٣"]}}, True)
@example(_CLEAN, False)
def test_problems_fast_path_agrees_with_the_rules(claims, canonical):
    """passport.problems (whose quick exit serves the clean token) reports exactly what the rules
    give, for every payload that check_claims accepts, canonical JSON or not."""
    token = pp.encode_token(KEY, pp.passport_header("https://cr.example.net/sp.pem"), claims)
    if not canonical:  # the same claims with white space: valid JSON, not RFC 8225 §9 form
        h64, _, s64 = token.split(".")
        token = f"{h64}.{b64url_encode(orjson.dumps(claims, option=orjson.OPT_INDENT_2))}.{s64}"
    p = pp.parse_jws(token)
    try:
        pp.check_claims(p)
    except StirShakenError:
        return
    assert pp.problems(p) == _problems_by_the_rules(p)


def _header_verdict_by_the_rules(h: dict, ppt, require_x5u: bool = True) -> str | None:
    """The error check_header must raise (class name), or None, from RFC 8225 §4 / §8.1 read
    directly: the oracle of its fast path."""
    for name in ("alg", "typ") + (("x5u",) if require_x5u else ()) + (("ppt",) if ppt is not None else ()):
        if name not in h:
            return "MissingHeaderParameterError"
    if any(name in h and not isinstance(h[name], str) for name in ("alg", "typ", "x5u", "ppt")):
        return "PassportJSONError"
    if h["typ"] != "passport":
        return "UnsupportedTypeError"
    if h["alg"] != "ES256":
        return "UnsupportedAlgorithmError"
    if "crit" in h:  # RFC 7515 §4.1.11: a non-empty array of names, every one understood (none are)
        crit = h["crit"]
        if not isinstance(crit, list) or not crit or not all(isinstance(c, str) for c in crit):
            return "PassportJSONError"
        if any(c not in pp.UNDERSTOOD_CRIT for c in crit):
            return "UnsupportedPPTError"
    if ppt is None:
        return "UnsupportedPPTError" if "ppt" in h and h["ppt"] not in pp.SUPPORTED_PPT else None
    allowed = {ppt} if isinstance(ppt, str) else set(ppt)
    return None if h["ppt"] in allowed else "UnsupportedPPTError"


header_value = st.one_of(st.sampled_from(["passport", "ES256", "shaken", "div", "rcd", "https://cr.example.net/sp.pem", "PASSporT", "RS256", ""]),
                         st.integers(0, 3), st.none(), st.lists(st.just("shaken"), max_size=1))
jose_header = st.dictionaries(st.sampled_from(["alg", "typ", "x5u", "ppt", "kid", "crit"]),
                              st.one_of(header_value, st.lists(st.sampled_from(["bogus", "ppt", ""]), max_size=2)), max_size=6)
ppt_argument = st.one_of(st.none(), st.sampled_from(["shaken", "div", "rcd"]), st.just(pp.SUPPORTED_PPT),
                         st.just({"shaken", "div"}), st.just(["shaken", "rcd"]))


@FUZZ
@given(jose_header, ppt_argument, st.booleans())
@example({"alg": "ES256", "typ": "passport", "x5u": "https://cr.example.net/sp.pem", "ppt": "shaken"}, "shaken", True)
@example({"alg": "ES256", "typ": "passport", "x5u": "https://cr.example.net/sp.pem", "ppt": "rcd"}, None, True)
@example({"alg": "ES256", "typ": "passport", "x5u": 1, "ppt": "shaken"}, "shaken", False)
@example({"alg": "ES256", "typ": "passport", "x5u": "https://cr.example.net/sp.pem", "ppt": "shaken", "crit": ["bogus"]}, "shaken", True)
def test_check_header_fast_path_agrees_with_the_rules(header, ppt, require_x5u):
    token = pp.encode_token(KEY, header, {"iat": 0})
    p = pp.parse_jws(token)
    try:
        pp.check_header(p, ppt=ppt, require_x5u=require_x5u)
        got = None
    except StirShakenError as err:
        got = type(err).__name__
    assert got == _header_verdict_by_the_rules(header, ppt, require_x5u)


@FAST
@given(b64url_text, b64url_text, b64url_text, st.lists(st.tuples(param_name, param_value), max_size=5, unique_by=lambda t: t[0]),
       st.sampled_from(["https://cr.example.net/sp.pem", "http://127.0.0.1:23000/a,b;c=d", "sip:cr@example.net"]))
def test_identity_header_roundtrip(h, p, s, params, info):
    token = f"{h}.{p}.{s}"
    header = IdentityHeader(token=token, params=(("info", info),) + tuple(params))
    text = str(header)
    parsed = parse_identity(text)
    assert parsed == header
    # and inside a comma-joined field with a repeated copy
    assert parse_identity_headers([f"{text}, {text}", text]) == [header, header, header]
    assert parse_identity("Identity: " + text) == header == parse_identity("y:" + text)


@FAST
@given(tn_text, st.booleans(), st.sampled_from(["", " ", "-", ".", "(", ")"]))
def test_canonicalize_tn_idempotent(tn, plus, sep):
    decorated = ("+" if plus else "") + sep.join(tn)
    assume(decorated.strip())
    assert canonicalize_tn(decorated) == tn if tn[0] not in "*#" or not plus else True
    assert canonicalize_tn(tn) == tn
    assert canonicalize_tn(f"sip:{tn}@example.com;user=phone") == tn


# --- fuzzing: typed errors only -------------------------------------------------------------------


def typed(fn, *args, errors=(StirShakenError,)):
    try:
        fn(*args)
    except errors:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80), b64url_text))
def test_fuzz_b64url_decode(value):
    fast = b64url_decode_valid(value)  # the hot path: bytes, or None to let b64url_decode name the defect
    try:
        raw = b64url_decode(value)
    except StirShakenError:
        assert fast is None
        return
    assert fast == raw
    # whatever is accepted is canonical: re-encoding gives the same text back
    text = value.decode() if isinstance(value, bytes) else value
    assert b64url_encode(raw) == text


jws_text = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.=+/ ", max_size=200),
    st.builds(lambda h, p, s: f"{h}.{p}.{s}", b64url_text, b64url_text, b64url_text),
    st.builds(lambda h, p, s: V.jws(orjson.dumps(h), orjson.dumps(p), s),
              st.one_of(json_value, st.fixed_dictionaries({"alg": json_value, "typ": json_value, "ppt": json_value, "x5u": json_value})),
              st.one_of(json_value, st.fixed_dictionaries({"attest": json_value, "dest": json_value, "iat": json_value,
                                                           "orig": json_value, "origid": json_value, "div": json_value,
                                                           "mky": json_value, "rcd": json_value})),
              st.binary(min_size=0, max_size=70)),
    st.builds(lambda p, s: V.jws(pp.canonical_json({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": "https://x"}), p, s),
              st.binary(max_size=80), st.binary(max_size=70)),
)


@FUZZ
@given(jws_text, st.sampled_from(["shaken", None, "div", "rcd"]))
def test_fuzz_parse_jws_and_decode(token, ppt):
    typed(pp.parse_jws, token)
    try:
        p = pp.decode(token, ppt=ppt)
    except StirShakenError:
        return
    try:
        p.verify(KEY.public_key())
    except StirShakenError:
        pass


identity_text = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.;=<>\"\\,: \t\r\n", max_size=160),
    st.builds(lambda t, rest: t + rest, st.sampled_from([V.SHAKEN_EXAMPLE_TOKEN, "a.b.c", "..x", "Identity: a.b.c", "y:a.b.c"]),
              st.text(alphabet=string.printable, max_size=80)),
    st.builds(lambda t, n, v: f"{t};info=<https://x/y>;{n}={v}", st.sampled_from(["a.b.c", "x.y"]),
              st.text(alphabet=string.printable, max_size=10), st.text(alphabet=string.printable, max_size=20)),
)


@FUZZ
@given(identity_text)
def test_fuzz_parse_identity(value):
    try:
        h = parse_identity(value)
    except StirShakenError:
        return
    assert h.info is not None and "." in h.token
    assert parse_identity(str(h)).params == h.params


@FUZZ
@given(st.one_of(identity_text, st.lists(identity_text, max_size=3)))
def test_fuzz_parse_identity_headers(values):
    typed(parse_identity_headers, values)


def _der_mutations():
    base = [bytes.fromhex(V.TNAUTH_PYASN1_HEX), bytes.fromhex(V.TNAUTH_1234_HEX)]
    return st.builds(
        lambda b, i, v, cut: (b[:i] + bytes([v]) + b[i + 1:])[: cut if cut else None],
        st.sampled_from(base), st.integers(0, 44), st.integers(0, 255), st.integers(0, 50),
    )


@FUZZ
@given(st.one_of(st.binary(max_size=60), _der_mutations(), st.builds(lambda b: b"\x30" + bytes([len(b)]) + b, st.binary(max_size=60))))
def test_fuzz_tnauthlist_from_der(data):
    try:
        t = TNAuthList.from_der(data)
    except StirShakenError:
        return
    assert t.to_der() == data  # accepted DER is the unique encoding


@FUZZ
@given(st.one_of(st.text(max_size=80), st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()),
                 st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="))))
def test_fuzz_from_identifier(value):
    typed(TNAuthList.from_identifier, value)


@FUZZ
@given(st.one_of(st.text(max_size=40), st.text(alphabet="0123456789+-(). #*;:<>@sipteluser=phone", max_size=40)))
def test_fuzz_canonicalize_tn(value):
    try:
        out = canonicalize_tn(value)
    except TNError:
        return
    assert out and set(out) <= set(TN_CHARS)


CHAIN = V.make_chain()
CERT_DER = CHAIN.sp.public_bytes(serialization.Encoding.DER)


@pytest.mark.filterwarnings("ignore")  # mutated certificates trigger cryptography deprecation warnings
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda i, v: CERT_DER[:i] + bytes([v]) + CERT_DER[i + 1:], st.integers(0, len(CERT_DER) - 1), st.integers(0, 255)),
    st.builds(lambda n: CERT_DER[:n], st.integers(0, len(CERT_DER))),
    st.builds(lambda b: b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(b) + b"-----END CERTIFICATE-----\n", st.binary(max_size=300)),
    st.builds(lambda i, v: C.pem([CHAIN.sp])[:i] + bytes([v]) + C.pem([CHAIN.sp])[i + 1:], st.integers(0, 600), st.integers(32, 126)),
))
def test_fuzz_load_certificates(data):
    try:
        certs = C.load_certificates(data)
    except StirShakenError:
        return
    for c in certs:  # whatever loads can go through the profile check and a validation attempt
        typed(C.check_profile, c)
        typed(CHAIN.trust().validate, [c, CHAIN.inter])
