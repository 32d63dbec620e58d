"""One SIP message (RFC 3261 §7): :func:`stirshaken.core.sip.parse_message` and the header-value
helpers the signing and verification services call on it.

Properties: only :class:`SipParseError`, one line; ``to_bytes()`` parses back to the same
start line, header fields and body (Content-Length made to match, §20.14); a request's
``build_response`` is itself a parseable response; the header helpers (name-addr, Via,
``uri_user``, the verstat parameter of TS 24.229, the Identity fields) raise only their
documented errors.
"""

from __future__ import annotations

from fuzz.harness import Finding, Target, same, typed
from fuzz.material import Material
from stirshaken.core.errors import StirShakenError
from stirshaken.core.identity import parse_identity_headers
from stirshaken.core.sip import (
    SipParseError,
    SipRequest,
    build_response,
    header_value_with_param,
    parse_message,
    parse_name_addr,
    uri_user,
)


def _fields(msg) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in msg.headers.items() if k.lower() != "content-length"]


def _start(msg) -> tuple:
    if isinstance(msg, SipRequest):
        return ("request", msg.method, msg.request_uri, msg.version)
    return ("response", msg.status, msg.reason, msg.version)


def check(data: bytes) -> None:
    msg = typed(SipParseError, parse_message, data)
    if msg is None:
        return
    wire = msg.to_bytes()
    again = typed(SipParseError, parse_message, wire)
    if again is None:
        raise Finding(f"to_bytes() does not parse back: {wire[:300]!r}")
    same("start line", _start(again), _start(msg))
    same("header fields", _fields(again), _fields(msg))
    same("body", again.body, msg.body)
    same("Content-Length", again.headers.get("content-length"), str(len(msg.body)))
    for name in ("from", "to", "p-asserted-identity"):
        for value in msg.headers.get_fields(name):
            addr = typed(SipParseError, parse_name_addr, value)
            if addr is None:
                continue
            user = uri_user(value)
            marked = typed((SipParseError, ValueError), header_value_with_param, value, "verstat", "TN-Validation-Passed")
            if marked is not None:
                back = typed(SipParseError, parse_name_addr, marked)
                if back is None:
                    raise Finding(f"verstat-marked {name} does not parse: {marked[:200]!r}")
                same("display name after marking", back.display, addr.display)
                same("header parameters after marking", back.params, addr.params)
                same("user after marking", uri_user(marked), user)
    identities = typed(SipParseError, msg.headers.get_all, "identity")
    if identities:
        typed(StirShakenError, parse_identity_headers, identities)
    if isinstance(msg, SipRequest):
        uri_user(msg.request_uri)
        msg.transaction_key()
        reply = build_response(msg, 400, "Bad Request", extra_headers=[("Reason", 'SIP;cause=438;text="x"')])
        response = typed(SipParseError, parse_message, reply)
        if response is None:
            raise Finding(f"build_response does not parse: {reply[:300]!r}")
        same("Call-ID of the response", response.call_id, msg.call_id)
        same("CSeq of the response", response.cseq, msg.cseq)


def invite(m: Material, *, identity: str | None = None, extra: str = "", body: bytes = b"v=0\r\n") -> bytes:
    lines = [
        "INVITE sip:+12155551213@example.net;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-74bf9;rport, SIP/2.0/TCP [2001:db8::1]:5061;branch=z9hG4bK-2",
        'From: "Alice" <sip:+12155551212@example.net;user=phone>;tag=9fxced76sl',
        "To: <tel:+12155551213;phone-context=example>",
        "P-Asserted-Identity: <sip:%2B12155551212@example.net>",
        "Call-ID: 3848276298220188511@192.0.2.1",
        "CSeq: 314159 INVITE",
        "Max-Forwards: 70",
        f"Identity: {identity or m.identity()}",
    ]
    if extra:
        lines.append(extra)
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def seeds(m: Material) -> list[bytes]:
    return [
        invite(m),
        invite(m, extra="Subject: folded\r\n  line\r\ni: compact-call-id-ignored-duplicate"),
        invite(m, identity=m.identity() + ", " + m.identity()),
        b"\r\nOPTIONS sips:alice@example.com SIP/2.0\nv: SIP/2.0/TLS h;branch=x\nf: Bob <sip:b@h>;tag=1\nt: sip:a@h\nCSeq: 1 OPTIONS\n\n",
        b"SIP/2.0 302 Moved Temporarily\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\n"
        b"Call-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:x@h>\r\nl: 0\r\n\r\n",
    ]


TARGET = Target(
    name="sip_message",
    check=check,
    seeds=seeds,
    tokens=(b"\r\n", b"\n", b"\r\n\r\n", b": ", b";", b",", b"<", b">", b'"', b"\\", b" ", b"\t", b"\r\n ", b"Content-Length: ",
            b"l: ", b"Via: ", b"From: ", b"To: ", b"CSeq: ", b"Call-ID: ", b"Identity: ", b"SIP/2.0", b"sip:", b"tel:", b"@",
            b";tag=", b";branch=z9hG4bK", b"INVITE", b"[::1]", b"%2B", b"\xc3\xa9", b"\x00"),
    max_len=8192,
    examples=450,
)
