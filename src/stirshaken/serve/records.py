"""Per-call records of ``stirshaken serve``: one record per signing and per verification.

Every INVITE answered by the SIP signing or verification address and every request to the REST
signing or verification resource (ATIS-1000082 §8.2) ends in one record (:data:`FIELDS`):

* ``interface`` ``"sip"`` or ``"rest"``; ``service`` ``"signing"`` or ``"verification"``;
* ``call_id``: the SIP Call-ID, or the REST ``X-RequestID`` (echoed or generated);
* ``origid`` (RFC 8588 §5), ``orig`` (canonical TN), ``dest`` (list of canonical TNs),
  ``tenant`` (the signer that signed, FCC 24-120), ``attest`` (A/B/C), ``x5u``;
* ``verstat`` (3GPP TS 24.229 §5.7.1.27; verification only), ``status`` (the SIP or HTTP status
  of the answer), ``code`` and ``reason``: the SIP reason code of a failed verification or a
  refused signing (RFC 8224 §6.2.2) and its specific text (the cause, not the code's phrase); for
  a ``div`` (RFC 8946) or ``rcd`` (RFC 9795) PASSporT signed over REST, ``attest`` is None and
  ``reason`` names the PASSporT (``"div PASSporT signed (RFC 8946)"``);
* ``spc`` and ``serial`` (hex) of the certificate, when known: for a signer, those of its ACME
  certificate (a signer given as key + x5u URL has its certificate only behind the URL: SPC as
  configured, no serial); for a verification, those of the validated x5u certificate;
* ``latency``: seconds from the request to the answer (a float).

Where records go (``[records]``, :class:`~stirshaken.serve.config.RecordsConfig`):

* the ``stirshaken.records`` logger (``log = true``, the default): one line per record on
  stderr, a JSON object (``ts``, ``level``, ``logger``, ``msg``, ``node``, ``worker``, then each
  field once: those of a :class:`Shared` first) or, with ``[server] log_format = "text"``,
  ``key=value`` pairs in the order of :data:`FIELDS`.
  Records are written whatever ``log_level`` says; the logger does not propagate to the root.
* a database (``database = ...``, SQLite or PostgreSQL), table ``call_records`` (:func:`call_records`):
  ``time`` is the record's ``ts`` (UTC, milliseconds), ``dest`` the TNs joined with ``,``.  A
  flush (below) appends the JSON lines of its records (the JSON log's own bytes, or lines
  formatted for the queue when the log is off or text) to a queue bounded in records
  (``queue_size``) and bytes (:data:`QUEUE_BYTES`); a background thread of the worker takes
  about :data:`BATCH` records at a time and inserts them in one statement: PostgreSQL parses
  them itself (``json_to_recordset``), SQLite gets an executemany.  When the database is slow
  or down the queue fills and further records are dropped and counted
  (``stirshaken_records_dropped_total``): a call is never delayed or failed by its record.
  While the database cannot be reached :attr:`Records.problem` names it (``/healthz`` says
  ``degraded``), the change of state is logged once each way, and the thread
  retries the batch it holds every second.  A batch the database refuses (a value it cannot
  store, not a connection problem) is written again in halves, down to single records, so that
  only a record refused on its own is dropped (counted, ``reason="refused"``); a NUL character,
  which PostgreSQL text cannot hold and a peer can put in a value (an x5u), is stored as U+FFFD.

Cost on the request path: a dict of values already at hand (for a REST signing record, only
those of the call: the signer's are a :class:`Shared`), kept with the time of the call; the
records of up to :data:`FLUSH_DELAY` seconds (at most :data:`FLUSH_RECORDS`) are then formatted
together (:meth:`Records.flush`), each once into its JSON line (one ``orjson.dumps``), the lines
joined once in UTF-8 (:meth:`JSONRecordFormatter.blob`), and those bytes written to the log in
one ``write`` (:class:`BatchedStreamHandler`, the worker's
:class:`~stirshaken.serve.logoutput.LogOutput`) and queued for the database as they are.
Without the fast path (another handler or a filter on the logger) the record goes through the
logger as a :class:`logging.LogRecord` copied from a per-worker template (``LogRecord.__init__``
would cost more than the rest of the record together).  ``bench/bench_records.py`` measures the
whole.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import socket
import sys
import threading
import time
from typing import Any, Mapping, TextIO

import orjson

from stirshaken.serve.record_fields import FIELDS, Shared, as_fields, json_text, printable, valid_value

__all__ = ["BATCH", "FIELDS", "FLUSH_DELAY", "FLUSH_RECORDS", "LOGGER", "BatchedStreamHandler", "JSONRecordFormatter", "Records", "Shared", "TextRecordFormatter", "as_fields", "call_records", "check_database", "json_text", "printable", "text_value", "valid_value", "verification_fields"]

#: the logger the records are written to
LOGGER = "stirshaken.records"
#: records inserted per database round trip, at most (a flush's lines go together: at least those)
BATCH = 1000
#: seconds the database thread waits for more records (and between retries while the database is down)
INTERVAL = 0.25
RETRY = 1.0
#: seconds one write may take before ``/healthz`` calls the database slow
SLOW = 5.0
#: seconds during which records dropped (queue full) or refused keep ``/healthz`` degraded
RECENT = 60.0
#: seconds the upgrade's ``ALTER TABLE`` may wait for its lock on PostgreSQL (other writers of
#: the table wait behind it meanwhile): :meth:`_DatabaseWriter._add_node_column`
ALTER_LOCK_TIMEOUT = 0.5

#: seconds between two "refused a record" warning lines, at least (each refusal is counted)
REFUSAL_LOG_EVERY = 10.0
#: bytes of JSON lines waiting for the database, at most, per worker (besides ``queue_size``)
QUEUE_BYTES = 64 * 1024 * 1024
_DEST = FIELDS.index("dest")
_N = len(FIELDS)
_INFO = logging.INFO

log = logging.getLogger("stirshaken.serve")


def verification_fields(result: Any) -> tuple[str | None, str | None, str | None, str | None]:
    """``(origid, x5u, spc, serial hex)`` of a :class:`~stirshaken.core.verification.VerificationResult`
    (None: not known, or no result): of the PASSporT that passed, else of the first one.  The origid
    is the verifier's (:attr:`VerificationResult.origid`: only from a PASSporT whose signature
    verified, even when one of its claims then failed the call).  A PASSporT that failed has no
    certificate; its x5u is the ``info`` its Identity header names (RFC 8224 §4), when it parses."""
    if result is None:
        return None, None, None, None
    ps = result.passports
    if not ps:
        return result.origid, None, None, None
    p = ps[0]
    if not p.ok and len(ps) > 1:
        p = next((x for x in ps if x.ok), p)
    cred = p.credential
    if cred is not None:
        return result.origid, p.passport.header.get("x5u"), cred.spc, cred.serial_hex
    x5u = p.passport.header.get("x5u") if p.passport is not None else None
    if x5u is None:
        from stirshaken.core.errors import StirShakenError
        from stirshaken.core.identity import parse_identity

        try:
            x5u = parse_identity(p.raw).info
        except (StirShakenError, ValueError):
            x5u = None
    return result.origid, x5u, None, None


# --- log lines -----------------------------------------------------------------------------------


def _json_fields(rec: Mapping[str, Any]) -> str:
    """The members of a record's JSON object after its ``{``, for a record that ``orjson``
    refused (:func:`json_text` of its fields, ``rec`` holding all it is written with)."""
    return json_text(rec)[1:]


#: ``.mmm+00:00`` for every millisecond (the part of a timestamp that changes within a second)
_MILLIS = tuple(f".{i:03d}+00:00" for i in range(1000))


class JSONRecordFormatter(logging.Formatter):
    """A record as one JSON object, in the envelope of the other ``serve`` log lines: ``ts``
    (ISO 8601 UTC, milliseconds), ``level``, ``logger``, ``msg`` ``"call"``, ``node`` (the host's
    name unless configured: tells apart the nodes writing to one database), ``worker``, then the
    fields of :data:`FIELDS` (unknown values ``null``).

    A line is ``head + tails[ms] + fields``: ``head`` the date and time to the second (formatted
    once a second), ``tails`` the envelope after it for each of the 1,000 milliseconds (made once:
    about 130 KB a formatter), ``fields`` the record's one ``orjson.dumps``."""

    def __init__(self, worker: int | str = 0, node: str = ""):
        super().__init__()
        tail = ('","level":"INFO","logger":"' + LOGGER + '","msg":"call","node":' + orjson.dumps(node or default_node()).decode()
                + ',"worker":' + orjson.dumps(worker).decode() + ",")
        # (in UTF-8: a node that is not ASCII sends every line through printable(), correct but slower)
        self._tails = tuple((m + tail).encode() for m in _MILLIS)
        self._second = -1
        self._head = b""

    def _new_second(self, second: int) -> None:
        """``second`` (Unix time) as the head of the lines that follow."""
        self._second = second
        self._head = b'{"ts":"' + dt.datetime.fromtimestamp(second, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S").encode()

    def line(self, rec: Mapping[str, Any], created: float) -> str:
        """The line of the record ``rec`` (a dict, or ``(shared, rest)``: :class:`Shared`) made at
        ``created`` (Unix seconds).  A value that is not valid text (written ``\\xNN``) or not of
        a JSON type (its ``str``) does not cost the record (nor the batch it is formatted with);
        the line is :func:`printable`."""
        ms = int(created * 1000)
        second = ms // 1000
        if second != self._second:
            self._new_second(second)
        pre = b""
        if type(rec) is tuple:  # (shared, rest): Shared
            shared, rec = rec
            pre = shared.json
            if len(rec) + shared.n != _N:
                rec = {k: rec.get(k) for k in FIELDS if k not in shared.fields}
        elif len(rec) != _N:  # a field left out: None (inline: a call of its own cost ~700 instructions a line)
            rec = {k: rec.get(k) for k in FIELDS}
        start = self._head + self._tails[ms - 1000 * second] + pre
        try:
            s = (start + orjson.dumps(rec)[1:]).decode()
        except TypeError:  # orjson.JSONEncodeError: a string that is not valid text, a value of another type
            return start.decode() + _json_fields(rec)
        return s if s.isascii() else printable(s)

    def blob(self, kept: list[tuple[dict[str, Any], float]]) -> bytes:
        """:meth:`line` of every ``(record, created)`` of ``kept``, in order, each ending with a
        newline, in UTF-8: what the log and the database queue take of a flush
        (:meth:`Records.flush`).

        The loop of :meth:`line` written out, with no call per record (the head, its second and
        the tails in locals), kept in bytes (as ``orjson`` makes them and the log and the
        database take them), and each line's parts joined once with all the others rather
        than concatenated line by line; whether a line is :func:`printable` is asked once of the
        whole (``isascii``), then line by line only when it is not ASCII.  Measured (callgrind,
        ``bench/bench_records.py --loop log``, 2026-11-30): 1,220 instructions a record fewer than
        a bytes line made by concatenation; in ``timeit``, 0.86 of its time.  Property-tested
        against :meth:`line` (tests/test_serve_records.py)."""
        parts: list[bytes] = []
        add = parts.extend
        dumps = orjson.dumps
        nl = orjson.OPT_APPEND_NEWLINE
        fields = FIELDS
        tails = self._tails
        head = self._head
        start = 1000 * self._second  # the first millisecond of the head's second
        for rec, created in kept:
            i = int(created * 1000) - start
            if not 0 <= i < 1000:  # another second
                ms = i + start
                self._new_second(ms // 1000)
                head = self._head
                start = 1000 * self._second
                i = ms - start
            pre = b""
            if type(rec) is tuple:  # (shared, rest): Shared
                shared, rec = rec
                pre = shared.json
                if len(rec) + shared.n != _N:
                    rec = {k: rec.get(k) for k in fields if k not in shared.fields}
            elif len(rec) != _N:
                rec = {k: rec.get(k) for k in fields}
            try:
                add((head, tails[i], pre, dumps(rec, option=nl)[1:]))
            except TypeError:
                add((head, tails[i], pre, _json_fields(rec).encode(), b"\n"))
        data = b"".join(parts)
        if data.isascii():
            return data
        return "\n".join(map(printable, data.decode().split("\n"))).encode()

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record.call, record.created)  # type: ignore[attr-defined]


def default_node() -> str:
    """The node name records carry when ``[records] node`` is not set: the host's name."""
    return socket.gethostname()


def text_value(v: Any) -> str:
    """A value as the text log form writes it: ``-`` for None, a float with 6 decimals, a list
    joined with ``,``, a string with spaces, quotes, ``=`` or unprintable characters, or ``-``
    itself, as a JSON string (:func:`json_text`)."""
    if v is None:
        return "-"
    if type(v) is float:
        return f"{v:.6f}"
    if isinstance(v, (list, tuple)):
        v = ",".join(map(str, v))
    s = str(v)
    if not s or s == "-" or any(c in s for c in ' "=\\') or not s.isprintable():  # ("-" alone would read as unknown)
        return json_text(s)  # a JSON string: quoted, with its escapes
    return s


class TextRecordFormatter(logging.Formatter):
    """A record as ``<asctime> INFO [<worker>] stirshaken.records: call key=value ...``: every
    field of :data:`FIELDS` in that order, ``-`` for an unknown value, lists joined with ``,``,
    a value with spaces, quotes or ``=`` as a JSON string."""

    def __init__(self, worker: int | str = 0):
        super().__init__()
        self._mid = f" INFO [{worker}] {LOGGER}: call "

    def line(self, rec: Mapping[str, Any], created: float) -> str:
        """The line of the record ``rec`` made at ``created`` (Unix seconds)."""
        return self.format(logging.makeLogRecord({"created": created, "msecs": (created - int(created)) * 1000, "call": rec}))

    def format(self, record: logging.LogRecord) -> str:
        rec = as_fields(record.call)  # type: ignore[attr-defined]
        return self.formatTime(record) + self._mid + " ".join(f"{k}={text_value(v)}" for k, v in rec.items())


#: seconds a record may wait in the worker before it is formatted and written (with others)
FLUSH_DELAY = 0.05
#: records formatted and written together, at most (:meth:`Records.flush`)
FLUSH_RECORDS = 256


def _later(delay: float, callback: Any) -> bool:
    """Schedule ``callback`` on the running event loop ``delay`` seconds from now (0: once the
    loop has run the callbacks of this iteration); False when no event loop runs in this thread."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    if delay > 0:
        loop.call_later(delay, callback)
    else:
        loop.call_soon(callback)
    return True


class BatchedStreamHandler(logging.Handler):
    """A stream handler that writes lines in batches.

    Inside a running event loop a line is queued and the queue is written (one ``write`` and
    ``flush``) ``delay`` seconds after its first line (0: once the loop has run the callbacks of
    the iteration), or when it holds ``limit`` lines; outside one each line is written at once;
    :meth:`close` (a worker's stop) writes what is queued.  Measured (``bench/bench_records.py``,
    REST signing, one worker, 2026-11-29): with one ``write`` per event-loop iteration the records
    cost 15 % of the requests per CPU second; the system call per few lines was most of it, which
    :data:`FLUSH_DELAY` amortises over up to ``limit`` lines."""

    def __init__(self, stream: TextIO | None = None, limit: int = 256, delay: float = 0.0):
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.limit = limit
        self.delay = delay
        self.lines: list[str] = []
        self.scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)
            return
        self.add(line)

    def add(self, line: str) -> None:
        """Queue a formatted line."""
        lines = self.lines
        lines.append(line)
        if len(lines) >= self.limit or not self.scheduled:
            self.kick()

    def kick(self) -> None:
        """After a line was appended to :attr:`lines`: write them when there are :attr:`limit`,
        else make sure a write is scheduled."""
        if len(self.lines) >= self.limit:
            self.flush()
        elif not self.scheduled:
            if _later(self.delay, self._flush_soon):
                self.scheduled = True
            else:
                self.flush()

    def _flush_soon(self) -> None:
        self.scheduled = False
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines = self.lines
            if not lines:
                return
            self.lines = []
            lines.append("")  # the last newline, without copying the joined lines once more
            try:
                self.stream.write("\n".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: records are not worth a crash
                pass

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` (whole lines in UTF-8, each ending with a newline) after the lines queued
        before it: in one ``write_bytes`` when the stream has one (:class:`~stirshaken.serve.logoutput.LogOutput`:
        no decoding here and encoding again there), else decoded."""
        self.flush()
        with self.lock:  # type: ignore[union-attr]
            try:
                wb = getattr(self.stream, "write_bytes", None)
                if wb is not None:
                    wb(data)
                else:
                    self.stream.write(data.decode())
                    self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: records are not worth a crash
                pass

    def close(self) -> None:
        self.flush()
        super().close()


# --- database ------------------------------------------------------------------------------------


def call_records(metadata: Any) -> Any:
    """The ``call_records`` table (SQLAlchemy Core) in ``metadata``: the fields of :data:`FIELDS`
    plus ``id``, ``time`` (UTC), ``worker`` and ``node``; ``dest`` as comma-separated TNs.  (``node``
    is newer than the table: :meth:`_DatabaseWriter._connect` adds it to a table made before.)"""
    import sqlalchemy as sa

    return sa.Table(
        "call_records", metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("worker", sa.Integer, nullable=False),
        sa.Column("node", sa.Text, nullable=True),
        sa.Column("interface", sa.String(8), nullable=False),
        sa.Column("service", sa.String(16), nullable=False),
        sa.Column("call_id", sa.Text, nullable=True, index=True),
        sa.Column("origid", sa.Text, nullable=True),
        sa.Column("orig", sa.Text, nullable=True),
        sa.Column("dest", sa.Text, nullable=True),
        sa.Column("tenant", sa.Text, nullable=True),
        sa.Column("attest", sa.String(1), nullable=True),
        sa.Column("x5u", sa.Text, nullable=True),
        sa.Column("verstat", sa.String(32), nullable=True),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("code", sa.Integer, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("spc", sa.Text, nullable=True),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.Column("latency", sa.Float, nullable=True),
    )


def _without_nul(line: bytes) -> bytes:
    """A record's JSON line (UTF-8, no newline) with every NUL character in its values replaced by
    U+FFFD (``line`` itself when it has none): a database text value cannot hold NUL (PostgreSQL
    refuses the whole statement), and a NUL can come from a peer (e.g. the ``x5u`` of a PASSporT
    header that failed, which the record names)."""
    if b"\\u0000" not in line:  # (the JSON form escapes a NUL)
        return line
    doc = orjson.loads(line)
    for k, v in doc.items():
        if isinstance(v, str):
            doc[k] = v.replace("\x00", "\ufffd")
        elif isinstance(v, list):
            doc[k] = [x.replace("\x00", "\ufffd") if isinstance(x, str) else x for x in v]
    return orjson.dumps(doc)


def _first_lines(data: bytes, n: int) -> bytes:
    """The first ``n`` lines of ``data`` (lines each ending with a newline; ``n`` >= 0)."""
    end = 0
    for _ in range(n):
        end = data.index(b"\n", end) + 1
    return data[:end]


def _one_per_line(blobs: list[bytes]) -> list[bytes]:
    """``blobs`` (the lines of a flush, each ending with a newline) as one blob per line."""
    return [x + b"\n" for x in b"".join(blobs).split(b"\n")[:-1]]


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """``Type: message`` of a database error: the driver's first line only (PostgreSQL's
    ``LINE 1: ...`` / caret lines dropped), cut between words at about ``limit`` characters."""
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy wraps the driver's exception
    text = " ".join(str(orig).strip().split("\n", 1)[0].split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return f"{type(orig).__name__}: {text}" if text else type(orig).__name__


def _bytes_as_text() -> type:
    """A psycopg dumper that sends ``bytes`` (UTF-8 text: the records' JSON lines) as a ``text``
    parameter as they are, where a ``str`` would be encoded by the driver (a copy of every batch)
    and ``bytes`` would otherwise go as ``bytea``."""
    from psycopg.adapt import Dumper
    from psycopg.postgres import types

    class BytesAsText(Dumper):
        oid = types["text"].oid

        def dump(self, obj: bytes) -> bytes:
            return obj

    return BytesAsText


class _DatabaseWriter:
    """The thread that moves records from the queue into the database (see the module docstring).
    The queue holds ``(lines, n)``: the JSON lines (:meth:`JSONRecordFormatter.blob`) of ``n``
    records of one flush, in UTF-8, each ending with a newline (the log's own bytes when the log
    writes JSON)."""

    def __init__(self, url: str, queue: collections.deque[tuple[bytes, int]], worker: int | str, *, interval: float = INTERVAL,
                 retry: float = RETRY, batch: int = BATCH, connect_timeout: float = 5.0):
        self.url = url
        self.queue = queue
        self.worker = worker if isinstance(worker, int) else -1
        self.interval = interval
        self.retry = retry
        self.batch = batch
        self.connect_timeout = connect_timeout
        #: why the database cannot be reached (None: it can, or it was not tried yet)
        self.down: str | None = None
        self.written = 0
        self.rejected = 0  # records the database refused (not a connection problem): dropped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stirshaken-records", daemon=True)
        self._engine: Any = None
        self._raw: Any = None  # PostgreSQL: the thread's own connection (_pg)
        self._table: Any = None
        self._insert = ""
        self._busy_since = 0.0  # time.monotonic() when the write in progress began
        self.taken_bytes = 0  # bytes of the lines taken from the queue (this thread only)
        self.taken_records = 0  # records taken from the queue (this thread only)
        self.queued_bytes = 0  # bytes of the lines ever queued (the event loop's thread only: Records.flush)
        self.queued_records = 0  # records ever queued (the event loop's thread only: Records.flush)
        self._refusal_logged = -REFUSAL_LOG_EVERY  # time.monotonic() of the last "refused" line
        self.last_refusal = 0.0  # time.monotonic() of the last record refused (0: none)
        self.held = 0  # records taken from the queue and not written yet (this thread)
        self.up_since = 0.0  # time.monotonic() when the database last came back (0: never down)

    @property
    def where(self) -> str:
        """The database URL without its passwords, for messages (:func:`stirshaken.pki.store.shown_url`)."""
        from stirshaken.pki.store import shown_url

        return shown_url(self.url)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then end the thread; what could
        not be written is said in one warning line (the records are lost with the process)."""
        self._stop.set()
        self._thread.join(timeout)
        left = self.queued_records - self.taken_records + self.held
        if left:
            log.warning("records not written to the database at stop; lost", extra={
                "database": self.where, "records": left, "error": self.down or "the database did not answer in time"})

    # --- the thread ------------------------------------------------------------------------

    def _connect(self) -> bool:
        import sqlalchemy as sa

        from stirshaken.pki.store import make_engine

        if self._engine is None:
            self._engine = make_engine(self.url, connect_timeout=self.connect_timeout)
            md = sa.MetaData()
            self._table = call_records(md)
            self._metadata = md
            self._postgres = self._engine.dialect.name == "postgresql"
            self._columns = [c.name for c in self._table.columns if c.name != "id"]
        try:
            self._metadata.create_all(self._engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # create_all checks, then creates: not atomic.  The workers of one serve (or several
            # nodes) start together, and another one may create the table in between ("table
            # call_records already exists"); what matters is that it is there now.
            if not sa.inspect(self._engine).has_table(self._table.name):
                raise
        self._add_node_column()
        columns = ", ".join(self._columns)
        if self._postgres:
            # the JSON lines are parsed by PostgreSQL (json_to_recordset), each member read as
            # its column's own type: ask the database which (a column the table lacks: the INSERT
            # is refused and its records counted, as any refusal).  json, not jsonb: the server's
            # CPU per record was 8 µs, 17 µs with jsonb (binary COPY: 2.7 µs; 1,000 records of
            # bench_records.py's shape per statement, 2026-11-30)
            with self._engine.connect() as conn:
                types = dict(conn.execute(sa.text("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                                  "WHERE attrelid = CAST(:t AS regclass) AND attnum > 0 AND NOT attisdropped"),
                                          {"t": self._table.name}).all())
            members = ", ".join(f"{c} {'text[]' if c == 'dest' else types.get(c, 'text')}" for c in FIELDS)
            values = ", ".join("array_to_string(r.dest, ',')" if c == "dest" else f"r.{c}" for c in FIELDS)
            # the parameter is the lines as the log wrote them (newline-terminated): a raw newline
            # is only ever between two records (JSON escapes one in a string), so the database
            # makes them a JSON array by turning each into a comma
            self._insert = (f"INSERT INTO {self._table.name} ({columns}) SELECT r.ts, {int(self.worker)}, r.node, {values} "
                            f"FROM json_to_recordset(('[' || rtrim(replace(%s, E'\\n', ','), ',') || ']')::json) "
                            f"AS r(ts {types.get('time', 'timestamptz')}, node {types.get('node', 'text')}, {members})")
        else:
            self._insert = f"INSERT INTO {self._table.name} ({columns}) VALUES ({', '.join('?' * (len(FIELDS) + 3))})"
        return True

    def _add_node_column(self) -> None:
        """Add ``node`` to a ``call_records`` table made before it existed (an upgrade; another
        worker may add it meanwhile: what matters is that it is there after).

        On PostgreSQL ``ALTER TABLE`` waits for an exclusive lock on the table, and while it waits
        every other writer queues behind it (the other nodes' records included): a report reading
        the table would stop them all, with ``/healthz`` ``ok``.  So the wait is bounded
        (:data:`ALTER_LOCK_TIMEOUT`); past it the database counts as down (records kept, tried
        again every ``retry`` s, ``/healthz`` degraded naming the lock)."""
        import sqlalchemy as sa

        name = self._table.name

        def has_node() -> bool:
            return any(c["name"] == "node" for c in sa.inspect(self._engine).get_columns(name))

        if has_node():
            return
        try:
            with self._engine.begin() as conn:
                if self._postgres:
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(ALTER_LOCK_TIMEOUT * 1000)}ms'")
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN node TEXT")
            log.info("records database: column node added to the table", extra={"database": self.where, "table": name})
        except sa.exc.DBAPIError:
            if not has_node():
                raise

    def _sqlite_row(self, line: bytes) -> tuple[Any, ...]:
        """The values of the table's columns (after ``id``) for a record's JSON line, for SQLite:
        the time as SQLAlchemy's SQLite ``DateTime`` text (so that Core reads it back as a
        datetime), ``dest`` as comma-separated TNs."""
        doc = orjson.loads(_without_nul(line))
        ts = doc["ts"]  # 2026-05-01T12:00:00.123+00:00, always (JSONRecordFormatter.line)
        dest = doc["dest"]
        values = [doc[k] for k in FIELDS]
        if dest is not None:
            values[_DEST] = ",".join(dest)
        return (f"{ts[:10]} {ts[11:23]}000", self.worker, doc.get("node"), *values)

    def _write(self, blobs: list[bytes]) -> None:
        """Insert the records of ``blobs`` (JSON lines, see the class) in one round trip.

        PostgreSQL: one ``INSERT ... SELECT ... FROM json_to_recordset(...)`` whose one parameter
        is the lines (the database makes them a JSON array), sent as the bytes they are (no
        decoding and encoding again: :func:`_bytes_as_text`), on a connection of its own in
        autocommit (:meth:`_pg`): one round trip per batch, where a pooled connection cost four
        (the pool's ping, ``BEGIN``, the ``INSERT``, ``COMMIT``), each a wait that hands the GIL
        back and forth with the event loop's thread.  Measured (one worker under ``wrk``, REST
        signing, per-thread CPU from ``/proc``, 2026-11-30): the thread took 1.9 µs a record with
        the pooled transaction and a substring search of the whole batch for an escaped NUL,
        1.1-1.2 µs with this statement on str lines (joined, then encoded by the driver); with
        the bytes as the log has them, callgrind counts 2,070 instructions a record fewer for the
        records to PostgreSQL only (``bench/bench_records.py --loop pg``, the thread included).
        SQLite: ``executemany`` of rows parsed from the lines (SQLAlchemy's own executemany costs
        several times more per row), in a transaction."""
        data = blobs[0] if len(blobs) == 1 else b"".join(blobs)
        if self._postgres:
            # a NUL is escaped as \u0000 in the JSON form, and a backslash is rare in a record:
            # one memchr over the batch, then the search for the NUL escape only if it found one
            if b"\\" in data and b"\\u0000" in data:
                data = b"\n".join(map(_without_nul, data.split(b"\n")))
            conn = self._pg()
            with conn.cursor() as cur:
                cur.execute(self._insert, (data,))
        else:
            with self._engine.begin() as conn:
                conn.exec_driver_sql(self._insert, [self._sqlite_row(line) for line in data.split(b"\n")[:-1]])

    def _pg(self) -> Any:
        """The thread's own PostgreSQL connection (psycopg, autocommit: each batch is one
        statement, hence its own transaction), opened through the engine's pool on first use and
        after :meth:`_down` closed it; ``bytes`` parameters go to it as text (:func:`_bytes_as_text`)."""
        raw = self._raw
        if raw is None:
            raw = self._raw = self._engine.raw_connection()
            conn = raw.driver_connection
            conn.autocommit = True
            conn.adapters.register_dumper(bytes, _bytes_as_text())
        return raw.driver_connection

    def _close_raw(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            try:
                raw.invalidate()  # (not back to the pool: it may be broken, or in autocommit)
            except Exception:  # noqa: BLE001
                pass

    @property
    def slow(self) -> float:
        """Seconds the write in progress has taken so far (0.0: none in progress)."""
        since = self._busy_since
        return time.monotonic() - since if since else 0.0

    def _down(self, exc: BaseException) -> None:
        """The database cannot take records now: say so (once per change), and drop the pooled
        connections (one left read-only, or to a database dropped since, would fail again)."""
        self._close_raw()
        if self._engine is not None:
            try:
                self._engine.dispose()
            except Exception:  # noqa: BLE001
                pass
        reason = _one_line(exc)
        if self.down is None:
            log.warning("records database down; records are queued, then dropped and counted",
                        extra={"database": self.where, "error": reason, "queued": self.queued_records - self.taken_records + self.held})
        self.down = reason

    def _came_up(self) -> None:
        if self.down is not None:
            self.up_since = time.monotonic()
            log.info("records database reachable again", extra={"database": self.where})
        self.down = None

    def _run(self) -> None:
        import sqlalchemy as sa

        # a value the database refuses (PostgreSQL is written through psycopg's own cursor, whose
        # errors SQLAlchemy does not wrap); anything else means the database cannot take records
        refused: tuple[type[BaseException], ...] = (sa.exc.DataError, sa.exc.IntegrityError, UnicodeError, ValueError)
        try:
            import psycopg

            refused += (psycopg.DataError, psycopg.IntegrityError)
        except ImportError:  # pragma: no cover - SQLite only
            pass
        connected = False
        #: the lines taken from the queue and not written yet (a blob per flush), and their records
        pending: list[bytes] = []
        held = 0
        #: the parts of a refused batch still to write, a blob per record (see below)
        parts: list[list[bytes]] = []
        queue = self.queue
        batch = self.batch
        last_ok = time.monotonic()
        while True:
            stopping = self._stop.is_set()
            if not stopping and self.queued_records - self.taken_records < batch and not pending and not parts:
                stopping = self._stop.wait(self.interval)
            try:
                if not connected:
                    self._busy_since = time.monotonic()  # a lock can hold the connect too (SQLite: 30 s busy timeout)
                    connected = self._connect()  # (failing: cleared in the handler below, once `down` says why)
                    self._busy_since = 0.0
                    last_ok = time.monotonic()
                    if not pending and not parts and not queue:  # else the write says whether it is back
                        self._came_up()
                if not pending and parts:
                    pending = parts.pop()
                    held = len(pending)
                if not parts:  # blobs of the queue, up to `batch` records (at least one blob)
                    while queue and (not pending or held + queue[0][1] <= batch):
                        blob, n = queue.popleft()
                        pending.append(blob)
                        held += n
                        self.taken_records += n
                        self.taken_bytes += len(blob)
                self.held = held + sum(map(len, parts))
                if pending:
                    self._busy_since = time.monotonic()
                    self._write(pending)  # (failing: cleared in the handler below, once the failure is recorded)
                    self._busy_since = 0.0
                    self.written += held
                    self.held -= held
                    pending = parts.pop() if parts else []
                    held = len(pending)
                    last_ok = time.monotonic()
                    self._came_up()
                elif time.monotonic() - last_ok > 5 * self.retry:  # idle: is it still there?
                    if self._postgres:
                        self._pg().execute("SELECT 1")
                    else:
                        with self._engine.connect() as conn:
                            conn.execute(sa.text("SELECT 1"))
                    last_ok = time.monotonic()
                    self._came_up()
            except Exception as exc:  # noqa: BLE001
                if connected and isinstance(exc, refused) and pending:
                    # the database refused a value of the batch: write it in halves, down to single
                    # records, so that only a record refused on its own is dropped (and counted),
                    # not the calls batched with it
                    self._busy_since = 0.0
                    if held > 1:
                        if len(pending) < held:  # a blob per record, to be halved
                            pending = _one_per_line(pending)
                        half = held // 2
                        parts.append(pending[half:])
                        pending = pending[:half]
                        held = half
                        continue
                    self.rejected += 1
                    now = self.last_refusal = time.monotonic()
                    if now - self._refusal_logged >= REFUSAL_LOG_EVERY:  # one line, then one per 10 s at most
                        log.warning("records database refused a record; dropped", extra={
                            "database": self.where, "error": _one_line(exc), "refused_total": self.rejected})
                        self._refusal_logged = now
                    pending = parts.pop() if parts else []
                    held = len(pending)
                    continue
                # unreachable, read-only, the table gone, no right, a refusal not about a record
                # (the table, a setting): the records are kept and tried again every `retry` s on
                # a new connection, after creating the table again if it went (a database dropped
                # and created anew); the queue fills meanwhile, then drops and counts (a call is
                # never delayed)
                self._down(exc)
                self._busy_since = 0.0  # (after `down`: /healthz goes from "slow" to "down", never to neither)
                connected = False
                if stopping:
                    break
                self._stop.wait(self.retry)
                continue
            if stopping and not queue and not pending and not parts:
                break
        self.held = held + sum(map(len, parts))
        self._close_raw()
        if self._engine is not None:
            self._engine.dispose()


# --- the per-worker object -------------------------------------------------------------------


def check_database(url: str) -> None:
    """``serve --check``: open the records database of ``url`` as a worker does (the table
    created when missing, its columns read), within the connect timeout of the records thread
    (5 s).  Raises :class:`~stirshaken.serve.config.ConfigError` with one line (the password
    hidden).  At run time a database that cannot be used only makes ``/healthz`` degraded."""
    from stirshaken.serve.config import ConfigError

    w = _DatabaseWriter(url, collections.deque(), 0)
    try:
        w._connect()
    except Exception as exc:  # noqa: BLE001 - any driver's error: one line
        raise ConfigError(f"[records].database: cannot use {w.where}: {_one_line(exc)}") from None
    finally:
        if w._engine is not None:
            w._engine.dispose()


class Records:
    """Where one worker's records go: the ``stirshaken.records`` logger and/or a database.

    ``log``: write records to the logger (with a :class:`BatchedStreamHandler` on ``stream``,
    stderr by default, formatted per ``fmt`` ``"json"`` or ``"text"``); ``database``: a
    SQLAlchemy URL (see :class:`~stirshaken.serve.config.RecordsConfig`) or ``""``;
    ``queue_size``: records waiting for the database, at most.  :meth:`start` starts the database
    thread, :meth:`close` writes what is queued (bounded) and stops it."""

    def __init__(self, *, log: bool = True, database: str = "", queue_size: int = 10000, fmt: str = "json",
                 worker: int | str = 0, stream: TextIO | None = None, node: str = ""):
        self.logger: logging.Logger | None = None
        self.handler: BatchedStreamHandler | None = None
        self._formatter: logging.Formatter | None = None
        if log:
            lg = logging.getLogger(LOGGER)
            for h in list(lg.handlers):
                lg.removeHandler(h)
            h = self.handler = BatchedStreamHandler(stream, delay=FLUSH_DELAY)
            f = self._formatter = JSONRecordFormatter(worker, node) if fmt == "json" else TextRecordFormatter(worker)
            h.setFormatter(f)
            lg.addHandler(h)
            lg.setLevel(logging.INFO)
            lg.propagate = False
            self.logger = lg
            self._alone = [h]
            # what LogRecord.__init__ would compute, the same for every record of this worker
            self._template = dict(vars(logging.LogRecord(LOGGER, logging.INFO, __file__, 0, "call", None, None, func="add")))
        #: records kept by add() for flush(): ``(record, time)``
        self._pending: list[tuple[dict[str, Any], float]] = []
        self._scheduled = False
        self.queue_size = queue_size
        #: the JSON lines of the records waiting for the database: ``(lines, n)`` per flush (:class:`_DatabaseWriter`)
        self.queue: collections.deque[tuple[bytes, int]] | None = collections.deque() if database else None
        # the database takes the JSON line: the log's own when the log writes JSON lines
        self._json = self._formatter if isinstance(self._formatter, JSONRecordFormatter) else JSONRecordFormatter(worker, node)
        self.dropped = 0  # queue full (counted on the event loop's thread)
        self._last_drop = 0.0  # time.monotonic() of the last record dropped for a full queue
        self.writer = _DatabaseWriter(database, self.queue, worker) if database and self.queue is not None else None

    @classmethod
    def from_config(cls, cfg: Any, *, fmt: str = "json", worker: int | str = 0, stream: Any = None) -> Records | None:
        """The records of a :class:`~stirshaken.serve.config.RecordsConfig`, or None when it writes
        none; ``stream``: where the log lines go (None: stderr)."""
        if not cfg.enabled:
            return None
        return cls(log=cfg.log, database=cfg.url, queue_size=cfg.queue_size, fmt=fmt, worker=worker, node=cfg.node, stream=stream)

    def start(self) -> None:
        if self.writer is not None:
            self.writer.start()

    def close(self, timeout: float = 2.0) -> None:
        self.flush()
        if self.handler is not None:
            self.handler.flush()
        if self.writer is not None:
            self.writer.stop(timeout)

    # --- the request path ------------------------------------------------------------------------

    def add(self, rec: dict[str, Any] | tuple[Shared, dict[str, Any]]) -> None:
        """Write one record, owned by the records from now on: ``rec`` the fields of
        :data:`FIELDS` (one left out: None), or ``(shared, rest)``: the fields of a
        :class:`Shared` plus those of ``rest``.

        The record is only kept with its time: :meth:`flush` formats and writes it with the
        others of up to :data:`FLUSH_DELAY` seconds (or :data:`FLUSH_RECORDS` records), and
        decides there, once for them all, where they go (the logger's state, the room in the
        database queue).  Measured (callgrind, ``bench/bench_records.py --loop log``, 2026-11-30):
        those decisions taken in ``add``, record by record, cost about 2,600 instructions a record
        more (of some 20,700 a REST signing record cost then)."""
        pending = self._pending
        pending.append((rec, time.time()))
        if not self._scheduled or len(pending) >= FLUSH_RECORDS:
            self._kick()

    def _kick(self) -> None:
        """After a record was kept: format and write what is kept when it is :data:`FLUSH_RECORDS`
        records or when no event loop runs, else make sure :meth:`flush` is scheduled."""
        if len(self._pending) >= FLUSH_RECORDS:
            self.flush()
        elif _later(FLUSH_DELAY, self.flush):
            self._scheduled = True
        else:
            self.flush()

    def flush(self) -> None:
        """Format and write the records kept by :meth:`add`, in order.

        * the log: while the ``stirshaken.records`` logger has only the handler installed here
          and no filters (the fast path), the JSON lines of them all in one loop
          (:meth:`JSONRecordFormatter.blob`) and one ``write``; otherwise each record goes
          through the logger as any other (its ``call`` attribute holding it, the time of its
          call as the LogRecord's), without a :class:`logging.LogRecord` being built on the fast
          path.  Nothing while the logger is disabled for INFO.
        * the database: the JSON line of each record (the log's own when the log writes JSON),
          as long as fewer than ``queue_size`` lines wait and the lines waiting hold fewer than
          :data:`QUEUE_BYTES` bytes; past either, a record is dropped and counted.

        Measured (``bench/bench_records.py --together``, REST signing, two serves sharing one CPU,
        2026-11-30): records to the log cost 0.886 of the requests per CPU second of records off
        when each record was formatted in ``add``, 0.912 formatted 128 at a time (the
        formatter's code and data stay in the CPU's caches)."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        data: bytes | None = None  # the JSON lines of `pending` (each ending with a newline), when the log made them
        lg = self.logger
        if lg is not None and lg.isEnabledFor(_INFO):
            h = self.handler
            fmt = self._formatter
            if lg.handlers == self._alone and not lg.filters and not h.filters and h.formatter is fmt:  # type: ignore[union-attr]
                if type(fmt) is JSONRecordFormatter:
                    data = fmt.blob(pending)
                    h.write_bytes(data)  # type: ignore[union-attr]
                else:
                    line = fmt.line  # type: ignore[union-attr]
                    h.write_bytes("".join([line(r, t) + "\n" for r, t in pending]).encode("utf-8", "backslashreplace"))  # type: ignore[union-attr]
            else:
                for r, t in pending:
                    self._log(r, t)
        w = self.writer
        if w is None:
            return
        n = len(pending)
        keep = min(n, self.queue_size - (w.queued_records - w.taken_records))  # (the queue full: the later records dropped)
        if data is None:  # (the log wrote no JSON lines: text, off, or another handler)
            data = self._json.blob(pending if keep >= n else pending[:max(keep, 0)])
        elif keep < n:
            data = _first_lines(data, keep)
        room = QUEUE_BYTES - (w.queued_bytes - w.taken_bytes)
        if len(data) > room:  # records of huge requests (thousands of dest TNs) cannot grow a worker by hundreds of MB
            lines = data.split(b"\n")[:-1]
            keep = size = 0
            for x in lines:  # (as many as while fewer than QUEUE_BYTES wait)
                if size >= room:
                    break
                size += len(x) + 1
                keep += 1
            data = data[:size]
        if keep < n:
            self.dropped += n - max(keep, 0)
            self._last_drop = time.monotonic()
            if keep <= 0:
                return
        self.queue.append((data, keep))  # type: ignore[union-attr]
        w.queued_records += keep
        w.queued_bytes += len(data)

    def _log(self, rec: Any, now: float) -> None:
        """The record through the logger's general path (its ``call``: :func:`as_fields`)."""
        lg = self.logger
        if lg is not None:
            d = self._template.copy()
            d["created"] = now
            d["msecs"] = (now - int(now)) * 1000
            d["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
            d["call"] = as_fields(rec)
            r = object.__new__(logging.LogRecord)
            r.__dict__ = d
            lg.handle(r)

    # --- health and metrics ----------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """``"records database down: <why>"`` while the database cannot take records (unreachable,
        read-only, the table cannot be created...); ``"records database slow: ..."`` while one write
        (or the connect) has taken more than :data:`SLOW` seconds (a lock, an overloaded server, a
        server that does not answer); ``"records dropped ..."`` / ``"records database refused
        records ..."`` for :data:`RECENT` seconds after a record was dropped for a full queue (not
        during an outage: an overload) or refused; else None."""
        w = self.writer
        if w is None:
            return None
        if w.down is not None:
            return f"records database down: {w.down}"
        if w.slow > SLOW:  # (the cause, before the drops it brings)
            return f"records database slow: a write has taken more than {SLOW:g} s"
        now = time.monotonic()
        if self._last_drop > w.up_since and now - self._last_drop < RECENT:  # (drops of an outage end with it)
            return f"records dropped in the last {RECENT:.0f} s: the database queue is full"  # (a fixed text: /healthz logs each change)
        if w.last_refusal and now - w.last_refusal < RECENT:
            return f"records database refused records in the last {RECENT:.0f} s"
        return None

    def counters(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """The counter families of the records (for :class:`~stirshaken.serve.metrics.Metrics`)."""
        w = self.writer
        if w is None:
            return {}
        return {
            "stirshaken_records_dropped_total": {(("reason", "queue_full"),): self.dropped, (("reason", "refused"),): w.rejected},
            "stirshaken_records_written_total": {(): w.written},
        }
