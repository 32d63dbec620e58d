"""core/tn.py: TN canonicalization (RFC 8224 §8.3) and URI user parts."""

from __future__ import annotations

import pytest
from stirshaken.core.errors import BadIdentityInfoError, IdentityHeaderSyntaxError, StirShakenError
from stirshaken.core.identity import IdentityHeader, build_identity, parse_identity, parse_identity_headers, split_header_values
from stirshaken.core.tn import TNError, canonicalize_tn, tn_from_uri, uri_user
from tests import _core_support as V
import base64
import string
import orjson
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


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


TN_CHARS = "0123456789#*"


tn_text = st.text(alphabet=TN_CHARS, min_size=1, max_size=15)


@pytest.mark.parametrize(
    "value,expected",
    [
        ("+1 (215) 555-1212", "12155551212"),
        ("sip:+1-(215)-555-1212@example.com;user=phone", "12155551212"),
        ("<sip:+1-(215)-555-1212@example.com;user=phone>", "12155551212"),
        ("sips:+12155551212@example.com", "12155551212"),
        ("tel:+1-215-555-1212", "12155551212"),
        ("tel:+1.215.555.1212;phone-context=example.com", "12155551212"),
        ("tel:2155551212;phone-context=+1", "2155551212"),
        ("12155551212;ext=22", "12155551212"),
        ("*67", "*67"),
        ("#31#", "#31#"),
        ("sip:*67@example.com", "*67"),
        ("sip:%2B12155551212@example.com", "12155551212"),
        ("  +44 20 7946 0018 ", "442079460018"),
        ("[215] 555/1212", "2155551212"),
        ("2155551212", "2155551212"),
    ],
)
def test_canonicalize(value, expected):
    assert canonicalize_tn(value) == expected


def test_national_number_only_with_a_dial_plan():
    assert canonicalize_tn("2155551212") == "2155551212"
    assert canonicalize_tn("2155551212", country_code="1", national_length=10) == "12155551212"
    assert canonicalize_tn("(215) 555-1212", country_code="1", national_length=10) == "12155551212"
    # already international, or another length: untouched
    assert canonicalize_tn("+2155551212", country_code="1", national_length=10) == "2155551212"
    assert canonicalize_tn("12155551212", country_code="1", national_length=10) == "12155551212"
    assert canonicalize_tn("*67", country_code="1", national_length=3) == "*67"


@pytest.mark.parametrize(
    "value",
    ["", "+", "abc", "sip:alice@example.com", "tel:", "1+2", "12a4", "sip:@example.com", "++1", "--", "١٢٣", None, 5],
)
def test_not_a_tn(value):
    with pytest.raises(TNError):
        canonicalize_tn(value)  # type: ignore[arg-type]


def test_uri_helpers():
    assert uri_user('"Alice" <sip:+12155551212@example.com;user=phone>') == "+12155551212"
    assert uri_user("http://example.com") is None
    assert tn_from_uri("sip:alice@example.com") is None
    assert tn_from_uri("tel:+1-215-555-1212") == "12155551212"
    assert tn_from_uri("sip:2155551212@example.com", country_code="1", national_length=10) == "12155551212"


def _tn_from_uri_general(value: str) -> str | None:
    """The general branch of tn_from_uri, written out: canonicalize_tn(uri_user(value))."""
    user = uri_user(value)
    if user is None:
        return None
    try:
        return canonicalize_tn(user)
    except TNError:
        return None


# URI and name-addr shapes around a user part: the usual ones, and malformed neighbours of the
# forms tn_from_uri answers by its fast path (no "@", "@" after a tel number, a "<" before the
# URI, a quoted "<", whitespace, a trailing newline)
_TN_URI_TEMPLATES = [
    "sip:{}@a.example", "SIPS:{}@h", "sip:{};verstat=x@a.example;user=phone", "tel:{}", "TEL:{};ext=2",
    "<sip:{}@a.example>", '"Alice" <sip:{}@a.example>;tag=1', "Bob <tel:{}>", "<tel:{};phone-context=x>",
    "sips:{}:pw@h", "sip:{}", "sip:{};x", "<sip:{}>", "tel:{}@h", "<tel:{}", "<tel:{}@h>", "tel:{}>",
    "sip:{}@h<x>", "a<b <sip:{}@h>", '"a<b" <sip:{}@h>', '"x"sip:{}@h', " sip:{}@h", "tel:{}\n", "tel:{} ",
    "< sip:{}@h>", "sip:{}@h>", "<<sip:{}@h>", "sep:{}@h", "sip:{}%40@h", "tel:{}%3B",
]


@FUZZ
@given(st.sampled_from(_TN_URI_TEMPLATES), st.sampled_from(["", "+", "++", "%2B", "-"]),
       st.text(st.sampled_from("0123456789"), max_size=25), st.sampled_from(["", "-", ".", "*", "a", "\u0661"]))
@example("sip:{}@a", "+", "1234567890123456789", "")   # 19 digits: no TN, on both branches
@example("<sip:{}@a>", "", "1234567890123456", "")      # 16 digits
@example("tel:{}", "+", "123456789012345", "")         # 15: the longest TN
def test_tn_from_uri_fast_path_equals_general_branch(template: str, plus: str, digits: str, sep: str) -> None:
    """tn_from_uri's one-match shortcut (RFC 8224 §8.3, at most MAX_TN_LENGTH digits) answers
    exactly what canonicalize_tn(uri_user(value)) answers, for numbers of any length and for
    malformed URIs around them."""
    number = plus + (digits[:3] + sep + digits[3:] if len(digits) > 3 else digits + sep)
    value = template.format(number)
    assert tn_from_uri(value) == _tn_from_uri_general(value), value


@FUZZ
@given(st.text(alphabet='sipSIPtelTEL:+<>@;"% \t\n0123456789', max_size=40))
@example("sip:+1234567890123456789@a")
@example("sip:123")
@example("tel:1@h")
def test_fuzz_tn_from_uri_equals_general_branch(value: str) -> None:
    assert tn_from_uri(value) == _tn_from_uri_general(value), value


@FAST
@given(tn_text, st.booleans(), st.sampled_from(["", " ", "-", ".", "(", ")"]))
def test_canonicalize_tn_idempotent(tn, plus, sep):
    decorated = ("+" if plus else "") + sep.join(tn)
    assume(decorated.strip())
    assert canonicalize_tn(decorated) == tn if tn[0] not in "*#" or not plus else True
    assert canonicalize_tn(tn) == tn
    assert canonicalize_tn(f"sip:{tn}@example.com;user=phone") == tn


@FUZZ
@given(st.one_of(st.text(max_size=40), st.text(alphabet="0123456789+-(). #*;:<>@sipteluser=phone", max_size=40)))
def test_fuzz_canonicalize_tn(value):
    try:
        out = canonicalize_tn(value)
    except TNError:
        return
    assert out and set(out) <= set(TN_CHARS)


def test_national_number_warning() -> None:
    """A number written without + whose canonical form has national length is signed as given
    (no country code) with this warning; E.164 forms and other lengths get none."""
    from stirshaken.core.tn import national_number

    want = "2155551212 looks like a national number (10 digits, no country code): signed as given, not in E.164 form (RFC 8224 §8.3)"
    for value in ("2155551212", "(215) 555-1212", "sip:2155551212@example.net", "tel:215-555-1212"):
        assert national_number(value, canonicalize_tn(value), 10) == want, value
    for value in ("+2155551212", "tel:+2155551212", "sip:%2B2155551212@h", "12155551212", "*67"):
        assert national_number(value, canonicalize_tn(value), 10) is None, value
    assert national_number("2155551212", "2155551212", None) is None  # no national length configured
    # with a country code the same number is completed instead (RFC 8224 §8.3)
    assert canonicalize_tn("(215) 555-1212", country_code="1", national_length=10) == "12155551212"
    assert canonicalize_tn("+2155551212", country_code="1", national_length=10) == "2155551212"


def test_one_uri_user_for_percent_and_separators() -> None:
    """%2B and visual separators decode the same way wherever a TN comes from a URI."""
    for value in ("sip:%2B1-215-555-1212@h", "<sip:%2b1.215.555.1212@h;user=phone>", "tel:+1-215-555-1212", "sip:+1(215)555-1212@h"):
        assert canonicalize_tn(value) == "12155551212", value
        assert tn_from_uri(value) == "12155551212", value
    assert canonicalize_tn("+1 (215) 555-1212") == "12155551212"
    with pytest.raises(TNError, match="has 16 characters; a telephone number has at most 15"):
        canonicalize_tn("sip:%2B1215555121212345@h")
