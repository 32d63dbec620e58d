"""SIP interface of the STI-AS and STI-VS: the redirect model, over UDP and TCP on one address.

* Signing address (STI-AS): an INVITE is answered ``302 Moved Temporarily`` whose ``Contact`` is
  the Request-URI and which carries the ``Identity`` header (RFC 8224 §4) the proxy/SBC adds when
  it follows the redirect.  The calling number comes from P-Asserted-Identity (when ``use_pai``)
  or From, the called numbers from To (else the Request-URI), RFC 8224 §4.1 / §8.3.  Inputs this
  project's verifier would refuse are refused: an ``attest_header`` value other than A/B/C or an
  ``origid_header`` value that is not a UUID gets ``400 Bad Request (<the problem>)``; a caller
  or callee that is no telephone number is forwarded unsigned (§6.1 step 1) with
  ``X-Identity-Result: not-signed: <why>``.  A number of national length signed without a
  ``country_code`` gets a ``Warning: 399`` in the 302.
* Diverted calls (RFC 8946, ``div_passport``): an INVITE that already carries a SHAKEN Identity
  and names the target it was diverted from (Diversion, RFC 5806; History-Info ``mp``, RFC 7044)
  is answered 302 with a ``div`` PASSporT (orig copied, dest the Request-URI, div the
  diverted-from number, signed by the tenant of that number) as its first Identity header,
  followed by the INVITE's own Identity header(s) unchanged;
  when no div may be signed the 302 carries the original Identity and
  ``X-Identity-Result: no-div: <why>``.
* Verification address (STI-VS): an INVITE is verified (RFC 8224 §6.2, ATIS-1000074 §5.3) and
  answered 302 with ``P-Asserted-Identity`` (and the From URI) carrying ``verstat`` as 3GPP TS
  24.229 §5.7.1.27 places it, plus an RFC 9410 ``Reason`` header for a failure; or, when policy
  rejects the failure (``reject_on_failure`` / ``reject_codes`` / ``require_identity``), with the
  failure code itself (403/428/436/437/438, RFC 8224 §6.2.2) and the Reason header.  Whatever the
  answer, a failure also carries ``X-Verification-Reason: <the specific cause>`` (e.g. "'orig'
  claim ... doesn't match", a stale ``iat``, a revoked certificate), made safe by :func:`header_text`.
* ``OPTIONS`` → 200; ``ACK`` absorbed; ``CANCEL`` → 200 when its INVITE was answered, else 481
  (RFC 3261 §9.2); ``BYE`` → 481; other known methods → 405 with ``Allow``; unknown → 501
  (RFC 3261 §8.2.1); Request-URI schemes other than sip/sips/tel → 416; ``Require`` → 420.

A request that does not parse but still has Via, From, To, Call-ID and CSeq fields is answered
``400 Bad Request (<what is wrong>)`` (RFC 3261 §8.2, §21.4.1: the reason phrase names the
problem), built from those fields as they were received; anything else that does not parse (pure
garbage, responses, ACKs) is dropped.  A request refused for its bytes (a NUL or another control
character, bytes that are not UTF-8) is one warning line naming the peer and where the bytes are;
it is answered 400 unless they are in one of the five fields an answer copies
(:func:`_loose_request` says why none can be formed then).  Both are counted in
``stirshaken_sip_parse_errors_total``.
Over TCP a framing error (no or a bad Content-Length, a message too large) is answered the same
way when possible, then the connection is closed since the stream cannot be resynchronised.

Responses are built with :func:`stirshaken.core.sip.build_response` (RFC 3261 §8.2.6: Via list, From,
To with a tag, Call-ID, CSeq).  An answer larger than its request's :func:`answer_cap` is replaced
by ``513 Message Too Large`` (a UDP request above 1300 bytes, RFC 3261 §21.5.7) or ``500`` when it
is built, before anything counts or records it, so an INVITE's record holds the status sent.
UDP responses go back to the source address, with ``received`` and ``rport`` set on the top Via
(RFC 3261 §18.2.1, RFC 3581).  Retransmitted requests are
answered from a bounded, time-expiring server transaction cache (RFC 3261 §17.2.1/§17.2.2), keyed
by branch, sent-by and method.  That cache is the worker's own: a retransmission that another
worker (they share the UDP socket) or another node receives is verified again, and replay
detection recognises its dialog (Call-ID, From tag: :mod:`stirshaken.vs.replay`), so it gets the
answer of the original.  Nothing a peer sends can raise out of the protocol callbacks.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import re
import secrets
import time
from typing import Any, Awaitable, Callable

from stirshaken.core import sip
from stirshaken.core.sip.abnf import TOKEN
from stirshaken.serve.batching import LoopBatch
from stirshaken.serve.limits import ConnectionGuard, ConnectionLimits, peer_ip
from stirshaken.serve.config import SigningConfig, VerificationConfig
from stirshaken.core.errors import SIP_REASONS, VERSTAT_NONE, StirShakenError
from stirshaken.core.identity import parse_identity
from stirshaken.core.passport import OrigidPool, check_claims, check_header, parse_jws
from stirshaken.serve.metrics import LabelSets, Metrics
from stirshaken.serve.records import verification_fields
from stirshaken.serve.signing import ATTEST, DnoRefused, SigningError, SigningService
from stirshaken.core.tn import TNError, canonicalize_tn
from stirshaken.core.verification import VerificationResult

log = logging.getLogger("stirshaken.serve.sip")

__all__ = ["REASON_HEADER", "LineLimiter", "SipService", "header_text", "TransactionCache", "answer_cap", "bad_request", "start_sip"]

ALLOW = "INVITE, ACK, CANCEL, OPTIONS"
_KNOWN_METHODS = frozenset({"BYE", "REGISTER", "SUBSCRIBE", "NOTIFY", "INFO", "UPDATE", "PRACK", "MESSAGE", "REFER", "PUBLISH"})
_PENDING = b""  # the (singleton) empty bytes marks a transaction still being answered
_RPORT = re.compile(r";[ \t]*rport(?:[ \t]*=[ \t]*[0-9]*)?", re.IGNORECASE)
# what is read from a request that does not parse, to answer it (RFC 3261 §8.2.6.2)
_LOOSE_REQUEST_LINE = re.compile(rf"({TOKEN})[ \t]+.*[ \t]SIP/2\.0[ \t]*", re.IGNORECASE)
_LOOSE_FIELD = re.compile(rf"({TOKEN})[ \t]*:[ \t]*(.*?)[ \t]*")
_ECHOED = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To", "call-id": "Call-ID", "i": "Call-ID",
           "cseq": "CSeq"}
_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TAG = re.compile(r";[ \t]*tag[ \t]*=", re.IGNORECASE)


def _stamp_via(first: str, peer: tuple[str, int], *, received: bool, rport: bool) -> str:
    """The top Via value with ``received`` (RFC 3261 §18.2.1) and ``rport`` (RFC 3581) filled in."""
    if rport:
        first = _RPORT.sub(f";rport={peer[1]}", first, count=1)
    if received and "received=" not in first:
        first += f";received={peer[0]}"
    return first


def bad_request(data: bytes, problem: str, peer: tuple[str, int] | None, transport: str) -> bytes | None:
    """``400 Bad Request (<problem>)`` for a request that failed to parse, built from its Via,
    From, To, Call-ID and CSeq as received; None when it lacks one of them, is not a request, is
    an ACK (never answered, RFC 3261 §17.1.1.3), or one of them holds bytes no answer may carry
    (:func:`_loose_request`).  A request refused for its bytes gets the fault as the problem
    (e.g. ``a NUL byte in the Subject header field``)."""
    return _bad_request(data, problem, peer, transport)[0]


def _bad_request(data: bytes, problem: str, peer: tuple[str, int] | None, transport: str, *,
                 framing: bool = False) -> tuple[bytes | None, str | None]:
    """:func:`bad_request` and the fault in the request's bytes (None: none, or no request).  The
    fault is the problem the 400 names (the parser refuses bytes before grammar), except after a
    framing error (``framing``), which says why the connection closes."""
    fields, fault = _loose_request(data)
    if fields is None:
        return None, fault
    return _echo(fields, 400, "Bad Request", problem if framing else fault or problem, peer, transport), fault


#: a byte no header line may hold: a control character but HTAB (RFC 3261 §25.1 TEXT-UTF8char, LWS);
#: (CR is only allowed before LF, and the lines are split there)
_BAD_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _byte_fault(raw: bytes) -> str | None:
    """What is wrong with the bytes of one line of a header section, in words without the bytes
    themselves (a log line or a reason phrase may carry it): a NUL, a bare CR, another control
    character, or bytes that are not UTF-8 (§7.3.1: TEXT-UTF8); None when there is nothing."""
    m = _BAD_BYTE.search(raw)
    if m is not None:
        b = raw[m.start()]
        return "a NUL byte" if b == 0 else "a bare CR" if b == 13 else f"a control character (0x{b:02x})"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"bytes that are not UTF-8 (0x{raw[exc.start]:02x} at column {exc.start + 1})"
    return None


def _loose_request(data: bytes) -> tuple[dict[str, list[str]] | None, str | None]:
    """The fields an answer to the request ``data``, which did not parse, copies (RFC 3261
    §8.2.6.2: every Via, From, To, Call-ID, CSeq), read line by line without the grammar, and
    the first fault in its bytes (:func:`_byte_fault`) with where it is, e.g. ``a NUL byte in the
    Call-ID header field``.

    ``(None, None)``: no request (garbage, a response), an ACK (never answered, §17.1.1.3), or a
    header section above 64 KiB.  ``(None, fault)``: a request whose fault is in a field the
    answer must copy.  Such a field cannot be copied (a NUL or bytes that are not UTF-8 have no
    place in a message we send, §7.3.1, §25.1; a Call-ID is ``word [ "@" word ]``, ASCII,
    §25.1), and an answer with another value in its place would break §8.2.6.2 (its From,
    Call-ID, CSeq and Via values MUST equal the request's, and Call-IDs compare byte by byte,
    §8.1.1.4): no answer can be formed, so none is sent (the peer's INVITE transaction ends by
    its timer, §17.1.1.2).  Else ``(fields, fault or None)``; a fault elsewhere (another header
    field, the Request-URI) leaves the answer possible: §8.2 / §21.4.1, ``400 Bad Request``."""
    head = data.lstrip(b"\r\n")
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = head.find(sep)
        if end >= 0:
            head = head[:end]
    if head[-1:] == b"\r":  # (a CR before a bare-LF empty line ends the last line, as in parse_message)
        head = head[:-1]
    if len(head) > 65536:
        return None, None
    lines = re.split(rb"\r?\n", head)
    fault = _byte_fault(lines[0])
    start = lines[0].decode("utf-8" if fault is None else "latin-1")  # (latin-1: only to see whether it is a request)
    m = _LOOSE_REQUEST_LINE.fullmatch(start)
    if m is None or m.group(1).upper() == "ACK" or start[:4].upper() == "SIP/":
        return None, None
    if fault is not None:
        fault += " in the request line"
    fields: dict[str, list[str]] = {}
    name: str | None = None  # the field the line belongs to (None: no field line)
    for number, raw in enumerate(lines[1:], 2):
        bad = _byte_fault(raw)
        line = raw.decode("utf-8" if bad is None else "latin-1")  # (latin-1: only for the field name, a token: ASCII)
        folded = line[:1] in (" ", "\t")
        if not folded:  # a new field; a folded line continues the one before (§7.3.1)
            f = _LOOSE_FIELD.fullmatch(line)
            name = _field_name(f.group(1)) if f else None
        if bad is not None:
            where = f"the {name} header field" if name else f"line {number} of the header section"
            if name in _NEEDED:
                return None, f"{bad} in {where}, which an answer must copy (RFC 3261 §8.2.6.2)"
            fault = fault or f"{bad} in {where}"
        elif name in _NEEDED:
            if folded:
                fields[name][-1] += " " + line.strip(" \t")
            else:
                fields.setdefault(name, []).append(f.group(2))  # type: ignore[union-attr]
    if any(not fields.get(n) or not all(fields[n]) for n in _NEEDED):
        return None, fault
    return fields, fault


#: the fields an answer copies from its request (RFC 3261 §8.2.6.2)
_NEEDED = ("Via", "From", "To", "Call-ID", "CSeq")


def _field_name(name: str) -> str:
    """The name of a header field as the messages here write it: Via, From, To, Call-ID and CSeq
    in their spelling (from any case or compact form, §7.3.3), another in its long form when
    compact, else as received (a token: printable ASCII; cut to 60 characters)."""
    key = name.lower()
    return _ECHOED.get(key) or sip.COMPACT_FORMS.get(key) or name[:60]


def _echo(fields: dict[str, list[str]], status: int, reason: str, problem: str, peer: tuple[str, int] | None,
          transport: str) -> bytes:
    """``<status> <reason> (<problem>)`` with the fields of :func:`_loose_request` (received/rport
    on the top Via over UDP, a To tag added)."""
    vias = fields["Via"]
    if peer is not None and transport == "UDP":
        try:  # a Via that does not split (an unterminated quote) is echoed as received
            first = sip.split_comma_list(vias[0])[0] if "," in vias[0] else vias[0]
            via = sip.parse_via(first)
            stamped = _stamp_via(first, peer, received=via.host.strip("[]") != peer[0], rport="rport" in via.params)
            vias = [vias[0].replace(first, stamped, 1)] + vias[1:]
        except (sip.SipParseError, ValueError):
            pass
    to = fields["To"][0]
    if _TAG.search(to) is None:
        to += f";tag={secrets.token_hex(8)}"
    detail = " ".join(_UNSAFE.sub(" ", problem).split())
    detail = detail[:1].upper() + detail[1:120]
    out = [f"SIP/2.0 {status} {reason} ({detail})" if detail else f"SIP/2.0 {status} {reason}"]
    out += [f"Via: {v}" for v in vias]
    out += [f"From: {fields['From'][0]}", f"To: {to}", f"Call-ID: {fields['Call-ID'][0]}", f"CSeq: {fields['CSeq'][0]}",
            "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode()


def _peer_text(peer: tuple[str, int] | None) -> str:
    """``address:port`` of a peer for a log line (``[v6]:port``), ``unknown`` without one."""
    if peer is None:
        return "unknown"
    return f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"


class LineLimiter:
    """How many warning lines a peer can cause: at most one per source (address, port) per
    ``every`` seconds, and ``most`` per ``every`` seconds in all, per worker (a flood from spoofed UDP
    sources stays a few lines a second).  Every event is counted in metrics anyway; the lines
    left out are counted here (:meth:`take_quiet`) and said in the next line."""

    __slots__ = ("every", "most", "_seen", "_start", "_lines", "_quiet")

    def __init__(self, every: float = 10.0, most: int = 100):
        self.every = every
        self.most = most
        self._seen: dict[Any, float] = {}  # source -> time.monotonic() of its last line
        self._start = -every  # the window of ``most`` lines
        self._lines = 0
        self._quiet = 0

    def allow(self, source: Any) -> bool:
        """Whether an event from ``source`` may be logged now (else it is counted as not logged)."""
        now = time.monotonic()
        if now - self._start >= self.every:
            self._start, self._lines = now, 0
        last = self._seen.get(source)
        if (last is not None and now - last < self.every) or self._lines >= self.most:
            self._quiet += 1
            return False
        if len(self._seen) >= 4096:  # bounded: forgetting a source only lets it log once more
            self._seen.clear()
        self._seen[source] = now
        self._lines += 1
        return True

    def take_quiet(self) -> int:
        """Events not logged since the last call."""
        n, self._quiet = self._quiet, 0
        return n


class _TooLarge(Exception):
    """An answer above its request's :func:`answer_cap`, raised by :meth:`SipService._reply` before
    the answer is counted or recorded (rare; Python's exceptions cost nothing until raised)."""

    def __init__(self, size: int):
        super().__init__(size)
        self.size = size


class TransactionCache:
    """Server transactions: key → final response bytes, bounded in size and time (RFC 3261 §17.2).

    Entries live ``ttl`` seconds (64·T1 = 32 s for INVITE) or until ``size`` newer ones push them
    out; insertion order equals expiry order, so eviction pops from the front.
    """

    __slots__ = ("ttl", "size", "_d", "hits", "misses")

    def __init__(self, ttl: float = 32.0, size: int = 65536):
        self.ttl = ttl
        self.size = size
        self._d: dict[Any, tuple[float, bytes]] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: Any, now: float) -> bytes | None:
        e = self._d.get(key)
        if e is None or e[0] < now:
            self.misses += 1
            return None
        self.hits += 1
        return e[1]

    def put(self, key: Any, value: bytes, now: float) -> None:
        d = self._d
        if key in d:
            del d[key]
        d[key] = (now + self.ttl, value)
        if len(d) > self.size:
            del d[next(iter(d))]
        # expire a few old entries per insertion (amortised)
        for _ in range(2):
            first = next(iter(d))
            if d[first][0] < now:
                del d[first]
            else:
                break

    def __len__(self) -> int:
        return len(self._d)


@functools.lru_cache(maxsize=1024)
def _date_seconds(value: str) -> float | None:
    """The Unix time (s) a Date header value names (RFC 3261 §20.17 SIP-date), or None when it is
    not one.  Memoised per worker: a Date names a second, which the INVITEs of that second share
    (``parsedate_to_datetime`` is 3.3 µs per verification INVITE, issue 11 item 9)."""
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _first(value: str | None) -> str | None:
    if not value:
        return None
    if "," in value:
        parts = sip.split_comma_list(value)
        return parts[0] if parts else None
    return value


class SipService:
    """The request logic shared by the UDP and TCP transports of one address.

    ``role`` is ``"signing"`` or ``"verification"``.  :meth:`handle` returns the response bytes,
    ``None`` (nothing to send) or an awaitable of either (verification may fetch certificates).
    """

    def __init__(
        self,
        role: str,
        *,
        metrics: Metrics,
        signing: SigningService | None = None,
        verifier: Any | None = None,
        vcfg: VerificationConfig | None = None,
        call_info: Callable[..., Any] | None = None,
        ttl: float = 32.0,
        cache_size: int = 65536,
        dno_check: Callable[[Any], Any] | None = None,
        records: Any | None = None,
    ):
        self.role = role
        self.records = records  # serve.records.Records: one record per INVITE answered (not retransmissions)
        self._signed_answer: bytes | None = None  # the last signed 302, recorded by _sign itself
        self._call_tn: Callable[[str | None], str | None] | None = None  # the verifier's TN of a From/PAI/To (for records)
        if role == "verification":
            from stirshaken.vs.verifier import call_tn

            self._call_tn = call_tn
        self.metrics = metrics
        self.signing = signing
        self.verifier = verifier
        self.vcfg = vcfg or VerificationConfig()
        self.call_info = call_info
        self.cache = TransactionCache(ttl, cache_size)
        self.dno_check = dno_check  # verification: (call) -> None or (reject code or None, header) for a DNO caller ID
        scfg = signing.cfg if signing else SigningConfig()  # no signer: the [signing] defaults (unused)
        self.attest_header = scfg.attest_header
        self.tenant_header = scfg.tenant_header
        self.customer_header = scfg.customer_header
        self.origid_header = scfg.origid_header
        self.use_pai = scfg.use_pai
        self.max_iat_skew = scfg.max_iat_skew
        self.div_passport = scfg.div_passport
        self._date_cache: tuple[int, str] = (-1, "")
        self._dialplan = {"country_code": scfg.country_code, "national_length": scfg.national_length}
        self._svc = (("service", role),)
        self._ack_labels = (("service", role), ("method", "ACK"))
        # the label tuples of the per-request counters, made once per worker (methods: bounded)
        self._method_labels = LabelSets(lambda m: (("service", role), ("method", m if m in _KNOWN_METHODS or m in ALLOW else "other")), 64)
        self._status_labels = LabelSets(lambda status: (("service", role), ("status", str(status))))
        self._verified_labels = LabelSets(lambda k: (("interface", "sip"), ("verstat", k[0]), ("reason_code", str(k[1] or 0)), ("attest", k[2] or "-")), 256)
        self._signed_labels = LabelSets(lambda k: (("interface", "sip"), ("tenant", k[0]), ("attest", k[1])))
        self._random_ids = OrigidPool()  # To tags of our answers (_to_tag)
        #: the largest message a TCP peer is expected to take (``sip_max_message``; set by :func:`start_sip`)
        self.max_message = 65536
        # the answer_cap and transport of the request being answered (set per request by handle_general;
        # _reply compares each answer with the cap, _too_large says why it did not fit)
        self._cap = UDP_MAX
        self._transport = "UDP"
        self._oversize_count = 0  # answers replaced since the last warning line
        self._oversize_logged = -10.0  # time.monotonic() of that line
        self._refused_lines = LineLimiter()  # warning lines of requests refused for their bytes (unparsable)

    # --- entry ------------------------------------------------------------------------------------

    def handle(self, data: bytes, peer: tuple[str, int] | None, transport: str) -> bytes | None | Awaitable[bytes | None]:
        """Process one message; never raises.

        An ACK is never answered (RFC 3261 §17.2.1: it ends our non-2xx INVITE transaction, and a
        malformed ACK gets no 400 either, §8.2.6/:func:`bad_request`), so a datagram that starts
        with ``ACK `` is counted and dropped without being parsed: the general branch below would
        parse it only to return None.  Measured: parsing the ACK of each 302 was about 15 µs of
        the ~75 µs our SIP signing spends per call (issue 12 item 6).  The one difference is the
        counter a malformed ACK lands in (``requests_total{method="ACK"}`` instead of
        ``sip_parse_errors_total``); ``tests/test_sip_service.py`` property-tests the rest."""
        if data[:4] == b"ACK ":
            self.metrics.inc("stirshaken_sip_requests_total", self._ack_labels)
            return None
        return self.handle_general(data, peer, transport)

    def handle_general(self, data: bytes, peer: tuple[str, int] | None, transport: str) -> bytes | None | Awaitable[bytes | None]:
        """:meth:`handle` without its ACK fast path: parse, then answer per method; never raises."""
        try:
            try:
                msg = sip.parse_message(data)
            except (sip.SipParseError, ValueError, TypeError) as exc:
                return self.unparsable(data, str(exc), peer, transport)
            if isinstance(msg, sip.SipResponse):
                return None  # a stray response: no client transactions here
            # (computed here instead of by the transports after the answer, so that the answer is
            # checked before an INVITE's record is written: _reply)
            self._cap = answer_cap(len(data), transport, self.max_message)
            self._transport = transport
            return self._request(msg, peer, transport)
        except Exception:  # noqa: BLE001 - a peer must never crash the service
            log.exception("error handling SIP message", extra={"peer": str(peer)})
            return None

    def unparsable(self, data: bytes, problem: str, peer: tuple[str, int] | None, transport: str, *,
                   framing: bool = False) -> bytes | None:
        """Count a message that failed to parse; answer it with 400 when it is a request with the
        fields to answer (:func:`bad_request`), else drop it.

        A request refused for its bytes (a NUL or another control character, bytes that are not
        UTF-8: :func:`_loose_request`) is one WARNING line naming the peer and where the bytes are
        (:class:`LineLimiter`: one per source per 10 s, 100 per 10 s in all per worker; ``not_logged_before``
        counts those refused without a line since the previous one),
        whether it is answered (``400 Bad Request (<the fault>)``) or cannot be (the fault is in a
        field the answer must copy).  The bytes themselves are never written, and such a request
        is not recorded (no INVITE was understood, and its Call-ID may be the bad field)."""
        self.metrics.inc("stirshaken_sip_parse_errors_total", self._svc)
        r, fault = _bad_request(data, problem, peer, transport, framing=framing) if isinstance(data, (bytes, bytearray)) else (None, None)
        if r is not None and len(r) > answer_cap(len(data), transport, self.max_message):
            r = None  # (only over TCP, a request within ~150 bytes of sip_max_message: its fields do not fit again)
        if fault is not None:
            if self._refused_lines.allow(peer):
                log.warning("SIP request refused for its bytes", extra={
                    "service": self.role, "peer": _peer_text(peer), "transport": transport, "problem": fault,
                    "answer": "400 Bad Request" if r is not None else "none", "not_logged_before": self._refused_lines.take_quiet()})
        else:
            log.debug("unparsable SIP message", extra={"peer": str(peer), "error": problem[:200], "answered": r is not None})
        if r is not None:
            self.metrics.inc("stirshaken_sip_responses_total", (("service", self.role), ("status", "400")))
        return r

    def _request(self, req: sip.SipRequest, peer: tuple[str, int] | None, transport: str) -> bytes | None | Awaitable[bytes | None]:
        method = req.method
        self.metrics.inc("stirshaken_sip_requests_total", self._method_labels(method))
        if method == "ACK":
            return None  # RFC 3261 §17.2.1: ACK for our non-2xx final response ends the transaction
        now = time.monotonic()
        key = req.transaction_key()
        cached = self.cache.get(key, now)
        if cached is not None:
            if cached is _PENDING:
                return None  # still being answered (verification in flight)
            self.metrics.inc("stirshaken_sip_retransmissions_total", self._svc)
            return cached
        if peer is not None and transport == "UDP":
            req = self._fix_via(req, peer)
        try:
            if method == "INVITE":
                r = self._invite(req, peer)  # (handles _TooLarge itself: its record)
            elif method == "OPTIONS":
                r = self._reply(req, 200, "OK", [("Allow", ALLOW), ("Accept", "application/sdp")])
            elif method == "CANCEL":
                inv = (key[0], key[1], "INVITE")
                r = self._reply(req, 200, "OK") if self.cache.get(inv, now) is not None else self._reply(req, 481, "Call/Transaction Does Not Exist")
            elif method == "BYE":
                r = self._reply(req, 481, "Call/Transaction Does Not Exist")
            elif method in _KNOWN_METHODS:
                r = self._reply(req, 405, "Method Not Allowed", [("Allow", ALLOW)])
            else:
                r = self._reply(req, 501, "Not Implemented", [("Allow", ALLOW)])
        except _TooLarge as exc:  # (no cost unless raised)
            r = self._too_large(req, exc.size)[0]
        if isinstance(r, bytes):
            self.cache.put(key, r, now)
            return r
        if r is None:
            return None  # not even a short error answer fits (_too_large): nothing to send, nothing to repeat
        self.cache.put(key, _PENDING, now)
        return self._finish(key, r)

    async def _finish(self, key: Any, aw: Awaitable[bytes | None]) -> bytes | None:
        try:
            r = await aw
        except Exception:  # noqa: BLE001
            log.exception("verification failed internally")
            r = None
        if r is None:
            self.cache._d.pop(key, None)
            return None
        self.cache.put(key, r, time.monotonic())
        return r

    # --- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _fix_via(req: sip.SipRequest, peer: tuple[str, int]) -> sip.SipRequest:
        """RFC 3261 §18.2.1 ``received`` and RFC 3581 ``rport`` on the top Via, when needed."""
        via = req.top_via
        host = via.host.strip("[]")
        needs_received = host != peer[0]
        has_rport = "rport" in via.params
        if not needs_received and not has_rport:
            return req
        fields = req.headers.get_fields("Via")
        first = fields[0]
        rest = ""
        if "," in first:
            parts = sip.split_comma_list(first)
            first, rest = parts[0], ", ".join(parts[1:])
        first = _stamp_via(first, peer, received=needs_received, rport=has_rport)
        new_first = first + (", " + rest if rest else "")
        items = []
        done = False
        for k, v in req.headers.items():
            if not done and k.lower() == "via":
                items.append((k, new_first))
                done = True
            else:
                items.append((k, v))
        return sip.SipRequest(req.method, req.request_uri, req.version, sip.Headers(items), req.body)

    def _http_date(self, when: int) -> str:
        """RFC 3261 §20.17 SIP-date (RFC 1123 form, GMT) of ``when``; one formatting per second."""
        cached = self._date_cache
        if cached[0] != when:
            cached = self._date_cache = (when, email.utils.formatdate(when, usegmt=True))
        return cached[1]

    def _reply(self, req: sip.SipRequest, status: int, reason: str, extra: list[tuple[str, str]] | None = None, *,
               from_value: str | None = None) -> bytes:
        """The answer ``status`` to ``req``, counted; raises :class:`_TooLarge` (uncounted) when it
        exceeds the :func:`answer_cap` of the request being answered (``_cap``), so that the
        INVITE's record is written with what is sent instead (:meth:`_too_large`)."""
        tag = self._to_tag() if status > 100 and req.to_addr.tag is None else None
        if from_value is not None:
            try:
                r = sip.build_response(req, status, reason, to_tag=tag, extra_headers=extra or (), from_value=from_value)
            except ValueError:  # a From that cannot be written as it is: the request's (as before verstat)
                r = sip.build_response(req, status, reason, to_tag=tag, extra_headers=extra or ())
        else:
            r = sip.build_response(req, status, reason, to_tag=tag, extra_headers=extra or ())
        if len(r) > self._cap:
            raise _TooLarge(len(r))
        self.metrics.inc("stirshaken_sip_responses_total", self._status_labels(status))
        return r

    def _too_large(self, req: sip.SipRequest, size: int) -> tuple[bytes | None, int | None, str]:
        """``(answer, its status, why)`` in place of an answer of ``size`` bytes above the request's
        :func:`answer_cap`: ``513 Message Too Large`` when the request came over UDP above
        :data:`UDP_ANSWER_FLOOR` bytes (RFC 3261 §21.5.7; §18.1.1: such a request belongs on a
        congestion-controlled transport, where the peer may retry), else ``500 Server Internal
        Error`` naming the problem (§21.5.1); ``(None, None, why)`` when even that does not fit.
        Counted in ``stirshaken_sip_oversize_answers_total`` and logged at most every 10 s.

        Decided here, where the answer is built, and not after it left the service: an INVITE's
        record is written with the answer, so it could only say the status that was replaced
        (the check replaces the transports' own, which ran after the record)."""
        cap, transport = self._cap, self._transport
        self.metrics.inc("stirshaken_sip_oversize_answers_total", self._svc)
        self._oversize_count += 1
        now = time.monotonic()
        if now - self._oversize_logged >= 10.0:
            log.warning("SIP answers too large for their transport replaced", extra={
                "service": self.role, "count": self._oversize_count, "answer_bytes": size, "cap": cap, "transport": transport})
            self._oversize_count = 0
            self._oversize_logged = now
        problem = f"answer of {size} bytes exceeds {cap} bytes over {transport}"
        # over UDP the cap is twice the request when that is above the floor: cap > 2 floors <=> request > floor
        if transport == "UDP" and cap > 2 * UDP_ANSWER_FLOOR:
            status, phrase, ref = 513, "Message Too Large", " (RFC 3261 §21.5.7)"
        else:
            status, phrase, ref = 500, "Server Internal Error", ""
        try:
            return self._reply(req, status, f"{phrase} ({problem[:1].upper()}{problem[1:]})"), status, f"{problem}: replaced by {status} {phrase}{ref}"
        except _TooLarge:
            return None, None, f"{problem}: not answered (even a {status} does not fit)"

    def _too_large_invite(self, req: sip.SipRequest, size: int, t0: float) -> bytes | None:
        """:meth:`_too_large` for an INVITE, and its record: the status sent (or none) and why."""
        r, status, why = self._too_large(req, size)
        if self.records is not None:
            self.records.add({"interface": "sip", "service": self.role, "call_id": req.call_id, "status": status, "code": None,
                              "reason": why, "latency": time.perf_counter() - t0})
        return r

    def _to_tag(self) -> str:
        """A new To tag for an answer (RFC 3261 §8.2.6.2, §19.3: at least 32 random bits): 16 hex
        digits (60 random bits) of a version-4 UUID from the service's pool, which draws 256 at a
        time from one ``os.urandom`` call.  Measured (py-spy, SIP verification at 3,500 calls/s,
        2026-11-29): ``secrets.token_hex`` per answer, one ``getrandom`` system call each, was
        1.3 % of the worker's time."""
        return self._random_ids().replace("-", "")[:16]

    def _tn_of_uri(self, uri: str) -> str | None:
        try:
            user = sip.uri_user(uri)
        except (sip.SipParseError, ValueError):
            return None
        if not user:
            return None
        try:
            return canonicalize_tn(user, **self._dialplan)  # type: ignore[arg-type]
        except TNError:
            return None

    def _precheck(self, req: sip.SipRequest) -> tuple[int, str, list[tuple[str, str]]] | None:
        """The answer to an INVITE refused before signing or verification: (status, reason, headers)."""
        scheme = req.request_uri.partition(":")[0].lower()
        if scheme not in ("sip", "sips", "tel"):
            return 416, "Unsupported URI Scheme", []
        mf = req.headers.get("Max-Forwards")
        if mf is not None and mf.strip() == "0":
            return 483, "Too Many Hops", []
        require = req.headers.get("Require")
        if require:
            return 420, "Bad Extension", [("Unsupported", require)]
        return None

    def _refuse(self, req: sip.SipRequest, t0: float, status: int, reason: str, extra: list[tuple[str, str]] | None = None, *,
                code: int | None = None, text: str | None = None, **record: Any) -> bytes:
        """Answer an INVITE with ``status`` without a signature or verdict, and record it
        (``code``/``text``: the SIP reason code and specific cause of the record; ``record``: the
        fields known so far)."""
        r = self._reply(req, status, reason, extra)  # first: it may not fit (_TooLarge)
        if self.records is not None:
            self.records.add({"interface": "sip", "service": self.role, "call_id": req.call_id, "status": status, "code": code,
                              "reason": text or reason, "latency": time.perf_counter() - t0, **record})
        return r

    # --- INVITE -----------------------------------------------------------------------------------

    def _invite(self, req: sip.SipRequest, peer: tuple[str, int] | None) -> bytes | None | Awaitable[bytes | None]:
        t0 = time.perf_counter()
        try:
            bad = self._precheck(req)
            if bad is not None:
                return self._refuse(req, t0, *bad)
            if self.role == "signing":
                r = self._sign(req, peer, t0)
                if self.records is not None and r is not self._signed_answer:
                    self._record_signing_answer(req, r, t0)
                return r
            return self._verify(req, t0)
        except _TooLarge as exc:  # (no cost unless raised) nothing recorded yet: the record says what is sent instead
            return self._too_large_invite(req, exc.size, t0)

    def _record_signing_answer(self, req: sip.SipRequest, answer: bytes, t0: float) -> None:
        """The record of a signing-address answer that carries no new SHAKEN signature (a refusal,
        an unsigned or a div 302): its status and reason phrase, and the X-Identity-Result or
        Warning text that says why."""
        head = answer.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        status_line = head[0].split(" ", 2)
        why = None
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() in ("x-identity-result", "warning", "reason"):
                why = value.strip()
                break
        status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
        assert self.records is not None
        self.records.add({"interface": "sip", "service": "signing", "call_id": req.call_id, "status": status,
                          "code": status if status >= 400 else None, "reason": why or (status_line[2] if len(status_line) > 2 else None),
                          "latency": time.perf_counter() - t0})

    def _not_tn(self, what: str, uri: str | None) -> str:
        """Why the ``what`` party (its URI) gives no telephone number, in one phrase."""
        user = sip.uri_user(uri) if uri else None
        if not user:
            return f"the {what} has no telephone number"
        try:
            canonicalize_tn(user, **self._dialplan)  # type: ignore[arg-type]
        except TNError as exc:
            return f"the {what}: {exc}"
        return f"the {what} is not a telephone number"  # pragma: no cover - only called after a failure

    def _iat(self, req: sip.SipRequest) -> tuple[int, str | None] | bytes:
        """``(iat, Date to add or None)`` for a signature now, or the error answer (RFC 8224 §6.1).

        Step 3: the signer adds a Date when the request has none (and the 302 carries it, so the
        forwarded INVITE has the Date its iat names, §4.1); a Date off the clock by more than the
        freshness window is refused (403 Stale Date), never re-stamped."""
        date = req.headers.get("Date")
        if date:
            d = _date_seconds(date)
            if d is None:
                why = "the Date header is not an RFC 3261 SIP-date"
                return self._reply(req, 400, "Bad Date Header", [("Reason", f'SIP;cause=400;text="{why}"')])
            skew = d - time.time()
            if abs(skew) > self.max_iat_skew:
                text = f"the Date header is {abs(int(skew))} s {'ahead of' if skew > 0 else 'behind'} the signer's clock (max {self.max_iat_skew} s)"
                return self._reply(req, 403, "Stale Date", [("Reason", f'SIP;cause=403;text="{text}"')])
            return int(d), None  # RFC 8224 §4.1: iat corresponds to the Date header
        iat = int(time.time())
        return iat, self._http_date(iat)

    def _bad_input(self, req: sip.SipRequest, problem: str) -> bytes:
        """``400 Bad Request (<problem>)`` for a signing input this project's verifier would
        refuse (RFC 3261 §21.4.1: the reason phrase names the problem)."""
        detail = " ".join(_UNSAFE.sub(" ", problem).split())[:120]
        return self._reply(req, 400, f"Bad Request ({detail})", [("Warning", f'399 stirshaken "{header_text(problem, 100)}"')])

    def _national(self, tns: tuple[tuple[str, str | None], ...]) -> list[tuple[str, str]]:
        """``Warning: 399`` headers for numbers signed as given that look national (no
        ``country_code``; also logged, :meth:`SigningService.note_national`)."""
        svc = self.signing
        assert svc is not None
        out = []
        for tn, uri in tns:
            w = svc.national_warning(sip.uri_user(uri) or tn if uri else tn, tn)
            if w is not None:
                svc.note_national("sip", w)
                out.append(("Warning", f'399 stirshaken "{header_text(w, 160)}"'))
        return out

    def _sign(self, req: sip.SipRequest, peer: tuple[str, int] | None, t0: float) -> bytes:
        """STI-AS (RFC 8224 §6.1, ATIS-1000074 §5.2) in the redirect model.  Every answer is
        recorded (:meth:`_record_signing_answer` for the ones that sign nothing)."""
        svc = self.signing
        assert svc is not None
        h = req.headers
        if self.div_passport and "Identity" in h and sip.has_retargeting(h):
            r = self._divert(req)
            if r is not None:
                return r
        pai = _first(h.get("P-Asserted-Identity")) if self.use_pai else None
        # From and To were parsed (and validated) by parse_message: use them, not their text
        orig_uri = _pai_uri(pai) if pai else None
        orig = self._tn_of_uri(orig_uri) if orig_uri else None
        if orig is None:
            orig_uri = req.from_addr.uri
            orig = self._tn_of_uri(orig_uri)
        dest_uri = req.to_addr.uri
        dest = self._tn_of_uri(dest_uri)
        if dest is None:
            dest = self._tn_of_uri(req.request_uri)
            if dest is not None:
                dest_uri = req.request_uri
        contact = [("Contact", f"<{req.request_uri}>")]
        if orig is None or dest is None:
            # §6.1 step 1: not a telephone number we can be authoritative for: forward unsigned
            self.metrics.inc("stirshaken_signed_total", (("interface", "sip"), ("tenant", "-"), ("attest", "none")))
            why = self._not_tn("calling party", orig_uri) if orig is None else self._not_tn("called party", dest_uri)
            return self._reply(req, 302, "Moved Temporarily", contact + [("X-Identity-Result", f"not-signed: {header_text(why, 160)}")])
        requested = None
        if self.attest_header:
            requested = (h.get(self.attest_header) or "").strip().upper() or None
            if requested is not None and requested not in ATTEST:
                try:
                    svc.attest_input(requested, self.attest_header)
                except SigningError as exc:
                    return self._bad_input(req, f"{self.attest_header}: {exc.message}")
        origid = h.get(self.origid_header) if self.origid_header else None
        if origid is not None:
            try:
                origid = svc.origid_input(origid.strip(), self.origid_header)
            except SigningError as exc:
                return self._bad_input(req, f"{self.origid_header}: {exc.message}")
        try:
            tenant = svc.tenant_for(orig, h.get(self.tenant_header) if self.tenant_header else None)
        except SigningError as exc:
            return self._unknown_tenant(req, exc)
        try:  # the caller's level, else policy; with an inventory, from it (and never A/B for a DNO number)
            attest = svc.decide(tenant, orig, requested=requested, source_ip=peer[0] if peer else None,
                                customer=h.get(self.customer_header) if self.customer_header else None)
        except DnoRefused:
            return self._reply(req, 403, "Forbidden", [("Reason", 'SIP;cause=403;text="Calling number is on a Do-Not-Originate list"')])
        when = self._iat(req)
        if type(when) is bytes:
            return when
        iat, added_date = when  # type: ignore[misc]
        if origid is None:
            origid = tenant.signer.origids()  # here rather than in the signer: the record names it (its pool: one urandom per 256)
        dests = [dest]
        identity = svc.sign(tenant, orig=orig, dest=dests, attest=attest, iat=iat, origid=origid)
        extra = contact + [("Identity", identity)]
        if added_date is not None:
            extra.append(("Date", added_date))
        if svc.warn_length is not None and (len(orig) == svc.warn_length or len(dest) == svc.warn_length):
            extra += self._national(((orig, orig_uri), (dest, dest_uri)))
        r = self._signed_302(req, identity, extra)  # (raises _TooLarge before anything is counted or recorded)
        self.metrics.inc("stirshaken_signed_total", self._signed_labels((tenant.name, attest)))
        latency = time.perf_counter() - t0
        self.metrics.observe("sip_sign", latency)
        if self.records is not None:
            self.records.add({"interface": "sip", "service": "signing", "call_id": req.call_id, "origid": origid, "orig": orig,
                              "dest": dests, "tenant": tenant.name, "attest": attest, "x5u": tenant.config.x5u, "verstat": None,
                              "status": 302, "code": None, "reason": None, "spc": tenant.spc, "serial": tenant.serial, "latency": latency})
            self._signed_answer = r
        return r

    def _unknown_tenant(self, req: sip.SipRequest, exc: SigningError) -> bytes:
        # the reason phrase and an RFC 3326 Reason say which tenant problem it is (RFC 3261 §21.4.4)
        return self._reply(req, 403, "Forbidden (unknown tenant)", [("Warning", f'399 stirshaken "{header_text(exc.message, 100)}"'),
                                                                   ("Reason", f'SIP;cause=403;text="{header_text(exc.message)}"')])

    def _divert(self, req: sip.SipRequest) -> bytes | None:
        """RFC 8946 §3 at the signing address: the call already carries a SHAKEN PASSporT and names
        the target it was diverted from, so the retargeting entity adds a ``div`` PASSporT (orig
        copied from the SHAKEN one, dest the new target = Request-URI, div the previous target as
        written in the PASSporT that named it) and the 302 carries the new one first, then every
        Identity header of the INVITE unchanged.  ``None``: no usable SHAKEN PASSporT or no diverted-from
        target, so the call is signed as a new one.  The received PASSporTs are decoded, not
        verified (that is the STI-VS's job downstream)."""
        svc = self.signing
        assert svc is not None
        h = req.headers
        prev_uri = sip.diverted_from(h)
        if prev_uri is None:
            return None
        try:
            fields = h.get_all("Identity")
        except sip.SipParseError:
            fields = h.get_fields("Identity")
        shaken = None
        dests: dict[str, str] = {}  # canonical TN -> as written, of every received PASSporT's dest
        for value in fields:
            try:
                p = parse_jws(parse_identity(value).token)
                check_header(p, ppt=None)
                check_claims(p)
            except StirShakenError:
                continue
            if p.ppt == "shaken" and shaken is None:
                shaken = p
            if p.ppt in ("shaken", "div"):
                for d in p.dest_tns:
                    try:
                        dests.setdefault(canonicalize_tn(d), d)
                    except TNError:
                        pass
        if shaken is None or shaken.orig_tn is None:
            return None
        contact = [("Contact", f"<{req.request_uri}>")]
        keep = contact + [("Identity", v) for v in fields]

        def no_div(why: str, tenant: str = "-") -> bytes:
            self.metrics.inc("stirshaken_div_total", (("interface", "sip"), ("tenant", tenant), ("result", "not-signed")))
            return self._reply(req, 302, "Moved Temporarily", keep + [("X-Identity-Result", f"no-div: {header_text(why, 160)}")])

        prev = self._tn_of_uri(prev_uri)
        if prev is None:
            return no_div(self._not_tn("diverted-from target", prev_uri))
        target = self._tn_of_uri(req.request_uri)
        if target is None:
            return no_div(self._not_tn("new target (Request-URI)", req.request_uri))
        if prev not in dests:
            return no_div(f"the call was diverted from {prev}, which is not a destination of its PASSporTs"
                          f" ({', '.join(sorted(dests)) or 'none'}; RFC 8946 §3)")
        if target == prev:
            return no_div(f"the destination {target} did not change (RFC 8946 §3: no div PASSporT)")
        try:
            tenant = svc.tenant_for(prev, h.get(self.tenant_header) if self.tenant_header else None, what="diverted-from number")
        except SigningError as exc:
            return self._unknown_tenant(req, exc)
        when = self._iat(req)
        if type(when) is bytes:
            return when
        iat, added_date = when  # type: ignore[misc]
        try:
            identity = svc.sign_div(tenant, orig=shaken.orig_tn, dest=[target], div=dests[prev], iat=iat)
        except SigningError as exc:
            return no_div(exc.message, tenant.name)
        self.metrics.inc("stirshaken_div_total", (("interface", "sip"), ("tenant", tenant.name), ("result", "signed")))
        # the new header first: a proxy that copies the first Identity of the 302 into the INVITE
        # (which keeps its own) forwards [original..., div] (docs/sip-integration.md)
        extra = contact + [("Identity", identity)] + keep[1:]
        if added_date is not None:
            extra.append(("Date", added_date))
        return self._signed_302(req, identity, extra)

    def _signed_302(self, req: sip.SipRequest, identity: str, extra: list[tuple[str, str]]) -> bytes:
        """The 302 carrying the new ``identity`` (among the headers ``extra``).  The Identity is
        what this answer exists to carry, its size bounded by the configuration (the x5u): over
        UDP it is allowed on top of the reflection limit (:func:`answer_cap`), else an x5u of ~300
        characters made the 302 to every usual INVITE exceed 1,300 bytes (a 500).  Raises
        :class:`_TooLarge` as :meth:`_reply` does."""
        cap = self._cap
        if self._transport == "UDP":
            self._cap = min(UDP_MAX, cap + len(identity))
        try:
            return self._reply(req, 302, "Moved Temporarily", extra)
        finally:
            self._cap = cap

    def _verify(self, req: sip.SipRequest, t0: float, *, wait: bool = False) -> bytes | Awaitable[bytes | None]:
        """STI-VS (RFC 8224 §6.2, ATIS-1000074 §5.3) in the redirect model.

        The answer is bytes at once when the verifier has the result without waiting
        (:meth:`~stirshaken.vs.verifier.Verifier.begin`: certificate in memory, replay detection
        decided by this node's table, no I/O), else a coroutine that awaits the rest of that
        verification (with ``wait``, the general branch: it awaits ``averify``).
        Measured (issue 11 item 9, callgrind): the coroutine, its task and done-callback in the UDP
        transport were ~57,000 instructions (~6 µs) of a warm verification INVITE's ~1.4 million;
        ``tests/test_sip_service.py`` property-tests that both branches give the same answer."""
        h = req.headers
        try:
            identities = h.get_all("Identity")
        except sip.SipParseError:
            identities = h.get_fields("Identity")
        date = None
        dv = h.get("Date")
        if dv:
            date = _date_seconds(dv)
            if date is None:
                return self._refuse(req, t0, 400, "Bad Date Header", text="the Date header is not an RFC 3261 SIP-date")
        pai = _first(h.get("P-Asserted-Identity")) if self.vcfg.use_pai else None
        assert self.call_info is not None and self.verifier is not None
        # the dialog (Call-ID, From tag) tells a retransmission, a re-INVITE or a repeated header
        # from a replay in another call (stirshaken.vs.replay), on whichever worker or node
        call = self.call_info(identities=identities, from_=h.get("From"), pai=pai, to=h.get("To"), ruri=req.request_uri, date=date,
                              call_id=req.call_id, from_tag=req.from_addr.tag)
        if wait:
            return self._verified(req, call, pai, bool(identities), t0, self.verifier.averify(call), (self._cap, self._transport))
        started = self.verifier.begin(call)
        if isinstance(started, VerificationResult):
            return self._answer_verified(req, call, pai, bool(identities), t0, started)
        return self._verified(req, call, pai, bool(identities), t0, started, (self._cap, self._transport))

    def _record_verification(self, req: sip.SipRequest, call: Any, result: Any, verstat: str, status: int, t0: float,
                             code: int | None, reason: str | None) -> None:
        """The record of a verified INVITE answered with ``status``."""
        origid, x5u, spc, serial = verification_fields(result)
        call_tn = self._call_tn
        assert call_tn is not None and self.records is not None

        def tn(value: str | None) -> str | None:  # the record holds canonical TNs only (not a header's text)
            t = call_tn(value)
            try:
                return canonicalize_tn(t) if t else None  # (call_tn gives the text back when it is no TN)
            except TNError:
                return None

        to = tn(call.to) or tn(call.ruri)
        self.records.add({"interface": "sip", "service": "verification", "call_id": req.call_id, "origid": origid,
                          "orig": tn(call.pai or call.from_), "dest": [to] if to else None, "tenant": None, "attest": result.attest,
                          "x5u": x5u, "verstat": verstat, "status": status, "code": code, "reason": reason, "spc": spc, "serial": serial,
                          "latency": time.perf_counter() - t0})

    async def _verified(self, req: sip.SipRequest, call: Any, pai: str | None, had_identity: bool, t0: float,
                        pending: Awaitable[Any], limit: tuple[int, str]) -> bytes | None:
        """The answer once ``pending`` (the verification) is done.  ``limit``: the ``_cap`` and
        ``_transport`` of this request, which other requests have changed meanwhile; set again
        before the answer is built (synchronously, so no other request runs in between)."""
        try:
            result = await pending
        except Exception:  # noqa: BLE001
            log.exception("verifier error")
            result = None
        self._cap, self._transport = limit
        try:
            if result is None:
                return self._refuse(req, t0, 500, "Server Internal Error", text="verifier error")
            return self._answer_verified(req, call, pai, had_identity, t0, result)
        except _TooLarge as exc:
            return self._too_large_invite(req, exc.size, t0)

    def _answer_verified(self, req: sip.SipRequest, call: Any, pai: str | None, had_identity: bool, t0: float, result: Any) -> bytes:
        """The answer to a verified INVITE (302 with verstat, a rejection, a DNO answer), counted and recorded."""
        code = result.sip_code
        if had_identity:
            self.metrics.inc("stirshaken_verified_total", self._verified_labels((result.verstat, code, result.attest)))
        else:
            self.metrics.inc("stirshaken_unsigned_calls_total", (("interface", "sip"),))
        self.metrics.observe("sip_verify", time.perf_counter() - t0)
        reason_hdr = [("Reason", result.reason_header)] if result.reason_header else []
        if code is not None and (result.description or result.reason):  # the specific cause, not only the code's phrase
            reason_hdr.append((REASON_HEADER, header_text(result.description or result.reason or "")))
        warnings = result.warnings
        if warnings:  # a trust problem the result relied on (CRL, CA list; docs/requirements.md VS-10)
            reason_hdr.append((WARNING_HEADER, header_text("; ".join(warnings), 300)))
        dno = self.dno_check(call) if self.dno_check is not None else None
        if dno is not None:  # Do-Not-Originate caller ID: rejected (FCC: 603/607/608) or marked
            if dno[0]:
                r = self._reply(req, dno[0], _DNO_REASONS[dno[0]], [("Reason", f'SIP;cause={dno[0]};text="Do-Not-Originate number"')])
                if self.records is not None:  # (after the answer: it may not fit, _TooLarge)
                    self._record_verification(req, call, result, result.verstat if had_identity else VERSTAT_NONE, dno[0], t0,
                                              dno[0], "Do-Not-Originate number")
                return r
            reason_hdr.append(dno[1])
        reject = code is not None and (self.vcfg.rejects(code) or (code == 428 and self.vcfg.require_identity))
        verstat = result.verstat if had_identity else VERSTAT_NONE
        if reject:
            assert code is not None
            r = self._reply(req, code, SIP_REASONS.get(code, result.reason or "Forbidden"), reason_hdr)
        else:
            extra: list[tuple[str, str]] = [("Contact", f"<{req.request_uri}>")]
            from_value = req.headers.get("From")
            asserted = pai or from_value or ""
            marked: str | None = None  # the asserted identity with verstat (computed once when it is From)
            try:
                marked = sip.header_value_with_param(asserted, "verstat", verstat)
                extra.append(("P-Asserted-Identity", _strip_tag(marked)))
            except (sip.SipParseError, ValueError):
                pass
            new_from = None
            if self.vcfg.verstat_in_from and from_value is not None:
                try:
                    new_from = marked if marked is not None and asserted is from_value else sip.header_value_with_param(from_value, "verstat", verstat)
                except (sip.SipParseError, ValueError):
                    pass
            if result.attest:
                extra.append(("X-Attestation", result.attest))
            r = self._reply(req, 302, "Moved Temporarily", extra + reason_hdr, from_value=new_from)
        if self.records is not None:  # (after the answer: it may not fit, _TooLarge)
            self._record_verification(req, call, result, verstat, code if reject else 302, t0,  # type: ignore[arg-type]
                                      code, (result.description or result.reason) if code is not None else None)
        return r


_DNO_REASONS = {603: "Decline", 607: "Unwanted", 608: "Rejected"}

#: extension header carrying the specific verification failure (e.g. "'orig' claim ... doesn't match")
#: next to the RFC 9410 Reason, whose text is the generic phrase of the code (RFC 8224 §6.2.2)
REASON_HEADER = "X-Verification-Reason"
#: extension header carrying the trust problems a verification relied on (a CRL unavailable or past
#: its nextUpdate, a revocation status unknown: VerificationResult.warnings)
WARNING_HEADER = "X-Verification-Warning"
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def header_text(text: str, limit: int = 200) -> str:
    """``text`` made safe for a SIP header value or a quoted-string in one: control characters
    (CR, LF, tabs...) become one space, ``\\`` and ``"`` are escaped as quoted-pairs (RFC 3261
    §25.1), and it is cut to at most ``limit`` characters (before escaping; ``"..."`` appended)."""
    text = _HEADER_UNSAFE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _strip_tag(value: str) -> str:
    """A PAI value taken from From must not carry From's tag (RFC 3325 §9.1 has no tag)."""
    try:
        na = sip.parse_name_addr(value)
    except sip.SipParseError:
        return value
    if na.tag is None:
        return value
    return value.replace(f";tag={na.tag}", "")


def _pai_uri(value: str) -> str | None:
    """The URI of a P-Asserted-Identity value, or None when it does not parse."""
    try:
        return sip.parse_name_addr(value).uri
    except (sip.SipParseError, ValueError):
        return None


# --- transports -------------------------------------------------------------------------------------

#: an answer over UDP may always be this large (one unfragmented datagram on an Ethernet path)
UDP_ANSWER_FLOOR = 1300
#: the largest UDP payload (IPv4)
UDP_MAX = 65507


def answer_cap(request_size: int, transport: str, max_message: int) -> int:
    """The largest answer sent for a request of ``request_size`` bytes, in bytes.

    Over UDP an answer is a reflection: it may be at most twice its request, or
    :data:`UDP_ANSWER_FLOOR`, whichever is larger (and never more than one UDP datagram); over TCP
    it is bounded by the largest message (``sip_max_message``) a peer is expected to take.  The
    signing address's 302 may carry its new Identity header on top of the UDP limit (its size is
    bounded by the configuration, the x5u above all).
    """
    if transport == "UDP":
        return min(UDP_MAX, max(UDP_ANSWER_FLOOR, 2 * request_size))
    return max_message


class _UDP(asyncio.DatagramProtocol):
    """SIP over UDP on one (possibly shared) socket.

    Responses are sent in batches, one per event-loop iteration (:mod:`stirshaken.serve.batching` says
    why); answers that complete later (verification awaiting a certificate) go through the same
    batch.  Graceful stop (:meth:`shutdown`): new datagrams are left alone, the answers in flight
    are sent, then the transport closes.
    """

    __slots__ = ("service", "transport", "batch", "pending", "closing", "conns")

    def __init__(self, service: SipService, conns: set[Any] | None = None):
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None
        self.batch: LoopBatch[tuple[bytes, tuple[Any, ...]]] | None = None
        self.pending = 0
        self.closing = False
        self.conns = conns if conns is not None else set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.batch = LoopBatch(asyncio.get_running_loop(), self._send_all)
        self.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.batch is not None:
            self.batch.clear()  # the socket is closed: nothing can be sent any more
        self.transport = None
        self.conns.discard(self)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.closing:
            return  # stopping: the peer retransmits (RFC 3261 §17.1.1.2) to whoever serves next
        peer = (addr[0], addr[1])
        r = self.service.handle(data, peer, "UDP")
        if r is None:
            return
        if isinstance(r, bytes):  # (within answer_cap: SipService._reply)
            self._queue(r, addr)
            return
        self.pending += 1
        fut = asyncio.ensure_future(r)
        fut.add_done_callback(lambda f: self._send(f, addr))

    def _send(self, f: asyncio.Future[Any], addr: Any) -> None:
        self.pending -= 1
        if not f.cancelled() and f.exception() is None:
            r = f.result()
            if r:
                self._queue(r, addr)
        if self.closing and self.pending == 0:
            self._close_now()

    def _queue(self, data: bytes | None, addr: tuple[Any, ...]) -> None:
        if data and self.batch is not None:
            self.batch.add((data, addr))

    def flush(self) -> None:
        """Send every queued response now."""
        if self.batch is not None:
            self.batch.flush()

    def shutdown(self) -> None:
        """Graceful stop: answer what is in flight, then close."""
        self.closing = True
        if self.pending == 0:
            self._close_now()

    def _close_now(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()

    def _send_all(self, out: list[tuple[bytes, tuple[Any, ...]]]) -> None:
        """Send each response to the address its request came from."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        sendto = transport.sendto
        for data, addr in out:
            sendto(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nothing to do
        log.debug("udp error", extra={"error": str(exc)})


class _TCP(asyncio.Protocol):
    """SIP over TCP (RFC 3261 §18.3): one framer per connection.

    Bounded per connection (:class:`~stirshaken.serve.limits.ConnectionLimits`): at most
    ``sip_tcp_max_pending`` requests in flight and ``max_connection_buffer`` unsent bytes before
    reading pauses; a message must be complete within ``sip_tcp_message_timeout`` of its first
    byte, a connection without any byte for ``sip_tcp_idle_timeout`` is closed, and so is one whose
    answers are not read for ``send_timeout``.  A framing error answers the messages before it,
    then 400 for the bad one, then closes (the stream cannot be resynchronised).
    """

    __slots__ = ("service", "framer", "transport", "peer", "conns", "guard", "source", "pending", "closing", "read_paused",
                 "write_paused", "last", "msg_start", "send_start")

    def __init__(self, service: SipService, max_message: int, conns: set[Any], guard: ConnectionGuard | None = None):
        self.service = service
        self.framer = sip.StreamFramer(max_message)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.conns = conns
        self.guard = guard or ConnectionGuard(ConnectionLimits(), f"sip_{service.role}")
        self.source: str | None = None
        self.pending = 0
        self.closing = False
        self.read_paused = False
        self.write_paused = False
        self.last = 0.0  # coarse time of the last byte received
        self.msg_start = -1.0  # coarse time the incomplete message began (-1: none)
        self.send_start = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        source = peer_ip(transport)
        if not guard.admit(source):
            transport.abort()  # type: ignore[attr-defined]
            return
        self.transport = transport  # type: ignore[assignment]
        self.source = source
        p = transport.get_extra_info("peername")
        self.peer = (p[0], p[1]) if p else None
        transport.set_write_buffer_limits(high=guard.limits.max_connection_buffer)  # type: ignore[attr-defined]
        self.conns.add(self)
        guard.conns.add(self)
        self.last = guard.now

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None and self.source is None and self.peer is None:
            return  # refused at accept time
        self.conns.discard(self)
        self.guard.conns.discard(self)
        self.guard.release(self.source)
        self.source = None
        self.transport = None

    # --- flow control -----------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True
        self.send_start = self.guard.now
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_reading()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if (self.read_paused and self.transport is not None and not self.closing and not self.write_paused
                and self.pending < self.guard.limits.sip_tcp_max_pending):
            self.read_paused = False
            self.transport.resume_reading()

    def expired(self, now: float) -> str | None:
        """Close the connection when a limit ran out (called by the guard's sweeper)."""
        t = self.transport
        if t is None:
            return None
        lim = self.guard.limits
        if self.write_paused:
            if lim.send_timeout and now - self.send_start > lim.send_timeout:
                t.abort()
                return "send_timeout"
            return None
        if self.pending:
            return None
        if self.msg_start >= 0 and lim.sip_tcp_message_timeout and now - self.msg_start > lim.sip_tcp_message_timeout:
            t.close()
            return "sip_tcp_message_timeout"
        if lim.sip_tcp_idle_timeout and now - self.last > lim.sip_tcp_idle_timeout:
            t.close()
            return "sip_tcp_idle_timeout"
        return None

    # --- input ------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        now = self.last = self.guard.now
        framer = self.framer
        try:
            msgs = framer.feed(data)
        except sip.SipParseError as exc:
            self._framing_error(str(exc))
            return
        if framer.buffered:
            if self.msg_start < 0:
                self.msg_start = now
        else:
            self.msg_start = -1.0
        if framer.pop_pings() and self.transport is not None:
            self.transport.write(b"\r\n")  # RFC 5626 §4.4.1 pong
        for m in msgs:
            r = self.service.handle(m, self.peer, "TCP")
            if r is None:
                continue
            if isinstance(r, bytes):  # (within answer_cap: SipService._reply)
                if self.transport is not None:
                    self.transport.write(r)
            else:
                self.pending += 1
                asyncio.ensure_future(r).add_done_callback(self._send)
        if framer.failed is not None:  # complete messages came first: they are answered above
            self._framing_error(framer.failed)
        elif self.pending >= self.guard.limits.sip_tcp_max_pending:
            self._pause_reading()

    def _framing_error(self, problem: str) -> None:
        """The stream cannot be resynchronised: answer 400 if possible, then close once the
        answers in flight are sent."""
        r = self.service.unparsable(self.framer.pending, problem, self.peer, "TCP", framing=True)
        if r is not None and self.transport is not None:
            self.transport.write(r)
        self.shutdown()

    def _send(self, f: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if not f.cancelled() and f.exception() is None:
            r = f.result()
            if r and self.transport is not None:
                self.transport.write(r)
        if self.closing:
            if self.pending == 0 and self.transport is not None:
                self.transport.close()
        else:
            self._resume_reading()

    def shutdown(self) -> None:
        """Graceful stop: read no more, answer what is in flight, then close."""
        self.closing = True
        self._pause_reading()
        if self.pending == 0 and self.transport is not None:
            self.transport.close()


async def start_sip(
    service: SipService, *, udp_sock: Any, tcp_sock: Any, max_message: int = 65536, backlog: int = 4096,
    limits: ConnectionLimits | None = None,
) -> tuple[list[Any], set[Any]]:
    """Serve ``service`` on an already bound UDP socket and a listening TCP socket.

    Returns the listeners to close first and the set of protocols (UDP endpoint and TCP
    connections) to stop gracefully with their ``shutdown()``.  ``backlog`` is passed on because
    ``create_server`` calls listen(2) again (default 100)."""
    loop = asyncio.get_running_loop()
    closers: list[Any] = []
    conns: set[Any] = set()
    service.max_message = max_message  # answers above it are replaced (SipService._too_large)
    if udp_sock is not None:
        await loop.create_datagram_endpoint(lambda: _UDP(service, conns), sock=udp_sock)
    if tcp_sock is not None:
        guard = ConnectionGuard(limits or ConnectionLimits(), f"sip_{service.role}", service.metrics)
        server = await loop.create_server(lambda: _TCP(service, max_message, conns, guard), sock=tcp_sock, backlog=backlog)
        guard.start(loop)
        closers.append(server)
        closers.append(guard)
    return closers, conns


__all__ += ["SIP_REASONS"]
