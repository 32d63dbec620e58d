"""``stirshaken audit``: verify every signed INVITE of captures, SIP logs or call records with the
STI-VS (:class:`stirshaken.vs.verifier.Verifier`) and count the outcomes.

Each INVITE is verified at its own time: the SIP Date header (RFC 8224 §6.2 step 4 checks ``iat``
against it), else the capture or record time, else ``--at`` / the current time.  Certificates are
fetched once per x5u and cached by the verifier (under the x5u rules of ATIS-1000074 §5.3.1), or
read from a directory for offline use (:func:`cert_file_for`).  UDP retransmissions of an INVITE
(same Call-ID, CSeq and top Via branch) are counted once.

The counts (:class:`AuditStats`) are kept per dimension: verstat, attestation, reason, originating
SPC (the OCN of ATIS-1000080 §6.4.1) and certificate, x5u host, hour of day (UTC), plus the
unsigned share and the failing originators with an example Call-ID each.  Everything is streamed:
memory grows with the number of distinct keys, never with the size of the input.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

from cryptography import x509

from stirshaken.analysis.capture import is_capture, sip_messages
from stirshaken.analysis.inputs import Call, InputError, call_from_record, call_from_request, headers_only, split_sip_log
from stirshaken.core import sip
from stirshaken.core.certificates import load_certificates
from stirshaken.core.errors import FetchError, StirShakenError
from stirshaken.core.passport import parse_jws
from stirshaken.core.tnauthlist import from_certificate
from stirshaken.core.verification import VerificationResult
from stirshaken.vs.verifier import Verifier, VerifierConfig

_INFO = re.compile(r";\s*info\s*=\s*<([^>]*)>", re.IGNORECASE)
_DEDUP = 200_000  # INVITE keys remembered for retransmission detection

#: the tables of a report, in order, with their titles
TABLES = {
    "verstat": "Verification status (verstat)",
    "attest": "Attestation",
    "reason": "Outcome and reason",
    "spc": "Originating service provider (SPC / OCN)",
    "certificate": "Signing certificate",
    "x5u_host": "x5u host",
    "hour": "Hour of day (UTC)",
}


def cert_file_for(certs_dir: Path, url: str) -> Path | None:
    """The file of ``certs_dir`` holding the chain of x5u ``url``, by the documented rule: first
    ``<sha256 of the URL, hex>.pem``, then the last path segment of the URL (``sp-chain.pem`` for
    ``https://cr.example/certs/sp-chain.pem``).  None when neither exists."""
    named = certs_dir / (hashlib.sha256(url.encode()).hexdigest() + ".pem")
    if named.is_file():
        return named
    base = urlsplit(url).path.rsplit("/", 1)[-1]
    if base and base not in (".", "..") and (certs_dir / base).is_file():
        return certs_dir / base
    return None


@dataclass
class AuditOptions:
    """How to verify: the verifier configuration, an optional offline certificate directory,
    whether P-Asserted-Identity counts as calling number (serve's ``use_pai``) and the fallback
    verification time (epoch seconds; None: the current time)."""

    config: VerifierConfig
    certs_dir: Path | None = None
    use_pai: bool = True
    at: float | None = None


@dataclass
class AuditStats:
    """Counters of an audit; :meth:`merge` adds another's (the ``--jobs`` workers)."""

    inputs: list[str] = field(default_factory=list)
    packets: int = 0
    messages: int = 0
    unparsable: int = 0
    invites: int = 0
    retransmissions: int = 0
    signed: int = 0
    unsigned: int = 0
    passed: int = 0
    seconds: float = 0.0
    first_time: float | None = None
    last_time: float | None = None
    #: table -> key -> [calls, passed, failed, no validation, example Call-ID]
    tables: dict[str, dict[str, list[Any]]] = field(default_factory=lambda: {k: {} for k in TABLES})
    unsigned_by_hour: dict[str, int] = field(default_factory=dict)
    originators: dict[str, list[Any]] = field(default_factory=dict)  # key -> [failures, calls, example Call-ID, {reason: n}]
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one description
    errors: list[str] = field(default_factory=list)
    #: x5u -> (SPC, certificate label) of every chain obtained (by any worker)
    x5u_facts: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: x5u -> calls whose chain was not obtained when they were counted (rejected before the
    #: fetch): [calls, passed, failed, no validation, example Call-ID, host, {reason: n}];
    #: attributed by :meth:`resolve` once every worker's facts are known, so the SPC and
    #: certificate tables do not depend on packet order or on how calls were split between jobs
    pending: dict[str, list[Any]] = field(default_factory=dict)

    def merge(self, other: "AuditStats") -> None:
        for name in ("packets", "messages", "unparsable", "invites", "retransmissions", "signed", "unsigned", "passed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for t in (other.first_time, other.last_time):
            if t is not None:
                self.first_time = t if self.first_time is None else min(self.first_time, t)
                self.last_time = t if self.last_time is None else max(self.last_time, t)
        for name, rows in other.tables.items():
            mine = self.tables[name]
            for key, row in rows.items():
                m = mine.get(key)
                if m is None:
                    mine[key] = list(row)
                else:
                    for i in range(4):
                        m[i] += row[i]
        for h, n in other.unsigned_by_hour.items():
            self.unsigned_by_hour[h] = self.unsigned_by_hour.get(h, 0) + n
        for key, o in other.originators.items():
            m = self.originators.get(key)
            if m is None:
                self.originators[key] = [o[0], o[1], o[2], dict(o[3])]
            else:
                m[0] += o[0]
                m[1] += o[1]
                m[2] = m[2] or o[2]
                for r, n in o[3].items():
                    m[3][r] = m[3].get(r, 0) + n
        for r, d in other.examples.items():
            self.examples.setdefault(r, d)
        self.errors.extend(other.errors[: max(0, 50 - len(self.errors))])
        for u, f in other.x5u_facts.items():
            self.x5u_facts.setdefault(u, f)
        for u, o in other.pending.items():
            m = self.pending.get(u)
            if m is None:
                self.pending[u] = [*o[:6], dict(o[6])]
            else:
                for i in range(4):
                    m[i] += o[i]
                m[4] = m[4] or o[4]
                for r, n in o[6].items():
                    m[6][r] = m[6].get(r, 0) + n

    def resolve(self) -> None:
        """Attribute the pending calls to the SPC and certificate of their x5u (known from any
        worker), else to ``unknown``; idempotent."""
        for url, (calls, ok, bad, none, cid, host, reasons) in sorted(self.pending.items()):
            spc, cert = self.x5u_facts.get(url, ("unknown", "unknown (not obtained)"))
            for name, key in (("spc", spc), ("certificate", cert)):
                row = self.tables[name].get(key)
                if row is None:
                    row = self.tables[name][key] = [0, 0, 0, 0, cid]
                for i, n in enumerate((calls, ok, bad, none)):
                    row[i] += n
            origin = spc if spc not in ("unknown", "no SPC", "bad TNAuthList") else f"x5u host {host}"
            o = self.originators.get(origin)
            if o is None:
                o = self.originators[origin] = [0, 0, "", {}]
            o[1] += calls
            o[0] += bad + none
            if bad + none and not o[2]:
                o[2] = cid
            for r, n in reasons.items():
                o[3][r] = o[3].get(r, 0) + n
        self.pending.clear()

    # --- views -------------------------------------------------------------------------------

    def table(self, name: str) -> list[dict[str, Any]]:
        """Rows of a table, largest first (hours in clock order), with shares of the verified calls."""
        self.resolve()
        rows = self.tables[name]
        keys = sorted(rows) if name == "hour" else sorted(rows, key=lambda k: (-rows[k][0], k))
        total = max(1, self.signed)
        out = []
        for k in keys:
            calls, ok, bad, none, cid = rows[k]
            item = {name: k, "calls": calls, "share": round(calls / total, 4), "passed": ok, "failed": bad,
                    "no_validation": none, "example_call_id": cid}
            if name == "reason":
                item["example"] = self.examples.get(k, "")
            if name == "hour":
                item["unsigned"] = self.unsigned_by_hour.get(k, 0)
            out.append(item)
        return out

    def top_failing(self, n: int = 20) -> list[dict[str, Any]]:
        """Originators (SPC, else x5u host) with the most failed verifications."""
        self.resolve()
        keys = sorted((k for k, v in self.originators.items() if v[0]), key=lambda k: (-self.originators[k][0], k))[:n]
        out = []
        for k in keys:
            fails, calls, cid, reasons = self.originators[k]
            top = max(reasons.items(), key=lambda kv: kv[1])[0] if reasons else ""
            out.append({"originator": k, "failures": fails, "calls": calls, "failure_share": round(fails / max(1, calls), 4),
                        "top_reason": top, "example_call_id": cid})
        return out

    def summary(self) -> dict[str, Any]:
        invites = max(1, self.signed + self.unsigned)
        return {
            "inputs": self.inputs, "packets": self.packets, "sip_messages": self.messages, "unparsable": self.unparsable,
            "invites": self.invites, "retransmissions": self.retransmissions, "signed": self.signed, "unsigned": self.unsigned,
            "unsigned_share": round(self.unsigned / invites, 4), "passed": self.passed,
            "passed_share_of_signed": round(self.passed / max(1, self.signed), 4),
            "first_call": _iso(self.first_time), "last_call": _iso(self.last_time),
            "seconds": round(self.seconds, 3), "invites_per_second": round(self.signed / self.seconds, 1) if self.seconds else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary(), **{name: self.table(name) for name in TABLES}, "top_failing": self.top_failing(),
                "errors": self.errors}


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _reason_key(result: VerificationResult) -> tuple[str, str]:
    """("passed" | "<code> <failing check>", one description) of a result."""
    if result.ok:
        return "passed", ""
    check = ""
    for pr in result.passports:
        bad = [c for c in pr.checks if not c.ok]
        if bad:
            check = bad[-1].name
            break
    key = f"{result.sip_code} {result.reason}" + (f" ({check})" if check else "")
    return key, result.description or ""


def _claimed_attest(value: str) -> str | None:
    """The ``attest`` claim of an Identity header value, decoded without any check (for the
    attestation table of calls rejected before their token was decoded); None if unreadable."""
    try:
        claims = parse_jws(value.split(";", 1)[0].strip()).claims
    except (StirShakenError, ValueError):
        return None
    a = claims.get("attest")
    return a if isinstance(a, str) and len(a) <= 8 else None


class Auditor:
    """One process's audit: a verifier, the per-x5u certificate facts, the counters."""

    def __init__(self, opts: AuditOptions):
        self.opts = opts
        self.verifier = Verifier(opts.config)
        self.stats = AuditStats()
        self._x5u: dict[str, tuple[str, str]] = {}  # x5u -> (SPC, certificate label)
        self._hosts: dict[str, str] = {}  # x5u -> its host
        self._missing: set[str] = set()
        self._seen: OrderedDict[int, None] = OrderedDict()

    def close(self) -> None:
        self.verifier.close()

    # --- certificates ------------------------------------------------------------------------

    def _offline(self, identities: Iterable[str]) -> None:
        """Register the chains of ``--certs`` for the x5u URLs of these headers; a URL with no
        usable file answers 436 when its credential is needed (after the checks that come first,
        as ``verify`` orders them)."""
        d = self.opts.certs_dir
        assert d is not None
        for v in identities:
            m = _INFO.search(v)
            if m is None:
                continue
            url = m.group(1)
            if self.verifier.is_static(url) or url in self._missing:
                continue
            path = cert_file_for(d, url)
            try:
                if path is None:
                    raise FetchError(f"no certificate file for x5u {url[:200]} in {d} (sha256(url).pem or the URL's file name)")
                self.verifier.add_static_chain(url, load_certificates(path.read_bytes()))
            except (OSError, StirShakenError) as exc:
                self._missing.add(url)
                if path is not None:
                    self.stats.errors.append(f"{path}: {getattr(exc, 'description', exc)}")
                err = exc if isinstance(exc, FetchError) else FetchError(f"certificate file {path} for x5u {url[:200]} is unusable")
                self.verifier.add_static_error(url, err)

    def _cert_facts(self, url: str, now: float) -> tuple[str, str] | None:
        """The (SPC, certificate label) of the chain obtained for ``url``; None when none was
        obtained (yet): the call is then attributed after the merge (:meth:`AuditStats.resolve`)."""
        got = self._x5u.get(url)
        if got is not None:
            return got
        certs = self.verifier.chain_for(url, now)
        if not certs:
            return None
        leaf: x509.Certificate = certs[0]
        try:
            tn = from_certificate(leaf)
            spc = (tn[0].spc if tn is not None else None) or "no SPC"
        except StirShakenError:
            spc = "bad TNAuthList"
        cns = leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        cn = str(cns[0].value) if cns else leaf.subject.rfc4514_string()
        facts = (spc, f"{cn} #{format(leaf.serial_number, 'x')[:12]}")
        self._x5u[url] = self.stats.x5u_facts[url] = facts
        return facts

    # --- one call ----------------------------------------------------------------------------

    def verify(self, call: Call) -> VerificationResult | None:
        """Verify and count one call (None for an unsigned call, which is only counted)."""
        st = self.stats
        when = call.time if call.time is not None else (self.opts.at if self.opts.at is not None else time.time())
        st.first_time = when if st.first_time is None or when < st.first_time else st.first_time
        st.last_time = when if st.last_time is None or when > st.last_time else st.last_time
        hour = f"{int(when // 3600 % 24):02d}"
        if not call.info.identities:
            st.unsigned += 1
            st.unsigned_by_hour[hour] = st.unsigned_by_hour.get(hour, 0) + 1
            return None
        st.signed += 1
        if self.opts.certs_dir is not None:
            self._offline(call.info.identities)
        result = self.verifier.verify(call.info, now=when)
        self.count(call, result, when, hour)
        return result

    def count(self, call: Call, result: VerificationResult, when: float, hour: str) -> None:
        st = self.stats
        v = result.verstat
        cid = call.call_id
        if result.ok:
            st.passed += 1
        attest = result.attest
        x5u = None
        for pr in result.passports:
            p = pr.passport
            if p is not None and p.ppt in (None, "shaken"):
                attest = attest or (p.claims.get("attest") if isinstance(p.claims.get("attest"), str) else None)
                x5u = p.x5u if isinstance(p.x5u, str) else None
                break
        if x5u is None:
            for raw in call.info.identities:
                m = _INFO.search(raw)
                if m:
                    x5u = m.group(1)
                    break
        if attest is None and call.info.identities:  # rejected before decoding: the claim as sent
            attest = _claimed_attest(call.info.identities[0])
        reason, example = _reason_key(result)
        if example and reason not in st.examples:
            st.examples[reason] = example
        facts = self._cert_facts(x5u, when) if x5u else ("unknown", "unknown (no x5u)")
        host = self._hosts.get(x5u) if x5u else "none"
        if host is None:
            host = self._hosts[x5u] = urlsplit(x5u).hostname or "?"  # type: ignore[index]
        col = 1 if v == "TN-Validation-Passed" else 2 if v == "TN-Validation-Failed" else 3
        tables = st.tables
        if facts is None:  # chain not obtained (yet): SPC and certificate are attributed after the merge
            pend = st.pending.get(x5u)  # type: ignore[arg-type]
            if pend is None:
                pend = st.pending[x5u] = [0, 0, 0, 0, cid, host, {}]  # type: ignore[index]
            pend[0] += 1
            pend[col] += 1
            if not result.ok:
                pend[6][reason] = pend[6].get(reason, 0) + 1
            keys: tuple[tuple[str, str], ...] = (("verstat", v), ("attest", attest or "-"), ("reason", reason), ("x5u_host", host), ("hour", hour))
        else:
            spc, cert = facts
            keys = (("verstat", v), ("attest", attest or "-"), ("reason", reason), ("spc", spc), ("certificate", cert),
                    ("x5u_host", host), ("hour", hour))
        for name, key in keys:
            rows = tables[name]
            row = rows.get(key)
            if row is None:
                row = rows[key] = [0, 0, 0, 0, cid]
            row[0] += 1
            row[col] += 1
        if facts is None:
            return
        origin = spc if spc not in ("unknown", "no SPC", "bad TNAuthList") else f"x5u host {host}"
        o = st.originators.get(origin)
        if o is None:
            o = st.originators[origin] = [0, 0, "", {}]
        o[1] += 1
        if not result.ok:
            o[0] += 1
            if not o[2]:
                o[2] = cid
            o[3][reason] = o[3].get(reason, 0) + 1

    # --- inputs ------------------------------------------------------------------------------

    def _retransmission(self, req: sip.SipRequest) -> bool:
        h = req.headers  # the raw values: a retransmission repeats them byte for byte (RFC 3261 §17.1.1.2)
        key = hash((h.get("Call-ID") or "", h.get("CSeq") or "", h.get("Via") or ""))  # an int: 200,000 of them fit in ~20 MB
        if key in self._seen:
            self.stats.retransmissions += 1
            return True
        self._seen[key] = None
        if len(self._seen) > _DEDUP:
            self._seen.popitem(last=False)
        return False

    def sip_message(self, data: bytes, capture_time: float | None, source: Any) -> None:
        """Count one SIP message; verify it when it is an INVITE.  ``source`` (shown in error
        lines) is a string or a callable making one."""
        st = self.stats
        st.messages += 1
        if not data.startswith(b"INVITE "):
            return
        try:
            req = sip.parse_message(data)
        except sip.SipParseError:  # log copies: LF line ends, wrong Content-Length
            try:
                req = sip.parse_message(headers_only(data))
            except sip.SipParseError as exc:
                st.unparsable += 1
                if len(st.errors) < 50:
                    st.errors.append(f"{source() if callable(source) else source}: {exc}")
                return
        if not isinstance(req, sip.SipRequest) or self._retransmission(req):
            return
        st.invites += 1
        try:
            call = call_from_request(req, use_pai=self.opts.use_pai, fallback_time=capture_time)
        except InputError:  # a Date that is no date: verify at the capture time, as received
            call = call_from_request(req.__class__(req.method, req.request_uri, req.version, req.headers.remove("Date"), b""),
                                     use_pai=self.opts.use_pai, fallback_time=capture_time)
        self.verify(call)

    def capture(self, path: Path, *, part: int = 0, parts: int = 1, progress: Callable[[int, int], None] | None = None) -> None:
        counters: dict[str, int] = {}
        name = path.name
        for m in sip_messages(path, part=part, parts=parts, progress=progress, stats=counters):
            self.sip_message(m.data, m.time, lambda m=m: f"{name} {m.transport} {m.src}->{m.dst}")
        self.stats.packets += counters.get("packets", 0)
        if part == 0 and counters.get("truncated"):
            self.stats.errors.append(f"{name}: capture truncated or corrupt after {counters.get('packets', 0)} packets; the rest is ignored")
        elif part == 0 and not counters.get("packets"):
            self.stats.errors.append(f"{name}: capture holds no packets")

    def sip_log(self, path: Path, progress: Callable[[int, int], None] | None = None) -> None:
        with open(path, "rb") as fh:
            n = 0
            for msg, line in split_sip_log(iter(fh)):
                n += 1
                self.sip_message(msg, None, f"{path.name}:{line}")
                if progress is not None and not n & 1023:
                    progress(n, fh.tell())
            if progress is not None:
                progress(n, fh.tell())

    def records(self, path: Path, progress: Callable[[int, int], None] | None = None) -> None:
        st = self.stats
        n = 0
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                st.messages += 1
                try:
                    call = call_from_record(line, lineno=n)
                except InputError as exc:
                    st.unparsable += 1
                    if len(st.errors) < 50:
                        st.errors.append(f"{path.name}: {exc}")
                    continue
                st.invites += 1
                self.verify(call)
                if progress is not None and not n & 1023:
                    progress(n, fh.tell())
            if progress is not None:
                progress(n, fh.tell())


def input_kind(path: Path) -> str:
    """``capture``, ``records`` (JSON lines) or ``log`` (SIP text), by content."""
    if is_capture(path):
        return "capture"
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip()
    return "records" if head[:1] == b"{" else "log"


def audit_file(auditor: Auditor, path: Path, *, part: int = 0, parts: int = 1,
               progress: Callable[[int, int], None] | None = None) -> None:
    """Feed one input file to ``auditor`` (captures may be split over ``parts`` workers)."""
    kind = input_kind(path)
    if kind == "capture":
        auditor.capture(path, part=part, parts=parts, progress=progress)
    elif part == 0:  # text inputs are not split
        before = auditor.stats.messages
        (auditor.records if kind == "records" else auditor.sip_log)(path, progress)
        if auditor.stats.messages == before:
            auditor.stats.errors.append(f"{path.name}: no SIP message or call record found "
                                        "(neither a pcap/pcapng capture, a SIP log nor JSON-lines records)")


def _worker(opts: AuditOptions, paths: list[str], part: int, parts: int, shared: Any, conn: Any) -> None:
    """One ``--jobs`` process: audit its share, send back the stats (or the error's one line)."""
    try:
        auditor = Auditor(opts)
        done = 0
        try:
            for p in paths:
                base = done

                def progress(n: int, pos: int, base: int = base) -> None:
                    shared[part] = base + pos

                audit_file(auditor, Path(p), part=part, parts=parts, progress=progress)
                done += Path(p).stat().st_size
                shared[part] = done
            conn.send(auditor.stats)
        finally:
            auditor.close()
    except Exception as exc:  # noqa: BLE001 - reported by the parent as one line
        conn.send(f"worker {part}: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def run_audit(opts: AuditOptions, paths: list[Path], *, jobs: int = 1,
              progress: Callable[[int], None] | None = None) -> AuditStats:
    """Audit every input; with ``jobs`` > 1, in that many processes (each reads every file and
    keeps its share of packets, :func:`stirshaken.analysis.capture.flow_bucket`; text inputs are
    read by the first worker only).
    ``progress(bytes_done)`` reports the bytes read (of the sum of the file sizes; with jobs, the
    slowest worker's)."""
    t0 = time.perf_counter()
    if jobs <= 1:
        auditor = Auditor(opts)
        done = [0]
        try:
            for p in paths:
                base = done[0]

                def prog(n: int, pos: int, base: int = base) -> None:
                    if progress is not None:
                        progress(base + pos)

                audit_file(auditor, p, progress=prog)
                done[0] += p.stat().st_size
            stats = auditor.stats
        finally:
            auditor.close()
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork")  # the shared progress array is inherited
        shared = ctx.Array("q", jobs, lock=False)
        procs, conns = [], []
        for i in range(jobs):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(opts, [str(p) for p in paths], i, jobs, shared, send), daemon=True)
            proc.start()
            send.close()
            procs.append(proc)
            conns.append(recv)
        parts_stats: list[AuditStats] = []
        try:
            for recv in conns:
                while not recv.poll(0.2):
                    if progress is not None:
                        progress(min(shared[:]))
                got = recv.recv()
                if isinstance(got, str):
                    raise RuntimeError(got)
                parts_stats.append(got)
        finally:
            for proc in procs:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
        packets = parts_stats[0].packets  # every worker read every packet: count them once
        stats = parts_stats[0]
        for s in parts_stats[1:]:
            stats.merge(s)
        stats.packets = packets
    stats.resolve()
    stats.inputs = [str(p) for p in paths]
    stats.seconds = time.perf_counter() - t0
    return stats


def iter_inputs(paths: Iterable[Path]) -> Iterator[Path]:
    """Files given, directories expanded (sorted), for the CLI."""
    for p in paths:
        if p.is_dir():
            yield from sorted(q for q in p.iterdir() if q.is_file())
        else:
            yield p


__all__ = ["AuditOptions", "AuditStats", "Auditor", "TABLES", "audit_file", "cert_file_for", "input_kind", "iter_inputs", "run_audit"]
