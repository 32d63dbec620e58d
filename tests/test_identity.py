"""SIP Identity header (RFC 8224 §4): building and parsing per the ABNF; TN canonicalization (§8.3)."""

from __future__ import annotations

import pytest

from stirshaken.core.errors import BadIdentityInfoError, IdentityHeaderSyntaxError, StirShakenError
from stirshaken.core.identity import IdentityHeader, build_identity, parse_identity, parse_identity_headers, split_header_values
from stirshaken.core.tn import TNError, canonicalize_tn, tn_from_uri, uri_user

try:
    from tests import _core_support as V
except ImportError:
    import _core_support as V  # type: ignore[no-redef]

TOKEN = V.SHAKEN_EXAMPLE_TOKEN
INFO = "https://cert.example.org/passport.cer"


def test_build_identity_shape():
    value = build_identity(TOKEN, INFO)
    assert value == f"{TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken"
    assert build_identity(TOKEN, INFO, ppt=None) == f"{TOKEN};info=<{INFO}>;alg=ES256"
    h = parse_identity(value)
    assert (h.token, h.info, h.alg, h.ppt, h.problems) == (TOKEN, INFO, "ES256", "shaken", ())
    assert str(h) == value
    with pytest.raises(BadIdentityInfoError):
        build_identity(TOKEN, "not a uri")


def test_rfc8224_example():
    h = parse_identity(f"{V.RFC8225_71_FULL};info=<https://biloxi.example.org/biloxi.cert>")
    assert h.token == V.RFC8225_71_FULL and h.info == "https://biloxi.example.org/biloxi.cert"
    assert h.alg is None and h.ppt is None  # alg absent -> ES256 assumed by the verifier


def test_tv6_pastebin_identity():
    h = parse_identity(V.PASTEBIN_IDENTITY)
    assert h.info == "https://stir.tel/c/704J" and h.ppt == "shaken"


@pytest.mark.parametrize(
    "value",
    [
        f"{TOKEN};ppt=shaken;alg=ES256;info=<{INFO}>",
        f"{TOKEN};alg=ES256;info=<{INFO}>;ppt=shaken",
        f"{TOKEN} ; info = <{INFO}> ;\talg=ES256 ; ppt = shaken",
        f"{TOKEN};info=<{INFO}>;alg=\"ES256\";ppt=\"shaken\"",
        f"{TOKEN};INFO=<{INFO}>;ALG=ES256;PPT=shaken",
        f"Identity: {TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"identity :{TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"y: {TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"Y:{TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"  {TOKEN}\r\n ;info=<{INFO}>\r\n\t;alg=ES256;ppt=shaken  ",
        f"{TOKEN}\n ;info=<{INFO}>;alg=ES256;ppt=shaken",
    ],
)
def test_params_any_order_quotes_lws_case_compact_name(value):
    h = parse_identity(value)
    assert h.token == TOKEN and h.info == INFO and h.alg == "ES256" and h.ppt == "shaken"


def test_unknown_params_kept_in_order_and_reserialized():
    value = f'{TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken;x-foo=bar;flag;q="a b;c,\\"d\\""'
    h = parse_identity(value)
    assert h.params == (
        ("info", INFO), ("alg", "ES256"), ("ppt", "shaken"), ("x-foo", "bar"), ("flag", None), ("q", 'a b;c,"d"'),
    )
    assert h.param("X-FOO") == "bar" and h.param("flag") is None and h.param("missing") is None
    assert parse_identity(str(h)) == h


def test_info_without_angle_brackets_is_a_problem_not_an_error():
    h = parse_identity(f"{TOKEN};info={INFO};alg=ES256")
    assert h.info == INFO and any("angle brackets" in p for p in h.problems)
    h = parse_identity(f'{TOKEN};info="{INFO}"')
    assert h.info == INFO and any("quoted" in p for p in h.problems)


def test_compact_form_recognized():
    h = parse_identity(f"{V.RFC8225_71_COMPACT};info=<{INFO}>;ppt=shaken")
    assert h.is_compact and not parse_identity(f"{TOKEN};info=<{INFO}>").is_compact


@pytest.mark.parametrize(
    "value,exc,code",
    [
        (f"{TOKEN};alg=ES256;ppt=shaken", BadIdentityInfoError, 436),
        (f"{TOKEN}", BadIdentityInfoError, 436),
        (f"{TOKEN};info", BadIdentityInfoError, 436),
        (f"{TOKEN};info=<>", BadIdentityInfoError, 436),
        (f"{TOKEN};info=<not a uri>", IdentityHeaderSyntaxError, 438),
        (f"{TOKEN};info=<relative/path>", BadIdentityInfoError, 436),
        ("", IdentityHeaderSyntaxError, 438),
        ("   ", IdentityHeaderSyntaxError, 438),
        (";info=<https://x/y>", IdentityHeaderSyntaxError, 438),
        ("nodots;info=<https://x/y>", IdentityHeaderSyntaxError, 438),
        (f"{TOKEN};info=<{INFO}>;", IdentityHeaderSyntaxError, 438),
        (f"{TOKEN};info=<{INFO}> trailing", IdentityHeaderSyntaxError, 438),
        (f"{TOKEN};info=<{INFO}>;alg=ES256;alg=ES256", IdentityHeaderSyntaxError, 438),
        (f"{TOKEN};info=<{INFO}>;q=\"unterminated", IdentityHeaderSyntaxError, 438),
        (f"{TOKEN};=x;info=<{INFO}>", IdentityHeaderSyntaxError, 438),
        ("x" * 20000 + "." + ";info=<https://x/y>", IdentityHeaderSyntaxError, 438),
    ],
)
def test_malformed(value, exc, code):
    with pytest.raises(exc) as ei:
        parse_identity(value)
    assert ei.value.sip_code == code and ei.value.reason


def test_non_string():
    for bad in (None, 5, b"a.b.c;info=<https://x>"):
        with pytest.raises(IdentityHeaderSyntaxError):
            parse_identity(bad)  # type: ignore[arg-type]


def test_several_headers_repeated_and_comma_joined():
    a = f"{TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken"
    b = f"{V.RFC8225_71_FULL};info=<https://biloxi.example.org/biloxi.cert>"
    c = f'{V.LIBSTIRSHAKEN_TOKEN};info=<https://shaken.signalwire.cloud/sp.pem>;x="a,b"'
    hs = parse_identity_headers([a, f"{b}, {c}"])
    assert [h.token for h in hs] == [TOKEN, V.RFC8225_71_FULL, V.LIBSTIRSHAKEN_TOKEN]
    assert hs[2].param("x") == "a,b"
    assert parse_identity_headers(f"Identity: {a},\r\n {b}") == [parse_identity(a), parse_identity(b)]
    assert parse_identity_headers([]) == []
    # a URI with a comma inside the angle brackets is not split
    assert split_header_values("t.a.b;info=<https://x/a,b>, u.c.d;info=<https://y>") == [
        "t.a.b;info=<https://x/a,b>", "u.c.d;info=<https://y>",
    ]
    with pytest.raises(StirShakenError):
        parse_identity_headers([a, "garbage"])


def test_identity_header_str_quotes_non_token_values():
    h = IdentityHeader(token="a.b.c", params=(("info", "https://x/y"), ("k", 'v w"')))
    assert str(h) == 'a.b.c;info=<https://x/y>;k="v w\\""'
    assert parse_identity(str(h)).params == h.params


# --- TN canonicalization, RFC 8224 §8.3 (docs/requirements.md#tn-canonicalization cases) -------


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
