"""core/sip: RFC 3261 grammar, messages, headers, values and stream framing."""

from __future__ import annotations

import dataclasses
import re
import time
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stirshaken.core import sip
from stirshaken.core.sip import abnf
from stirshaken.core.sip.message import _build_response_general
from stirshaken.core.sip import (
    COMPACT_FORMS,
    Headers,
    NameAddr,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    build_response,
    header_value_with_param,
    parse_message,
    parse_name_addr,
    parse_params,
    parse_via,
    split_comma_list,
    unquote,
    uri_user,
    uri_with_param,
)


SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 pc33.example.com\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


def lf_only(msg: bytes) -> bytes:
    """*msg* with bare-LF line ends in the header section (body untouched)."""
    head, body = msg.split(b"\r\n\r\n", 1)
    return head.replace(b"\r\n", b"\n") + b"\n\n" + body


def make_invite(
    *extra: bytes, body: bytes = SDP, cl: int | None = None, omit: tuple[str, ...] = ()
) -> bytes:
    """A typical INVITE; *extra* header lines are inserted before Content-Type."""
    lines = [
        b"INVITE sip:+12155551213@example.com;user=phone SIP/2.0",
        b"Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds;rport",
        b"Max-Forwards: 70",
        b"To: <sip:+12155551213@example.com;user=phone>",
        b'From: "Alice" <sip:+12155551212@example.com;user=phone>;tag=1928301774',
        b"Call-ID: a84b4c76e66710@pc33.example.com",
        b"CSeq: 314159 INVITE",
        b"Contact: <sip:alice@pc33.example.com>",
        b"P-Asserted-Identity: <tel:+12155551212>",
        *extra,
        b"Content-Type: application/sdp",
        b"Content-Length: %d" % (len(body) if cl is None else cl),
    ]
    lines = [ln for ln in lines if ln.split(b":", 1)[0].decode() not in omit]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


INVITE = make_invite()


RESPONSE_180 = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"
    b"To: <sip:+12155551213@example.com;user=phone>;tag=a6c85cf\r\n"
    b'From: "Alice" <sip:+12155551212@example.com;user=phone>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def _multi_via_invite() -> bytes:
    return INVITE.replace(
        b"Max-Forwards: 70\r\n",
        b"Via: SIP/2.0/TCP proxy1.example.net;branch=z9hG4bK2, SIP/2.0/TLS proxy2.example.net;branch=z9hG4bK3\r\n"
        b"v: SIP/2.0/UDP origin.example.org;branch=z9hG4bK4\r\n"
        b"Max-Forwards: 70\r\n"
        b"Timestamp: 54\r\n",
    )


def _exercise(msg: SipRequest | SipResponse) -> None:
    """Touch every accessor; only SipParseError may come out."""
    for name, _ in msg.headers:
        try:
            msg.headers.get_all(name)
        except SipParseError:
            pass
    try:
        identities = msg.headers.get_all("P-Asserted-Identity")
    except SipParseError:
        identities = []
    for value in [*identities, msg.headers["From"], msg.headers["To"]]:
        try:
            uri_user(parse_name_addr(value).uri)
            header_value_with_param(value, "verstat", "TN-Validation-Passed")
        except SipParseError:
            pass
    if isinstance(msg, SipRequest):
        msg.transaction_key()
        try:
            build_response(msg, 200, "OK")
        except SipParseError:
            pass
    out = msg.to_bytes()
    again = parse_message(out)
    assert again.to_bytes() == out


@st.composite
def mutated_invite(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([INVITE, _multi_via_invite(), RESPONSE_180, lf_only(INVITE)])))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "dup", "special"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            end = data.find(b"\n", pos)
            if end > 0:
                data[pos:pos] = data[pos : end + 1]
        else:
            tok = draw(st.sampled_from([b",", b";", b'"', b"<", b">", b":", b"\r", b"\n", b"\r\n ", b"\\", b"\x00", b"\xc3", b"=", b" ", b"\t"]))
            data[pos:pos] = tok
    return bytes(data)


_TOKEN_ALPHABET = st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


tokens = st.text(_TOKEN_ALPHABET, min_size=1, max_size=12)


hosts = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){0,2}", fullmatch=True)


# header values: printable text incl. non-ASCII, no CR/LF/controls, stripped
values = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\r\n"),
    max_size=40,
).map(lambda s: s.strip(" \t"))


display_names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), max_size=15
).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')


@st.composite
def requests(draw: st.DrawFn) -> SipRequest:
    method = draw(tokens)
    user = draw(st.from_regex(r"\+?[0-9]{1,15}", fullmatch=True))
    host = draw(hosts)
    disp = draw(display_names)
    headers = [
        ("Via", f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(hosts)}:{draw(st.integers(1, 65535))};branch=z9hG4bK{draw(tokens)}"),
        ("From", f"{disp} <sip:{user}@{host};user=phone>;tag={draw(tokens)}"),
        ("To", f"<tel:{user}>"),
        ("Call-ID", draw(tokens)),
        ("CSeq", f"{draw(st.integers(0, 2**32 - 1))} {method}"),
    ]
    extra = draw(st.lists(st.tuples(tokens.map(lambda t: "X-" + t), values), max_size=6))
    identities = draw(st.lists(st.tuples(tokens, hosts), max_size=3))
    for sig, h in identities:
        headers.append(("Identity", f"{sig}.{sig}.{sig};info=<https://{h}/a,b.cer>;ppt=\"shaken\""))
    headers.extend(extra)
    body = draw(st.binary(max_size=200))
    headers.append(("Content-Length", str(len(body))))
    draw(st.randoms()).shuffle(headers)
    return SipRequest(method, f"sip:{user}@{host}", "SIP/2.0", Headers(headers), body)


_PARAMCHARS = st.text(st.sampled_from("abcXYZ019-_.!~*'()[]/:&+$"), min_size=1, max_size=10)


_USER_TEXT = st.lists(
    st.sampled_from("0123456789+-.()abcXYZ_!~*'&=$,/?") | st.sampled_from(["%2B", "%2b", "%40", "%3B", "%25", "%C3%A9"]),
    max_size=12,
).map("".join)


def test_parse_invite_fields() -> None:
    req = parse_message(INVITE)
    assert isinstance(req, SipRequest)
    assert req.method == "INVITE"
    assert req.request_uri == "sip:+12155551213@example.com;user=phone"
    assert req.version == "SIP/2.0"
    assert req.body == SDP
    assert req.headers["max-forwards"] == "70"
    assert req.headers.get("CALL-ID") == "a84b4c76e66710@pc33.example.com"
    assert req.call_id == "a84b4c76e66710@pc33.example.com"
    assert req.cseq == (314159, "INVITE")
    assert req.from_addr == NameAddr(
        "Alice", "sip:+12155551212@example.com;user=phone", {"tag": "1928301774"}
    )
    assert req.from_addr.tag == "1928301774"
    assert req.to_addr.tag is None
    assert req.top_via.transport == "UDP"
    assert req.top_via.sent_by == "pc33.example.com:5060"
    assert req.top_via.params == {"branch": "z9hG4bK776asdhds", "rport": None}
    assert [name for name, _ in req.headers][:3] == ["Via", "Max-Forwards", "To"]
    assert len(req.headers) == 10


def test_parse_response() -> None:
    resp = parse_message(RESPONSE_180)
    assert isinstance(resp, SipResponse)
    assert (resp.version, resp.status, resp.reason) == ("SIP/2.0", 180, "Ringing")
    assert resp.to_addr.tag == "a6c85cf"
    assert resp.top_via.params["received"] == "192.0.2.1"
    assert resp.body == b""


def test_response_with_empty_reason_and_utf8_reason() -> None:
    base = RESPONSE_180.replace(b"180 Ringing", b"200 ")
    assert parse_message(base).reason == ""
    utf8 = RESPONSE_180.replace(b"180 Ringing", "486 Besetzt – später".encode())
    assert parse_message(utf8).reason == "Besetzt – später"


def test_accepts_bytearray_and_memoryview_rejects_str() -> None:
    assert parse_message(bytearray(INVITE)) == parse_message(INVITE)
    assert parse_message(memoryview(INVITE)) == parse_message(INVITE)
    with pytest.raises(TypeError):
        parse_message(INVITE.decode())  # type: ignore[arg-type]


def test_leading_crlf_before_start_line_is_ignored() -> None:
    assert parse_message(b"\r\n\r\n" + INVITE) == parse_message(INVITE)


def test_compact_forms_expanded() -> None:
    raw = (
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP client.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\n"
        b"t: <sip:bob@example.com>\r\n"
        b"i: call-1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:alice@client.example.com>\r\n"
        b"k: timer, 100rel\r\n"
        b"s: hello\r\n"
        b"y: eyJh.eyJi.c2ln;info=<https://cert.example.org/passport.cer>\r\n"
        b"o: dialog\r\n"
        b"r: <sip:carol@example.com>\r\n"
        b"b: <sip:alice@example.com>\r\n"
        b"x: 1800;refresher=uac\r\n"
        b"u: presence\r\n"
        b"a: *;audio\r\n"
        b"j: *;video\r\n"
        b"d: proxy\r\n"
        b"e: gzip\r\n"
        b"C: text/plain\r\n"
        b"L: 4\r\n"
        b"\r\n"
        b"body"
    )
    req = parse_message(raw)
    names = [n for n, _ in req.headers]
    assert names == [
        "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Supported", "Subject",
        "Identity", "Event", "Refer-To", "Referred-By", "Session-Expires",
        "Allow-Events", "Accept-Contact", "Reject-Contact", "Request-Disposition",
        "Content-Encoding", "Content-Type", "Content-Length",
    ]  # fmt: skip
    assert req.body == b"body"
    assert req.headers["Identity"].startswith("eyJh.")
    assert req.headers["y"] == req.headers["IDENTITY"]
    assert req.headers.get("i") == "call-1"
    assert req.headers.get_all("k") == ["timer", "100rel"]
    assert "l" in req.headers and "Content-Length" in req.headers
    assert set(COMPACT_FORMS) == set("imelcfsktvyorbxuajd")


def test_header_folding_unfolded() -> None:
    req = parse_message(
        make_invite(
            b"Subject: I know you're there,\r\n     pick up the phone\r\n\tand talk to me!",
            b"Route: <sip:p1.example.com;lr>,\r\n <sip:p2.example.com;lr>",
        )
    )
    assert req.headers["Subject"] == "I know you're there, pick up the phone and talk to me!"
    assert req.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    # the message after the folded lines is intact
    assert req.headers["Content-Type"] == "application/sdp"
    assert req.body == SDP


def test_folded_via_and_lf_only_folding() -> None:
    raw = make_invite().replace(b"Via: SIP/2.0/UDP ", b"Via: SIP/2.0/UDP\r\n  ")
    assert parse_message(raw).top_via.host == "pc33.example.com"
    lf = lf_only(make_invite(b"Subject: one\r\n two"))
    assert parse_message(lf).headers["subject"] == "one two"


def test_repeated_and_comma_joined_identity_headers() -> None:
    id1 = b"eyJhbGciOiJFUzI1NiJ9.eyJhIjoxfQ.c2lnMQ;info=<https://cr.example.com/a,b.cer>;ppt=\"shaken\""
    id2 = b"eyJhbGciOiJFUzI1NiJ9.eyJiIjoyfQ.c2lnMg;info=<https://cr.example.com/c.cer>"
    id3 = b"eyJhbGciOiJFUzI1NiJ9.eyJjIjozfQ.c2lnMw;info=<https://cr.example.com/d.cer>;ppt=div"
    req = parse_message(make_invite(b"Identity: " + id1, b"Identity: " + id2 + b", " + id3))
    assert req.headers.get_all("identity") == [id1.decode(), id2.decode(), id3.decode()]
    assert req.headers.get_fields("Identity") == [id1.decode(), (id2 + b", " + id3).decode()]
    assert req.headers.get("Identity") == id1.decode()


def test_quoted_commas_in_display_names() -> None:
    req = parse_message(
        make_invite(
            b'Record-Route: "Proxy, Inc." <sip:p1.example.com;lr>, <sip:p2.example.com;lr>',
        ).replace(
            b"Contact: <sip:alice@pc33.example.com>",
            b'Contact: "Doe, John \\"JD\\"" <sip:john@example.com>;q=0.7, <sip:j@example.net>;expires="Thu, 01 Dec 2094"',
        )
    )
    contacts = req.headers.get_all("Contact")
    assert len(contacts) == 2
    first = parse_name_addr(contacts[0])
    assert first.display == 'Doe, John "JD"'
    assert first.params == {"q": "0.7"}
    second = parse_name_addr(contacts[1])
    assert second.params["expires"] == '"Thu, 01 Dec 2094"'
    assert unquote(second.params["expires"] or "") == "Thu, 01 Dec 2094"
    assert req.headers.get_all("Record-Route")[0] == '"Proxy, Inc." <sip:p1.example.com;lr>'


def test_from_with_quoted_comma_is_not_split() -> None:
    raw = INVITE.replace(b'"Alice"', b'"Smith, Alice"')
    req = parse_message(raw)
    assert req.headers.get_all("From") == ['"Smith, Alice" <sip:+12155551212@example.com;user=phone>;tag=1928301774']
    assert req.from_addr.display == "Smith, Alice"


def test_non_list_headers_are_not_split() -> None:
    req = parse_message(
        make_invite(
            b"Date: Sat, 13 Nov 2010 23:29:00 GMT",
            b'Authorization: Digest username="bob", realm="x", nonce="1,2"',
        )
    )
    assert req.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert len(req.headers.get_all("Authorization")) == 1


def test_contact_star() -> None:
    raw = INVITE.replace(b"Contact: <sip:alice@pc33.example.com>", b"Contact: *")
    assert parse_message(raw).headers.get_all("Contact") == ["*"]


def test_split_comma_list() -> None:
    assert split_comma_list("INVITE, ACK,,BYE ,") == ["INVITE", "ACK", "BYE"]
    assert split_comma_list('"a,b" <sip:x>, <sip:y,z>') == ['"a,b" <sip:x>', "<sip:y,z>"]
    with pytest.raises(SipParseError, match="unterminated"):
        split_comma_list('"a, <sip:x>')
    with pytest.raises(SipParseError, match="unterminated"):
        split_comma_list("<sip:x, sip:y")
    with pytest.raises(SipParseError):
        parse_message(make_invite(b'Route: "oops <sip:x>, <sip:y>')).headers.get_all("Route")


def test_lf_only_and_mixed_line_endings() -> None:
    req = parse_message(lf_only(INVITE))
    crlf = parse_message(INVITE)
    assert req.headers == crlf.headers
    assert req.body == SDP
    mixed = INVITE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\n")
    assert parse_message(mixed).headers == crlf.headers
    # header section terminated by LF then CRLF
    head, body = INVITE.split(b"\r\n\r\n", 1)
    assert parse_message(head.replace(b"\r\n", b"\n") + b"\n\r\n" + body).body == SDP


def test_whitespace_around_values_and_colon() -> None:
    raw = INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards  :\t 70 \t")
    assert parse_message(raw).headers["Max-Forwards"] == "70"
    raw = INVITE.replace(b"Max-Forwards: 70", b"Subject:")
    assert parse_message(raw).headers["Subject"] == ""


def test_non_ascii_header_values() -> None:
    raw = INVITE.replace(b'"Alice"', '"Jörg Müller"'.encode())
    assert parse_message(raw).from_addr.display == "Jörg Müller"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n", "keep-alive"),
        (b"\x00\xff\xfe garbage", "no empty line"),
        (b"hello world\r\n\r\n", "malformed request line"),
        (INVITE.split(b"\r\n", 1)[1], "malformed request line"),
        (INVITE.replace(b" SIP/2.0\r\n", b" HTTP/1.1\r\n", 1), "malformed request line"),
        (INVITE.replace(b"INVITE sip:", b"INVITE  sip:", 1), "malformed request line"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards 70"), "header line without ':'"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max Forwards: 70"), "invalid header name"),
        (INVITE.replace(b"Max-Forwards: 70", b": 70"), "invalid header name"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 7\x000"), "control character"),
        (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 7\r0"), "bare CR"),
        (INVITE.replace(b"Alice", b"Al\xffce"), "not valid UTF-8"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: abc INVITE"), "malformed CSeq"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159"), "malformed CSeq"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 99999999999 INVITE"), "malformed CSeq"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 4294967296 INVITE"), "32-bit"),
        (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), "does not match"),
        (make_invite(omit=("Via",)), "missing mandatory Via"),
        (make_invite(omit=("From",)), "missing mandatory From"),
        (make_invite(omit=("To",)), "missing mandatory To"),
        (make_invite(omit=("Call-ID",)), "missing mandatory Call-ID"),
        (make_invite(omit=("CSeq",)), "missing mandatory CSeq"),
        (make_invite(b"From: <sip:mallory@example.com>;tag=2"), "multiple From"),
        (make_invite(b"i: other-call"), "multiple Call-ID"),
        (make_invite(b"Content-Length: 3"), "multiple Content-Length"),
        (make_invite(cl=-1), "malformed Content-Length"),
        (INVITE.replace(b"Content-Length: 141", b"Content-Length: x"), "malformed Content-Length"),
        (make_invite(cl=len(SDP) + 1), "body shorter than Content-Length"),
        (INVITE.replace(b"Via: SIP/2.0/UDP pc33", b"Via: SIP/2.0/UDP:pc33"), "malformed Via"),
        (INVITE.replace(b":5060;branch", b":65536;branch"), "port out of range"),
        (INVITE.replace(b'"Alice" <sip:', b'"Alice <sip:'), "malformed name-addr"),
        (INVITE.replace(b";tag=1928301774", b";tag=19283 01774"), "malformed name-addr"),
        (INVITE.replace(b"To: <sip:", b"To: sip sip:"), "malformed addr-spec"),
        (INVITE.split(b"\r\n\r\n")[0], "no empty line"),
        (RESPONSE_180.replace(b"180", b"700"), "malformed status line"),
        (RESPONSE_180.replace(b"180", b"1800"), "malformed status line"),
        (RESPONSE_180.replace(b"SIP/2.0 180", b"SIP/2.0  180"), "malformed status line"),
    ],
)
def test_malformed_messages(data: bytes, message: str) -> None:
    with pytest.raises(SipParseError, match=re.escape(message)):
        parse_message(data)


def test_parse_error_is_value_error() -> None:
    assert issubclass(SipParseError, ValueError)


def test_content_length_truncates_extra_bytes() -> None:
    req = parse_message(INVITE + b"trailing garbage")
    assert req.body == SDP
    req = parse_message(make_invite(cl=5))
    assert req.body == SDP[:5]


def test_missing_content_length_takes_rest_of_datagram() -> None:
    raw = INVITE.replace(b"Content-Length: 141\r\n", b"")
    req = parse_message(raw)
    assert req.body == SDP
    assert "Content-Length" not in req.headers
    assert b"Content-Length: 141\r\n" in req.to_bytes()


def test_compact_content_length() -> None:
    raw = INVITE.replace(b"Content-Length: 141", b"l: 3")
    assert parse_message(raw).body == SDP[:3]


def test_to_bytes_round_trip_exact() -> None:
    assert parse_message(INVITE).to_bytes() == INVITE
    assert parse_message(RESPONSE_180).to_bytes() == RESPONSE_180


def test_to_bytes_normalises() -> None:
    raw = lf_only(INVITE).replace(b"Content-Length", b"l")
    out = parse_message(raw).to_bytes()
    assert out.startswith(b"INVITE sip:+12155551213@example.com;user=phone SIP/2.0\r\nVia: ")
    assert b"\r\nContent-Length: 141\r\n\r\n" in out
    assert parse_message(out).headers == parse_message(INVITE).headers


def test_to_bytes_fixes_content_length() -> None:
    req = parse_message(INVITE)
    changed = dataclasses.replace(req, body=b"x=1\r\n")
    out = changed.to_bytes()
    assert out.endswith(b"Content-Length: 5\r\n\r\nx=1\r\n")
    assert parse_message(out).body == b"x=1\r\n"
    no_cl = dataclasses.replace(req, headers=req.headers.remove("Content-Length"))
    assert no_cl.to_bytes() == INVITE


def test_adding_identity_header_and_serialising() -> None:
    req = parse_message(INVITE)
    identity = "eyJ.eyJ.sig;info=<https://cr.example.com/c.pem>;alg=ES256;ppt=shaken"
    signed = dataclasses.replace(req, headers=req.headers.add("Identity", identity))
    again = parse_message(signed.to_bytes())
    assert again.headers.get_all("Identity") == [identity]
    assert again.body == SDP


def test_constructed_messages_validate() -> None:
    with pytest.raises(ValueError):
        SipRequest("INV ITE", "sip:a@b")
    with pytest.raises(ValueError):
        SipRequest("INVITE", "sip:a@b c")
    with pytest.raises(ValueError):
        SipRequest("INVITE", "sip:a@b", "SIP/x")
    with pytest.raises(ValueError):
        SipRequest("INVITE", "sip:a@b", headers=[("X-Evil", "a\r\nVia: injected")])
    with pytest.raises(ValueError):
        SipRequest("INVITE", "sip:a@b", headers=[("Bad Name", "x")])
    with pytest.raises(ValueError):
        SipResponse(99, "Nope")
    with pytest.raises(ValueError):
        SipResponse(200, "OK\r\nX: y")
    req = SipRequest("OPTIONS", "sip:a@b", headers=[("v", "SIP/2.0/UDP h;branch=z9hG4bKx")], body=bytearray(b"x"))
    assert isinstance(req.headers, Headers)
    assert req.headers.items() == (("Via", "SIP/2.0/UDP h;branch=z9hG4bKx"),)
    assert req.body == b"x"
    assert req.to_bytes() == (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\nContent-Length: 1\r\n\r\nx"
    )
    # accessors on constructed messages are lazy and raise SipParseError
    assert req.top_via.branch == "z9hG4bKx"
    with pytest.raises(SipParseError, match="missing mandatory From"):
        req.from_addr  # noqa: B018


def test_headers_api() -> None:
    h = Headers([("Via", "a"), ("t", "<sip:x@y>"), ("via", "b, c"), ("X-Custom", " v ")])
    assert h.items() == (("Via", "a"), ("To", "<sip:x@y>"), ("via", "b, c"), ("X-Custom", "v"))
    assert h.get_all("VIA") == ["a", "b", "c"]
    assert h.get_fields("v") == ["a", "b, c"]
    assert h.get("missing") is None and h.get("missing", "d") == "d"
    assert "x-custom" in h and "to" in h and "t" in h and "nope" not in h and 3 not in h
    with pytest.raises(KeyError):
        h["nope"]
    assert h.add("Identity", "z").get_all("y") == ["z"]
    assert list(h.prepend("Via", "top"))[0] == ("Via", "top")
    assert h.remove("via").items() == (("To", "<sip:x@y>"), ("X-Custom", "v"))
    assert h.replace("Via", "only").items() == (("Via", "only"), ("To", "<sip:x@y>"), ("X-Custom", "v"))
    assert h.replace("Subject", "s").get("subject") == "s"
    assert h == Headers(list(h)) and hash(h) == hash(Headers(list(h)))
    assert h != Headers()
    assert "Headers(" in repr(h)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Display" <sip:alice@example.com>;tag=x', NameAddr("Display", "sip:alice@example.com", {"tag": "x"})),
        ('"A \\"quoted\\" \\\\ name" <sip:a@b>', NameAddr('A "quoted" \\ name', "sip:a@b", {})),
        ("Alice Smith <sip:alice@example.com>", NameAddr("Alice Smith", "sip:alice@example.com", {})),
        ("<tel:+12155551212>", NameAddr(None, "tel:+12155551212", {})),
        ('"" <tel:+1>', NameAddr("", "tel:+1", {})),
        ("  <sip:a@b;user=phone> ; tag = 1 ;lr", NameAddr(None, "sip:a@b;user=phone", {"tag": "1", "lr": None})),
        ("sip:a@b;tag=1", NameAddr(None, "sip:a@b", {"tag": "1"})),
        ("sips:a@b", NameAddr(None, "sips:a@b", {})),
        ("tel:+1-215-555-1212;tag=9;X=Y", NameAddr(None, "tel:+1-215-555-1212", {"tag": "9", "x": "Y"})),
        ("<sip:[2001:db8::1]:5060>;received=2001:db8::9", NameAddr(None, "sip:[2001:db8::1]:5060", {"received": "2001:db8::9"})),
        ("<urn:service:sos>", NameAddr(None, "urn:service:sos", {})),
    ],
)
def test_parse_name_addr(value: str, expected: NameAddr) -> None:
    assert parse_name_addr(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "Alice", "<sip:a@b", "<>", "<sip:a@b>;", "<sip:a@b>;tag=x y", "Alice sip:a@b", '"x <sip:a@b>', "<a b>"],
)
def test_parse_name_addr_malformed(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(value)


def test_parse_params_and_via() -> None:
    assert parse_params("") == {}
    assert parse_params(';a=1;B;c="x;y";a=2') == {"a": "1", "b": None, "c": '"x;y"'}
    with pytest.raises(SipParseError):
        parse_params("a=1")
    via = parse_via("SIP / 2.0 / tls [2001:DB8::1]:5061;branch=z9hG4bKa;received=2001:db8::9;rport=5061")
    assert (via.protocol, via.transport, via.host, via.port) == ("SIP/2.0", "TLS", "[2001:db8::1]", 5061)
    assert via.sent_by == "[2001:db8::1]:5061"
    assert via.params["rport"] == "5061"
    assert parse_via("SIP/2.0/UDP Host.Example.COM").sent_by == "host.example.com"
    with pytest.raises(SipParseError):
        parse_via("SIP/2.0/UDP")


@pytest.mark.parametrize(
    ("uri", "user"),
    [
        ("sip:+12155551212@example.com;user=phone", "+12155551212"),
        ("sip:+12155551212;verstat=TN-Validation-Passed@example.com;user=phone", "+12155551212"),
        ("sips:alice:secret@example.com:5061", "alice"),
        ("SIP:bob@example.com?subject=x", "bob"),
        ("sip:example.com", None),
        ("sip:@example.com", None),
        ("tel:+1-215-555-1212;phone-context=example.com", "+1-215-555-1212"),
        ("tel:+12155551212", "+12155551212"),
        ("<tel:+12155551212>", "+12155551212"),
        ("tel:", None),
        ("mailto:a@b", None),
        ("nonsense", None),
        ("", None),
        # RFC 3261 §19.1.2: escaped characters in the user part are decoded ("%2B" is "+")
        ("sip:%2B12155551212@a.example", "+12155551212"),
        ("sips:%2b12155551212;verstat=x@a.example;user=phone", "+12155551212"),
        ("tel:%2B12155551212", "+12155551212"),
        ("sip:alice%40home@a.example", "alice@home"),
        ("sip:%@a.example", "%"),  # not an escape: kept as is
        # whole name-addr values: the URI in <...>
        ('"Alice" <sip:%2B12155551212@a.example;user=phone>;tag=1', "+12155551212"),
        ("Bob <tel:+1-215-555-1212>", "+1-215-555-1212"),
    ],
)
def test_uri_user(uri: str, user: str | None) -> None:
    assert uri_user(uri) == user


@pytest.mark.parametrize(
    ("uri", "tn"),
    [
        ("sip:%2B12155551212@a.example", "12155551212"),
        ("<sip:%2B1-215-555-1212@a.example;user=phone>", "12155551212"),
        ("tel:+1-215-555-1212", "12155551212"),
        ("tel:+1.215.555.1212;phone-context=example.com", "12155551212"),
        ("sip:+1(215)555-1212@a.example", "12155551212"),
    ],
)
def test_canonical_tn_of_uri_on_every_path(uri: str, tn: str) -> None:
    """One uri_user: the core helper, the SIP signing service and the verifier agree (RFC 8224 §8.3)."""
    from stirshaken.core.tn import canonicalize_tn, tn_from_uri
    from stirshaken.serve.metrics import Metrics
    from stirshaken.serve.sip import SipService
    from stirshaken.vs.verifier import call_tn

    assert tn_from_uri(uri) == tn
    assert canonicalize_tn(uri) == tn
    assert call_tn(uri) == tn
    assert SipService("signing", metrics=Metrics())._tn_of_uri(uri.strip("<>")) == tn


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '"Alice" <tel:+12155551212>;tag=1',
            '"Alice" <tel:+12155551212;verstat=TN-Validation-Passed>;tag=1',
        ),
        (
            "<sip:+12155551212@example.com;user=phone>",
            "<sip:+12155551212;verstat=TN-Validation-Passed@example.com;user=phone>",
        ),
        (
            "<sip:+12155551212;verstat=No-TN-Validation@example.com;user=phone>",
            "<sip:+12155551212;verstat=TN-Validation-Passed@example.com;user=phone>",
        ),
        (
            "<sip:+12155551212:pw@example.com;User=Phone?X=y>",
            "<sip:+12155551212;verstat=TN-Validation-Passed:pw@example.com;User=Phone?X=y>",
        ),
        (
            "<sip:alice@example.com;transport=tcp?subject=hi>",
            "<sip:alice@example.com;transport=tcp;verstat=TN-Validation-Passed?subject=hi>",
        ),
        (
            "tel:+12155551212;tag=abc",
            "<tel:+12155551212;verstat=TN-Validation-Passed>;tag=abc",
        ),
        (
            "<tel:+12155551212;phone-context=x;VERSTAT=old>",
            "<tel:+12155551212;phone-context=x;verstat=TN-Validation-Passed>",
        ),
        (  # fuzz finding (make fuzz, sip_message): "?" inside the user part is not the start of the headers
            "<sip:%2B121?5551212@example.net>",
            "<sip:%2B121?5551212@example.net;verstat=TN-Validation-Passed>",
        ),
        (
            "<sip:+1215?5551212@example.net;user=phone?X=y>",
            "<sip:+1215?5551212;verstat=TN-Validation-Passed@example.net;user=phone?X=y>",
        ),
    ],
)
def test_header_value_with_param(value: str, expected: str) -> None:
    out = header_value_with_param(value, "verstat", "TN-Validation-Passed")
    assert out == expected
    # the result is itself a valid name-addr with the same header params
    assert parse_name_addr(out).params == parse_name_addr(value).params


def test_uri_with_param_errors() -> None:
    assert uri_with_param("sip:h", "lr", None) == "sip:h;lr"
    with pytest.raises(SipParseError):
        uri_with_param("urn:service:sos", "verstat", "x")
    with pytest.raises(SipParseError):
        uri_with_param("nonsense", "verstat", "x")
    with pytest.raises(ValueError):
        uri_with_param("tel:+1", "bad name", "x")
    with pytest.raises(ValueError):
        uri_with_param("tel:+1", "verstat", "a;b")
    with pytest.raises(ValueError):
        uri_with_param("tel:+1", "verstat", '"quoted"')
    with pytest.raises(ValueError):
        uri_with_param("tel:+1", "a=b", "c")
    with pytest.raises(SipParseError):
        header_value_with_param("garbage", "verstat", "x")


def test_transaction_key() -> None:
    req = parse_message(INVITE)
    assert req.transaction_key() == ("z9hG4bK776asdhds", "pc33.example.com:5060", "INVITE")
    ack = parse_message(
        INVITE.replace(b"INVITE sip:", b"ACK sip:", 1).replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 ACK")
    )
    assert ack.transaction_key() == req.transaction_key()
    cancel = parse_message(
        INVITE.replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 CANCEL")
    )
    assert cancel.transaction_key() == ("z9hG4bK776asdhds", "pc33.example.com:5060", "CANCEL")
    # top Via comes from a comma-joined first field
    multi = parse_message(
        INVITE.replace(b"Via: SIP/2.0/UDP pc33", b"Via: SIP/2.0/TCP edge.example.net;branch=z9hG4bKtop, SIP/2.0/UDP pc33")
    )
    assert multi.transaction_key() == ("z9hG4bKtop", "edge.example.net", "INVITE")
    # RFC 2543 peer: no magic cookie
    legacy = parse_message(INVITE.replace(b"branch=z9hG4bK776asdhds", b"branch=old1"))
    key = legacy.transaction_key()
    assert key[0].startswith("rfc2543|") and key[1:] == ("pc33.example.com:5060", "INVITE")
    legacy_ack = parse_message(
        INVITE.replace(b"branch=z9hG4bK776asdhds", b"branch=old1")
        .replace(b"INVITE sip:", b"ACK sip:", 1)
        .replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 ACK")
        .replace(b"To: <sip:+12155551213@example.com;user=phone>", b"To: <sip:+12155551213@example.com;user=phone>;tag=t1")
    )
    assert legacy_ack.transaction_key() == key


def test_build_response_copies_headers_and_adds_tag() -> None:
    req = parse_message(_multi_via_invite())
    raw = build_response(req, 302, "Moved Temporarily", extra_headers=[("Contact", "<sip:x@y>"), ("Identity", "a.b.c;info=<https://x/y>")])
    resp = parse_message(raw)
    assert isinstance(resp, SipResponse)
    assert (resp.status, resp.reason) == (302, "Moved Temporarily")
    assert resp.headers.get_fields("Via") == req.headers.get_fields("Via")
    assert resp.headers.get_all("Via") == req.headers.get_all("Via")
    assert len(resp.headers.get_all("Via")) == 4
    assert resp.headers["From"] == req.headers["From"]
    assert resp.headers["Call-ID"] == req.headers["Call-ID"]
    assert resp.headers["CSeq"] == "314159 INVITE"
    tag = resp.to_addr.tag
    assert tag is not None and re.fullmatch(r"[0-9a-f]{16}", tag)
    assert resp.headers["To"] == req.headers["To"] + ";tag=" + tag
    assert resp.headers["Identity"] == "a.b.c;info=<https://x/y>"
    assert "Timestamp" not in resp.headers
    assert [n for n, _ in resp.headers] == [
        "Via", "Via", "Via", "From", "To", "Call-ID", "CSeq", "Contact", "Identity", "Content-Length",
    ]  # fmt: skip
    assert raw.endswith(b"Content-Length: 0\r\n\r\n")
    # random tags differ between responses
    assert parse_message(build_response(req, 200, "OK")).to_addr.tag != tag


def test_build_response_tag_rules() -> None:
    req = parse_message(_multi_via_invite())
    trying = parse_message(build_response(req, 100, "Trying"))
    assert trying.to_addr.tag is None
    assert trying.headers["Timestamp"] == "54"
    assert parse_message(build_response(req, 100, "Trying", to_tag="abc")).to_addr.tag == "abc"
    assert parse_message(build_response(req, 180, "Ringing", to_tag="abc")).to_addr.tag == "abc"
    in_dialog = parse_message(INVITE.replace(b"user=phone>\r\n", b"user=phone>;tag=existing\r\n", 1))
    ok = parse_message(build_response(in_dialog, 200, "OK", to_tag="other"))
    assert ok.to_addr.tag == "existing"
    assert ok.headers["To"].count("tag=") == 1


def test_build_response_body_and_errors() -> None:
    req = parse_message(INVITE)
    raw = build_response(req, 200, "OK", to_tag="t", extra_headers=[("Content-Type", "application/sdp")], body=SDP)
    resp = parse_message(raw)
    assert resp.body == SDP and resp.headers["Content-Length"] == str(len(SDP))
    with pytest.raises(ValueError):
        build_response(req, 99, "x")
    with pytest.raises(ValueError):
        build_response(req, 200, "O\r\nK")
    with pytest.raises(ValueError):
        build_response(req, 200, "OK", to_tag="bad tag")
    with pytest.raises(ValueError):
        build_response(req, 200, "OK", extra_headers=[("Content-Length", "5")])
    with pytest.raises(ValueError):
        build_response(req, 200, "OK", extra_headers=[("X-Inject", "a\r\nb: c")])
    with pytest.raises(ValueError):
        build_response(req, 200, "OK", extra_headers=[("Bad:Name", "v")])


def test_framer_two_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    assert framer.feed(INVITE + RESPONSE_180) == [INVITE, RESPONSE_180]
    assert framer.buffered == 0


def test_framer_message_split_across_chunks() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(INVITE)):
        out += framer.feed(INVITE[i : i + 1])
        if i < len(INVITE) - 1:
            assert out == []
    assert out == [INVITE]
    # split exactly at the end of the header section and inside the CRLFCRLF
    cut = INVITE.index(b"\r\n\r\n")
    for k in (cut, cut + 1, cut + 2, cut + 3, cut + 4):
        framer = StreamFramer()
        assert framer.feed(INVITE[:k]) == []
        assert framer.feed(INVITE[k:] + INVITE[:10]) == [INVITE]
        assert framer.feed(INVITE[10:]) == [INVITE]


def test_framer_keepalives_and_pings() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.pop_pings() == 1
    assert framer.pop_pings() == 0
    assert framer.feed(b"\r\n") == []  # pong or first half of a ping
    assert framer.feed(b"\r") == []
    assert framer.feed(b"\n" + INVITE + b"\r\n\r\n\r\n\r\n" + RESPONSE_180) == [INVITE, RESPONSE_180]
    assert framer.pop_pings() == 3
    assert framer.buffered == 0


def test_framer_lf_only_message() -> None:
    lf = RESPONSE_180.replace(b"\r\n", b"\n")
    framer = StreamFramer()
    assert framer.feed(lf + lf[:5]) == [lf]
    assert framer.feed(lf[5:]) == [lf]


def test_framer_compact_content_length() -> None:
    msg = INVITE.replace(b"Content-Length: 141", b"l : 141")
    assert StreamFramer().feed(msg * 2) == [msg, msg]


def test_framer_requires_content_length() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="missing Content-Length"):
        framer.feed(INVITE.replace(b"Content-Length: 141\r\n", b""))
    # the stream is dead afterwards
    with pytest.raises(SipParseError, match="missing Content-Length"):
        framer.feed(INVITE)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (make_invite(b"Content-Length: 141"), "multiple Content-Length"),
        (INVITE.replace(b"Content-Length: 141", b"Content-Length: 1x"), "malformed Content-Length"),
        (INVITE.replace(b"Content-Length: 141", b"Content-Length: 99999999999"), "malformed Content-Length"),
        (INVITE.replace(b"Content-Length: 141", b"Content-Length: 70000"), "exceeds"),
    ],
)
def test_framer_errors(data: bytes, message: str) -> None:
    with pytest.raises(SipParseError, match=message):
        StreamFramer().feed(data)


def test_framer_max_message_size() -> None:
    framer = StreamFramer(max_message_size=len(INVITE))
    assert framer.feed(INVITE) == [INVITE]
    small = StreamFramer(max_message_size=len(INVITE) - 1)
    with pytest.raises(SipParseError, match="exceeds"):
        small.feed(INVITE)
    # a header section that never ends
    endless = StreamFramer(max_message_size=1024)
    endless.feed(b"INVITE sip:a@b SIP/2.0\r\n")
    with pytest.raises(SipParseError, match="header section exceeds"):
        for _ in range(100):
            endless.feed(b"X-Filler: " + b"a" * 50 + b"\r\n")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    _exercise(msg)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_invite())
def test_mutated_messages_only_raise_parse_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except SipParseError:
        return
    _exercise(msg)
    # a stream framer never raises anything else either
    try:
        StreamFramer().feed(data)
    except SipParseError:
        pass


@settings(max_examples=300)
@given(requests())
def test_request_round_trip(req: SipRequest) -> None:
    parsed = parse_message(req.to_bytes())
    assert parsed == req
    assert parsed.to_bytes() == req.to_bytes()
    assert len(parsed.headers.get_all("Identity")) == len(req.headers.get_fields("Identity"))
    assert parsed.from_addr.display == unquote(req.headers["From"].split(" <")[0])
    resp = parse_message(build_response(parsed, 200, "OK", to_tag="t"))
    assert resp.headers.get_fields("Via") == parsed.headers.get_fields("Via")
    assert resp.to_addr.tag == "t"


@settings(max_examples=200)
@given(
    st.integers(100, 699),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=30),
    st.lists(st.tuples(tokens.map(lambda t: "X-" + t), values), max_size=5),
    st.binary(max_size=100),
)
def test_response_round_trip(status: int, reason: str, extra: list[tuple[str, str]], body: bytes) -> None:
    headers = Headers(
        [
            ("Via", "SIP/2.0/UDP h.example.com;branch=z9hG4bK1"),
            ("From", "<sip:a@b>;tag=1"),
            ("To", "<sip:c@d>;tag=2"),
            ("Call-ID", "x"),
            ("CSeq", "1 INVITE"),
            *extra,
        ]
    )
    resp = SipResponse(status, reason, "SIP/2.0", headers, body)
    parsed = parse_message(resp.to_bytes())
    assert isinstance(parsed, SipResponse)
    assert (parsed.status, parsed.reason, parsed.body) == (status, reason, body)
    assert parsed.headers == headers.add("Content-Length", str(len(body)))


@settings(max_examples=200)
@given(st.lists(requests(), min_size=1, max_size=4), st.data())
def test_framer_arbitrary_chunking(reqs: list[SipRequest], data: st.DataObject) -> None:
    wire_msgs = [r.to_bytes() for r in reqs]
    stream = b"".join(wire_msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    framer = StreamFramer()
    out: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out += framer.feed(stream[prev:cut])
        prev = cut
    assert out == wire_msgs
    assert [parse_message(m) for m in out] == reqs


@settings(max_examples=300)
@given(
    st.text(_TOKEN_ALPHABET | st.sampled_from(" \t:;"), min_size=0, max_size=6),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from(" \t"), max_size=20),
    st.booleans(),
)
def test_fast_header_regex_matches_grammar(name: str, value: str, crlf: bool) -> None:
    """The parser's fast header-line regex agrees with the transcribed grammar."""
    line = f"{name}:{value}"
    grammar = re.compile(sip.HEADER_FIELD, re.M).fullmatch(line + "\n")
    fast = abnf._HEADER_LINE_RE.fullmatch(line + ("\r\n" if crlf else "\n"))
    assert (grammar is None) == (fast is None)
    if grammar is not None and fast is not None:
        assert grammar.groups() == fast.groups()


@given(_PARAMCHARS, st.one_of(st.none(), _PARAMCHARS | st.just("%2Bx")))
def test_header_value_with_param_property(name: str, val: str | None) -> None:
    assume(name.lower() not in ("tag", "user"))
    for value in ('"A" <tel:+1215>;tag=1', "<sip:+1215@h;user=phone>;tag=1", "sip:bob@h;tag=1"):
        out = header_value_with_param(value, name, val)
        na = parse_name_addr(out)
        assert na.params == {"tag": "1"} or na.params == {}
        assert uri_user(na.uri) == uri_user(parse_name_addr(value).uri)
        expected = name if val is None else f"{name}={val}"
        assert expected in na.uri


@given(
    st.sampled_from(["sip", "SIP", "sips", "Sips"]),
    _USER_TEXT,
    st.sampled_from(["", ";verstat=TN-Validation-Passed", ";isub=1;npdi"]),
    st.sampled_from(["", ":secret", ":p%40ss"]),
    st.sampled_from(["a.example", "[2001:db8::1]", "192.0.2.1:5061"]),
    st.sampled_from(["", ";user=phone", ";transport=tcp;lr"]),
    st.sampled_from(["", "?subject=x", "?h=a%40b"]),
    st.sampled_from(["{}", "<{}>", '"A, B" <{}>;tag=1', "Alice <{}>"]),
)
def test_uri_user_of_sip_uri_is_the_decoded_user(
    scheme: str, user: str, tparams: str, password: str, host: str, uparams: str, headers: str, wrap: str
) -> None:
    """RFC 3261 §19.1.1: whatever surrounds it, the user part comes back percent-decoded."""
    from urllib.parse import unquote as decode

    uri = f"{scheme}:{user}{tparams}{password}@{host}{uparams}{headers}"
    assert uri_user(wrap.format(uri)) == (decode(user) or None)


@given(_USER_TEXT, st.sampled_from(["", ";phone-context=example.com", ";ext=1"]),
       st.sampled_from(["{}", "<{}>", '"A" <{}>;tag=1']))
def test_uri_user_of_tel_uri_is_the_decoded_number(number: str, params: str, wrap: str) -> None:
    """RFC 3966: the telephone-subscriber up to its parameters, percent-decoded."""
    from urllib.parse import unquote as decode

    assert uri_user(wrap.format(f"tel:{number}{params}")) == (decode(number) or None)



# --- retarget.py: Diversion (RFC 5806) and History-Info (RFC 7044) -----------------------------


@pytest.mark.parametrize("fields,want", [
    # Diversion: the first (top-most) entry is the most recent diversion
    ([("Diversion", "<sip:+12155551213@a.example>;reason=unconditional;counter=1, <sip:12155550001@b>;reason=busy")],
     "sip:+12155551213@a.example"),
    ([("Diversion", "<tel:+12155551213>"), ("Diversion", "<sip:12155550001@b>")], "tel:+12155551213"),
    # History-Info: the entry that the last "mp" (mapped: retargeted to a new AoR) names
    ([("History-Info", "<sip:12155551213@a;user=phone>;index=1, <sip:12155559999@b;cause=302>;index=1.1;mp=1")],
     "sip:12155551213@a;user=phone"),
    ([("History-Info", "<sip:1@a>;index=1"), ("History-Info", "<sip:2@a>;index=1.1;mp=1"), ("History-Info", "<sip:3@a>;index=1.1.1;mp=1.1")],
     "sip:2@a"),
    ([("History-Info", "<sip:1@a>;index=1, <sip:1@host>;index=1.1;rc=1")], None),  # a contact of the same AoR: no diversion
    ([("History-Info", "<sip:1@a>;index=1, <sip:2@a>;index=1.1;mp=9")], None),  # mp names no entry
    ([("Diversion", "garbage <<")], None),
    ([("Subject", "nothing")], None),
    # both: Diversion states the diversion explicitly
    ([("History-Info", "<sip:1@a>;index=1, <sip:2@a>;index=1.1;mp=1"), ("Diversion", "<sip:5@d>")], "sip:5@d"),
])
def test_diverted_from(fields: list[tuple[str, str]], want: str | None) -> None:
    h = Headers(fields)
    assert sip.diverted_from(h) == want
    assert sip.has_retargeting(h) == any(n in ("Diversion", "History-Info") for n, _ in fields)


# --- fast paths against their general branches (issue 11 item 9, issue 12 item 6) ---------------------
#
# The fast paths of the SIP package against their general branches (issue 11 item 9, issue 12 item 6).
#
# * :func:`build_response` answers printable-ASCII responses without its regexes; the general
#   branch, ``_build_response_general``, must give the same bytes or the same error for every
#   request, status, reason, To tag and extra header (valid and broken ones).
# * :func:`parse_name_addr`, :func:`parse_via` (plain shapes), :func:`split_comma_list` (one
#   element) and the header index of :func:`parse_message` against their general branches.
#
# The random To tag is the one part that may differ: both sides get the same fixed tag, or the
# 16 hex digits of a fresh one are masked.


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
    """The common answer goes through the fast path (its header names are plain), and the bytes
    are the general branch's."""
    req = sip.parse_message(_BASE.format(to="<sip:b@x>", extra="", extra_via="").encode())
    assert isinstance(req, sip.SipRequest)
    extra = [("Contact", "<sip:b@x>"), ("Identity", "a.b.c;info=<https://x/y>;alg=ES256;ppt=shaken")]
    fast = build_response(req, 302, "Moved Temporarily", to_tag="t1", extra_headers=extra)
    assert fast == _build_response_general(req, 302, "Moved Temporarily", to_tag="t1", extra_headers=extra)
    from stirshaken.core.sip.message import _plain_extra_name

    assert _plain_extra_name("Contact") and _plain_extra_name("Identity") and _plain_extra_name("X-Identity-Result")
    assert not any(map(_plain_extra_name, ("Content-Length", "content-length", "l", "L", "X.Y", "", "Ü")))


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
