"""``stirshaken inspect`` and ``stirshaken audit``: troubleshooting one call, analytics over many
(:mod:`stirshaken.analysis`).  Verification options mirror ``stirshaken verify``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import orjson
import typer

from stirshaken.cli import options as opts
from stirshaken.cli.common import fail
from rich.console import Console
from rich.markup import escape

out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    fail(message, code)


def _read_input(value: str) -> bytes:
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        # @FILE names a file: an unreadable one is an error, not an Identity header "@FILE"
        try:
            return Path(value[1:]).read_bytes()
        except OSError as exc:
            _fail(f"cannot read {value[1:]}: {exc.strerror}")
    p = Path(value)
    try:
        if len(value) < 4096 and p.is_file():
            return p.read_bytes()
    except OSError:
        pass
    return value.encode("utf-8", "replace")


def _run_with_bar(run_audit: Any, audit_opts: Any, paths: list[Path], jobs: int, total: int, quiet: bool) -> Any:
    """``run_audit`` with a progress bar on stderr (none when ``quiet``)."""
    if quiet:
        return run_audit(audit_opts, paths, jobs=jobs)
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task("auditing", total=total)
        stats = run_audit(audit_opts, paths, jobs=jobs, progress=lambda done: bar.update(task, completed=done))
        bar.update(task, completed=total)
    return stats


def _mark(ok: Any) -> str:
    return "[green]PASS[/green]" if ok is True else ("[red]FAIL[/red]" if ok is False else "[yellow]----[/yellow]")


def _e(value: Any) -> str:
    """A value of the report as literal text (a description may name "[verification]")."""
    return escape(str(value))


def print_report(rep: dict[str, Any]) -> None:
    """The inspection report as text: verdict, then per PASSporT checks, x5u, chain, token."""
    v = rep["verdict"]
    if v["ok"]:
        out.print(f"[bold green]{v['verstat']}[/bold green] attest={v['attest']}", highlight=False)
    else:
        out.print(f"[bold red]{v['verstat']}[/bold red]  {_e(v.get('sip_code'))} {_e(v.get('reason'))}: {_e(v.get('description'))}",
                  highlight=False, soft_wrap=True)
        if v.get("fix"):
            out.print(f"  fix: {_e(v['fix'])}", highlight=False, soft_wrap=True)
    i = rep["input"]
    out.print(f"verified at {rep['verified_at']}; input: {i['source']}"
              + (f", Call-ID {i['call_id']}" if i.get("call_id") else "")
              + f"; calling {i['calling_tns']} called {i['called_tns']}"
              + (f"; Date {i['date']}" if i.get("date") else ""), highlight=False, soft_wrap=True)
    for n, p in enumerate(rep["passports"], 1):
        out.print(f"\n[bold]PASSporT {n}[/bold] ppt={p.get('ppt')} {_mark(p['ok'])}", highlight=False)
        for c in p["checks"]:
            out.print(f"  {_mark(c['ok'])} {_e(c['check'])}" + (f": {_e(c['detail'])}" if c["detail"] else ""), highlight=False, soft_wrap=True)
            if c.get("fix"):
                out.print(f"         fix: {_e(c['fix'])}", highlight=False, soft_wrap=True)
        if "iat" in p:
            out.print(f"  iat {p['iat']['value']} = {p['iat']['date']} (age {p['iat']['age_seconds']} s)", highlight=False)
        x = p.get("x5u")
        if x:
            out.print(f"  x5u {_e(x['url'])}", highlight=False, soft_wrap=True)
            r = x.get("route") or {}
            if r:
                out.print(f"    SSRF: {r.get('decision')}; addresses {', '.join(r.get('addresses') or []) or '-'}", highlight=False, soft_wrap=True)
            f = x["fetch"]
            line = f"    fetch: {f['source']}"
            if "error" in f:
                line += f"; {_e(f['error'])}"
            elif "status" in f:
                line += (f"; HTTP {f['status']} {f['content_type']}, {f['bytes']} bytes, {f['certificates']} certificates,"
                         f" {f['seconds'] * 1000:.1f} ms; cached {f['cache_ttl']} s; headers {f['cache_headers']}")
            out.print(line, highlight=False, soft_wrap=True)
        for k, c in enumerate(p.get("chain", [])):
            out.print(f"  cert {k}: {_e(c['subject'])}", highlight=False, soft_wrap=True)
            out.print(f"    issuer {_e(c['issuer'])}; serial {c['serial']}; {c['not_before']} .. {c['not_after']} ({c['validity']}); {c['key']}",
                      highlight=False, soft_wrap=True)
            if c.get("tnauthlist"):
                out.print(f"    TNAuthList {c['tnauthlist']}", highlight=False, soft_wrap=True)
            extra = f"; issuer on STI-PA CA list: {c['issuer_on_ca_list']}" if "issuer_on_ca_list" in c else ""
            out.print(f"    CRL: {_e(c['crl'])}{_e(extra)}", highlight=False, soft_wrap=True)
            for d in c["profile"]:
                out.print(f"    profile: {_e(d)}", highlight=False, soft_wrap=True)
        s = p.get("signature")
        if s:
            out.print(f"  signature: {_mark(s['ok'])} {_e(s['detail'])}", highlight=False, soft_wrap=True)
        a = p.get("authority")
        if a:
            out.print(f"  authority: {_mark(a['ok'])} {_e(a['detail'])}" + ("" if a["enforced"] else " (not enforced)"), highlight=False, soft_wrap=True)
        for part in ("header", "claims"):
            if part in p:
                out.print(f"  {part}: " + _e(orjson.dumps(p[part]).decode()), highlight=False, soft_wrap=True)
        for pr in p.get("problems", []):
            out.print(f"  problem: {_e(pr)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``inspect`` and ``audit`` to the CLI."""

    @app.command("inspect")
    @opts.VERIFICATION.into("verification")
    def inspect_cmd(
        source: str = typer.Argument("-", help="Identity header value, SIP request or verificationRequest JSON: "
                                              "text, FILE (@FILE) or - for stdin."),
        orig: Optional[str] = typer.Option(None, "--orig", help="Calling TN (default: From / P-Asserted-Identity of the request)."),
        dest: Optional[List[str]] = typer.Option(None, "--dest", help="Called TN (default: To / Request-URI of the request)."),
        cert: Optional[Path] = typer.Option(None, "--cert", help="Certificate chain file for the x5u; nothing is fetched."),
        verification: dict[str, Any] = opts.GROUP,
        date: Optional[int] = typer.Option(None, "--date", help="Date header of the request as epoch seconds (replaces the request's)."),
        at: Optional[float] = typer.Option(None, "--at", help="Verify as of this time (epoch seconds; default now)."),
        no_pai: bool = typer.Option(False, "--no-pai", help="Ignore P-Asserted-Identity (serve's use_pai = false)."),
        json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Show everything a verifier sees of one call: token, checks with fixes, x5u fetch, chain, verdict.

        Exit status 0 when verification passes, 1 when it fails, 2 for unusable input.

        Example: stirshaken inspect @invite.txt --trust-anchor root.pem --cert sp-chain.pem"""
        from stirshaken.analysis.inputs import InputError, parse_input
        from stirshaken.analysis.inspect import inspect
        from stirshaken.core.certificates import load_certificates
        from stirshaken.core.errors import StirShakenError

        data = _read_input(source)
        try:
            call = parse_input(data, orig=orig, dest=dest, date=date, use_pai=not no_pai)
        except InputError as exc:
            _fail(str(exc))
        cfg = opts.verifier_config(**verification, offline=cert is not None)
        chain = None
        if cert is not None:
            try:
                chain = load_certificates(cert.read_bytes())
            except OSError as exc:
                _fail(f"cannot read certificate chain {cert}: {exc.strerror}")
            except StirShakenError as exc:
                _fail(f"{cert}: {exc.description}")
        rep = inspect(call, cfg, static_chain=chain, now=at)
        if json_out:
            sys.stdout.write(orjson.dumps(rep, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
        else:
            print_report(rep)
        raise typer.Exit(0 if rep["verdict"]["ok"] else 1)

    @app.command("audit")
    @opts.VERIFICATION.into("verification")
    def audit_cmd(
        inputs: List[Path] = typer.Argument(..., help="pcap/pcapng captures, SIP text logs or JSON-lines call records "
                                                     "(kind found from the content; directories expanded)."),
        certs: Optional[Path] = typer.Option(None, "--certs", help="Offline: x5u chains from this directory "
                                             "(sha256(url).pem, else the URL's file name); nothing is fetched."),
        verification: dict[str, Any] = opts.GROUP,
        at: Optional[float] = typer.Option(None, "--at", help="Verification time for calls with no Date and no capture time."),
        no_pai: bool = typer.Option(False, "--no-pai", help="Ignore P-Asserted-Identity (serve's use_pai = false)."),
        jobs: int = typer.Option(1, "--jobs", "-j", min=1, max=256, help="Worker processes (captures are split by packet, TCP flows kept whole)."),
        out_dir: Optional[Path] = typer.Option(None, "--out", help="Write report.html, audit.json and CSV tables here."),
        json_out: bool = typer.Option(False, "--json", help="Print the whole audit as JSON."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Verify every signed INVITE of captures, logs or call records and report the shares.

        Shares by verstat, attestation, reason, SPC, certificate, x5u host and hour, the unsigned
        share and the top failing originators.

        Example: stirshaken audit capture.pcapng calls.jsonl --trust-anchor root.pem --out report/"""
        from stirshaken.analysis.audit import AuditOptions, iter_inputs, run_audit

        try:
            import scapy.utils  # noqa: F401
            if out_dir is not None:
                import matplotlib  # noqa: F401
        except ImportError as exc:
            _fail(f"stirshaken audit needs {exc.name}: pip install 'stirshaken[analysis]'")
        paths = list(iter_inputs(inputs))
        for p in paths:
            if not p.is_file():
                _fail(f"cannot read {p}: no such file")
        if certs is not None and not certs.is_dir():
            _fail(f"--certs {certs} is not a directory")
        for p in inputs:
            if p.is_dir() and not any(q.is_file() for q in p.iterdir()):
                _fail(f"{p}: directory holds no input files")
        cfg = opts.verifier_config(**verification, offline=certs is not None)
        audit_opts = AuditOptions(config=cfg, certs_dir=certs, use_pai=not no_pai, at=at)
        total = sum(p.stat().st_size for p in paths)
        try:
            stats = _run_with_bar(run_audit, audit_opts, paths, jobs, total, quiet or json_out)
        except (ValueError, RuntimeError) as exc:  # a capture cut short in its header; a worker's one line
            _fail(str(exc))
        for e in stats.errors[:10]:
            err.print(f"[yellow]warning:[/yellow] {escape(e)}", highlight=False, soft_wrap=True)
        doc = stats.to_json()
        if out_dir is not None:
            from stirshaken.analysis.report import write_report

            try:
                files = write_report(stats, out_dir)
            except OSError as exc:
                _fail(f"cannot write the report to {out_dir}: {exc.strerror}")
            if not json_out:
                out.print(f"report: {files[1]} (and audit.json, CSV tables in {out_dir})", highlight=False)
        if json_out:
            sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
            return
        s = doc["summary"]
        rate = f", {s['invites_per_second']} INVITEs/s" if s["invites_per_second"] else ""
        out.print(f"{s['invites']} INVITEs ({s['retransmissions']} retransmissions skipped): {s['signed']} signed, "
                  f"{s['unsigned']} unsigned ({100 * s['unsigned_share']:.1f}%); {s['passed']} passed "
                  f"({100 * s['passed_share_of_signed']:.1f}% of signed) in {s['seconds']} s{rate}", highlight=False)
        from rich.table import Table

        for name in ("verstat", "attest", "reason", "spc"):
            t = Table(title=name)
            for col in (name, "calls", "share", "passed", "failed", "example Call-ID"):
                t.add_column(col)
            for r in doc[name][:10]:
                t.add_row(str(r[name]), str(r["calls"]), f"{100 * r['share']:.1f}%", str(r["passed"]), str(r["failed"] + r["no_validation"]),
                          r["example_call_id"])
            out.print(t)
        if doc["top_failing"]:
            t = Table(title="top failing originators")
            for col in ("originator", "failures", "of calls", "top reason", "example Call-ID"):
                t.add_column(col)
            for r in doc["top_failing"][:10]:
                t.add_row(r["originator"], str(r["failures"]), str(r["calls"]), r["top_reason"], r["example_call_id"])
            out.print(t)
