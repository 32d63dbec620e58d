"""core.rcd: rich call data claims (RFC 9795), rcdi integrity strings, JSON pointers, RFC 8785."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stirshaken.core.errors import InvalidClaimError, MissingClaimError, FetchError
from stirshaken.core.rcd import RichCallDataError, check_rcd_claims, integrity, jcs, rcd_claims, rcd_urls, resolve_pointer, verify_rcdi

JCARD = ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Émile Zola"], ["logo", {}, "uri", "https://rcd.example.net/z.png"]]]
ICN = "https://rcd.example.net/logo.png"
LOGO = b"\x89PNG logo bytes"


def test_integrity_string_is_sri_sha256() -> None:
    assert integrity(b"") == "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert integrity(b"abc", "sha384").startswith("sha384-")


def test_jcs_matches_rfc8785_for_jcard_json() -> None:
    """Members sorted, no whitespace, JSON's short escapes, \\u00xx lowercase, UTF-8 as is."""
    assert jcs({"b": 1, "a": [True, None, "\u20ac\n\x1f/"], "\u00e9": 0}) == '{"a":[true,null,"\u20ac\\n\\u001f/"],"b":1,"\u00e9":0}'.encode()
    for bad, why in (([1.5], "a fractional number"), ([2**53 + 1], "outside the range"), ({"\U0001f600": 1}, "Basic Multilingual Plane")):
        with pytest.raises(InvalidClaimError, match=why):
            jcs(bad)


def test_resolve_pointer_rfc6901() -> None:
    doc = {"a/b": {"m~n": [10, 20]}, "": 1}
    assert resolve_pointer(doc, "/a~1b/m~0n/1") == 20 and resolve_pointer(doc, "/") == 1 and resolve_pointer(doc, "") is doc
    for bad in ("a", "/x", "/a~1b/m~0n/2", "/a~1b/m~0n/01", "/a~1b/m~0n/-"):
        with pytest.raises(KeyError):
            resolve_pointer(doc, bad)


def test_rcd_claims_and_their_digests() -> None:
    c = rcd_claims(orig="12155551212", dest=["12155551214", "12155551213"], nam="Zola", jcd=JCARD, icn=ICN, crn="Hello",
                   digests={"/icn": integrity(LOGO)}, iat=1700000000)
    assert c == {"dest": {"tn": ["12155551213", "12155551214"]}, "iat": 1700000000, "orig": {"tn": "12155551212"}, "crn": "Hello",
                 "rcd": {"nam": "Zola", "jcd": JCARD, "icn": ICN},
                 "rcdi": {"/jcd": integrity(jcs(JCARD)), "/icn": integrity(LOGO)}}
    assert "rcdi" not in rcd_claims(orig="1", dest="2", nam="Zola")
    assert rcd_urls(c) == (ICN,)
    assert verify_rcdi(c, {ICN: LOGO}) == "rcdi /jcd, /icn match"
    for kw, err, why in (
        ({}, MissingClaimError, "at least one of nam, jcd, jcl, icn"),
        ({"jcd": JCARD, "jcl": ICN, "digests": {"/jcl": integrity(b"")}}, InvalidClaimError, "exclusive"),
        ({"icn": ICN}, InvalidClaimError, "needs the digest"),
        ({"icn": "ftp://x/y"}, InvalidClaimError, "not an http"),
        ({"icn": ICN, "digests": {"/icn": "sha1-abc"}}, InvalidClaimError, "not an integrity string"),
        ({"nam": "x", "digests": {"/icn": integrity(b"")}}, InvalidClaimError, "without icn"),
        ({"jcd": {"not": "an array"}}, InvalidClaimError, "JSON array"),
    ):
        with pytest.raises(err, match=why):
            rcd_claims(orig="1", dest="2", **kw)


def test_verify_rcdi_failures_name_the_member() -> None:
    c = rcd_claims(orig="1", dest="2", jcd=JCARD, icn=ICN, digests={"/icn": integrity(LOGO)})
    with pytest.raises(RichCallDataError, match=r"rcdi /icn digest does not match the content at https://rcd.example.net/logo.png") as e:
        verify_rcdi(c, {ICN: LOGO + b"x"})
    assert e.value.sip_code == 438
    with pytest.raises(RichCallDataError, match="rcdi /icn not checked: Failed to dereference") as e:
        verify_rcdi(c, {ICN: FetchError("Failed to dereference rich call data URI: HTTP 404")})
    assert e.value.sip_code == 436
    with pytest.raises(RichCallDataError, match="was not fetched"):
        verify_rcdi(c, {})
    changed = {**c, "rcd": {**c["rcd"], "jcd": [*JCARD[:1], JCARD[1][:2]]}}
    with pytest.raises(RichCallDataError, match=r"rcdi /jcd digest does not match rcd/jcd \(RFC 8785 form\)"):
        verify_rcdi(changed, {ICN: LOGO})


def test_verify_rcdi_accepts_either_base64_form_and_pointers_into_the_jcard() -> None:
    """A digest in base64url or without padding compares by its bytes; a pointer to a URL inside
    the jCard digests the content there; an icon without an rcdi member is reported."""
    raw = hashlib.sha256(LOGO).digest()
    for form in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        claims = {"rcd": {"icn": ICN, "jcd": JCARD}, "rcdi": {"/icn": "sha256-" + form, "/jcd/1/2/3": integrity(b"z")}}
        assert rcd_urls(claims) == (ICN, "https://rcd.example.net/z.png")
        assert verify_rcdi(claims, {ICN: LOGO, "https://rcd.example.net/z.png": b"z"}) == "rcdi /icn, /jcd/1/2/3 match"
    assert verify_rcdi({"rcd": {"nam": "x", "icn": ICN}}, {}) == "no rcdi digests; /icn not integrity-protected (no rcdi member)"


@pytest.mark.parametrize("claims,why", [
    ({}, "Missing 'rcd' claim"),
    ({"rcd": []}, "non-empty JSON object"),
    ({"rcd": {"nam": 1}}, "'rcd.nam' must be a string"),
    ({"rcd": {"jcd": "x"}}, "'rcd.jcd' must be a jCard"),
    ({"rcd": {"jcd": [], "jcl": ICN}}, "exclusive"),
    ({"rcd": {"icn": "icon.png"}}, "'rcd.icn' must be an http"),
    ({"rcd": {"nam": "x"}, "crn": 5}, "'crn' claim must be a string"),
    ({"rcd": {"nam": "x"}, "rcdi": []}, "'rcdi' claim must be a JSON object"),
    ({"rcd": {"nam": "x"}, "rcdi": {"/icn": integrity(b"")}}, "'/icn', which is not an element of 'rcd'"),
    ({"rcd": {"nam": "x"}, "rcdi": {"/nam": "sha256-short"}}, "is not an integrity string"),
])
def test_malformed_rcd_claims(claims, why) -> None:
    with pytest.raises(RichCallDataError, match=why):
        check_rcd_claims(claims)
    assert rcd_urls(claims) == ()


@given(st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",))),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(st.characters(max_codepoint=0xFFFF, blacklist_categories=("Cs",)), max_size=5), kids, max_size=4),
                    max_leaves=12))
def test_jcs_member_order_is_utf16_order(value) -> None:
    """Within the subset, sorting by code point equals RFC 8785's UTF-16 order, and the output
    parses back to the value."""
    import json

    out = jcs(value)
    assert json.loads(out) == value

    def check(v):
        if isinstance(v, dict):
            keys = list(json.loads(jcs(v), object_pairs_hook=lambda pairs: [k for k, _ in pairs]))
            assert keys == sorted(v, key=lambda k: k.encode("utf-16-be"))
            for x in v.values():
                check(x)
        elif isinstance(v, list):
            for x in v:
                check(x)

    check(value)
