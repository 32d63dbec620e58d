"""CLI of the TN inventory and Do-Not-Originate lists: ``stirshaken tn ...`` and ``stirshaken dno ...``.

The database is ``--db`` (an SQLAlchemy URL or a SQLite file path), else ``[inventory].database``
of ``--config`` (default ``stirshaken.toml`` when it exists), else ``$STIRSHAKEN_INVENTORY_DB``.
A running ``stirshaken serve`` on the same database sees every change within its
``poll_interval`` (at once on PostgreSQL).  Bad import rows are listed with their line numbers
and nothing is imported (exit status 1); other errors are one ``error:`` line.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich.console import Console

from stirshaken.cli.common import fail as _fail

out = Console()
err = Console(stderr=True)

DbOpt = typer.Option(None, "--db", help="Inventory database: SQLAlchemy URL or SQLite file (default: \\[inventory].database of --config).")
ConfigOpt = typer.Option(None, "--config", "-c", help="stirshaken.toml whose \\[inventory].database to use.")


def _store(db: Optional[str], config: Optional[Path]) -> Any:
    from stirshaken.serve.inventory.store import InventoryStore

    url = db
    if url is None:
        path = config or (Path("stirshaken.toml") if Path("stirshaken.toml").exists() else None)
        if path is not None:
            from pydantic import ValidationError

            from stirshaken.serve.config import InventoryConfig
            from stirshaken.vs.config import describe_error

            try:
                data = tomllib.loads(path.read_text(encoding="utf-8")).get("inventory", {})
                if not isinstance(data, dict):
                    _fail(f"{path}: [inventory] must be a table", 2)
                icfg = InventoryConfig.model_validate({"database": data.get("database", "")}, context={"base": path.resolve().parent})
            except ValidationError as exc:
                _fail(f"{path}: {describe_error(exc, '[inventory]')}", 2)
            except OSError as exc:
                _fail(f"cannot read {path}: {exc.strerror}", 2)
            except UnicodeDecodeError:
                _fail(f"{path}: not UTF-8 text (a TOML file is)", 2)
            except tomllib.TOMLDecodeError as exc:
                _fail(f"{path}: invalid TOML: {exc}", 2)
            if icfg.enabled:
                url = icfg.url
    url = url or os.environ.get("STIRSHAKEN_INVENTORY_DB")
    if not url:
        _fail("no inventory database: give --db, a --config with [inventory].database, or $STIRSHAKEN_INVENTORY_DB", 2)
    from stirshaken.pki.store import DatabaseError

    try:
        return InventoryStore(url)  # type: ignore[arg-type]
    except DatabaseError as exc:
        _fail(str(exc), 2)


def _lines(path: Path) -> tuple[Iterator[str], int]:
    """The file's lines (``-``: stdin) and their count (0 when unknown)."""
    if str(path) == "-":
        return iter(sys.stdin), 0
    try:
        with open(path, "rb") as f:
            total = 0
            for chunk in iter(lambda: f.read(1 << 20), b""):
                total += chunk.count(b"\n")
                if b"\0" in chunk:
                    _fail(f"{path}: a binary file, not CSV text", 2)
        return open(path, encoding="utf-8", newline=""), total
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}", 2)


def _import(kind: str, path: Path, run: Any) -> Any:
    """Run an import with a rich progress bar; bad rows → every line listed, exit 1."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stirshaken.serve.inventory.store import ImportProblems, InventoryError

    lines, total = _lines(path)
    with Progress(TextColumn(f"importing {kind}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task("rows", total=total or None)
        try:
            return run(lines, lambda n: bar.advance(task, n))
        except ImportProblems as exc:
            bar.stop()
            for n, msg in exc.problems:
                err.print(f"{path}:{n}: {msg}" if n else f"{path}: {msg}", highlight=False, soft_wrap=True)
            more = f" ({exc.count - len(exc.problems)} more not shown)" if exc.count > len(exc.problems) else ""
            _fail(f"{exc.count} bad row(s){more}; nothing imported")
        except InventoryError as exc:
            _fail(str(exc))
        except UnicodeDecodeError:
            bar.stop()
            _fail(f"{path}: not UTF-8 text", 2)
        finally:
            if hasattr(lines, "close") and str(path) != "-":
                lines.close()  # type: ignore[union-attr]


def _do(fn: Any) -> Any:
    """``fn()``, its :class:`InventoryError` as one ``error:`` line (imported late: SQLAlchemy
    loads only for these commands)."""
    from stirshaken.serve.inventory.store import InventoryError

    try:
        return fn()
    except (InventoryError, ValueError) as exc:
        _fail(str(exc))


def register(app: typer.Typer) -> None:
    """Add the ``tn`` and ``dno`` groups to the CLI."""

    tn_app = typer.Typer(help="TN inventory: customers, their TNs and ranges (attestation A/B/C).\n\n"
                              "Example: stirshaken tn lookup 12155551212 --db inventory.db", no_args_is_help=True)
    dno_app = typer.Typer(help="Do-Not-Originate lists: never signed A/B, marked or rejected at verification.\n\n"
                               "Example: stirshaken dno list --db inventory.db", no_args_is_help=True)
    app.add_typer(tn_app, name="tn")
    app.add_typer(dno_app, name="dno")

    @tn_app.command("import")
    def tn_import(
        file: Path = typer.Argument(..., help="CSV rows 'tn,customer' (tn: a TN or a range start-end; optional header line; '-': stdin)."),
        replace: bool = typer.Option(False, "--replace", help="The file becomes the whole TN inventory."),
        create_customers: bool = typer.Option(False, "--create-customers", help="Create customers the file names (attestation A/B, no recognizers)."),
        db: Optional[str] = DbOpt,
        config: Optional[Path] = ConfigOpt,
    ) -> None:
        """Import TNs and ranges in one transaction (all or nothing).

        Example: stirshaken tn import numbers.csv --create-customers --db inventory.db"""
        st = _store(db, config)
        r = _import("TNs", file, lambda lines, prog: st.import_tns(lines, replace=replace, create_customers=create_customers, progress=prog))
        out.print(f"imported {r.tns} TN(s) and {r.ranges} range(s) in {r.seconds:.1f} s (version {r.version})", highlight=False)

    @tn_app.command("add")
    def tn_add(tn: str = typer.Argument(..., help="TN or range start-end."), customer: str = typer.Argument(..., help="Name of the customer."),
               db: Optional[str] = DbOpt, config: Optional[Path] = ConfigOpt) -> None:
        """Assign a TN or range to a customer.

        Example: stirshaken tn add 12155550000-12155550099 acme-corp --db inventory.db"""
        st = _store(db, config)
        v = _do(lambda: st.add_tn(tn, customer))
        out.print(f"{tn} → {customer} (version {v})", highlight=False)

    @tn_app.command("remove")
    def tn_remove(tn: str = typer.Argument(..., help="TN or range start-end."), db: Optional[str] = DbOpt, config: Optional[Path] = ConfigOpt) -> None:
        """Remove a TN or range.

        Example: stirshaken tn remove 12155551212 --db inventory.db"""
        st = _store(db, config)
        v = _do(lambda: st.remove_tn(tn))
        out.print(f"removed {tn} (version {v})", highlight=False)

    @tn_app.command("lookup")
    def tn_lookup(tn: str = typer.Argument(..., help="The telephone number."), db: Optional[str] = DbOpt, config: Optional[Path] = ConfigOpt) -> None:
        """Show the holder of a TN and its DNO listing.

        Example: stirshaken tn lookup 12155551212 --db inventory.db"""
        st = _store(db, config)
        r = _do(lambda: st.lookup(tn))
        holder = r["customer"] or "no customer"
        rng = f" (range {r['range']})" if r["range"] else ""
        dno = f"; on DNO list {r['dno']['source']} of {r['dno']['listed']}" if r["dno"] else ""
        out.print(f"{r['tn']}: {holder}{rng}{dno}", highlight=False)

    @tn_app.command("export")
    def tn_export(file: Path = typer.Argument(Path("-"), help="Output CSV ('-': stdout)."), db: Optional[str] = DbOpt,
                  config: Optional[Path] = ConfigOpt) -> None:
        """Write the inventory as 'tn,customer' CSV (the import format).

        Example: stirshaken tn export numbers.csv --db inventory.db"""
        st = _store(db, config)
        if str(file) == "-":
            st.export_tns(sys.stdout)
            return
        try:
            with open(file, "w", encoding="utf-8") as f:
                n = st.export_tns(f)
        except OSError as exc:
            _fail(f"cannot write {file}: {exc.strerror}", 2)
        err.print(f"exported {n} row(s) to {file}", highlight=False)

    @tn_app.command("customer")
    def tn_customer(
        name: str = typer.Argument(..., help="Name of the customer."),
        source: List[str] = typer.Option([], "--source", help="SIP source address or network (repeatable)."),
        header: List[str] = typer.Option([], "--header", help="Value of the customer/trunk header ([signing] customer_header) (repeatable)."),
        credential_file: List[Path] = typer.Option([], "--credential-file", help="File holding a REST bearer token of this customer (stored hashed)."),
        tenant_calls: List[str] = typer.Option([], "--all-calls-of-tenant", help="Every call signed for this tenant is this customer's."),
        tenant: Optional[str] = typer.Option(None, "--tenant", help="Only recognise it for calls signed for this tenant."),
        own: str = typer.Option("A", "--own", help="Attestation for its own numbers."),
        other: str = typer.Option("B", "--other", help="Attestation for numbers it does not hold (a gateway: --own C --other C)."),
        db: Optional[str] = DbOpt,
        config: Optional[Path] = ConfigOpt,
    ) -> None:
        """Create or replace a customer and how its calls are recognised.

        Example: stirshaken tn customer acme-corp --source 192.0.2.0/24 --own A --other B --db inventory.db"""
        creds = []
        for p in credential_file:
            try:
                creds.append(p.read_text().strip())
            except OSError as exc:
                _fail(f"cannot read {p}: {exc.strerror}", 2)
        st = _store(db, config)
        _do(lambda: st.put_customer(name, tenant=tenant, own=own.upper(), other=other.upper(), sources=source, headers=header,
                                    credentials=creds, tenants=tenant_calls))
        out.print(f"customer {name} saved", highlight=False)

    @tn_app.command("customers")
    def tn_customers(db: Optional[str] = DbOpt, config: Optional[Path] = ConfigOpt) -> None:
        """List the customers.

        Example: stirshaken tn customers --db inventory.db"""
        from rich.table import Table

        t = Table("customer", "tenant", "own/other", "recognised by", "TNs", "ranges")
        for c in _store(db, config).customers():
            t.add_row(c["name"], c["tenant"] or "", f"{c['own']}/{c['other']}", ", ".join(c["recognizers"]), str(c["tns"]), str(c["ranges"]))
        out.print(t)

    @tn_app.command("remove-customer")
    def tn_remove_customer(name: str = typer.Argument(..., help="Name of the customer."), db: Optional[str] = DbOpt, config: Optional[Path] = ConfigOpt) -> None:
        """Remove a customer that holds no TN.

        Example: stirshaken tn remove-customer acme-corp --db inventory.db"""
        st = _store(db, config)
        _do(lambda: st.remove_customer(name))
        out.print(f"customer {name} removed", highlight=False)

    @dno_app.command("import")
    def dno_import(
        file: Path = typer.Argument(..., help="One TN per line, or CSV whose first column is the TN ('-': stdin)."),
        source: str = typer.Option(..., "--source", help="Name of the list (e.g. the publisher)."),
        date: Optional[str] = typer.Option(None, "--date", help="Publication date YYYY-MM-DD (default today)."),
        replace: bool = typer.Option(False, "--replace", help="Drop the earlier entries of this source."),
        db: Optional[str] = DbOpt,
        config: Optional[Path] = ConfigOpt,
    ) -> None:
        """Import a Do-Not-Originate list in one transaction (all or nothing).

        Example: stirshaken dno import dno-2024-06.txt --source itg --date 2024-06-01 --replace --db inventory.db"""
        st = _store(db, config)
        r = _import("DNO numbers", file, lambda lines, prog: st.import_dno(lines, source=source, listed=date, replace=replace, progress=prog))
        out.print(f"imported {r.rows} DNO number(s) from {source} in {r.seconds:.1f} s (version {r.version})", highlight=False)

    @dno_app.command("list")
    def dno_list(
        source: Optional[str] = typer.Option(None, "--source", help="Show the numbers of this source."),
        limit: int = typer.Option(100, "--limit", min=1, help="Numbers shown with --source."),
        db: Optional[str] = DbOpt,
        config: Optional[Path] = ConfigOpt,
    ) -> None:
        """The DNO sources (count, date), or the numbers of one source.

        Example: stirshaken dno list --source itg --db inventory.db"""
        from rich.table import Table

        st = _store(db, config)
        if source:
            t = Table("tn", "source", "listed")
            for e in st.dno_entries(source, limit):
                t.add_row(e["tn"], e["source"], e["listed"])
        else:
            t = Table("source", "numbers", "listed")
            for e in st.dno_lists():
                t.add_row(e["source"], str(e["count"]), e["listed"])
        out.print(t)

    @dno_app.command("remove")
    def dno_remove(tn: str = typer.Argument(..., help="The telephone number."), db: Optional[str] = DbOpt, config: Optional[Path] = ConfigOpt) -> None:
        """Take a number off the DNO lists.

        Example: stirshaken dno remove 12155551212 --db inventory.db"""
        st = _store(db, config)
        v = _do(lambda: st.remove_dno(tn))
        out.print(f"removed {tn} from the DNO lists (version {v})", highlight=False)
