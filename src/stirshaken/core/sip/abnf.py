"""The RFC 3261 §25 grammar, transcribed once.

Every SIP regex in the package -- the message parser, the header-value helpers, the Identity header
parser (:mod:`stirshaken.core.identity`), the SIP service's loose 400-answer reader and the
configuration's header-name check -- is built from the named pieces below.  Each piece quotes the
ABNF it implements.  They are pattern *strings* (for composing); the compiled forms the package
uses are the ``*_RE`` names at the end.

Quantifiers are possessive (``++``, ``*+``, Python >= 3.11) wherever the following text cannot
continue the run, so no pattern backtracks and matching stays linear in the input length.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "TOKEN_CHARS",
    "TOKEN_CHAR",
    "TOKEN",
    "FOLD",
    "LWS",
    "SWS",
    "HCOLON",
    "SEMI",
    "EQUAL",
    "SLASH",
    "COLON",
    "QUOTED_STRING",
    "HOST",
    "GEN_VALUE",
    "GENERIC_PARAM",
    "SCHEME",
    "ADDR_SPEC",
    "ADDR_SPEC_BARE",
    "URI_PARAM_TEXT",
    "NAME_ADDR",
    "SIP_VERSION",
    "REQUEST_LINE",
    "REASON_PHRASE",
    "STATUS_LINE",
    "HEADER_NAME",
    "HEADER_VALUE",
    "HEADER_FIELD",
    "VIA_PARM",
    "CSEQ_VALUE",
    "TOKEN_RE",
]

# §25.1  token = 1*(alphanum / "-" / "." / "!" / "%" / "*"
#                   / "_" / "+" / "`" / "'" / "~" )
#: The characters of ``token`` as the body of a character class (for classes that add to them).
TOKEN_CHARS: Final = r"A-Za-z0-9\-.!%*_+`'~"
#: One ``token`` character.
TOKEN_CHAR: Final = rf"[{TOKEN_CHARS}]"
#: ``token`` (method, header name, parameter name, transport, tag, ...).
TOKEN: Final = rf"{TOKEN_CHAR}++"

# §25.1  LWS = [*WSP CRLF] 1*WSP ; linear whitespace
#        SWS = [LWS]             ; sep whitespace
# Folding (the "*WSP CRLF 1*WSP" part) is removed before any value regex runs
# (§7.3.1: a recipient MAY replace LWS by a single SP), so inside values LWS
# is just 1*WSP and SWS is *WSP.  FOLD matches one fold (bare LF tolerated).
FOLD: Final = r"[ \t]*\r?\n[ \t]+"
LWS: Final = r"[ \t]++"
SWS: Final = r"[ \t]*+"

# §25.1  HCOLON = *( SP / HTAB ) ":" SWS ; SEMI = SWS ";" SWS
#        EQUAL  = SWS "=" SWS ; SLASH = SWS "/" SWS ; COLON = SWS ":" SWS
HCOLON: Final = r"[ \t]*+:[ \t]*+"
SEMI: Final = r"[ \t]*+;[ \t]*+"
EQUAL: Final = r"[ \t]*+=[ \t]*+"
SLASH: Final = r"[ \t]*+/[ \t]*+"
COLON: Final = r"[ \t]*+:[ \t]*+"

# §25.1  quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#        qdtext        = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII
#        quoted-pair   = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING: Final = (
    r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]++|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*+"'
)

# §25.1  host = hostname / IPv4address / IPv6reference
#        (hostname also tolerates "_", seen in the wild)
HOST: Final = r"(?:\[[0-9A-Fa-f:.]++\]|[A-Za-z0-9\-._]++)"

# §25.1  generic-param = token [ EQUAL gen-value ]
#        gen-value     = token / host / quoted-string
# Lenient superset: a bare value may also contain ":" so that the
# IPv6address allowed by §20.42 ``received=`` parses.
GEN_VALUE: Final = rf"(?:{QUOTED_STRING}|\[[0-9A-Fa-f:.]++\]|[{TOKEN_CHARS}:]++)"
GENERIC_PARAM: Final = rf"(?:{TOKEN}(?:{EQUAL}{GEN_VALUE})?+)"

# §25.1  absoluteURI = scheme ":" ( hier-part / opaque-part )
#        scheme      = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
#        addr-spec   = SIP-URI / SIPS-URI / absoluteURI
# SIP-URI / SIPS-URI are absoluteURIs syntactically; the URI body is taken as
# any run of characters that cannot end it (no SP, controls, DQUOTE, <, >).
SCHEME: Final = r"[A-Za-z][A-Za-z0-9+\-.]*+"
ADDR_SPEC: Final = rf"{SCHEME}:[^\x00-\x20\"<>\x7f]++"
# Bare addr-spec in from-spec etc.: parameters after it are header params
# (§20.10), so it stops at ";".
ADDR_SPEC_BARE: Final = rf"{SCHEME}:[^\x00-\x20\"<>;\x7f]++"

# §25.1  uri-parameters = *( ";" uri-parameter ) ; other-param = pname [ "=" pvalue ]
#        pname = 1*paramchar ; pvalue = 1*paramchar
#        paramchar = param-unreserved / unreserved / escaped
#        (RFC 3966 tel URI pvalue uses the same paramchar)
URI_PARAM_TEXT: Final = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})++"

# §25.1  name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
#        display-name = *(token LWS)/ quoted-string
#        LAQUOT = SWS "<" ; RAQUOT = ">" SWS
# Unquoted display names are accepted leniently (any printable but "<>).
NAME_ADDR: Final = (
    rf"{SWS}(?:(?P<quoted>{QUOTED_STRING})|(?P<plain>[^\"<>\x00-\x08\x0a-\x1f\x7f]*+))"
    rf"{SWS}<(?P<uri>{ADDR_SPEC})>"
)

# §25.1  SIP-Version  = "SIP" "/" 1*DIGIT "." 1*DIGIT   (case-insensitive, §7.1)
SIP_VERSION: Final = r"[Ss][Ii][Pp]/[0-9]++\.[0-9]++"

# §25.1  Request-Line = Method SP Request-URI SP SIP-Version CRLF
#        Method       = INVITEm / ACKm / ... / extension-method
#        extension-method = token
#        Request-URI  = SIP-URI / SIPS-URI / absoluteURI
REQUEST_LINE: Final = (
    rf"(?P<method>{TOKEN}) (?P<uri>{SCHEME}:[^\x00-\x20\x7f]++) (?P<version>{SIP_VERSION})"
)

# §25.1  Status-Line   = SIP-Version SP Status-Code SP Reason-Phrase CRLF
#        Status-Code   = 3DIGIT (classes 1xx-6xx, §7.2)
#        Reason-Phrase = *(reserved / unreserved / escaped
#                          / UTF8-NONASCII / UTF8-CONT / SP / HTAB)
REASON_PHRASE: Final = r"[^\x00-\x08\x0a-\x1f\x7f]*+"
STATUS_LINE: Final = (
    rf"(?P<version>{SIP_VERSION}) (?P<status>[1-6][0-9][0-9])(?: (?P<reason>{REASON_PHRASE}))?"
)

# §25.1  message-header = ( ... / extension-header ) CRLF
#        extension-header = header-name HCOLON header-value
#        header-name  = token
#        header-value = *(TEXT-UTF8char / UTF8-CONT / LWS)
#        TEXT-UTF8char = %x21-7E / UTF8-NONASCII
# A value is "words" of TEXT-UTF8char separated by WSP; surrounding WSP is
# not part of it.  (Possessive quantifiers keep this linear-time.)
HEADER_NAME: Final = TOKEN
_VCHAR = r"[^\x00-\x20\x7f]"
HEADER_VALUE: Final = rf"(?:{_VCHAR}++(?:[ \t]++{_VCHAR}++)*+)?+"
HEADER_FIELD: Final = rf"^({HEADER_NAME}){HCOLON}({HEADER_VALUE})[ \t]*+\n"

# §20.42  via-parm = sent-protocol LWS sent-by *( SEMI via-params )
#         sent-protocol = protocol-name SLASH protocol-version SLASH transport
#         sent-by = host [ COLON port ]
VIA_PARM: Final = (
    rf"{SWS}(?P<name>{TOKEN}){SLASH}(?P<version>{TOKEN}){SLASH}(?P<transport>{TOKEN})"
    rf"{LWS}(?P<host>{HOST})(?:{COLON}(?P<port>[0-9]{{1,5}}+))?"
    rf"(?P<params>(?:{SEMI}{GENERIC_PARAM})*+){SWS}"
)

# §20.16 CSeq = "CSeq" HCOLON 1*DIGIT LWS Method   (§8.1.1.5: 32-bit unsigned)
CSEQ_VALUE: Final = rf"([0-9]{{1,10}}+){LWS}({TOKEN})"

# ---------------------------------------------------------------------------
# Compiled forms shared by the modules of the package
# ---------------------------------------------------------------------------

#: ``token`` (use ``TOKEN_RE.fullmatch(s)`` to check a method, header name, tag, ...).
TOKEN_RE: Final = re.compile(TOKEN)
_FOLD_RE = re.compile(FOLD)
# Fast equivalent of HEADER_FIELD used by the parser: "." runs in C much
# faster than a negated character class, so characters are instead checked
# once for the whole header section with bytes.translate (_CTL_BYTES below).
# The value ends at its last non-WSP character; the line may end in CRLF.
# (tests/core/test_sip.py checks that both agree.)
_HEADER_LINE_RE = re.compile(rf"^({HEADER_NAME}){HCOLON}((?:.*[^ \t\r\n])?)[ \t\r]*\n", re.M)
# Bytes not allowed anywhere in a header section (CTL except HTAB and LF,
# plus CR which is only allowed as part of CRLF).
_CTL_BYTES: Final = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])
_HEADER_VALUE_RE = re.compile(HEADER_VALUE)
_REQUEST_LINE_RE = re.compile(REQUEST_LINE)
_STATUS_LINE_RE = re.compile(STATUS_LINE)
_SIP_VERSION_RE = re.compile(SIP_VERSION)
_REQUEST_URI_RE = re.compile(rf"{SCHEME}:[^\x00-\x20\x7f]++")
_REASON_RE = re.compile(REASON_PHRASE)
_PARAMS_RE = re.compile(rf"(?:{SEMI}{GENERIC_PARAM})*+{SWS}")
_PARAM_RE = re.compile(rf"{SEMI}({TOKEN})(?:{EQUAL}({GEN_VALUE}))?+")
_URI_PARAM_TEXT_RE = re.compile(URI_PARAM_TEXT)
_PARAMS = rf"(?P<params>(?:{SEMI}{GENERIC_PARAM})*+){SWS}"
_NAME_ADDR_RE = re.compile(NAME_ADDR + _PARAMS)
_ADDR_SPEC_BARE_RE = re.compile(rf"{SWS}(?P<uri>{ADDR_SPEC_BARE})" + _PARAMS)
_VIA_RE = re.compile(VIA_PARM)
_CSEQ_RE = re.compile(CSEQ_VALUE)
_DIGITS_RE = re.compile(r"[0-9]{1,10}+")
