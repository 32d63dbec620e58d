"""The TN inventory and Do-Not-Originate lists in a database (SQLAlchemy 2 Core), and their
live distribution to the workers.

Same engine conventions as :mod:`stirshaken.pki.store` (an SQLAlchemy URL; a SQLite file gets WAL
and a busy timeout; PostgreSQL through ``postgresql+psycopg://``), its own tables (``inv_*``):

* ``inv_customers`` (id, name, tenant, own/other attestation) and ``inv_recognizers``
  (customer, kind, value: how a call is attributed to it, see
  :data:`~stirshaken.serve.inventory.index.RECOGNIZER_KINDS`);
* ``inv_tns`` (TN key → customer), ``inv_ranges`` (start, end → customer), ``inv_dno`` (TN key,
  source, listed date) — keys as :func:`~stirshaken.serve.inventory.index.tn_key`;
* ``inv_meta`` (the ``version`` counter) and ``inv_changes`` (what each version changed).

Every write is one transaction that bumps ``version`` and records its changes: single TNs and DNO
entries row by row (up to :data:`CHANGE_ROWS` per transaction), anything larger, ranges and
customers as a marker that makes workers reload that part.  On PostgreSQL the transaction also
sends ``NOTIFY stirshaken_inventory``; :class:`InventoryWatcher` (one thread per worker) wakes on
it, or polls the version every ``poll_interval`` seconds (SQLite), and swaps the worker's
:class:`~stirshaken.serve.inventory.index.LiveInventory` index.

Bulk imports (:meth:`InventoryStore.import_tns`, :meth:`InventoryStore.import_dno`) validate
the whole file first and report every bad row with its line number (:class:`ImportProblems`);
only a clean file is written, in one transaction (PostgreSQL: ``COPY`` into a temporary table).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, TextIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stirshaken.core.tn import TNError, canonicalize_tn
from stirshaken.pki.store import database_error, make_engine
from stirshaken.serve.inventory.index import (
    ATTEST_LEVELS,
    Customer,
    InventoryIndex,
    LiveInventory,
    credential_hash,
    key_tn,
    parse_range,
    tn_key,
)

log = logging.getLogger("stirshaken.serve.inventory")

__all__ = ["CHANGE_ROWS", "ImportProblems", "ImportResult", "InventoryError", "InventoryStore", "InventoryWatcher", "canonical"]

#: a transaction changing more TNs / DNO entries than this is announced as "reload" instead of row by row
CHANGE_ROWS = 20000
#: a worker rebuilds its arrays (full reload) when its overlay of changes grows beyond this
OVERLAY_LIMIT = 200000
CHANNEL = "stirshaken_inventory"

metadata = sa.MetaData()
# SQLite: INTEGER PRIMARY KEY is the rowid (no second index, rows stored in key order)
KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

inv_customers = sa.Table(
    "inv_customers", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("tenant", sa.String(128), nullable=True),
    sa.Column("own", sa.String(1), nullable=False, default="A"),
    sa.Column("other", sa.String(1), nullable=False, default="B"),
)
inv_recognizers = sa.Table(
    "inv_recognizers", metadata,
    sa.Column("customer_id", sa.Integer, sa.ForeignKey("inv_customers.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("value", sa.String(256), nullable=False),
    sa.PrimaryKeyConstraint("kind", "value"),
)
inv_tns = sa.Table(
    "inv_tns", metadata,
    sa.Column("tn", KEY, primary_key=True, autoincrement=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
)
inv_ranges = sa.Table(
    "inv_ranges", metadata,
    sa.Column("start", KEY, primary_key=True, autoincrement=False),
    sa.Column("end", sa.BigInteger, nullable=False),
    sa.Column("customer_id", sa.Integer, nullable=False),
)
inv_dno = sa.Table(
    "inv_dno", metadata,
    sa.Column("tn", KEY, primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(128), nullable=False),
    sa.Column("listed", sa.String(10), nullable=False),  # ISO date the list was published
)
inv_meta = sa.Table(
    "inv_meta", metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
inv_changes = sa.Table(
    "inv_changes", metadata,
    sa.Column("version", sa.BigInteger, nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),  # tn, dno, ranges, customers, reload
    sa.Column("key", sa.BigInteger, nullable=False, default=0),
    sa.Column("value", sa.BigInteger, nullable=False, default=0),
)


class InventoryError(ValueError):
    """A request the inventory cannot carry out, in one line (unknown customer, bad TN, ...)."""


@dataclass(frozen=True)
class ImportProblems(InventoryError):
    """A bulk import refused: ``problems`` lists ``(line number, message)`` of every bad row
    (at most ``limit`` kept, ``count`` in all); nothing was written."""

    problems: tuple[tuple[int, str], ...]
    count: int

    def __str__(self) -> str:
        more = f" (first {len(self.problems)} shown)" if self.count > len(self.problems) else ""
        return f"{self.count} bad row(s), nothing imported{more}: " + "; ".join(f"line {n}: {m}" for n, m in self.problems[:3])


@dataclass(frozen=True)
class ImportResult:
    rows: int
    tns: int
    ranges: int
    version: int
    seconds: float


def canonical(value: str) -> str:
    """A TN as written in a file or request (``+1 215 555 1212``) in RFC 8224 §8.3 canonical
    form; raises :class:`InventoryError`."""
    v = value.strip()
    if v.isdigit() and v.isascii():
        return v
    try:
        return canonicalize_tn(v)
    except (TNError, TypeError):
        raise InventoryError(f"{value!r} is not a telephone number") from None


def _entry(text: str) -> tuple[int, int | None]:
    """``(key, None)`` for a TN, ``(start key, end key)`` for a range ``a-b``; raises ValueError."""
    t = text.strip()
    if t.isdigit() and t.isascii():
        return tn_key(t), None
    if "-" in t[1:] and t.count("-") == 1 and not t.startswith("+"):
        return parse_range(t)
    return tn_key(canonical(t)), None


def _rows_of(lines: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a CSV text, without blank lines and ``#`` comments."""
    for n, fields in enumerate(csv.reader(lines), 1):
        if not fields or not any(f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        yield n, fields


class InventoryStore:
    """The inventory database.  ``url`` is an SQLAlchemy URL (a bare path: a SQLite file)."""

    def __init__(self, url: str, *, create: bool = True):
        if "://" not in url:
            url = f"sqlite:///{url}"
        self.url = url
        self.engine: Engine = make_engine(url)
        if create:
            try:
                metadata.create_all(self.engine)
                with self.engine.begin() as c:
                    if c.execute(sa.select(inv_meta.c.value).where(inv_meta.c.key == "version")).first() is None:
                        c.execute(inv_meta.insert().values(key="version", value=0))
            except sa.exc.SQLAlchemyError as exc:  # unreachable server, unwritable file: one line (DatabaseError)
                self.engine.dispose()
                raise database_error(url, exc) from None

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    # --- versions -------------------------------------------------------------------------------

    def version(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(inv_meta.c.value).where(inv_meta.c.key == "version")).scalar_one())

    def _bump(self, c: Connection, changes: list[dict[str, Any]] | None, marker: str | None = None) -> int:
        """Next version (the UPDATE locks the row: writers are serialised), its change rows, and
        NOTIFY on PostgreSQL.  ``changes`` None or too many: a ``reload`` marker instead."""
        c.execute(inv_meta.update().where(inv_meta.c.key == "version").values(value=inv_meta.c.value + 1))
        v = int(c.execute(sa.select(inv_meta.c.value).where(inv_meta.c.key == "version")).scalar_one())
        rows: list[dict[str, Any]] = []
        if changes is None or len(changes) > CHANGE_ROWS:
            rows.append({"version": v, "kind": "reload", "key": 0, "value": 0})
        else:
            rows.extend(dict(r, version=v) for r in changes)
        if marker:
            rows.append({"version": v, "kind": marker, "key": 0, "value": 0})
        if rows:
            c.execute(inv_changes.insert(), rows)
        # keep the change log short: a worker further behind than this reloads everything
        c.execute(inv_changes.delete().where(inv_changes.c.version < v - 10000))
        if not self.is_sqlite:
            c.execute(sa.text("SELECT pg_notify(:ch, :v)"), {"ch": CHANNEL, "v": str(v)})
        return v

    def changes_since(self, version: int) -> tuple[int, list[tuple[int, str, int, int]]] | None:
        """``(current version, [(version, kind, key, value)...])`` after ``version``; None when
        the log no longer reaches back that far (reload everything)."""
        with self.engine.connect() as c:
            cur = int(c.execute(sa.select(inv_meta.c.value).where(inv_meta.c.key == "version")).scalar_one())
            if cur == version:
                return cur, []
            oldest = c.execute(sa.select(sa.func.min(inv_changes.c.version))).scalar()
            if oldest is None or oldest > version + 1:
                return None
            rows = c.execute(
                sa.select(inv_changes.c.version, inv_changes.c.kind, inv_changes.c.key, inv_changes.c.value)
                .where(inv_changes.c.version > version, inv_changes.c.version <= cur)
                .order_by(inv_changes.c.version)
            ).all()
        return cur, [tuple(r) for r in rows]  # type: ignore[misc]

    # --- customers ------------------------------------------------------------------------------

    def put_customer(
        self,
        name: str,
        *,
        tenant: str | None = None,
        own: str = "A",
        other: str = "B",
        sources: Iterable[str] = (),
        headers: Iterable[str] = (),
        credentials: Iterable[str] = (),
        tenants: Iterable[str] = (),
    ) -> int:
        """Create or replace a customer and its recognizers (credentials are bearer tokens, stored
        hashed); returns its id.  Raises :class:`InventoryError`."""
        import ipaddress

        name = name.strip()
        if not name or len(name) > 128:
            raise InventoryError("a customer name is 1-128 characters")
        for lvl in (own, other):
            if lvl not in ATTEST_LEVELS:
                raise InventoryError(f"attestation {lvl!r} is not A, B or C")
        recs: list[tuple[str, str]] = []
        for s in sources:
            try:
                recs.append(("source", str(ipaddress.ip_network(s.strip(), strict=False))))
            except ValueError:
                raise InventoryError(f"{s!r} is not an IP address or network") from None
        recs += [("header", h.strip().lower()) for h in headers if h.strip()]
        recs += [("credential", credential_hash(t)) for t in credentials if t]
        recs += [("tenant", t.strip().lower()) for t in tenants if t.strip()]
        with self.engine.begin() as c:
            row = c.execute(sa.select(inv_customers.c.id).where(inv_customers.c.name == name)).first()
            if row is None:
                cid = int(c.execute(inv_customers.insert().values(name=name, tenant=tenant or None, own=own, other=other)).inserted_primary_key[0])
            else:
                cid = int(row[0])
                c.execute(inv_customers.update().where(inv_customers.c.id == cid).values(tenant=tenant or None, own=own, other=other))
                c.execute(inv_recognizers.delete().where(inv_recognizers.c.customer_id == cid))
            for kind, value in recs:
                other_owner = c.execute(
                    sa.select(inv_customers.c.name).join(inv_recognizers, inv_recognizers.c.customer_id == inv_customers.c.id)
                    .where(inv_recognizers.c.kind == kind, inv_recognizers.c.value == value)
                ).first()
                if other_owner is not None:
                    raise InventoryError(f"{kind} {value if kind != 'credential' else '(token)'} already identifies customer {other_owner[0]!r}")
                c.execute(inv_recognizers.insert().values(customer_id=cid, kind=kind, value=value))
            self._bump(c, [], marker="customers")
        return cid

    def remove_customer(self, name: str) -> None:
        """Remove a customer that holds no TN or range; raises :class:`InventoryError`."""
        with self.engine.begin() as c:
            cid = self._customer_id(c, name)
            held = c.execute(sa.select(sa.func.count()).select_from(inv_tns).where(inv_tns.c.customer_id == cid)).scalar_one()
            held += c.execute(sa.select(sa.func.count()).select_from(inv_ranges).where(inv_ranges.c.customer_id == cid)).scalar_one()
            if held:
                raise InventoryError(f"customer {name!r} still holds {held} TN(s)/range(s)")
            c.execute(inv_recognizers.delete().where(inv_recognizers.c.customer_id == cid))
            c.execute(inv_customers.delete().where(inv_customers.c.id == cid))
            self._bump(c, [], marker="customers")

    def customers(self) -> list[dict[str, Any]]:
        """Every customer with its recognizers (credentials shown as their hash) and TN counts."""
        with self.engine.connect() as c:
            custs = {r.id: {"name": r.name, "tenant": r.tenant, "own": r.own, "other": r.other, "recognizers": [], "tns": 0, "ranges": 0}
                     for r in c.execute(sa.select(inv_customers))}
            for r in c.execute(sa.select(inv_recognizers)):
                custs[r.customer_id]["recognizers"].append(f"{r.kind}:{r.value}")
            for cid, n in c.execute(sa.select(inv_tns.c.customer_id, sa.func.count()).group_by(inv_tns.c.customer_id)):
                if cid in custs:
                    custs[cid]["tns"] = n
            for cid, n in c.execute(sa.select(inv_ranges.c.customer_id, sa.func.count()).group_by(inv_ranges.c.customer_id)):
                if cid in custs:
                    custs[cid]["ranges"] = n
        return sorted(custs.values(), key=lambda d: d["name"])

    @staticmethod
    def _customer_id(c: Connection, name: str) -> int:
        row = c.execute(sa.select(inv_customers.c.id).where(inv_customers.c.name == name.strip())).first()
        if row is None:
            raise InventoryError(f"no customer named {name!r}")
        return int(row[0])

    def _customer_ids(self, c: Connection) -> dict[str, int]:
        return {r.name: r.id for r in c.execute(sa.select(inv_customers.c.id, inv_customers.c.name))}

    # --- TNs ------------------------------------------------------------------------------------

    def parse_tns(self, lines: Iterable[str], customers: dict[str, int], *, create_customers: bool = False,
                  limit: int = 50) -> tuple[list[tuple[int, int]], list[tuple[int, int, int]], dict[str, int], ImportProblems | None]:
        """Rows ``tn-or-range,customer`` (an optional ``tn,customer`` header line, ``#``
        comments) as ``(key, customer id)`` TNs and ``(start, end, customer id)`` ranges.  An
        unknown customer is a bad row, or with ``create_customers`` gets a provisional negative
        id (returned in the dict of new names)."""
        tns: list[tuple[int, int]] = []
        ranges: list[tuple[int, int, int]] = []
        new: dict[str, int] = {}
        problems: list[tuple[int, str]] = []
        count = 0
        first = True
        append = tns.append
        for n, fields in _rows_of(lines):
            if first:
                first = False
                if fields[0].strip().lower() in ("tn", "number", "tn_or_range"):
                    continue
            try:
                if len(fields) < 2 or not fields[1].strip():
                    raise InventoryError("expected 'tn,customer'")
                name = fields[1].strip()
                cid = customers.get(name)
                if cid is None:
                    cid = new.get(name)
                    if cid is None:
                        if not create_customers:
                            raise InventoryError(f"no customer named {name!r} (create it first, or import with --create-customers)")
                        cid = new[name] = -(len(new) + 1)
                t = fields[0]
                if t.isdigit() and 0 < len(t) <= 18 and t.isascii():  # the usual case, canonical already
                    append((int("1" + t), cid))
                    continue
                try:
                    a, b = _entry(t)
                except ValueError as exc:
                    raise InventoryError(str(exc)) from None
                if b is None:
                    append((a, cid))
                else:
                    ranges.append((a, b, cid))
            except InventoryError as exc:
                count += 1
                if len(problems) < limit:
                    problems.append((n, str(exc)))
        if not count:  # the same TN twice in one file is a mistake, not an update
            tns.sort()
            for (x, _), (y, _) in zip(tns, tns[1:]):
                if x == y:
                    count += 1
                    if len(problems) < limit:
                        problems.append((0, f"{key_tn(x)} appears twice in the file"))
        return tns, ranges, new, (ImportProblems(tuple(problems), count) if count else None)

    def import_tns(self, lines: Iterable[str], *, replace: bool = False, create_customers: bool = False,
                   progress: Callable[[int], None] | None = None) -> ImportResult:
        """Import ``tn,customer`` rows (:meth:`parse_tns`) in one transaction: added or moved to
        that customer; ``replace``: the file becomes the whole TN inventory.  Raises
        :class:`ImportProblems` (nothing written) or :class:`InventoryError`."""
        t0 = time.perf_counter()
        with self.engine.connect() as c:
            customers = self._customer_ids(c)
        tns, ranges, new, problems = self.parse_tns(_counting(lines, progress), customers, create_customers=create_customers)
        if problems is not None:
            raise problems
        with self.engine.begin() as c:
            if new:
                real = {}
                for name, provisional in new.items():
                    real[provisional] = int(c.execute(inv_customers.insert().values(name=name, own="A", other="B")).inserted_primary_key[0])
                tns = [(k, real[v]) if v < 0 else (k, v) for k, v in tns]
                ranges = [(a, b, real[v]) if v < 0 else (a, b, v) for a, b, v in ranges]
            if ranges:
                self._check_ranges(c, ranges, replace)
            if replace:
                c.execute(inv_tns.delete())
                c.execute(inv_ranges.delete())
            self._upsert_tns(c, tns)
            for a, b, cid in ranges:
                c.execute(inv_ranges.delete().where(inv_ranges.c.start == a))
                c.execute(inv_ranges.insert().values(start=a, end=b, customer_id=cid))
            changes = None if replace else [{"kind": "tn", "key": k, "value": v} for k, v in tns] if len(tns) <= CHANGE_ROWS else None
            v = self._bump(c, changes, marker="customers" if new else "ranges" if ranges else None)
        return ImportResult(rows=len(tns) + len(ranges), tns=len(tns), ranges=len(ranges), version=v, seconds=time.perf_counter() - t0)

    def _check_ranges(self, c: Connection, ranges: list[tuple[int, int, int]], replace: bool) -> None:
        existing = [] if replace else [tuple(r) for r in c.execute(sa.select(inv_ranges.c.start, inv_ranges.c.end, inv_ranges.c.customer_id))]
        new_starts = {a for a, _, _ in ranges}
        allr = sorted([r for r in existing if r[0] not in new_starts] + ranges)
        for (a0, b0, _), (a1, b1, _) in zip(allr, allr[1:]):
            if a1 <= b0:
                raise InventoryError(f"range {key_tn(a1)}-{key_tn(b1)} overlaps {key_tn(a0)}-{key_tn(b0)}")

    def _upsert_tns(self, c: Connection, tns: list[tuple[int, int]]) -> None:
        if not tns:
            return
        if self.is_sqlite:
            c.exec_driver_sql("INSERT INTO inv_tns (tn, customer_id) VALUES (?, ?) "
                              "ON CONFLICT(tn) DO UPDATE SET customer_id = excluded.customer_id", tns)
            return
        raw = c.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS inv_tns_load (tn bigint, customer_id integer) ON COMMIT DROP")
            with cur.copy("COPY inv_tns_load (tn, customer_id) FROM STDIN") as cp:
                for row in tns:
                    cp.write_row(row)
            cur.execute("INSERT INTO inv_tns (tn, customer_id) SELECT tn, customer_id FROM inv_tns_load "
                        "ON CONFLICT (tn) DO UPDATE SET customer_id = excluded.customer_id")
            cur.execute("DROP TABLE inv_tns_load")

    def add_tn(self, tn: str, customer: str) -> int:
        """Assign one TN or range ``a-b`` to ``customer``; returns the new version."""
        try:
            a, b = _entry(tn)
        except ValueError as exc:
            raise InventoryError(str(exc)) from None
        with self.engine.begin() as c:
            cid = self._customer_id(c, customer)
            if b is None:
                self._upsert_tns(c, [(a, cid)])
                return self._bump(c, [{"kind": "tn", "key": a, "value": cid}])
            self._check_ranges(c, [(a, b, cid)], False)
            c.execute(inv_ranges.delete().where(inv_ranges.c.start == a))
            c.execute(inv_ranges.insert().values(start=a, end=b, customer_id=cid))
            return self._bump(c, [], marker="ranges")

    def remove_tn(self, tn: str) -> int:
        """Remove one TN or the range ``a-b``; raises :class:`InventoryError` when absent."""
        try:
            a, b = _entry(tn)
        except ValueError as exc:
            raise InventoryError(str(exc)) from None
        with self.engine.begin() as c:
            if b is None:
                if c.execute(inv_tns.delete().where(inv_tns.c.tn == a)).rowcount == 0:
                    raise InventoryError(f"{key_tn(a)} is not in the inventory")
                return self._bump(c, [{"kind": "tn", "key": a, "value": 0}])
            if c.execute(inv_ranges.delete().where(inv_ranges.c.start == a, inv_ranges.c.end == b)).rowcount == 0:
                raise InventoryError(f"range {tn.strip()} is not in the inventory")
            return self._bump(c, [], marker="ranges")

    def lookup(self, tn: str) -> dict[str, Any]:
        """What the database says about one TN: its holder (by TN or range) and DNO listing."""
        key = tn_key(canonical(tn))
        with self.engine.connect() as c:
            row = c.execute(sa.select(inv_customers.c.name).join(inv_tns, inv_tns.c.customer_id == inv_customers.c.id)
                            .where(inv_tns.c.tn == key)).first()
            rng = None
            if row is None:
                r = c.execute(sa.select(inv_ranges.c.start, inv_ranges.c.end, inv_customers.c.name)
                              .join(inv_customers, inv_customers.c.id == inv_ranges.c.customer_id)
                              .where(inv_ranges.c.start <= key).order_by(inv_ranges.c.start.desc()).limit(1)).first()
                if r is not None and key <= r.end:
                    row, rng = (r.name,), f"{key_tn(r.start)}-{key_tn(r.end)}"
            d = c.execute(sa.select(inv_dno).where(inv_dno.c.tn == key)).first()
        return {"tn": key_tn(key), "customer": row[0] if row else None, "range": rng,
                "dno": None if d is None else {"source": d.source, "listed": d.listed}}

    def export_tns(self, out: TextIO) -> int:
        """Write the inventory as ``tn,customer`` CSV (TNs then ranges); returns the rows written."""
        n = 0
        out.write("tn,customer\n")
        with self.engine.connect() as c:
            names = {v: k for k, v in self._customer_ids(c).items()}
            res = c.execution_options(stream_results=True, yield_per=100000).execute(sa.select(inv_tns.c.tn, inv_tns.c.customer_id).order_by(inv_tns.c.tn))
            buf: list[str] = []
            for k, cid in res:
                buf.append(f"{str(k)[1:]},{names.get(cid, '')}\n")
                if len(buf) >= 100000:
                    out.write("".join(buf))
                    n += len(buf)
                    buf.clear()
            out.write("".join(buf))
            n += len(buf)
            for r in c.execute(sa.select(inv_ranges).order_by(inv_ranges.c.start)):
                out.write(f"{key_tn(r.start)}-{key_tn(r.end)},{names.get(r.customer_id, '')}\n")
                n += 1
        return n

    # --- Do-Not-Originate -----------------------------------------------------------------------

    def import_dno(self, lines: Iterable[str], *, source: str, listed: str | None = None, replace: bool = False,
                   progress: Callable[[int], None] | None = None, limit: int = 50) -> ImportResult:
        """Import a DNO list: one TN per line, or CSV whose first column is the TN (a header line
        whose first field is not a number is skipped).  ``source`` names the list, ``listed`` its
        publication date (ISO, default today); ``replace`` drops the earlier entries of
        ``source``.  One transaction; raises :class:`ImportProblems` (nothing written)."""
        t0 = time.perf_counter()
        source = source.strip()
        if not source or len(source) > 128:
            raise InventoryError("a DNO source name is 1-128 characters")
        try:
            listed = dt.date.fromisoformat(listed).isoformat() if listed else dt.date.today().isoformat()
        except ValueError:
            raise InventoryError(f"{listed!r} is not a date (YYYY-MM-DD)") from None
        keys: list[int] = []
        problems: list[tuple[int, str]] = []
        count = 0
        first = True
        for n, fields in _rows_of(_counting(lines, progress)):
            v = fields[0].strip()
            if first and not any(ch.isdigit() for ch in v):
                first = False
                continue
            first = False
            try:
                keys.append(tn_key(canonical(v)))
            except (InventoryError, ValueError) as exc:
                count += 1
                if len(problems) < limit:
                    problems.append((n, str(exc)))
        if count:
            raise ImportProblems(tuple(problems), count)
        keys = sorted(set(keys))
        rows = [(k, source, listed) for k in keys]
        with self.engine.begin() as c:
            if replace:
                c.execute(inv_dno.delete().where(inv_dno.c.source == source))
            if self.is_sqlite:
                c.exec_driver_sql("INSERT INTO inv_dno (tn, source, listed) VALUES (?, ?, ?) "
                                  "ON CONFLICT(tn) DO UPDATE SET source = excluded.source, listed = excluded.listed", rows)
            elif rows:
                raw = c.connection.driver_connection
                with raw.cursor() as cur:  # type: ignore[union-attr]
                    cur.execute("CREATE TEMP TABLE IF NOT EXISTS inv_dno_load (tn bigint, source text, listed text) ON COMMIT DROP")
                    with cur.copy("COPY inv_dno_load (tn, source, listed) FROM STDIN") as cp:
                        for row in rows:
                            cp.write_row(row)
                    cur.execute("INSERT INTO inv_dno (tn, source, listed) SELECT tn, source, listed FROM inv_dno_load "
                                "ON CONFLICT (tn) DO UPDATE SET source = excluded.source, listed = excluded.listed")
                    cur.execute("DROP TABLE inv_dno_load")
            v = self._bump(c, None if replace else [{"kind": "dno", "key": k, "value": 1} for k in keys])
        return ImportResult(rows=len(rows), tns=len(rows), ranges=0, version=v, seconds=time.perf_counter() - t0)

    def add_dno(self, tn: str, *, source: str, listed: str | None = None) -> int:
        return self.import_dno([tn], source=source, listed=listed).version

    def remove_dno(self, tn: str) -> int:
        key = tn_key(canonical(tn))
        with self.engine.begin() as c:
            if c.execute(inv_dno.delete().where(inv_dno.c.tn == key)).rowcount == 0:
                raise InventoryError(f"{key_tn(key)} is not on a DNO list")
            return self._bump(c, [{"kind": "dno", "key": key, "value": 0}])

    def dno_lists(self) -> list[dict[str, Any]]:
        """Each DNO source with its number count and newest listing date."""
        with self.engine.connect() as c:
            rows = c.execute(sa.select(inv_dno.c.source, sa.func.count(), sa.func.max(inv_dno.c.listed)).group_by(inv_dno.c.source)).all()
        return [{"source": s, "count": int(n), "listed": d} for s, n, d in sorted(rows)]

    def dno_entries(self, source: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        stmt = sa.select(inv_dno).order_by(inv_dno.c.tn).limit(limit)
        if source:
            stmt = stmt.where(inv_dno.c.source == source)
        with self.engine.connect() as c:
            return [{"tn": key_tn(r.tn), "source": r.source, "listed": r.listed} for r in c.execute(stmt)]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as c:
            def n(t: sa.Table) -> int:
                return int(c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            return {"version": self.version(), "customers": n(inv_customers), "tns": n(inv_tns), "ranges": n(inv_ranges), "dno": n(inv_dno)}

    # --- loading an index -----------------------------------------------------------------------

    def _load_parts(self, c: Connection) -> tuple[list[Customer], list[tuple[int, str, str]], list[tuple[int, int, int]]]:
        custs = [Customer(r.id, r.name, r.tenant, r.own, r.other) for r in c.execute(sa.select(inv_customers))]
        recs = [(r.customer_id, r.kind, r.value) for r in c.execute(sa.select(inv_recognizers))]
        ranges = [(r.start, r.end, r.customer_id) for r in c.execute(sa.select(inv_ranges))]
        return custs, recs, ranges

    @staticmethod
    def _column_arrays(c: Connection, stmt: str, second: str | None) -> tuple[array, array | None]:
        a: array = array("Q")
        b: array | None = array(second) if second else None
        cur = c.exec_driver_sql(stmt)
        while True:
            rows = cur.fetchmany(200000)
            if not rows:
                break
            if b is None:
                a.extend([r[0] for r in rows])
            else:
                cols = list(zip(*rows))
                a.extend(cols[0])
                b.extend(cols[1])
        return a, b

    def load_index(self) -> InventoryIndex:
        """The whole inventory as an :class:`InventoryIndex` (one consistent read)."""
        with self.engine.connect() as c:
            if not self.is_sqlite:
                c.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            version = int(c.execute(sa.select(inv_meta.c.value).where(inv_meta.c.key == "version")).scalar_one())
            custs, recs, ranges = self._load_parts(c)
            tns, holders = self._column_arrays(c, "SELECT tn, customer_id FROM inv_tns ORDER BY tn", "I")
            dno, _ = self._column_arrays(c, "SELECT tn FROM inv_dno ORDER BY tn", None)
        return InventoryIndex.build(version=version, customers=custs, recognizers=recs, tns=tns, holders=holders, ranges=ranges, dno=dno)

    def refresh(self, index: InventoryIndex) -> tuple[InventoryIndex, bool] | None:
        """``index`` brought up to date: ``(new index, full reload?)``, None when current."""
        got = self.changes_since(index.version)
        if got is None:
            return self.load_index(), True
        version, rows = got
        if version == index.version:
            return None
        kinds = {r[1] for r in rows}
        if "reload" in kinds or index.overlay_size + len(rows) > OVERLAY_LIMIT:
            return self.load_index(), True
        new = index
        if "customers" in kinds or "ranges" in kinds:
            with self.engine.connect() as c:
                custs, recs, ranges = self._load_parts(c)
            part = InventoryIndex.build(version=version, customers=custs, recognizers=recs, ranges=ranges)
            new = InventoryIndex(
                version=index.version, customers=part.customers, tns=index.tns, holders=index.holders, range_starts=part.range_starts,
                range_ends=part.range_ends, range_holders=part.range_holders, dno=index.dno, tn_changes=index.tn_changes,
                dno_changes=index.dno_changes, sources=part.sources, by_header=part.by_header, by_credential=part.by_credential,
                by_tenant=part.by_tenant, by_name=part.by_name, tns_search=index.tns_search, dno_search=index.dno_search,
                dno_map=index.dno_map,  # the arrays are the same: their search tables too (≈ 1 s to rebuild at 10M TNs)
            )
        tn_changes = {k: v for _, kind, k, v in rows if kind == "tn"}
        dno_changes = {k: bool(v) for _, kind, k, v in rows if kind == "dno"}
        return new.with_changes(version, tn_changes, dno_changes), False


def _counting(lines: Iterable[str], progress: Callable[[int], None] | None) -> Iterator[str]:
    """``lines``, calling ``progress(n)`` every 50,000 lines."""
    if progress is None:
        yield from lines
        return
    n = 0
    for line in lines:
        n += 1
        if n % 50000 == 0:
            progress(50000)
        yield line
    progress(n % 50000)


class InventoryWatcher:
    """Keeps a worker's :class:`LiveInventory` current: loads it at start (:meth:`start` returns
    once the index is in), then a daemon thread waits for a PostgreSQL NOTIFY or
    ``poll_interval`` seconds and applies the changes (full reloads run in that thread too, so
    requests keep the previous index meanwhile)."""

    def __init__(self, store: InventoryStore, live: LiveInventory, poll_interval: float = 1.0):
        self.store = store
        self.live = live
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the watcher thread and the admin API both apply changes
        self._thread: threading.Thread | None = None
        self._listen: Any = None

    def start(self) -> None:
        t0 = time.perf_counter()
        self.live.swap(self.store.load_index(), full=True)
        log.info("inventory loaded", extra={"seconds": round(time.perf_counter() - t0, 3), **self.live.index.stats()})
        self._thread = threading.Thread(target=self._run, name="inventory-watcher", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        if self.store.is_sqlite:
            self._stop.wait(self.poll_interval)
            return
        try:
            if self._listen is None:
                import psycopg

                url = self.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
                self._listen = psycopg.connect(url, autocommit=True)
                self._listen.execute(f"LISTEN {CHANNEL}")
            for _ in self._listen.notifies(timeout=self.poll_interval, stop_after=1):
                break
        except Exception as exc:  # noqa: BLE001 - fall back to polling until the connection is back
            log.warning("inventory notifications unavailable; polling", extra={"error": str(exc)[:200]})
            if self._listen is not None:
                try:
                    self._listen.close()
                except Exception:  # noqa: BLE001
                    pass
            self._listen = None
            self._stop.wait(self.poll_interval)

    def check(self) -> bool:
        """Apply pending changes now; True when the index changed."""
        with self._lock:
            got = self.store.refresh(self.live.index)
            if got is None:
                return False
            index, full = got
            self.live.swap(index, full=full)
        log.info("inventory updated", extra={"version": index.version, "full": full})
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wait()
            if self._stop.is_set():
                break
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - keep serving the current index
                log.warning("inventory update failed; keeping the current index", extra={"error": str(exc)[:300]})
                self._stop.wait(self.poll_interval)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.poll_interval + 2)
        if self._listen is not None:
            try:
                self._listen.close()
            except Exception:  # noqa: BLE001
                pass
        self.store.close()
