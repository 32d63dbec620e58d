"""core/passport.py: PASSporT build, sign and strict decode (RFC 8225, RFC 8588, RFC 8946, RFC 9795)."""

from __future__ import annotations

import base64
import json
import os
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from stirshaken.core import passport as pp
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.errors import (
    VERSTAT_FAILED,
    CompactFormError,
    InvalidClaimError,
    MissingClaimError,
    MissingHeaderParameterError,
    PassportEncodingError,
    PassportFormatError,
    PassportJSONError,
    SignatureError,
    StirShakenError,
    UnsupportedAlgorithmError,
    UnsupportedPPTError,
    UnsupportedTypeError,
)
from tests import _core_support as V
import string
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from stirshaken.core import certificates as C
from stirshaken.core.b64 import b64url_decode, b64url_decode_valid, b64url_encode
from stirshaken.core.errors import StirShakenError
from stirshaken.core.identity import TOKEN, IdentityHeader, parse_identity, parse_identity_headers
from stirshaken.core.tn import TNError, canonicalize_tn
from stirshaken.core.tnauthlist import SPC, TN, TNAuthList, TNRange


X5U = "https://cr.example.net/sp.pem"


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


SHAKEN_HEADER = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def good_claims(**over):
    c = {
        "attest": "A",
        "dest": {"tn": ["12155551213"]},
        "iat": 1700000000,
        "orig": {"tn": "12155551212"},
        "origid": "123e4567-e89b-12d3-a456-426655440000",
    }
    c.update(over)
    return c


def signed(key, header=None, claims=None) -> str:
    return pp.encode_token(key, SHAKEN_HEADER if header is None else header, good_claims() if claims is None else claims)


def segments(token: str) -> tuple[bytes, bytes, bytes]:
    h, p, s = token.split(".")
    return b64url_decode(h), b64url_decode(p), b64url_decode(s)


def _expect(exc_type, code, token, **kw):
    with pytest.raises(exc_type) as ei:
        pp.decode(token, **kw)
    err = ei.value
    assert isinstance(err, StirShakenError)
    assert err.sip_code == code
    assert err.reason and err.description
    assert str(err).startswith(f"{code} {err.reason}")
    return err


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


KEY = ec.generate_private_key(ec.SECP256R1())


TN_CHARS = "0123456789#*"


tn_text = st.text(alphabet=TN_CHARS, min_size=1, max_size=15)


digits = st.text(alphabet="0123456789", min_size=1, max_size=15)


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


b64url_text = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=60)


# TNs, and strings JSON must escape: quotes, backslashes, control characters, non-ASCII
any_tn = st.one_of(tn_text, st.text(alphabet='12"\\\x01\x7f/é ~', max_size=6), st.text(max_size=12))


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


def typed(fn, *args, errors=(StirShakenError,)):
    try:
        fn(*args)
    except errors:
        pass


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


def test_tv2_rfc8225_71_verifies_over_its_own_bytes_with_a2_key():
    p = pp.parse_jws(V.RFC8225_71_FULL)
    assert p.header == {"alg": "ES256", "typ": "passport", "x5u": "https://cert.example.org/passport.cer"}
    assert p.claims["iat"] == "1443208345"  # Erratum 5985: a string
    p.verify(V.a2_pub())  # signature over the received segments, not a re-serialization
    assert p.compact == V.RFC8225_71_COMPACT
    assert p.canonical


def test_tv2_string_iat_is_rejected_by_strict_decode():
    with pytest.raises(InvalidClaimError) as ei:
        pp.decode(V.RFC8225_71_FULL, ppt=None)
    assert ei.value.sip_code == 438 and "iat" in ei.value.description


def test_tv2_tampered_fails_and_a1_key_is_not_its_pair():
    p = pp.parse_jws(V.RFC8225_71_FULL)
    with pytest.raises(SignatureError):
        p.verify(V.a1_key().public_key())
    h, pl, s = V.RFC8225_71_FULL.split(".")
    forged = pp.parse_jws(h + "." + b64url_encode(b64url_decode(pl).replace(b"alice", b"mallo")) + "." + s)
    with pytest.raises(SignatureError) as ei:
        forged.verify(V.a2_pub())
    assert ei.value.sip_code == 438 and ei.value.verstat == VERSTAT_FAILED


def test_tv2_compact_form_is_a_typed_error():
    with pytest.raises(CompactFormError) as ei:
        pp.parse_jws(V.RFC8225_71_COMPACT)
    assert ei.value.sip_code == 438


def test_tv3_appendix_a_serialization_and_derived_rfc6979_signature():
    header = {"typ": "passport", "alg": "ES256", "x5u": "https://cert.example.org/passport.cer"}  # §4.4 order
    claims = {"orig": {"tn": "12155551212"}, "iat": 1471375418, "dest": {"uri": ["sip:alice@example.com"]}}
    assert b64url_encode(pp.canonical_json(header)) == V.RFC8225_APPA_HEADER_B64
    assert b64url_encode(pp.canonical_json(claims)) == V.RFC8225_APPA_PAYLOAD_B64
    token = pp.encode_token(V.a1_key(), header, claims, deterministic=True)
    assert token == f"{V.RFC8225_APPA_HEADER_B64}.{V.RFC8225_APPA_PAYLOAD_B64}.{V.RFC8225_APPA_DERIVED_SIG}"
    pp.parse_jws(token).verify(V.a1_key().public_key())


def test_tv3_shaken_example_reproduces_byte_for_byte_with_deterministic_signer():
    signer = pp.Signer(V.a1_key(), "https://cert.example.org/passport.cer", deterministic=True)
    token = signer.sign(
        orig="12155550121", dest=["12155550131"], attest="A", iat=1443208345,
        origid="123e4567-e89b-12d3-a456-426655440000",
    )
    assert token == V.SHAKEN_EXAMPLE_TOKEN
    assert signer.sign(orig="12155550121", dest="12155550131", attest="A", iat=1443208345,
                       origid="123e4567-e89b-12d3-a456-426655440000") == token
    p = pp.decode(token)
    assert p.problems == ()
    assert signer.identity_for_token(token) == token + ";info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"


def test_random_k_signer_differs_but_verifies():
    signer = pp.Signer(V.a1_key(), "https://cert.example.org/passport.cer", deterministic=False)
    kw = dict(orig="12155550121", dest=["12155550131"], attest="A", iat=1443208345, origid="123e4567-e89b-12d3-a456-426655440000")
    t1, t2 = signer.sign(**kw), signer.sign(**kw)
    assert t1 != t2 and t1.rsplit(".", 1)[0] == V.SHAKEN_EXAMPLE_TOKEN.rsplit(".", 1)[0]
    for t in (t1, t2):
        pp.decode(t).verify(V.a1_key().public_key())


def test_tv4_rfc7515_a3_verifies():
    def num(s):
        return int.from_bytes(b64url_decode(s), "big")
    pub = ec.EllipticCurvePublicNumbers(num(V.RFC7515_A3_JWK["x"]), num(V.RFC7515_A3_JWK["y"]), ec.SECP256R1()).public_key()
    pp.verify_signature(V.RFC7515_A3_SIGNING_INPUT.encode(), b64url_decode(V.RFC7515_A3_SIG), pub)
    with pytest.raises(SignatureError):
        pp.verify_signature(V.RFC7515_A3_SIGNING_INPUT.encode() + b"x", b64url_decode(V.RFC7515_A3_SIG), pub)
    priv = ec.derive_private_key(num(V.RFC7515_A3_JWK["d"]), ec.SECP256R1())
    assert priv.public_key().public_numbers() == pub.public_numbers()
    sig = pp.es256_sign(priv, V.RFC7515_A3_SIGNING_INPUT.encode())
    pp.verify_signature(V.RFC7515_A3_SIGNING_INPUT.encode(), sig, pub)


def test_tv1_examples_are_canonical():
    ex2 = '{"dest":{"tn":["12125551212"],"uri":["sip:alice@example.com","sip:bob@example.net"]},"iat":1443208345,"orig":{"tn":"12155551212"}}'
    obj = json.loads(ex2)
    assert pp.canonical_json(obj).decode() == ex2
    header = json.loads('{"typ":"passport","alg":"ES256","x5u":"https://cert.example.org/passport.cer"}')
    assert pp.canonical_json(header) == b'{"alg":"ES256","typ":"passport","x5u":"https://cert.example.org/passport.cer"}'
    mky = ('{"dest":{"uri":["sip:alice@example.com"]},"iat":1443208345,"mky":[{"alg":"sha-256","dig":"021ACC5427ABEB9C533F3E4B652E7D463F5442CD54F17A03A27DF9B07F4619B2"},'
           '{"alg":"sha-256","dig":"4AADB9B13F82183B540212DF3E5D496B19E57CAB3E4B652E7D463F5442CD54F1"}],"orig":{"tn":"12155551212"}}')
    assert pp.canonical_json(json.loads(mky)).decode() == mky


def test_tv1_83_missing_comma_payload_is_json_error(key):
    bad = b'{ "bar":"beyond all recognition" "dest":{"uri":["sip:alice@example.com"]}, "iat":1443208345, "orig":{"tn":"12155551212"} }'
    with pytest.raises(PassportJSONError) as ei:
        pp.parse_jws(V.jws(b'{"alg":"ES256","ppt":"foo","typ":"passport","x5u":"https://tel.example.org/passport.cer"}', bad))
    assert ei.value.sip_code == 438


def test_tv6_public_tokens_decode():
    p = pp.decode(V.LIBSTIRSHAKEN_TOKEN)
    assert (p.attest, p.orig_tn, p.dest_tns, p.x5u) == ("B", "01256500600", ("01256700800",), "https://shaken.signalwire.cloud/sp.pem")
    assert p.problems == () and p.canonical and len(p.signature) == 64
    token = V.PASTEBIN_IDENTITY.split(";", 1)[0]
    p = pp.decode(token)
    assert p.attest == "A" and p.iat == 1629357305 and p.origid == "c1375035-add9-48d3-8052-c48c2977bc60"


def test_vector_orig_as_string_is_invalid_claim():
    with pytest.raises(InvalidClaimError) as ei:
        pp.decode(V.SIGNALWIRE_BAD_PASSPORT)
    assert ei.value.sip_code == 438 and "'orig'" in ei.value.description
    assert ei.value.reason == "Invalid Identity Header"
    # still shown to an operator: parse_jws alone succeeds
    p = pp.parse_jws(V.SIGNALWIRE_BAD_PASSPORT)
    assert isinstance(p.claims["orig"], str) and p.orig_tn is None and p.dest_tns == ()


def test_vector_spc_token_is_not_a_passport():
    with pytest.raises(UnsupportedTypeError) as ei:
        pp.decode(V.SIGNALWIRE_SPC_TOKEN, ppt=None)
    assert ei.value.sip_code == 437


def test_deterministic_json_and_raw_signature(key):
    token = pp.encode_token(key, SHAKEN_HEADER, good_claims(), deterministic=True)
    h, p, s = token.split(".")
    assert "=" not in token and "+" not in token and "/" not in token
    hb, pb, sb = segments(token)
    assert hb == b'{"alg":"ES256","ppt":"shaken","typ":"passport","x5u":"https://cr.example.net/sp.pem"}'
    assert pb == orjson.dumps(good_claims(), option=orjson.OPT_SORT_KEYS)
    assert b" " not in pb and list(json.loads(pb)) == sorted(json.loads(pb))
    assert len(sb) == 64
    r, sv = int.from_bytes(sb[:32], "big"), int.from_bytes(sb[32:], "big")
    assert 0 < r and 0 < sv
    der = key.sign(f"{h}.{p}".encode(), pp.ECDSA_SHA256_DETERMINISTIC)
    assert decode_dss_signature(der) == (r, sv)  # deterministic: the same r, s as in the token
    pp.decode(token).verify(key.public_key())
    # the default nonce (hedged, see passport._ECDSA_SHA256): same bytes signed, a new signature each time
    t1, t2 = signed(key), signed(key)
    assert t1.rsplit(".", 1)[0] == t2.rsplit(".", 1)[0] == token.rsplit(".", 1)[0] and t1 != t2
    for t in (t1, t2):
        pp.decode(t).verify(key.public_key())
    assert not pp.Signer(key, X5U).deterministic and pp.Signer(key, X5U, deterministic=True).deterministic


def test_canonical_json_is_recursive_and_python_equivalent():
    obj = {"b": [{"z": 1, "a": True, "m": None}], "a": {"y": "é", "x": False}}
    assert pp.canonical_json(obj) == json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def test_shaken_claims_builder_several_destinations_and_uris(key):
    c = pp.shaken_claims(orig="12155551212", dest=["19995550000", "12155551213"], attest="B", iat=5,
                         dest_uris=["sip:z@example.com", "sip:a@example.com"])
    assert c["dest"] == {"tn": ["12155551213", "19995550000"], "uri": ["sip:a@example.com", "sip:z@example.com"]}
    assert list(pp.canonical_json(c["dest"]).decode().split(":")[0]) == list('{"tn"')
    token = pp.Signer(key, X5U).sign_claims(c)
    p = pp.decode(token)
    assert p.dest_tns == ("12155551213", "19995550000") and p.dest_uris == ("sip:a@example.com", "sip:z@example.com")
    assert p.problems == ()


def test_shaken_claims_defaults_and_orig_uri():
    c = pp.shaken_claims(orig="sip:alice@example.com", orig_is_uri=True, dest="12155551213", attest="C")
    assert c["orig"] == {"uri": "sip:alice@example.com"}
    assert isinstance(c["iat"], int) and pp._UUID_RE.fullmatch(c["origid"])
    with pytest.raises(InvalidClaimError):
        pp.shaken_claims(orig="1", dest="2", attest="D")
    with pytest.raises(MissingClaimError):
        pp.shaken_claims(orig="1", dest=[], attest="A")


def test_orig_uri_decodes_for_base_passport_but_not_shaken(key):
    c = {"dest": {"uri": ["sip:alice@example.com"]}, "iat": 1, "orig": {"uri": "sip:bob@example.com"}}
    p = pp.decode(pp.encode_token(key, {"alg": "ES256", "typ": "passport", "x5u": X5U}, c), ppt=None)
    assert p.orig_tn is None and p.dest_uris == ("sip:alice@example.com",)
    with pytest.raises(InvalidClaimError):
        pp.decode(signed(key, claims=good_claims(orig={"uri": "sip:bob@example.com"})))


def test_mky_claim(key):
    mky = [{"alg": "sha-256", "dig": "021ACC54"}, {"alg": "sha-256", "dig": "4AADB9B1"}]
    p = pp.decode(signed(key, claims=good_claims(mky=mky)))
    assert p.claims["mky"] == mky
    with pytest.raises(InvalidClaimError):
        pp.decode(signed(key, claims=good_claims(mky=[{"alg": "sha-256"}])))
    with pytest.raises(InvalidClaimError):
        pp.decode(signed(key, claims=good_claims(mky={"alg": "sha-256", "dig": "00"})))


def test_div_passport(key):
    claims = pp.div_claims(orig="12155551212", dest=["12155559999"], div="12155551213", iat=10)
    token = pp.Signer(key, X5U, ppt="div").sign_claims(claims)
    assert segments(token)[0] == b'{"alg":"ES256","ppt":"div","typ":"passport","x5u":"https://cr.example.net/sp.pem"}'
    p = pp.decode(token, ppt="div")
    assert p.div_tn == "12155551213" and p.dest_tns == ("12155559999",)
    with pytest.raises(UnsupportedPPTError):
        pp.decode(token)  # a div PASSporT where shaken is expected
    no_div = {k: v for k, v in claims.items() if k != "div"}
    with pytest.raises(MissingClaimError) as ei:
        pp.decode(pp.Signer(key, X5U, ppt="div").sign_claims(no_div), ppt="div")
    assert "'div'" in ei.value.description
    with pytest.raises(InvalidClaimError):
        pp.decode(pp.Signer(key, X5U, ppt="div").sign_claims(dict(claims, div="12155551213")), ppt="div")


def test_rcd_claims_in_shaken_and_rcd_ppt(key):
    rcd = {"nam": "Alice Corp", "jcl": "https://example.com/jcard.json", "icn": "https://example.com/logo.png"}
    extra = {"rcd": rcd, "rcdi": {"/jcl": "sha256-abc", "/icn": "sha256-def"}, "crn": "Your appointment"}
    claims = pp.shaken_claims(orig="12155551212", dest="12155551213", attest="A", iat=1, extra=extra)
    p = pp.decode(pp.Signer(key, X5U).sign_claims(claims))
    assert p.claims["rcd"]["nam"] == "Alice Corp" and p.claims["crn"] == "Your appointment"
    rcd_token = pp.Signer(key, X5U, ppt="rcd").sign_claims({"dest": {"tn": ["1"]}, "iat": 1, "orig": {"tn": "2"}, "rcd": rcd})
    assert pp.decode(rcd_token, ppt="rcd").claims["rcd"] == rcd
    with pytest.raises(MissingClaimError):
        pp.decode(pp.Signer(key, X5U, ppt="rcd").sign_claims({"dest": {"tn": ["1"]}, "iat": 1, "orig": {"tn": "2"}}), ppt="rcd")
    for bad in ({"rcd": "Alice"}, {"rcdi": ["x"]}, {"crn": 5}):
        with pytest.raises(InvalidClaimError):
            pp.decode(signed(key, claims=good_claims(**bad)))


def test_signer_rejects_non_p256_key():
    with pytest.raises(ValueError):
        pp.Signer(ec.generate_private_key(ec.SECP384R1()), X5U)


def test_problems_reported_not_raised(key):
    claims = good_claims(origid="not-a-uuid", dest={"tn": ["3", "2"]}, orig={"tn": "+12155551212"})
    p = pp.decode(signed(key, claims=claims))
    text = " ".join(p.problems)
    assert "UUID" in text and "canonical" in text and "lexicographic" in text
    h = b64url_encode(b'{"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": "https://x"}')
    body = b64url_encode(pp.canonical_json(good_claims()))
    p = pp.decode(f"{h}.{body}.{b64url_encode(b'0' * 64)}")
    assert not p.canonical and any("deterministic" in x for x in p.problems)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, p, s: (h + "=", p, s),  # padding
        lambda h, p, s: (h, p + "==", s),
        lambda h, p, s: (h.replace("-", "+").replace("_", "/") if ("-" in h or "_" in h) else "+" + h[1:], p, s),
        lambda h, p, s: (h, p, s[:-1] + _B64[_B64.index(s[-1]) | 1]),  # 64 bytes -> 86 chars: non-zero unused bits
        lambda h, p, s: (h, p, s + "x"),  # 87 chars: length 1 mod 4 is impossible
        lambda h, p, s: (" " + h, p, s),
    ],
)
def test_non_canonical_base64url_is_encoding_error(key, mutate):
    h, p, s = signed(key).split(".")
    h2, p2, s2 = mutate(h, p, s)
    token = f"{h2}.{p2}.{s2}"
    try:
        pp.decode(token)
    except PassportEncodingError as err:
        assert err.sip_code == 438
    else:  # pragma: no cover
        pytest.fail(f"accepted non-canonical base64url {token!r}")


def test_non_zero_trailing_bits_are_rejected():
    # "QQ" = b"A"; "QR" has non-zero unused bits and decodes to the same byte with a lax decoder
    assert base64.urlsafe_b64decode("QR==") == b"A"
    assert b64url_decode("QQ") == b"A"
    with pytest.raises(PassportEncodingError):
        b64url_decode("QR")
    assert b64url_decode("QUI") == b"AB"
    with pytest.raises(PassportEncodingError):
        b64url_decode("QUJ")
    for bad in ("QQ==", "Q", "a+b/", "ab\n", "é", 5, None):
        with pytest.raises(PassportEncodingError):
            b64url_decode(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ["none", "HS256", "RS256", "ES384", "es256"])
def test_alg_other_than_es256(key, alg):
    err = _expect(UnsupportedAlgorithmError, 437, signed(key, header=dict(SHAKEN_HEADER, alg=alg)))
    assert err.reason == "Unsupported Credential"


def test_alg_none_with_empty_signature_is_format_error():
    token = V.jws(pp.canonical_json(dict(SHAKEN_HEADER, alg="none")), pp.canonical_json(good_claims()), b"")
    with pytest.raises(PassportFormatError):
        pp.decode(token)


@pytest.mark.parametrize("typ", ["JWT", "PASSPORT", "passport "])
def test_typ_other_than_passport(key, typ):
    _expect(UnsupportedTypeError, 437, signed(key, header=dict(SHAKEN_HEADER, typ=typ)))


@pytest.mark.parametrize("ppt", ["foo", "rph", "SHAKEN"])
def test_unknown_or_unexpected_ppt(key, ppt):
    _expect(UnsupportedPPTError, 438, signed(key, header=dict(SHAKEN_HEADER, ppt=ppt)))
    base = {"alg": "ES256", "typ": "passport", "x5u": X5U, "ppt": ppt}
    with pytest.raises(UnsupportedPPTError):
        pp.decode(pp.encode_token(key, base, good_claims()), ppt=None)


@pytest.mark.parametrize("name", ["alg", "typ", "x5u", "ppt"])
def test_missing_header_parameter(key, name):
    header = {k: v for k, v in SHAKEN_HEADER.items() if k != name}
    err = _expect(MissingHeaderParameterError, 436, signed(key, header=header))
    assert name in err.description and err.reason == "Bad Identity Info"


@pytest.mark.parametrize("name", ["attest", "dest", "iat", "orig", "origid"])
def test_missing_mandatory_claim(key, name):
    claims = {k: v for k, v in good_claims().items() if k != name}
    err = _expect(MissingClaimError, 438, signed(key, claims=claims))
    assert f"'{name}'" in err.description


@pytest.mark.parametrize(
    "over",
    [
        {"orig": "12155551212"},
        {"orig": '{"tn":"12155551212"}'},
        {"orig": {"tn": 12155551212}},
        {"orig": {"tn": ["12155551212"]}},
        {"orig": {"tn": "1", "uri": "sip:a@b"}},
        {"orig": {}},
        {"dest": "12155551213"},
        {"dest": {"tn": "12155551213"}},
        {"dest": {"tn": []}},
        {"dest": {"tn": [12155551213]}},
        {"dest": {"uri": "sip:a@b"}},
        {"iat": "1700000000"},
        {"iat": 1700000000.5},
        {"iat": True},
        {"iat": None},
        {"attest": "D"},
        {"attest": ["A"]},
        {"attest": 1},
        {"origid": 5},
        {"origid": ""},
    ],
)
def test_wrong_claim_types(key, over):
    _expect(InvalidClaimError, 438, signed(key, claims=good_claims(**over)))


def test_bad_signature(key):
    token = signed(key)
    p = pp.decode(token)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(SignatureError) as ei:
        p.verify(other.public_key())
    assert ei.value.sip_code == 438 and ei.value.verstat == VERSTAT_FAILED
    h, pl, s = token.split(".")
    for bad_sig in (b64url_encode(b64url_decode(s)[:63]), b64url_encode(b"\0" * 64), b64url_encode(b64url_decode(s)[::-1])):
        with pytest.raises(SignatureError):
            pp.decode(f"{h}.{pl}.{bad_sig}").verify(key.public_key())
    with pytest.raises(SignatureError):
        p.verify(ec.generate_private_key(ec.SECP384R1()).public_key())  # type: ignore[arg-type]


def test_der_signature_is_rejected(key):
    h, pl, _ = signed(key).split(".")
    der = key.sign(f"{h}.{pl}".encode(), pp.ECDSA_SHA256)
    with pytest.raises(SignatureError):
        pp.decode(f"{h}.{pl}.{b64url_encode(der)}").verify(key.public_key())


@pytest.mark.parametrize(
    "token,exc",
    [
        ("", PassportFormatError),
        ("abc", PassportFormatError),
        ("a.b", PassportFormatError),
        ("a.b.c.d", PassportFormatError),
        ("..", CompactFormError),
        ("..abc", CompactFormError),
        ("a..c", PassportFormatError),
        ("eyJ9.eyJ9.", PassportFormatError),
        ("x" * 20000, PassportFormatError),
    ],
)
def test_malformed_jws(token, exc):
    with pytest.raises(exc):
        pp.decode(token)


@pytest.mark.parametrize(
    "header,payload",
    [
        (b"[]", b"{}"),
        (b'"x"', b"{}"),
        (b"{", b"{}"),
        (b'{"alg":"ES256","alg":"none","ppt":"shaken","typ":"passport","x5u":"https://x"}', b"{}"),
        (pp.canonical_json(SHAKEN_HEADER), b'{"iat":1,"iat":2}'),
        (pp.canonical_json(SHAKEN_HEADER), b"\xff\xfe"),
        (pp.canonical_json(SHAKEN_HEADER), b"[" * 3000 + b"]" * 3000),
        (b'{"alg":5,"ppt":"shaken","typ":"passport","x5u":"https://x"}', pp.canonical_json(good_claims())),
    ],
)
def test_json_errors(header, payload):
    with pytest.raises(PassportJSONError) as ei:
        pp.decode(V.jws(header, payload))
    assert ei.value.sip_code == 438


def test_non_string_token():
    for bad in (None, 5, b"a.b.c"):
        with pytest.raises(PassportFormatError):
            pp.decode(bad)  # type: ignore[arg-type]


def test_require_x5u_false_and_to_json(key):
    token = pp.encode_token(key, {"alg": "ES256", "ppt": "shaken", "typ": "passport"}, good_claims())
    with pytest.raises(MissingHeaderParameterError):
        pp.decode(token)
    p = pp.decode(token, require_x5u=False)
    j = p.to_json()
    assert j["claims"] == good_claims() and len(b64url_decode(j["signature"])) == 64


def test_origid_pool_gives_v4_uuids_once():
    import uuid

    pool = pp.OrigidPool()
    n = 3 * pp._UUID_BATCH + 7  # across several refills of the pool
    ids = {pool() for _ in range(n)} | {pp.new_origid() for _ in range(20)}
    assert len(ids) == n + 20
    for i in ids:
        u = uuid.UUID(i)
        assert str(u) == i and u.version == 4 and u.variant == uuid.RFC_4122
    # every variant digit (8, 9, a, b) occurs: the two random bits of that nibble are kept
    assert {i[19] for i in ids} == set("89ab")


def test_signers_own_their_origid_pools(key):
    """No module-level pool: each Signer draws from its own, on both of its paths."""
    a, b = pp.Signer(key, X5U), pp.Signer(key, X5U)
    assert a.origids is not b.origids
    first = pp.decode(a.identity_for("1", "2", "A").split(";")[0]).origid
    assert len(a.origids.ids) == pp._UUID_BATCH - 1 and not b.origids.ids
    assert first not in a.origids.ids
    drawn = {pp.decode(a.identity(orig="1", dest="2", attest="A", extra={"crn": "x"}).split(";")[0]).origid,
             pp.decode(a.sign(orig="1", dest="2", attest="A")).origid}
    assert len(a.origids.ids) == pp._UUID_BATCH - 3 and first not in drawn and len(drawn) == 2


def test_origid_pool_differs_between_forked_workers():
    """A pool is emptied in a forked child: two workers never hand out the same ids."""
    pool = pp.OrigidPool()
    pool()  # the parent's pool now holds ids
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.write(w, ",".join(pool() for _ in range(10)).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = set(os.read(r, 4096).decode().split(","))
    os.close(r)
    parent = {pool() for _ in range(pp._UUID_BATCH)}
    assert len(child) == 10 and not child & parent


def test_der_to_raw_matches_the_general_decoder(key):
    for i in range(300):  # ~1/256 of r or s are shorter than 32 bytes, ~1/2 need a 0x00 pad in DER
        der = key.sign(i.to_bytes(4, "big"), pp.ECDSA_SHA256)
        r, s = decode_dss_signature(der)
        assert pp.der_to_raw(der) == r.to_bytes(32, "big") + s.to_bytes(32, "big")
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    for r, s in ((1, 2), (2**255, 2**256 - 1), (0x80, 0x7F)):
        assert pp.der_to_raw(encode_dss_signature(r, s)) == r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_plain_shaken_fast_path_agrees_with_full_check(key):
    ok = good_claims()
    assert pp._plain_shaken(ok)
    for bad in ({"iat": True}, {"attest": ["A"]}, {"orig": {"tn": ""}}, {"dest": {"tn": ["1", 2]}}, {"origid": ""},
                {"orig": {"tn": "1", "uri": "x"}}, {"dest": {"tn": ["1"], "uri": ["x"]}}):
        assert not pp._plain_shaken(good_claims(**bad))


def test_identity_fast_path_equals_general_path(key):
    s = pp.Signer(key, X5U, deterministic=True)
    kw = dict(orig="12155551212", dest=["12155551214", "12155551213"], attest="B", iat=7, origid="123e4567-e89b-12d3-a456-426655440000")
    general = pp.Signer(key, X5U, deterministic=True).sign_claims(pp.shaken_claims(**kw)) + f";info=<{X5U}>;alg=ES256;ppt=shaken"
    assert s.identity(**kw) == general == s.identity_for("12155551212", ["12155551214", "12155551213"], "B", 7, kw["origid"])
    assert s.identity(**kw, extra={"crn": "x"}) != general
    with pytest.raises(InvalidClaimError):
        s.identity_for("1", "2", "Z")
    with pytest.raises(MissingClaimError):
        s.identity(orig="1", dest=[], attest="A")
    p = pp.decode(s.identity(orig="1", dest="2", attest="C").split(";")[0])
    assert p.dest_tns == ("2",) and abs(p.iat - __import__("time").time()) < 5 and pp._UUID_RE.fullmatch(p.origid)


def test_raw_to_der_matches_encode_dss_signature() -> None:
    """passport.raw_to_der (bytes only) gives exactly cryptography's DER encoding."""
    import os as _os

    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from stirshaken.core.jose import raw_to_der

    samples = [_os.urandom(64) for _ in range(3000)]
    samples += [bytes(64), b"\x80" * 64, b"\x7f" * 64, b"\0" * 31 + b"\x80" + b"\0\0\x01" + bytes(29), b"\0\x81" + bytes(30) + b"\x01" * 32]
    for raw in samples:
        assert raw_to_der(raw) == encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")), raw.hex()


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


# --- issue 12: div PASSporTs and signing inputs ------------------------------------------------


def test_div_claims_follow_rfc_8946(key):
    """RFC 8946 §3: orig, dest (the new target), div (the previous destination), iat; no attest or
    origid; no div PASSporT when the destination did not change."""
    c = pp.div_claims(orig="12155551212", dest=["12155559999", "12155559998"], div="12155551213", iat=7)
    assert c == {"dest": {"tn": ["12155559998", "12155559999"]}, "div": {"tn": "12155551213"}, "iat": 7, "orig": {"tn": "12155551212"}}
    with pytest.raises(InvalidClaimError) as e:
        pp.div_claims(orig="12155551212", dest="12155551213", div="12155551213")
    assert "RFC 8946 §3" in e.value.description and "unchanged" in e.value.description
    with pytest.raises(MissingClaimError):
        pp.div_claims(orig="12155551212", dest=[], div="12155551213")
    ident = pp.Signer(key, X5U, ppt="div").identity_claims(c)
    assert ident.endswith(f";info=<{X5U}>;alg=ES256;ppt=div")
    p = pp.decode(ident.split(";")[0], ppt="div")
    p.verify(key.public_key())
    assert p.claims == c


@pytest.mark.parametrize("value", ["A", "B", "C"])
def test_check_attest_accepts_the_three_levels(value):
    assert pp.check_attest(value) == value


@pytest.mark.parametrize("value,shown", [("D", "'D'"), ("a", "'a'"), ("", "''"), (1, "'1'"), (None, "'None'")])
def test_check_attest_names_the_value(value, shown):
    with pytest.raises(InvalidClaimError) as e:
        pp.check_attest(value)
    assert e.value.description == f"'attest' must be A, B or C, not {shown}"


def test_check_origid_is_the_uuid_rule_of_the_verifier(key):
    good = "123E4567-e89b-12d3-a456-426614174000"
    assert pp.check_origid(good) == good and pp.check_origid(pp.new_origid())
    for bad in ("not-a-uuid", "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g", 5):
        with pytest.raises(InvalidClaimError) as e:
            pp.check_origid(bad)
        assert e.value.description.startswith("'origid' must be a UUID (RFC 8588 §5), not ")
        if isinstance(bad, str):  # what the decoder reports as a problem is exactly what is refused
            claims = pp.shaken_claims(orig="12155551212", dest="12155551213", attest="A", origid=bad, iat=1)
            assert "'origid' is not a UUID (RFC 8588 §5)" in pp.decode(pp.Signer(key, X5U).sign_claims(claims)).problems
