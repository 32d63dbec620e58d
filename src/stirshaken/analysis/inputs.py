"""What the analysis tools read, turned into the :class:`~stirshaken.vs.verifier.CallInfo` the
STI-VS verifies: a SIP request, a bare Identity header value, an ATIS-1000082 verification
request body, a text log of SIP messages, or JSON-lines call records.

A request becomes a call exactly as the SIP verification service reads one
(:meth:`stirshaken.serve.sip.SipService._verify`, RFC 8224 §6.2, ATIS-1000074 §5.3.1): every
``Identity`` field value, From, the first P-Asserted-Identity, To, the Request-URI and the Date
header (RFC 3261 §20.17) as epoch seconds.

JSON-lines call records (``stirshaken audit --records``), one object per line::

    {"time": 1767225600.5, "interface": "sip", "call_id": "a84b4c76e66710",
     "identity": "eyJ...;info=<https://cr.example/sp.pem>;ppt=shaken",
     "from": "+12155551212", "to": "+12155551213"}

``time`` (epoch seconds, or an ISO 8601 string) is the verification time; ``identity`` is a
string (several joined by commas) or a list, absent or null for an unsigned call; ``from`` /
``to`` are TNs, URIs or header values (``to`` may be a list); ``interface`` and ``call_id`` are
free text used in the report; the optional ``pai`` and ``ruri`` are read as From and To.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

import orjson

from stirshaken.core import sip
from stirshaken.core.identity import split_header_values
from stirshaken.vs.verifier import CallInfo


class InputError(ValueError):
    """The input is none of the accepted forms, or a form with a broken part (one line of why)."""


#: a SIP start line: request-line (RFC 3261 §7.1) or status-line (§7.2)
_START_LINE = re.compile(rb"^(?:[A-Za-z]+ [^ \r\n]+ SIP/2\.0|SIP/2\.0 [0-9]{3}(?: [^\r\n]*)?)\r?$", re.MULTILINE)
_HEADER_NAME = re.compile(r"^\s*(?:Identity|y)\s*:\s*", re.IGNORECASE)
_CONTENT_LENGTH = re.compile(rb"(?i)^\s*(?:content-length|l)\s*:")


@dataclass
class Call:
    """One call to verify: the verifier's :class:`CallInfo` plus what the reports show.

    ``time`` is the moment to verify at (epoch seconds: the Date header, else the capture or
    record time; None: the current time); ``call_id``, ``method``, ``source`` are descriptive.
    """

    info: CallInfo
    call_id: str = ""
    method: str = "INVITE"
    time: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def signed(self) -> bool:
        return bool(self.info.identities)


_DATES: dict[str, float] = {}  # Date values repeat for every call of the same second


def parse_date(value: str | None) -> float | None:
    """A SIP Date header (RFC 3261 §20.17, RFC 1123 form) as epoch seconds; None when absent.

    Raises :class:`InputError` for a value that is not a date.
    """
    if not value:
        return None
    t = _DATES.get(value)
    if t is not None:
        return t
    try:
        t = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        raise InputError(f"Date header {value[:60]!r} is not an RFC 1123 date") from None
    if len(_DATES) >= 4096:
        _DATES.clear()
    _DATES[value] = t
    return t


def _first(value: str | None) -> str | None:
    if value is None:
        return None
    parts = sip.split_comma_list(value) if "," in value else [value]
    return parts[0] if parts else None


def headers_only(data: bytes) -> bytes:
    """The header section of one SIP message with CRLF line ends and ``Content-Length: 0``.

    Copies from sngrep, logs or terminals lose the CR of each line, which makes Content-Length
    disagree with the body; the verifier needs no body, so it is dropped.
    """
    data = data.lstrip(b"\r\n")
    end = data.find(b"\n\n")
    end2 = data.find(b"\r\n\r\n")
    if end2 >= 0 and (end < 0 or end2 < end):
        end = end2
    head = data if end < 0 else data[:end]
    lines = [ln.rstrip(b"\r") for ln in head.split(b"\n")]
    out = [ln for ln in lines if not _CONTENT_LENGTH.match(ln)]
    return b"\r\n".join(out) + b"\r\nContent-Length: 0\r\n\r\n"


def call_from_request(req: sip.SipRequest, *, use_pai: bool = True, fallback_time: float | None = None, source: str = "") -> Call:
    """The call a SIP request asks to verify, read as ``stirshaken serve``'s SIP interface does.

    The verification time is the Date header, else ``fallback_time``.  Raises
    :class:`InputError` for a Date header that is not a date.
    """
    h = req.headers
    try:
        identities = h.get_all("Identity")
    except sip.SipParseError:
        identities = h.get_fields("Identity")
    date = parse_date(h.get("Date"))
    pai = _first(h.get("P-Asserted-Identity")) if use_pai else None
    info = CallInfo(identities=identities, from_=h.get("From"), pai=pai, to=h.get("To"), ruri=req.request_uri, date=date)
    return Call(info=info, call_id=h.get("Call-ID") or "", method=req.method, time=date if date is not None else fallback_time, source=source)


def parse_sip(data: bytes, *, use_pai: bool = True, fallback_time: float | None = None, source: str = "") -> Call | None:
    """A SIP message (bytes) as a :class:`Call`; None for a response.  Bodies are ignored.

    Raises :class:`InputError` naming the broken part of a malformed message.
    """
    try:
        msg = sip.parse_message(headers_only(data))
    except sip.SipParseError as exc:
        raise InputError(f"not a SIP message: {exc}") from None
    if not isinstance(msg, sip.SipRequest):
        return None
    return call_from_request(msg, use_pai=use_pai, fallback_time=fallback_time, source=source)


def _tn_list(value: Any, name: str) -> list[str]:
    if isinstance(value, dict):
        value = value.get("tn")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise InputError(f"verificationRequest: '{name}.tn' must be a TN or a list of TNs")


def call_from_verification_request(doc: Any) -> Call:
    """An ATIS-1000082 §8.2.4 ``verificationRequest`` (from.tn, to.tn, time, identity) as a call
    verified at its ``time``.  Raises :class:`InputError` naming the missing or bad member."""
    req = doc.get("verificationRequest") if isinstance(doc, dict) else None
    if not isinstance(req, dict):
        raise InputError("JSON input must be an object holding 'verificationRequest' (ATIS-1000082 §8.2.4)")
    for member in ("from", "to", "time", "identity"):
        if member not in req:
            raise InputError(f"verificationRequest: missing '{member}'")
    identity = req["identity"]
    if not isinstance(identity, str) or not identity.strip():
        raise InputError("verificationRequest: 'identity' must be a non-empty string")
    when = req["time"]
    if type(when) is not int or when <= 0:
        raise InputError("verificationRequest: 'time' must be a positive integer (epoch seconds)")
    frm = _tn_list(req["from"], "from")[0]
    to = _tn_list(req["to"], "to")
    info = CallInfo(identities=[identity.strip()], from_=frm, to=to, date=float(when))
    return Call(info=info, method="verificationRequest", time=float(when), source="verificationRequest")


def strip_header_name(value: str) -> str:
    """An Identity header value without a leading ``Identity:`` (or compact ``y:``) name."""
    return _HEADER_NAME.sub("", value, count=1).strip()


def parse_input(text: str | bytes, *, orig: str | None = None, dest: list[str] | None = None, date: float | None = None,
                use_pai: bool = True) -> Call:
    """Whatever a user pasted: a SIP request, a JSON verification request, or an Identity header
    value (with or without its name; several comma-joined or one per line).

    ``orig`` / ``dest`` / ``date`` replace what the input says (From/PAI, To/R-URI, Date).
    Raises :class:`InputError` with one line saying what is wrong.
    """
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else bytes(text)
    stripped = raw.strip()
    if not stripped:
        raise InputError("empty input: paste an Identity header value, a SIP request or a verificationRequest")
    if stripped[:1] == b"{":
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"JSON input does not parse: {_json_problem(stripped, exc)}") from None
        call = call_from_verification_request(doc)
    elif _START_LINE.match(stripped.split(b"\n", 1)[0]):
        parsed = parse_sip(stripped, use_pai=use_pai, source="SIP request")
        if parsed is None:
            raise InputError("the SIP message is a response; paste the INVITE (a request) instead")
        call = parsed
    else:
        text_s = stripped.decode("utf-8", "replace")
        values: list[str] = []
        for line in text_s.splitlines():
            line = strip_header_name(line)
            if line:
                values.extend(split_header_values(line) if "," in line else [line])
        call = Call(info=CallInfo(identities=values), method="", source="Identity header")
    info = call.info
    if orig is not None:
        info.from_, info.pai = orig, None
    if dest:
        info.to, info.ruri = list(dest), None
    if date is not None:
        info.date = float(date)
        call.time = float(date)
    return call


# --- logs and records ----------------------------------------------------------------------------


def split_sip_log(lines: Iterator[bytes]) -> Iterator[tuple[bytes, int]]:
    """The SIP messages of a text log, with the line number each starts at (1-based).

    A message starts at a SIP start line and runs to the next one; the lines between messages
    (sngrep's timestamps and addresses, log prefixes, blank separators) and message bodies are
    ignored, since only the header section is used.  Streams: holds one message at a time.
    """
    current: list[bytes] = []
    start = 0
    in_head = False
    for n, line in enumerate(lines, 1):
        s = line.rstrip(b"\r\n")
        if _START_LINE.match(s) and line[:1] not in (b" ", b"\t"):
            if current:
                yield b"\n".join(current), start
            current, start, in_head = [s], n, True
            continue
        if in_head:
            if not s:
                in_head = False
                continue
            current.append(s)
    if current:
        yield b"\n".join(current), start


def _record_time(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InputError(f"'time' {value[:40]!r} is neither epoch seconds nor ISO 8601") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return t.timestamp()
    raise InputError("'time' must be epoch seconds or an ISO 8601 string")


def _json_problem(raw: bytes, exc: Any) -> str:
    """What is wrong with JSON text, in words: not UTF-8 at all, or the parser's message and place."""
    try:
        bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    return f"{exc.msg} at line {exc.lineno} column {exc.colno}"


def call_from_record(line: bytes, *, lineno: int = 0) -> Call:
    """One JSON-lines call record (fields in the module docstring) as a call.

    Raises :class:`InputError` naming the line and the bad field.
    """
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"line {lineno}: not JSON ({_json_problem(line, exc)})") from None
    if not isinstance(rec, dict):
        raise InputError(f"line {lineno}: a record must be a JSON object")
    ident = rec.get("identity")
    if ident is None:
        identities: list[str] = []
    elif isinstance(ident, str):
        identities = split_header_values(ident) if "," in ident else ([ident.strip()] if ident.strip() else [])
    elif isinstance(ident, list) and all(isinstance(v, str) for v in ident):
        identities = [v for v in ident if v.strip()]
    else:
        raise InputError(f"line {lineno}: 'identity' must be a string, a list of strings or null")
    try:
        when = _record_time(rec.get("time"))
    except InputError as exc:
        raise InputError(f"line {lineno}: {exc}") from None
    to = rec.get("to")
    if to is not None and not isinstance(to, (str, list)):
        raise InputError(f"line {lineno}: 'to' must be a string or a list")
    info = CallInfo(identities=identities, from_=rec.get("from"), pai=rec.get("pai"), to=to, ruri=rec.get("ruri"))
    return Call(info=info, call_id=str(rec.get("call_id") or ""), time=when, source=str(rec.get("interface") or "record"))


__all__ = [
    "Call",
    "InputError",
    "call_from_record",
    "call_from_request",
    "call_from_verification_request",
    "headers_only",
    "parse_date",
    "parse_input",
    "parse_sip",
    "split_sip_log",
    "strip_header_name",
]
