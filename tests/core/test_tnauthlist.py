"""core/tnauthlist.py: TNAuthList (RFC 8226 §9) DER, identifiers (RFC 9448 §3)."""

from __future__ import annotations

import base64
import pytest
from stirshaken.core.errors import CertificateError, TNAuthListError
from stirshaken.core.tnauthlist import SPC, TN, TNAUTHLIST_OID, TNAuthList, TNRange, to_extension
from tests import _core_support as V
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


spc = st.builds(SPC, st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), min_size=1, max_size=40))


tn_entry = st.builds(TN, tn_text)


tn_range = st.builds(TNRange, tn_text, st.integers(min_value=2, max_value=2**70))


tnauthlist = st.builds(lambda e: TNAuthList(tuple(e)), st.lists(st.one_of(spc, tn_entry, tn_range), min_size=1, max_size=8))


def typed(fn, *args, errors=(StirShakenError,)):
    try:
        fn(*args)
    except errors:
        pass


def _der_mutations():
    base = [bytes.fromhex(V.TNAUTH_PYASN1_HEX), bytes.fromhex(V.TNAUTH_1234_HEX)]
    return st.builds(
        lambda b, i, v, cut: (b[:i] + bytes([v]) + b[i + 1:])[: cut if cut else None],
        st.sampled_from(base), st.integers(0, 44), st.integers(0, 255), st.integers(0, 50),
    )


def test_tv7_pyasn1_vector():
    der = bytes.fromhex(V.TNAUTH_PYASN1_HEX)
    assert base64.b64decode(V.TNAUTH_PYASN1_B64) == der
    t = TNAuthList.from_der(der)
    assert t.entries == (SPC("bogus"), TNRange("5715551212", 788), TN("7035551212"))
    assert t.to_der() == der
    assert TNAuthList.from_identifier(V.TNAUTH_PYASN1_B64) == t
    assert t.covers("5715551212") and t.covers("5715551999") and not t.covers("5715552000")
    assert t.covers("7035551212") and not t.covers("57155512120") and t.spc == "bogus"
    assert str(t) == "SPC bogus, range 5715551212+788, TN 7035551212"


@pytest.mark.parametrize(
    "der_hex,spc",
    [("3008a006160438313848", "818H"), (V.TNAUTH_1234_HEX, "1234"), (V.TNAUTH_709J_HEX, "709J")],
)
def test_tv7_spc_only(der_hex, spc):
    der = bytes.fromhex(der_hex)
    t = TNAuthList.from_der(der)
    assert t == TNAuthList.for_spc(spc) and t.spc == spc and t.spcs == (spc,)
    assert TNAuthList.for_spc(spc).to_der() == der
    assert TNAuthList.from_identifier(t.to_base64()) == t == TNAuthList.from_identifier(t.to_base64url())


def test_818h_base64_from_sti_ca_docs():
    t = TNAuthList.from_identifier(V.TNAUTH_818H_B64)
    assert t.spc == "818H" and t.to_base64() == V.TNAUTH_818H_B64 and t.to_base64url() == "MAigBhYEODE4SA"


def test_single_tn_and_range_roundtrip():
    t = TNAuthList((TN("12155551212"), TNRange("12155550000", 1000), TNRange("1215555000", 128), TN("*67#")))
    assert TNAuthList.from_der(t.to_der()) == t
    der = t.to_der()
    # count 128 needs a leading zero octet: 02 02 00 80
    assert bytes.fromhex("02020080") in der


@pytest.mark.parametrize(
    "der_hex,why",
    [
        ("", "empty"),
        ("30", "truncated"),
        ("3008a0061604313233", "truncated body"),
        ("3009a006160431323334", "length beyond data"),
        ("3000", "empty sequence"),
        ("3008a00616043132333400", "trailing byte"),
        ("308108a006160431323334", "non-minimal long length"),
        ("30820008a006160431323334", "non-minimal 2-byte length"),
        ("3080a0061604313233340000", "indefinite length"),
        ("3108a006160431323334", "not a SEQUENCE (SET)"),
        ("3008a0060c0431323334", "SPC as UTF8String"),
        ("3008a306160431323334", "unknown choice tag"),
        ("3004a0021600", "zero-length SPC"),
        ("3008a006160431b23334", "non-IA5 SPC"),
        ("3008a206160431323334", "fine"),  # a valid neighbour of the negative cases
        ("3008a2061604313233ff", "TN not IA5"),
        ("3008a20616043132a334", "TN not IA5 2"),
        ("3008a2061604313233aa", "TN not IA5 3"),
        ("3008a206160431323341", "TN with a letter"),
        ("3015a2131611313233343536373839303132333435363738", "TN longer than 15"),
        ("3004a2021600", "empty TN"),
        ("300ca10a3008160431323334020101", "range count 1"),
        ("300ca10a30081604313233340201ff", "range count negative"),
        ("300da10b300916043132333402020002", "range count non-minimal INTEGER"),
        ("300aa1083006160431323334", "range without count"),
        ("300ca10a3008160431323334040102", "range count not INTEGER"),
        ("300ba1093007160431323334 0200".replace(" ", ""), "empty INTEGER"),
        ("3008a0061f0431323334", "high tag number"),
        ("3009a00716043132333400", "trailing inside the explicit tag"),
        ("3085ffffffffff", "length too large"),
    ],
)
def test_negative_der(der_hex, why):
    data = bytes.fromhex(der_hex)
    if why == "fine":
        TNAuthList.from_der(data)  # sanity for the neighbours of the negative cases
        return
    with pytest.raises(TNAuthListError) as ei:
        TNAuthList.from_der(data)
    assert isinstance(ei.value, CertificateError) and ei.value.sip_code == 437


def test_range_extension_elements_are_skipped():
    # TelephoneNumberRange is extensible ("..."): an extra element after count is tolerated
    der = bytes.fromhex("300fa10d300b16043132333402010205 00".replace(" ", ""))
    t = TNAuthList.from_der(der)
    assert t.entries == (TNRange("1234", 2),)


@pytest.mark.parametrize("value", ["", "!!", "MAig BhYE", "MAigBhYEMTIzNA=x", "MA+gBhYEMTIzN_", "M", "AAAA", 5, None, "A" * 20000])
def test_bad_identifier(value):
    with pytest.raises(TNAuthListError):
        TNAuthList.from_identifier(value)  # type: ignore[arg-type]


def test_entry_validation():
    for bad in (lambda: SPC(""), lambda: SPC("é"), lambda: TN(""), lambda: TN("1" * 16), lambda: TN("12a"),
                lambda: TNRange("123", 1), lambda: TNRange("abc", 5), lambda: TNAuthList(())):
        with pytest.raises(TNAuthListError):
            bad()
    for bad_input in (None, "3008a006160431323334", 5):
        with pytest.raises(TNAuthListError):
            TNAuthList.from_der(bad_input)  # type: ignore[arg-type]


def test_extension_value():
    ext = to_extension(TNAuthList.for_spc("1234"))
    assert ext.oid == TNAUTHLIST_OID and ext.oid.dotted_string == "1.3.6.1.5.5.7.1.26"
    assert ext.value == bytes.fromhex(V.TNAUTH_1234_HEX)


@FAST
@given(tnauthlist)
def test_tnauthlist_roundtrip(t):
    der = t.to_der()
    assert TNAuthList.from_der(der) == t
    assert TNAuthList.from_identifier(t.to_base64url()) == t
    assert TNAuthList.from_identifier(t.to_base64()) == t


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
