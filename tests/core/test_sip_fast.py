"""The fast paths of the SIP package against their general branches (issue 11 item 9, issue 12 item 6).

* :func:`build_response` answers printable-ASCII responses without its regexes; the general
  branch, ``_build_response_general``, must give the same bytes or the same error for every
  request, status, reason, To tag and extra header (valid and broken ones).
* :meth:`Headers.replace` checks only the new field; a :class:`Headers` built from the result's
  items by the checking constructor must be equal, and a bad new field must raise the same error.

The random To tag is the one part that may differ: both sides get the same fixed tag, or the
16 hex digits of a fresh one are masked.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from stirshaken.core import sip
from stirshaken.core.sip.message import _build_response_general, build_response

_BASE = (
    "INVITE sip:+12155551213@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    "{extra_via}"
    "From: <sip:+12155551212@example.com>;tag=abc\r\n"
    "To: {to}\r\n"
    "Call-ID: c1@example.com\r\n"
    "CSeq: 7 INVITE\r\n"
    "{extra}"
    "Content-Length: 0\r\n\r\n"
)

_TO = st.sampled_from(["<sip:+12155551213@example.com>", "<sip:+12155551213@example.com>;tag=xyz",
                       '"Bob" <tel:+12155551213>', "sip:bob@example.com;tag=1", "<sip:b@x> ;Tag=Q"])
_EXTRA = st.sampled_from(["", "Timestamp: 54\r\n", "Max-Forwards: 70\r\n", "From: <sip:x@y>\r\n", "CSeq: 8 INVITE\r\n",
                          "t: <sip:z@y>\r\n", "i: other\r\n", "Call-ID: again\r\n"])
_EXTRA_VIA = st.sampled_from(["", "Via: SIP/2.0/TCP 198.51.100.2;branch=z9hG4bK-2\r\n",
                              "v: SIP/2.0/UDP h;branch=z9hG4bK-3, SIP/2.0/UDP g\r\n"])
_NAMES = st.sampled_from(["Contact", "Identity", "Date", "Warning", "X-Identity-Result", "Reason", "Allow", "content-length",
                          "Content-Length", "l", "Bad Name", "", "X:Y", "Ünï", "Accept"])
_VALUES = st.one_of(
    st.sampled_from(["<sip:x@y>", "  padded  ", "", "a\tb", "tab\t", "ctl\x01", "line\r\nbreak", "ünïcödé", 'q "x"', "\x7f",
                     "eyJ.a.b;info=<https://x/y>;alg=ES256;ppt=shaken", "eyJ" * 60 + ";info=<https://x/y>", "eyJ" * 60 + "\x01",
                     "eyJ" * 60 + "\t" + "x" * 9, "é" * 130, "x" * 127 + "\x7f", " " + "y" * 140 + " "]),
    st.text(max_size=12),
)
_REASONS = st.one_of(st.sampled_from(["OK", "Moved Temporarily", "Bad Request (x)", "", "Ünï", "a\tb", "bad\r\n", "x\x00"]),
                     st.text(max_size=8))
_STATUS = st.one_of(st.sampled_from([100, 180, 200, 302, 400, 438, 699]), st.integers(90, 710))
_MASK = re.compile(r"(\r\nTo: [^\r]*;tag=)[0-9a-f]{16}\r\n")


def _outcome(f, *args, **kw):  # type: ignore[no-untyped-def]
    try:
        return "ok", f(*args, **kw)
    except (ValueError, sip.SipParseError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(to=_TO, extra=_EXTRA, extra_via=_EXTRA_VIA, status=_STATUS, reason=_REASONS,
       tag=st.sampled_from([None, "fixed-tag", "bad tag", "t\u00e9"]),
       headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=4), body=st.sampled_from([b"", b"v=0\r\n", bytearray(b"x")]),
       drop=st.sampled_from(["", "", "", "Via", "From", "To", "Call-ID", "CSeq"]))
def test_build_response_fast_path_equals_general(to: str, extra: str, extra_via: str, status: int, reason: str, tag: str | None,
                                                 headers: list[tuple[str, str]], body: bytes, drop: str) -> None:
    """RFC 3261 §8.2.6: the fast path and the general branch give the same answer or error."""
    text = _BASE.format(to=to, extra=extra, extra_via=extra_via)
    lines = [line.split(":", 1) for line in text.split("\r\n")[1:] if line]
    # built, not parsed: repeated or missing From/To/Call-ID/CSeq must reach build_response too
    req = sip.SipRequest("INVITE", "sip:+12155551213@example.com", headers=[(n, v) for n, v in lines if n != drop])
    kw = {"to_tag": tag, "extra_headers": headers, "body": body}
    fast = _outcome(build_response, req, status, reason, **kw)
    general = _outcome(_build_response_general, req, status, reason, **kw)
    if fast[0] == "ok" and general[0] == "ok" and tag is None:
        fast = ("ok", _MASK.sub(r"\1X\r\n", fast[1].decode("utf-8", "replace")))
        general = ("ok", _MASK.sub(r"\1X\r\n", general[1].decode("utf-8", "replace")))
    assert fast == general


def test_build_response_fast_path_is_taken_for_the_signing_302() -> None:
    """The common answer goes through the fast path: a known name is remembered, and the bytes
    are the general branch's."""
    req = sip.parse_message(_BASE.format(to="<sip:b@x>", extra="", extra_via="").encode())
    assert isinstance(req, sip.SipRequest)
    extra = [("Contact", "<sip:b@x>"), ("Identity", "a.b.c;info=<https://x/y>;alg=ES256;ppt=shaken")]
    fast = build_response(req, 302, "Moved Temporarily", to_tag="t1", extra_headers=extra)
    assert fast == _build_response_general(req, 302, "Moved Temporarily", to_tag="t1", extra_headers=extra)
    from stirshaken.core.sip.message import _EXTRA_NAMES

    assert {"Contact", "Identity"} <= _EXTRA_NAMES and "Content-Length" not in _EXTRA_NAMES


@settings(max_examples=300, derandomize=True, deadline=None)
@given(items=st.lists(st.tuples(st.sampled_from(["Via", "From", "f", "To", "X-A", "x-a", "Identity"]),
                                st.sampled_from(["a", "<sip:x@y>;tag=1", "b c"])), max_size=6),
       name=_NAMES, value=_VALUES)
def test_headers_replace_checks_only_the_new_field(items: list[tuple[str, str]], name: str, value: str) -> None:
    """Headers.replace gives what the checking constructor gives for the same fields, or its error."""
    h = sip.Headers(items)
    got = _outcome(h.replace, name, value)
    if got[0] != "ok":
        assert got == _outcome(sip.Headers, [(name, value)])
        return
    new = got[1]
    assert new == sip.Headers(new.items())
    assert new._index == sip.Headers(new.items())._index


_URIS = st.sampled_from(["sip:+12155551212@example.com", "sip:alice@192.0.2.1:5060;transport=tcp", "tel:+12155551212",
                         "sips:b@[2001:db8::1]", "sip:a b@x", "sip:a\"b@x", "http://x/y", "sip:", "x", "sip:ü@x", "sip:a>b@x"])
_PARAMS = st.lists(st.sampled_from([";tag=abc", ";Tag=x", ";tag=", ";tag=a:b", ";foo", ";tag=\"q\"", " ;tag=x", ";tag=x ", ";tag = x",
                                    ";tag=a.b-c_d!%*+`'~", ";TAG=Y", ";tag=[::1]", ";", ";tag=é"]), max_size=3).map("".join)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(display=st.sampled_from(["", "Alice ", '"A, B" ', " ", '"x\\"y"', "\t"]), uri=_URIS, params=_PARAMS,
       bracket=st.sampled_from(["<>", "", "<", ">"]), noise=st.text(max_size=2))
def test_parse_name_addr_fast_path_equals_general(display: str, uri: str, params: str, bracket: str, noise: str) -> None:
    """RFC 3261 §20.10/§25.1: parse_name_addr's plain-shape fast path gives the general branch's
    NameAddr or error."""
    from stirshaken.core.sip.values import _parse_name_addr_general

    lt, gt = (bracket + "  ")[:2] if bracket else ("", "")
    for value in (f"{display}{lt.strip()}{uri}{gt.strip()}{params}", f"{lt.strip()}{uri}{gt.strip()}{params}{noise}"):
        assert _outcome(sip.parse_name_addr, value) == _outcome(_parse_name_addr_general, value)


@settings(max_examples=500, derandomize=True, deadline=None)
@given(proto=st.sampled_from(["SIP/2.0", "sip/2.0", "SIP / 2.0", "SIP/3.0", "SIP/2.0 "]),
       transport=st.sampled_from(["UDP", "tcp", "TLS", "WSS", "U:D", "", "SCTP"]),
       sep=st.sampled_from([" ", "  ", "\t", ""]),
       host=st.sampled_from(["192.0.2.1", "Example.COM", "[2001:db8::1]", "h_1.x-y", "", "a b", "ü.x"]),
       port=st.sampled_from(["", ":5060", ":65535", ":65536", ":99999", ":0", ":05060", ":123456", ":", " : 5060"]),
       params=st.lists(st.sampled_from([";branch=z9hG4bK-1", ";BRANCH=z9hG4bK-2", ";branch=", ";rport", ";received=192.0.2.9",
                                        ";branch=a:b", " ;branch=x", ";branch=z9hG4bK-1 ", ";branch=\"q\"", ";branch=z9hG4bK.!%*_+`'~"]),
                       max_size=3).map("".join))
def test_parse_via_fast_path_equals_general(proto: str, transport: str, sep: str, host: str, port: str, params: str) -> None:
    """RFC 3261 §20.42: parse_via's plain-shape fast path gives the general branch's Via or error."""
    from stirshaken.core.sip.values import _parse_via_general

    value = f"{proto}/{transport}{sep}{host}{port}{params}"
    assert _outcome(sip.parse_via, value) == _outcome(_parse_via_general, value)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(fields=st.lists(st.sampled_from(["Max-Forwards: 70", "v: SIP/2.0/TCP h;branch=z9hG4bK-9", "f: <sip:x@y>", "X-A: 1", "x-a: 2",
                                        "Contact: <sip:a@b>", "m: <sip:c@d>", "Content-Length: 0", "l: 0", "Identity: a.b.c",
                                        "y: a.b.c", "Supported: timer", "k: 100rel", "Content-Length: 00"]), max_size=6))
def test_parse_message_index_equals_the_checking_constructor(fields: list[str]) -> None:
    """parse_message indexes the header fields in one loop (compact forms expanded only when one
    is present, RFC 3261 §7.3.3): the same items and index as Headers builds from them, and the
    same outcome as the message with every compact name written in full."""
    from stirshaken.core.sip.headers import COMPACT_FORMS

    head = ("INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\n"
            "Call-ID: c\r\nCSeq: 1 INVITE\r\n")
    got = _outcome(sip.parse_message, (head + "".join(f + "\r\n" for f in fields) + "\r\n").encode())
    full = [COMPACT_FORMS[f[0]] + f[1:] if f[1] == ":" else f for f in fields]
    expanded = _outcome(sip.parse_message, (head + "".join(f + "\r\n" for f in full) + "\r\n").encode())
    if got[0] != "ok":
        assert got == expanded
        return
    h = got[1].headers
    assert h._index == sip.Headers(h.items())._index and h == expanded[1].headers


@settings(max_examples=500, derandomize=True, deadline=None)
@given(parts=st.lists(st.sampled_from(["tok", ";info=", "<", ">", "<https://x/y>", ",", '"', '\\"', " ", "\t", "a b", "<a<b>", "x>y",
                                       "eyJ.a.b", ";alg=ES256"]), max_size=8).map("".join))
def test_split_comma_list_fast_path_equals_general(parts: str) -> None:
    """RFC 3261 §7.3.1: the one-element fast path of split_comma_list gives the element loop's
    list or error."""
    from stirshaken.core.sip.headers import _split_comma_list_general, split_comma_list

    assert _outcome(split_comma_list, parts) == _outcome(_split_comma_list_general, parts)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(from_value=st.one_of(st.none(), _VALUES, st.sampled_from(['<sip:+1215@x;verstat=TN-Validation-Passed>;tag=1', " x", "x "])),
       status=st.sampled_from([100, 302, 438]), tag=st.sampled_from([None, "t1"]))
def test_build_response_from_value_fast_path_equals_general(from_value: str | None, status: int, tag: str | None) -> None:
    """The From written instead of the request's (verstat, 3GPP TS 24.229 §5.7.1.27): the fast path
    and the general branch agree on the bytes or the error."""
    req = sip.parse_message(_BASE.format(to="<sip:b@x>", extra="", extra_via="").encode())
    kw = {"to_tag": tag or "t0", "extra_headers": [("Contact", "<sip:b@x>")], "from_value": from_value}
    assert _outcome(build_response, req, status, "Moved Temporarily", **kw) == \
        _outcome(_build_response_general, req, status, "Moved Temporarily", **kw)
