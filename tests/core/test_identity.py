"""core/identity.py: the Identity header of RFC 8224 §4."""

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


EXAMPLE_TOKEN = V.SHAKEN_EXAMPLE_TOKEN


INFO = "https://cert.example.org/passport.cer"


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


digits = st.text(alphabet="0123456789", min_size=1, max_size=15)


param_name = st.from_regex(TOKEN, fullmatch=True).map(str.lower).filter(lambda n: n not in ("info",))


param_value = st.one_of(st.none(), st.from_regex(TOKEN, fullmatch=True),
                        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20))


b64url_text = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=60)


def typed(fn, *args, errors=(StirShakenError,)):
    try:
        fn(*args)
    except errors:
        pass


identity_text = st.one_of(
    st.text(max_size=120),
    st.text(alphabet=string.ascii_letters + string.digits + "-_.;=<>\"\\,: \t\r\n", max_size=160),
    st.builds(lambda t, rest: t + rest, st.sampled_from([V.SHAKEN_EXAMPLE_TOKEN, "a.b.c", "..x", "Identity: a.b.c", "y:a.b.c"]),
              st.text(alphabet=string.printable, max_size=80)),
    st.builds(lambda t, n, v: f"{t};info=<https://x/y>;{n}={v}", st.sampled_from(["a.b.c", "x.y"]),
              st.text(alphabet=string.printable, max_size=10), st.text(alphabet=string.printable, max_size=20)),
)


def test_build_identity_shape():
    value = build_identity(EXAMPLE_TOKEN, INFO)
    assert value == f"{EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken"
    assert build_identity(EXAMPLE_TOKEN, INFO, ppt=None) == f"{EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256"
    h = parse_identity(value)
    assert (h.token, h.info, h.alg, h.ppt, h.problems) == (EXAMPLE_TOKEN, INFO, "ES256", "shaken", ())
    assert str(h) == value
    with pytest.raises(BadIdentityInfoError):
        build_identity(EXAMPLE_TOKEN, "not a uri")


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
        f"{EXAMPLE_TOKEN};ppt=shaken;alg=ES256;info=<{INFO}>",
        f"{EXAMPLE_TOKEN};alg=ES256;info=<{INFO}>;ppt=shaken",
        f"{EXAMPLE_TOKEN} ; info = <{INFO}> ;\talg=ES256 ; ppt = shaken",
        f"{EXAMPLE_TOKEN};info=<{INFO}>;alg=\"ES256\";ppt=\"shaken\"",
        f"{EXAMPLE_TOKEN};INFO=<{INFO}>;ALG=ES256;PPT=shaken",
        f"Identity: {EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"identity :{EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"y: {EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"Y:{EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken",
        f"  {EXAMPLE_TOKEN}\r\n ;info=<{INFO}>\r\n\t;alg=ES256;ppt=shaken  ",
        f"{EXAMPLE_TOKEN}\n ;info=<{INFO}>;alg=ES256;ppt=shaken",
    ],
)
def test_params_any_order_quotes_lws_case_compact_name(value):
    h = parse_identity(value)
    assert h.token == EXAMPLE_TOKEN and h.info == INFO and h.alg == "ES256" and h.ppt == "shaken"


def test_unknown_params_kept_in_order_and_reserialized():
    value = f'{EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken;x-foo=bar;flag;q="a b;c,\\"d\\""'
    h = parse_identity(value)
    assert h.params == (
        ("info", INFO), ("alg", "ES256"), ("ppt", "shaken"), ("x-foo", "bar"), ("flag", None), ("q", 'a b;c,"d"'),
    )
    assert h.param("X-FOO") == "bar" and h.param("flag") is None and h.param("missing") is None
    assert parse_identity(str(h)) == h


def test_info_without_angle_brackets_is_a_problem_not_an_error():
    h = parse_identity(f"{EXAMPLE_TOKEN};info={INFO};alg=ES256")
    assert h.info == INFO and any("angle brackets" in p for p in h.problems)
    h = parse_identity(f'{EXAMPLE_TOKEN};info="{INFO}"')
    assert h.info == INFO and any("quoted" in p for p in h.problems)


def test_compact_form_recognized():
    h = parse_identity(f"{V.RFC8225_71_COMPACT};info=<{INFO}>;ppt=shaken")
    assert h.is_compact and not parse_identity(f"{EXAMPLE_TOKEN};info=<{INFO}>").is_compact


@pytest.mark.parametrize(
    "value,exc,code",
    [
        (f"{EXAMPLE_TOKEN};alg=ES256;ppt=shaken", BadIdentityInfoError, 436),
        (f"{EXAMPLE_TOKEN}", BadIdentityInfoError, 436),
        (f"{EXAMPLE_TOKEN};info", BadIdentityInfoError, 436),
        (f"{EXAMPLE_TOKEN};info=<>", BadIdentityInfoError, 436),
        (f"{EXAMPLE_TOKEN};info=<not a uri>", IdentityHeaderSyntaxError, 438),
        (f"{EXAMPLE_TOKEN};info=<relative/path>", BadIdentityInfoError, 436),
        ("", IdentityHeaderSyntaxError, 438),
        ("   ", IdentityHeaderSyntaxError, 438),
        (";info=<https://x/y>", IdentityHeaderSyntaxError, 438),
        ("nodots;info=<https://x/y>", IdentityHeaderSyntaxError, 438),
        (f"{EXAMPLE_TOKEN};info=<{INFO}>;", IdentityHeaderSyntaxError, 438),
        (f"{EXAMPLE_TOKEN};info=<{INFO}> trailing", IdentityHeaderSyntaxError, 438),
        (f"{EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;alg=ES256", IdentityHeaderSyntaxError, 438),
        (f"{EXAMPLE_TOKEN};info=<{INFO}>;q=\"unterminated", IdentityHeaderSyntaxError, 438),
        (f"{EXAMPLE_TOKEN};=x;info=<{INFO}>", IdentityHeaderSyntaxError, 438),
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
    a = f"{EXAMPLE_TOKEN};info=<{INFO}>;alg=ES256;ppt=shaken"
    b = f"{V.RFC8225_71_FULL};info=<https://biloxi.example.org/biloxi.cert>"
    c = f'{V.LIBSTIRSHAKEN_TOKEN};info=<https://shaken.signalwire.cloud/sp.pem>;x="a,b"'
    hs = parse_identity_headers([a, f"{b}, {c}"])
    assert [h.token for h in hs] == [EXAMPLE_TOKEN, V.RFC8225_71_FULL, V.LIBSTIRSHAKEN_TOKEN]
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


@pytest.mark.parametrize("value", ['a.b;info=<https://x/y>;foo="\\\r"', 'a.b;info=<https://x/y>;foo="\\\\\\\n"'])
def test_escaped_cr_or_lf_in_a_quoted_value_is_refused(value):
    """Fuzz finding (make fuzz, identity): a quoted-pair may not escape CR or LF (RFC 3261 §25.1);
    accepting ``\\<CR>`` gave a value whose str() did not parse back."""
    with pytest.raises(IdentityHeaderSyntaxError):
        parse_identity(value)
    h = parse_identity('a.b;info=<https://x/y>;foo="\\\x00\x01"')  # other escaped controls print back
    assert parse_identity(str(h)).params == h.params == (("info", "https://x/y"), ("foo", "\x00\x01"))


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
