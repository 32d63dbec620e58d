"""Prometheus metrics written by hand (text exposition format 0.0.4), no extra dependency.

Counters and histograms live in plain dicts keyed by label tuples, so recording is a dict update
on the hot path.  With several worker processes each worker writes a snapshot of its numbers into
a shared directory once a second; ``/metrics`` (answered by whichever worker the kernel picks)
sums the snapshots of all workers, with its own live numbers in place of its file.

Families (all counters end in ``_total``):

* ``stirshaken_verified_total{interface,verstat,reason_code,attest}`` - verifications of calls
  that carried an Identity header (``reason_code`` 0 when it passed); calls with none are counted
  apart in ``stirshaken_unsigned_calls_total{interface}`` (RFC 8224 §6.2.2 code 428).
* ``stirshaken_verifier_events_total{event}`` - the verifier's counts (x5u cache hits/misses,
  fetches, fetch failures, Redis errors, ...), summed over workers.
* inventory statistics: one gauge each (``stirshaken_inventory_tns``...; the largest value of the
  workers, since every worker holds the same inventory); its event counts are counters
  (``stirshaken_inventory_dno_refused_total``, ``..._dno_signed_c_total``, ``..._dno_verified_total``,
  ``..._reloads_total``, ``..._updates_total``).
* ``stirshaken_records_dropped_total{reason}`` - per-call records that did not reach the
  ``[records]`` database (``queue_full``: the queue was full, the database slow or down;
  ``refused``: the database refused the rows), ``stirshaken_records_written_total`` - those that
  did (families present when a records database is configured; :mod:`stirshaken.serve.records`).
* ``stirshaken_log_lines_dropped_total`` - log lines (records included) a worker dropped because
  its stderr was not read (:mod:`stirshaken.serve.logoutput`).
* ``stirshaken_build_info{version}`` 1; ``stirshaken_signer_certificate_expiry_seconds{tenant}``
  seconds until each known signing certificate (ACME-managed tenants) expires.
* per worker, from ``/proc/self``: ``stirshaken_process_cpu_seconds_total{worker}``,
  ``stirshaken_process_resident_memory_bytes{worker}``, ``stirshaken_process_open_fds{worker}``.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from pathlib import Path
from typing import Any, Iterable, Mapping

import orjson

__all__ = ["LabelSets", "Metrics", "LATENCY_BUCKETS"]

#: seconds; ECDSA sign ≈ 30 µs, verify ≈ 80 µs, x5u fetch in milliseconds
LATENCY_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

_HELP: dict[str, tuple[str, str]] = {
    "stirshaken_http_requests_total": ("counter", "REST requests by endpoint and HTTP status"),
    "stirshaken_signed_total": ("counter", "PASSporTs signed by interface, tenant and attestation"),
    "stirshaken_verified_total": ("counter", "Verifications of calls with an Identity header by interface, verstat, reason code and attestation"),
    "stirshaken_unsigned_calls_total": ("counter", "Calls to verify that carried no Identity header (not in stirshaken_verified_total)"),
    "stirshaken_sip_requests_total": ("counter", "SIP requests received by service and method"),
    "stirshaken_sip_responses_total": ("counter", "SIP responses sent by service and status"),
    "stirshaken_sip_retransmissions_total": ("counter", "SIP requests answered from the transaction cache"),
    "stirshaken_sip_parse_errors_total": ("counter", "SIP datagrams or stream messages that failed to parse"),
    "stirshaken_request_errors_total": ("counter", "ATIS-1000082 request errors by messageId"),
    "stirshaken_signer_reloads_total": ("counter", "Reloads of the signing keys and x5u (SIGHUP, certificate renewal) by result"),
    "stirshaken_trust_reloads_total": ("counter", "Reloads of the verifier's trust anchors, CRL signers, CRL files and CA list (SIGHUP) by result"),
    "stirshaken_records_dropped_total": ("counter", "Per-call records not written to the records database, by reason"),
    "stirshaken_records_written_total": ("counter", "Per-call records written to the records database"),
    "stirshaken_log_lines_dropped_total": ("counter", "Log lines (records included) dropped because stderr was not read"),
    "stirshaken_latency_seconds": ("histogram", "Processing time by operation"),
}

#: stats of the stats sources that count events (the rest are gauges)
_COUNTER_STATS = frozenset({"inventory_dno_refused", "inventory_dno_signed_c", "inventory_dno_verified", "inventory_reloads",
                            "inventory_updates"})
_VERIFIER_EVENTS = "stirshaken_verifier_events_total"


def process_stats() -> dict[str, float]:
    """CPU seconds (user + system), resident bytes and open descriptors of this process, read from
    ``/proc/self`` (Linux proc(5)); empty where ``/proc`` is not available."""
    out: dict[str, float] = {}
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": fields 3.. of proc(5)
        out["cpu_seconds"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        out["rss_bytes"] = float(int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
        out["open_fds"] = float(len(os.listdir("/proc/self/fd")))
    except (OSError, ValueError, IndexError):
        pass
    return out


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class LabelSets:
    """The label tuple of a counter for each key, made once (at most ``limit`` kept; past that a
    new tuple each time, the same labels).  The request paths count with tuples they would
    otherwise build per request: ``LabelSets(lambda status: (("status", str(status)),))(302)``."""

    __slots__ = ("make", "limit", "_made")

    def __init__(self, make: Any, limit: int = 1024):
        self.make = make
        self.limit = limit
        self._made: dict[Any, tuple[tuple[str, str], ...]] = {}

    def __call__(self, key: Any) -> tuple[tuple[str, str], ...]:
        labels = self._made.get(key)
        if labels is None:
            labels = self.make(key)
            if len(self._made) < self.limit:
                self._made[key] = labels
        return labels


class Metrics:
    """Process-local metrics registry."""

    def __init__(self, snapshot_dir: str | None = None, worker: int = 0):
        self.counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self.hist: dict[tuple[str, ...], list[float]] = {}  # op -> [bucket counts..., +Inf, sum]
        self.snapshot_dir = snapshot_dir
        self.worker = worker
        self.stats_sources: list[Any] = []
        self.started = time.time()
        #: returns ``{tenant: notAfter (Unix seconds)}`` of the signing certificates known, if set
        self.certificate_expiry: Any = None
        #: callables returning counter families ``{name: {labels: value}}`` kept elsewhere (by
        #: another thread, e.g. :meth:`stirshaken.serve.records.Records.counters`)
        self.counter_sources: list[Any] = []

    # --- recording ------------------------------------------------------------------------------

    def inc(self, name: str, labels: tuple[tuple[str, str], ...] = (), n: float = 1) -> None:
        c = self.counters.get(name)
        if c is None:
            c = self.counters[name] = {}
        c[labels] = c.get(labels, 0) + n

    def observe(self, op: str, seconds: float) -> None:
        h = self.hist.get((op,))
        if h is None:
            h = self.hist[(op,)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        h[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # first bucket with seconds <= le; past the last: +Inf
        h[-1] += seconds

    # --- snapshots for several workers --------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        counters = {n: [[list(map(list, k)), v] for k, v in c.items()] for n, c in self.counters.items()}
        for source in self.counter_sources:
            for n, c in source().items():
                counters.setdefault(n, []).extend([list(map(list, k)), v] for k, v in c.items())
        return {
            "counters": counters,
            "hist": [[list(k), v] for k, v in self.hist.items()],
            "verifier": self._verifier_stats(),
            "process": {str(self.worker): process_stats()},
        }

    def write_snapshot(self) -> None:
        if not self.snapshot_dir:
            return
        path = Path(self.snapshot_dir) / f"worker-{self.worker}.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(orjson.dumps(self.snapshot()))
            os.replace(tmp, path)
        except OSError:
            pass

    def _verifier_stats(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for src in self.stats_sources:
            stats = getattr(src, "stats", None)
            if callable(stats):
                try:
                    stats = stats()
                except Exception:  # noqa: BLE001 - never fail a scrape
                    stats = None
            for k, v in _flatten(stats):
                out[k] = out.get(k, 0) + v
        return out

    def _merged(self) -> dict[str, Any]:
        snaps = [self.snapshot()]
        for f in Path(self.snapshot_dir).glob("worker-*.json") if self.snapshot_dir else ():
            if f.name == f"worker-{self.worker}.json":
                continue
            try:
                snaps.append(orjson.loads(f.read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                continue
        counters: dict[str, dict[tuple, float]] = {}
        hist: dict[tuple, list[float]] = {}
        verifier: dict[str, float] = {}
        process: dict[str, dict[str, float]] = {}
        for s in snaps:
            process.update(s.get("process") or {})
            for name, items in s["counters"].items():
                c = counters.setdefault(name, {})
                for k, v in items:
                    key = tuple(tuple(x) for x in k)
                    c[key] = c.get(key, 0) + v
            for k, v in s["hist"]:
                key = tuple(k)
                h = hist.setdefault(key, [0.0] * len(v))
                for i, x in enumerate(v):
                    h[i] += x
            for k, v in s["verifier"].items():
                if k.startswith("inventory_") and k not in _COUNTER_STATS:  # a gauge the same in every worker
                    verifier[k] = max(verifier.get(k, v), v)
                else:
                    verifier[k] = verifier.get(k, 0) + v
        return {"counters": counters, "hist": hist, "verifier": verifier, "process": process}

    # --- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The Prometheus text format of every metric (summed over workers)."""
        m = self._merged()
        counters = m["counters"]
        lines: list[str] = []
        for name in sorted(counters):
            kind, help_ = _HELP.get(name, ("counter", name))
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")
            items = counters[name]
            for labels, v in sorted(items.items()):
                lines.append(f"{name}{_labels(labels)} {_num(v)}")
        hist = m["hist"]
        if hist:
            name = "stirshaken_latency_seconds"
            lines.append(f"# HELP {name} {_HELP[name][1]}")
            lines.append(f"# TYPE {name} histogram")
            for (op,), h in sorted(hist.items()):
                cum = 0.0
                for b, n in zip(LATENCY_BUCKETS, h):
                    cum += n
                    lines.append(f'{name}_bucket{{op="{_esc(op)}",le="{b}"}} {_num(cum)}')
                cum += h[len(LATENCY_BUCKETS)]
                lines.append(f'{name}_bucket{{op="{_esc(op)}",le="+Inf"}} {_num(cum)}')
                lines.append(f'{name}_sum{{op="{_esc(op)}"}} {h[-1]:.6f}')
                lines.append(f'{name}_count{{op="{_esc(op)}"}} {_num(cum)}')
        events = {k: v for k, v in m["verifier"].items() if not k.startswith("inventory_")}
        if events:
            lines.append(f"# HELP {_VERIFIER_EVENTS} Verifier events (x5u/CRL cache hits and misses, fetches, fetch failures, Redis errors)")
            lines.append(f"# TYPE {_VERIFIER_EVENTS} counter")
            for k, v in sorted(events.items()):
                lines.append(f'{_VERIFIER_EVENTS}{{event="{_esc(k)}"}} {_num(v)}')
        for k, v in sorted(m["verifier"].items()):
            if not k.startswith("inventory_"):
                continue
            counter = k in _COUNTER_STATS
            name = f"stirshaken_{k}_total" if counter else f"stirshaken_{k}"
            lines.append(f"# HELP {name} Inventory statistic {k}")
            lines.append(f"# TYPE {name} {'counter' if counter else 'gauge'}")
            lines.append(f"{name} {_num(v)}")
        from stirshaken import __version__

        lines.append("# HELP stirshaken_build_info The running stirshaken version")
        lines.append("# TYPE stirshaken_build_info gauge")
        lines.append(f'stirshaken_build_info{{version="{_esc(__version__)}"}} 1')
        for key, name, kind, help_ in (
                ("cpu_seconds", "stirshaken_process_cpu_seconds_total", "counter", "User and system CPU time of the worker, seconds"),
                ("rss_bytes", "stirshaken_process_resident_memory_bytes", "gauge", "Resident memory of the worker, bytes"),
                ("open_fds", "stirshaken_process_open_fds", "gauge", "Open file descriptors of the worker")):
            rows = [(w, p[key]) for w, p in sorted(m["process"].items(), key=lambda x: int(x[0])) if key in p]
            if rows:
                lines.append(f"# HELP {name} {help_}")
                lines.append(f"# TYPE {name} {kind}")
                lines.extend(f'{name}{{worker="{_esc(w)}"}} {_num(v)}' for w, v in rows)
        expiry = {}
        if callable(self.certificate_expiry):
            try:
                expiry = self.certificate_expiry() or {}
            except Exception:  # noqa: BLE001 - never fail a scrape
                expiry = {}
        if expiry:
            name = "stirshaken_signer_certificate_expiry_seconds"
            lines.append(f"# HELP {name} Seconds until the signing certificate expires (negative: expired)")
            lines.append(f"# TYPE {name} gauge")
            now = time.time()
            lines.extend(f'{name}{{tenant="{_esc(t)}"}} {na - now:.0f}' for t, na in sorted(expiry.items()))
        lines.append("# HELP stirshaken_uptime_seconds Seconds since this worker started")
        lines.append("# TYPE stirshaken_uptime_seconds gauge")
        lines.append(f"stirshaken_uptime_seconds {time.time() - self.started:.1f}")
        return ("\n".join(lines) + "\n").encode()


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels)
    return "{" + inner + "}" if inner else ""


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _flatten(stats: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Numbers of a (nested) mapping or dataclass, as ``a_b`` names."""
    if stats is None:
        return []
    if not isinstance(stats, Mapping):
        if hasattr(stats, "__dataclass_fields__"):
            stats = {k: getattr(stats, k) for k in stats.__dataclass_fields__}
        elif hasattr(stats, "__dict__"):
            stats = vars(stats)
        else:
            return []
    out: list[tuple[str, float]] = []
    for k, v in stats.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            out.append((key, float(v)))
        elif isinstance(v, (int, float)):
            out.append((key, float(v)))
        elif isinstance(v, (Mapping,)) or hasattr(v, "__dataclass_fields__"):
            out.extend(_flatten(v, key + "_"))
    return out
