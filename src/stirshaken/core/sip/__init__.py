"""Sans-I/O SIP message handling (RFC 3261).

This package parses and serialises SIP messages and frames them on stream
transports.  It does no I/O of any kind: no sockets, no logging, no asyncio.
Callers hand it bytes and get back immutable values (or bytes to send).

What it provides:

* :func:`parse_message` -- one datagram or one framed stream message to a
  :class:`SipRequest` / :class:`SipResponse` (RFC 3261 §7, §18.3).  Malformed
  input of any kind raises :class:`SipParseError` (a :class:`ValueError`) and
  nothing else.
* :class:`StreamFramer` -- splits a TCP/TLS byte stream into messages using
  the mandatory Content-Length (RFC 3261 §18.3), skipping CRLF keep-alives
  (RFC 5626 §3.5.1).
* :class:`Headers` -- ordered, repeatable, case-insensitive header fields with
  compact names expanded (RFC 3261 §7.3.3) and list splitting that respects
  quoted strings and ``<...>`` (RFC 3261 §7.3.1).
* :func:`parse_name_addr`, :func:`parse_via`, :func:`uri_user`,
  :func:`uri_with_param`, :func:`header_value_with_param` -- the few
  header-value helpers a STIR/SHAKEN signer/verifier needs.
* :func:`build_response` -- a UAS response per RFC 3261 §8.2.6.

Modules (everything public is re-exported here, so ``sip.parse_message(...)`` works):

* :mod:`~stirshaken.core.sip.abnf` -- the RFC 3261 §25 grammar, transcribed once (``TOKEN``, ...);
  every SIP regex in the project is built from it.
* :mod:`~stirshaken.core.sip.errors` -- :class:`SipParseError`.
* :mod:`~stirshaken.core.sip.headers` -- :class:`Headers`, compact forms, list splitting.
* :mod:`~stirshaken.core.sip.values` -- name-addr, Via, parameters, :func:`uri_user`, URI params.
* :mod:`~stirshaken.core.sip.message` -- :class:`SipRequest`, :class:`SipResponse`,
  :func:`parse_message`, :func:`build_response`.
* :mod:`~stirshaken.core.sip.framing` -- :class:`StreamFramer`.
* :mod:`~stirshaken.core.sip.retarget` -- :func:`diverted_from`: the previous target of a
  retargeted request (Diversion, RFC 5806; History-Info, RFC 7044), for ``div`` PASSporTs.

Leniency: line ends may be CRLF or bare LF, leading CRLFs before the
start-line are ignored (RFC 3261 §7.5), unquoted display names may contain
any printable character but ``"<>``, and ``received=`` style IPv6 values are
accepted in parameters.  Everything else follows the RFC 3261 §25 grammar
transcribed in :mod:`~stirshaken.core.sip.abnf`.

Performance (hot path of the signing service): a message is parsed with a
handful of C-level operations -- two ``bytes.find`` for the end of the
header section, one ``bytes.translate`` to reject control characters, one
``decode``, one ``findall`` over the whole header block -- plus one short
Python loop over the header fields (not characters) to index them, and a
few small regexes for the mandatory headers (CSeq, From, To, top Via).
There are no per-character Python loops for normal messages.

Micro-benchmark (CPython 3.11.7, x86-64 container, best of 7 x 20000 runs)
for the 601-byte INVITE with SDP body used in ``tests/core/test_sip.py``::

    parse_message(invite)          ~16 us   (~60k messages/s per core)
    request.to_bytes()             ~1.3 us
    build_response(req, 200, "OK") ~2.4 us

The shapes of a SIP load generator's or an SBC's INVITE take fast paths, each inside the
function that owns the rule and property-tested against its general branch
(``tests/core/test_sip.py``): ``<URI>;tag=x`` From/To and a ``SIP/2.0/UDP host:port;branch=x``
top Via (:func:`parse_name_addr`, :func:`parse_via`), a one-element Identity
(:func:`split_comma_list`), printable-ASCII answers (:func:`build_response`).  For the sipp
INVITE of ``bench/bench_serve.sh`` (9 header fields): parse 14.3 -> 11.8 us, the signing 302
9.0 -> 3.3 us (issue 11 item 9, issue 12 item 6).
"""

from __future__ import annotations

# The grammar pieces were attributes of the former single module; they stay reachable here.
from stirshaken.core.sip.abnf import (  # noqa: F401
    ADDR_SPEC,
    ADDR_SPEC_BARE,
    COLON,
    CSEQ_VALUE,
    EQUAL,
    FOLD,
    GEN_VALUE,
    GENERIC_PARAM,
    HCOLON,
    HEADER_FIELD,
    HEADER_NAME,
    HEADER_VALUE,
    HOST,
    LWS,
    NAME_ADDR,
    QUOTED_STRING,
    REASON_PHRASE,
    REQUEST_LINE,
    SCHEME,
    SEMI,
    SIP_VERSION,
    SLASH,
    STATUS_LINE,
    SWS,
    TOKEN,
    URI_PARAM_TEXT,
    VIA_PARM,
)
from stirshaken.core.sip.errors import SipParseError
from stirshaken.core.sip.framing import MAX_MESSAGE_SIZE, StreamFramer
from stirshaken.core.sip.headers import COMPACT_FORMS, LIST_HEADERS, Headers, split_comma_list
from stirshaken.core.sip.message import SipMessage, SipRequest, SipResponse, build_response, parse_message
from stirshaken.core.sip.retarget import diverted_from, has_retargeting
from stirshaken.core.sip.values import (
    NameAddr,
    Via,
    header_value_with_param,
    parse_name_addr,
    parse_params,
    parse_via,
    unquote,
    uri_user,
    uri_with_param,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "COMPACT_FORMS",
    "LIST_HEADERS",
    "SipParseError",
    "Headers",
    "NameAddr",
    "Via",
    "SipRequest",
    "SipResponse",
    "SipMessage",
    "parse_message",
    "StreamFramer",
    "parse_name_addr",
    "parse_via",
    "parse_params",
    "split_comma_list",
    "unquote",
    "uri_user",
    "uri_with_param",
    "header_value_with_param",
    "build_response",
    "diverted_from",
    "has_retargeting",
]

