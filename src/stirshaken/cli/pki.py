"""CLI of the PKI services: ``stirshaken acme`` (with ``acme list`` / ``acme renew``),
``stirshaken pa|ca|cr serve``, ``stirshaken pa add-account``, ``stirshaken ca eab-create`` and
``stirshaken pki tls`` (one TLS root and server certificate for every lab service: ``--tls-dir``).

Every serve command reads an optional TOML file (``--config``; keys are the long option names
with ``_`` for ``-``, either at top level or under ``[pa]``/``[ca]``/``[cr]``); options given on
the command line win.  Without ``--tls-cert``/``--tls-key`` a local TLS root and server
certificate are generated under the state directory (``tls/tls-root.pem`` is what clients trust).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import tomllib
from pathlib import Path
from typing import Annotated, Any, List, Optional

import typer
from rich.console import Console

from stirshaken.cli import common
from stirshaken.cli.common import fail as _fail
from stirshaken.cli.options import GROUP, OptionGroup

out = Console()
err = Console(stderr=True)


def _describe(exc: BaseException) -> str:
    """One line for an error of ``acme``/``acme renew``: our own errors by their message, a refused
    connection, a failed TLS handshake or a missing file in plain words, anything else as
    ``Type: message``."""
    import ssl
    import textwrap

    import aiohttp

    from stirshaken.pki.acme import AcmeProblem

    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        text = f"TLS certificate of {exc.host}:{exc.port} not trusted (--ca-bundle?): {exc.certificate_error}"
    elif isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ssl.SSLError):
        reason = (exc.os_error.reason or "").replace("_", " ").lower() or str(exc.os_error)
        hint = " (is it a plain http service?)" if "wrong version number" in reason or "record layer" in reason else ""
        text = f"TLS handshake with {exc.host}:{exc.port} failed: {reason}{hint}"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        import os

        e = exc.os_error
        text = f"cannot connect to {exc.host}:{exc.port}: {os.strerror(e.errno) if e.errno else e.strerror or e}"
    elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        text = "a service did not answer in time (timed out)"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    elif isinstance(exc, AcmeProblem):  # its detail; the problem type is for programs
        text = exc.detail or f"the STI-CA answered an ACME {exc.kind} problem"
    elif type(exc).__module__.startswith("stirshaken."):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return textwrap.shorten(text, 400, placeholder=" ...")


def _config(path: Optional[Path], section: str, given: dict[str, Any]) -> dict[str, Any]:
    """Merge a TOML config (top level + ``[section]``) with the options that were given."""
    merged: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            _fail(f"cannot read config {path}: {exc.strerror}", 2)
        except UnicodeDecodeError:
            _fail(f"{path}: not UTF-8 text (a TOML file is)", 2)
        except tomllib.TOMLDecodeError as exc:
            _fail(f"{path}: invalid TOML: {exc}", 2)
        table = data.get(section, {})
        if not isinstance(table, dict):
            _fail(f"{path}: [{section}] must be a table", 2)
        merged.update({k.replace("-", "_"): v for k, v in data.items() if not isinstance(v, dict)})
        merged.update({k.replace("-", "_"): v for k, v in table.items()})
    merged.update({k: v for k, v in given.items() if v is not None and v != [] and v is not False})
    return merged


def _cert_files(cfg: dict[str, Any], key: str) -> list[Any]:
    """The certificates of the files option ``key`` names (one path or a list), each file named
    when it cannot be read or holds no certificate."""
    value = cfg.get(key) or []
    files = [value] if isinstance(value, (str, Path)) else list(value)
    return [c for f in files for c in common.load_certs(Path(f), f"--{key.replace('_', '-')} file")]


def _database(url: str) -> Any:
    """The state database at ``url``; one line naming it when it cannot be opened."""
    from stirshaken.pki.store import Database, DatabaseError

    try:
        return Database(url)
    except DatabaseError as exc:
        _fail(str(exc), 2)


def _logging(cfg: dict[str, Any], service: str) -> None:
    """Log lines on stderr (access and audit records among them, :mod:`stirshaken.pki.records`):
    JSON (default) or text, per ``log_format``."""
    from stirshaken.serve.server import setup_logging

    fmt = str(cfg.get("log_format") or "json")
    if fmt not in ("json", "text"):
        _fail(f"--log-format: {fmt!r} is not json or text", 2)
    setup_logging("INFO", fmt, service)


async def _serve_forever(app: Any, host: str, port: int, ssl_ctx: Any, banner: str) -> None:
    from stirshaken.pki import tls

    try:
        sock = tls.bind(host, port)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}", 2)
    runner = await tls.serve_on(app, sock, ssl_ctx)
    out.print(f"{banner} listening on {tls.url_of(sock, 'https' if ssl_ctx else 'http')}", highlight=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # pragma: no cover
            pass
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _serve(app: Any, cfg: dict[str, Any], port: int, ssl_ctx: Any, banner: str) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; a port that cannot be bound is one line."""
    try:
        asyncio.run(_serve_forever(app, str(cfg.get("host", "127.0.0.1")), port, ssl_ctx, banner))
    except KeyboardInterrupt:
        raise typer.Exit(0)


def _tls(cfg: dict[str, Any], state_dir: Path) -> Any:
    """The server TLS context: configured files, a generated local root, or None with no_tls.
    A certificate or key file that cannot be used is one line naming it."""
    import ssl

    from stirshaken.pki import tls

    if cfg.get("no_tls"):
        return None
    if cfg.get("tls_dir"):  # made by 'stirshaken pki tls --out DIR'
        cfg = {**cfg, "tls_cert": Path(cfg["tls_dir"]) / "tls-server.pem", "tls_key": Path(cfg["tls_dir"]) / "tls-server.key"}
    if bool(cfg.get("tls_cert")) != bool(cfg.get("tls_key")):
        _fail("give both --tls-cert and --tls-key (or --tls-dir)", 2)
    if cfg.get("tls_cert") and cfg.get("tls_key"):
        cert, key = Path(cfg["tls_cert"]), Path(cfg["tls_key"])
        from stirshaken.core.certificates import content_problem

        common.load_certs(cert, "TLS certificate")
        why = content_problem(common.read_bytes(key, "TLS key"), "a private key")
        if why:
            _fail(f"{key}: {why}", 2)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except ssl.SSLError:
            _fail(f"the TLS key {key} does not match the certificate {cert}", 2)
        return ctx
    files = tls.make_tls(state_dir / "tls", hosts=(str(cfg.get("host", "127.0.0.1")), "localhost"))
    out.print(f"TLS: generated local root {files.root} (clients must trust it)", highlight=False)
    return files.server_context()


def _state(cfg: dict[str, Any], default: str, default_port: int) -> tuple[Path, int]:
    """The state directory (created) and the port of a ``serve`` command, checked."""
    sd = common.directory(Path(cfg.get("state_dir", default)), "--state-dir")
    return sd, common.port(cfg.get("port", default_port))


def _urls(cfg: dict[str, Any], *keys: str) -> None:
    for k in keys:
        if cfg.get(k):
            common.http_url(cfg[k], f"--{k.replace('_', '-')}")


def _base_url(cfg: dict[str, Any], port: int) -> str:
    if cfg.get("base_url"):
        return str(cfg["base_url"]).rstrip("/")
    scheme = "http" if cfg.get("no_tls") else "https"
    host = str(cfg.get("host", "127.0.0.1"))
    return f"{scheme}://{host}:{port}"


# Options every ``pa|ca|cr serve`` command takes (consumed by _config, _tls and _base_url).
HostOpt = Annotated[Optional[str], typer.Option("--host", help="Address to listen on (default 127.0.0.1).")]
PortOpt = Annotated[Optional[int], typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free port).")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="External URL (default https://HOST:PORT).")]
DbUrlOpt = Annotated[Optional[str], typer.Option("--db-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://... (default SQLite in the state directory).")]
TlsCertOpt = Annotated[Optional[Path], typer.Option("--tls-cert", help="Server certificate (PEM); default: generated under the state directory.")]
TlsKeyOpt = Annotated[Optional[Path], typer.Option("--tls-key", help="Server private key (PEM).")]
NoTlsOpt = Annotated[bool, typer.Option("--no-tls", help="Plain HTTP (behind a TLS proxy).")]
TlsDirOpt = Annotated[Optional[Path], typer.Option("--tls-dir", help="TLS files made by 'stirshaken pki tls --out DIR' (tls-server.pem/.key).")]
LogFormatOpt = Annotated[Optional[str], typer.Option("--log-format", help="Log lines on stderr (access and audit records among them): json (default) or text.")]
SERVICE = OptionGroup(host=(HostOpt, None), port=(PortOpt, None), base_url=(BaseUrlOpt, None), db_url=(DbUrlOpt, None),
                      tls_cert=(TlsCertOpt, None), tls_key=(TlsKeyOpt, None), no_tls=(NoTlsOpt, False), tls_dir=(TlsDirOpt, None),
                      log_format=(LogFormatOpt, None))


def register(app: typer.Typer) -> None:
    """Add ``acme`` and the ``pa``/``ca``/``cr`` service groups to the CLI."""
    pa_app = typer.Typer(help="STI-PA: SP accounts, SPC tokens, trusted-CA list and SHAKEN CRL.\n\n"
                              "Example: stirshaken pa serve --state-dir pa-state --port 8443", no_args_is_help=True)
    ca_app = typer.Typer(help="STI-CA: ACME server for TNAuthList identifiers (RFC 8555/9447/9448).\n\n"
                              "Example: stirshaken ca serve --pa-url https://127.0.0.1:8443 --pa-root pa-state/pa-root.pem", no_args_is_help=True)
    cr_app = typer.Typer(help="STI-CR: HTTPS certificate repository for x5u.\n\n"
                              "Example: stirshaken cr serve --upload-token s3cret=sp-1234 --port 7443", no_args_is_help=True)
    pki_app = typer.Typer(help="Lab PKI helpers.\n\nExample: stirshaken pki tls --out tls --host 127.0.0.1", no_args_is_help=True)
    app.add_typer(pki_app, name="pki")

    @pki_app.command("tls")
    def pki_tls(
        out_dir: Path = typer.Option(Path("tls"), "--out", help="Directory for tls-root.pem, tls-server.pem and tls-server.key."),
        host: List[str] = typer.Option(["127.0.0.1"], "--host", help="Name or address the services are reached at (repeatable)."),
    ) -> None:
        """One TLS root and one server certificate for every lab service.

        Give each serve command --tls-dir DIR (or --tls-cert/--tls-key) and every client
        --ca-bundle DIR/tls-root.pem.

        Example: stirshaken pki tls --out tls --host 127.0.0.1 --host sti.lab.example"""
        from stirshaken.pki import tls

        hosts = tuple(dict.fromkeys([*host, "localhost"]))
        files = tls.make_tls(common.directory(out_dir, "--out"), hosts=hosts)
        out.print(f"TLS root (the --ca-bundle of clients): {files.root}\nserver certificate {files.cert}, key {files.key} "
                  f"for {', '.join(hosts)}", highlight=False, soft_wrap=True)

    app.add_typer(pa_app, name="pa")
    app.add_typer(ca_app, name="ca")
    app.add_typer(cr_app, name="cr")

    acme_app = typer.Typer(invoke_without_command=True, no_args_is_help=False)  # help: acme_cmd's docstring
    app.add_typer(acme_app, name="acme")

    def _show(st: Any, state_dir: Path) -> None:
        verb = "obtained" if st.renewed else "current"
        cur = state_dir / "current"
        out.print(
            f"{verb} certificate {st.serial:x}, valid until {st.not_after:%Y-%m-%d %H:%M}Z\n"
            f"  key   {cur / 'key.pem' if cur.exists() else st.key_path}\n  chain {cur / 'chain.pem' if cur.exists() else st.chain_path}\n"
            f"  x5u   {st.x5u or '(not published)'}",
            highlight=False, soft_wrap=True,
        )

    async def _ensure(cfg: Any, renew_before_days: float, force: bool, hook: Optional[str]) -> Any:
        from stirshaken.pki.enrollment import ensure_certificate, run_deploy_hook

        st = await ensure_certificate(cfg, renew_before_days=renew_before_days, force=force)
        _show(st, cfg.state_dir)
        if st.renewed and hook:
            await asyncio.to_thread(run_deploy_hook, hook, st, cfg.state_dir)
            out.print(f"deploy hook ran: {hook}", highlight=False)
        return st

    @acme_app.callback()
    def acme_cmd(
        ctx: typer.Context,
        directory: Optional[str] = typer.Option(None, "--directory", help="ACME directory URL of the STI-CA."),
        pa_url: Optional[str] = typer.Option(None, "--pa-url", help="STI-PA API base URL."),
        ocn: Optional[str] = typer.Option(None, "--ocn", help="The SP's OCN/SPC."),
        user: Optional[str] = typer.Option(None, "--user", help="STI-PA user id."),
        password: Optional[str] = typer.Option(None, "--password", envvar="STIRSHAKEN_PA_PASSWORD", help="STI-PA password (or env STIRSHAKEN_PA_PASSWORD)."),
        state_dir: Path = typer.Option(Path("sp-cert"), "--state-dir", help="Where account key, SP key and certificate are kept."),
        ca_bundle: Optional[str] = typer.Option(None, "--ca-bundle", help="PEM roots for the HTTPS services."),
        cr_url: Optional[str] = typer.Option(None, "--cr-url", help="STI-CR base URL to PUT the chain to."),
        cr_token: Optional[str] = typer.Option(None, "--cr-token", envvar="STIRSHAKEN_CR_TOKEN", help="STI-CR upload token."),
        email: List[str] = typer.Option([], "--email", help="Contact e-mail for the ACME account (repeatable; mailto: URL)."),
        eab_kid: Optional[str] = typer.Option(None, "--eab-kid", help="External account binding key identifier (RFC 8555 §7.3.4)."),
        eab_hmac_key: Optional[str] = typer.Option(None, "--eab-hmac-key", envvar="STIRSHAKEN_EAB_HMAC_KEY", help="External account binding HMAC key (base64url)."),
        deploy_hook: Optional[str] = typer.Option(None, "--deploy-hook", help="Shell command run after an issuance or renewal (STIRSHAKEN_CERT, _KEY, _CHAIN, _X5U in its environment)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Run the whole flow against --directory but change no file, upload nothing and run no hook."),
        renew_before_days: float = typer.Option(30.0, "--renew-before-days", min=0, help="Renew when fewer days are left."),
        force: bool = typer.Option(False, "--force", help="Obtain a new certificate even if the current one is fine."),
        encoding: str = typer.Option("base64url", "--identifier-encoding", help="base64url (RFC 9448) or base64."),
        watch: bool = typer.Option(False, "--watch", help="Keep running and renew when due."),
        interval: float = typer.Option(3600.0, "--interval", min=1, help="Seconds between checks with --watch."),
    ) -> None:
        """Obtain, list and renew the SP's SHAKEN certificates (STI-PA SPC token + STI-CA ACME).

        Without a subcommand: obtain (or renew) the certificate: STI-PA login, SPC token, ACME
        TNAuthList order, tkauth-01, finalize, download, publish to the STI-CR.  The active key and
        chain are always at STATE_DIR/current/key.pem and STATE_DIR/current/chain.pem.
        Subcommands: acme list, acme renew.

        Example: stirshaken acme --directory https://ca.example.net/acme/directory --pa-url https://pa.example.net --ocn 1234 --user sp-1234 --state-dir sp-cert"""
        import dataclasses
        import shutil
        import tempfile

        from stirshaken.pki.enrollment import AcmeConfig, obtain_certificate, renew_forever, save_settings

        if ctx.invoked_subcommand is not None:
            return
        missing = [n for n, v in (("--directory", directory), ("--pa-url", pa_url), ("--ocn", ocn), ("--user", user)) if not v]
        if missing:
            _fail(f"missing option(s) {', '.join(missing)} (or use 'stirshaken acme list|renew')", 2)
        if not password:
            _fail("an STI-PA password is needed (--password or STIRSHAKEN_PA_PASSWORD)", 2)
        if encoding not in ("base64url", "base64"):
            _fail("--identifier-encoding must be base64url or base64", 2)
        if bool(eab_kid) != bool(eab_hmac_key):
            _fail("give both --eab-kid and --eab-hmac-key", 2)
        from stirshaken.pki.pa import OCN_RE

        common.http_url(directory, "--directory")
        common.http_url(pa_url, "--pa-url")
        if cr_url:
            common.http_url(cr_url, "--cr-url")
        if OCN_RE.fullmatch(str(ocn)) is None:
            _fail(f"--ocn {ocn!r}: an OCN/SPC is 1-16 digits or upper-case letters", 2)
        if ca_bundle and not Path(ca_bundle).is_file():
            _fail(f"--ca-bundle {ca_bundle}: no such file", 2)
        if ca_bundle:
            common.load_certs(Path(ca_bundle), "--ca-bundle file")
        if not dry_run:
            common.directory(state_dir, "--state-dir")
        bad = [e for e in email if "@" not in e or e.startswith("mailto:")]
        if bad:
            _fail(f"--email {bad[0]!r}: give a plain address such as noc@example.net", 2)
        cfg = AcmeConfig(
            directory_url=str(directory), pa_url=str(pa_url), ocn=str(ocn), username=str(user), password=password or "", state_dir=state_dir,
            ca_bundle=ca_bundle, cr_url=cr_url, cr_token=cr_token, identifier_encoding=encoding,
            contact=[f"mailto:{e}" for e in email], eab_kid=eab_kid, eab_hmac_key=eab_hmac_key,
        )
        try:
            if dry_run:
                with tempfile.TemporaryDirectory(prefix="stirshaken-acme-dry-run-") as tmp:
                    if (state_dir / "account.key").exists():
                        shutil.copy2(state_dir / "account.key", Path(tmp) / "account.key")
                    st = asyncio.run(obtain_certificate(dataclasses.replace(cfg, state_dir=Path(tmp), cr_url=None, cr_token=None)))
                out.print(f"dry run: the STI-CA issued certificate {st.serial:x} (valid until {st.not_after:%Y-%m-%d}Z); "
                          f"nothing in {state_dir} changed, nothing uploaded, no hook run", highlight=False)
                return
            save_settings(state_dir, {
                # absolute: 'acme renew' runs from cron or another directory
                "directory": directory, "pa_url": pa_url, "ocn": ocn, "user": user,
                "ca_bundle": str(Path(ca_bundle).absolute()) if ca_bundle else None, "cr_url": cr_url,
                "contact": cfg.contact, "eab_kid": eab_kid, "identifier_encoding": encoding,
                "renew_before_days": renew_before_days, "deploy_hook": deploy_hook,
            })
            asyncio.run(_ensure(cfg, renew_before_days, force, deploy_hook))
            if watch:
                async def _watch() -> None:
                    from stirshaken.pki.enrollment import run_deploy_hook

                    async def renewed(st: Any) -> None:
                        _show(st, state_dir)
                        if deploy_hook:
                            await asyncio.to_thread(run_deploy_hook, deploy_hook, st, state_dir)

                    await renew_forever(cfg, renew_before_days=renew_before_days, check_interval=interval, on_renewed=renewed)

                asyncio.run(_watch())
        except KeyboardInterrupt:
            raise typer.Exit(0)
        except Exception as exc:
            _fail(_describe(exc))

    def _existing(paths: Optional[List[Path]]) -> None:
        for p in paths or []:
            if not p.is_dir():
                _fail(f"{p}: {'not a directory' if p.exists() else 'no such directory'}", 2)

    @acme_app.command("list")
    def acme_list(
        paths: List[Path] = typer.Argument(None, help="State directories, or directories holding them (default ./sp-cert)."),
    ) -> None:
        """Show the managed certificates: state directory, serial, expiry, days left, x5u.

        Example: stirshaken acme list /var/lib/stirshaken"""
        from stirshaken.pki.enrollment import current_certificate, managed_state_dirs

        _existing(paths)
        dirs = managed_state_dirs(list(paths or [Path("sp-cert")]))
        if not dirs:
            out.print("no managed certificates", highlight=False)
            return
        now = dt.datetime.now(dt.timezone.utc)
        for d in dirs:
            st = current_certificate(d)
            if st is None:
                out.print(f"{d}: no certificate yet", highlight=False, soft_wrap=True)
                continue
            left = (st.not_after - now).total_seconds() / 86400
            out.print(f"{d}: serial {st.serial:x}  expires {st.not_after:%Y-%m-%d %H:%M}Z ({left:.0f} days)  "
                      f"x5u {st.x5u or '(not published)'}", highlight=False, soft_wrap=True)

    @acme_app.command("renew")
    def acme_renew(
        paths: List[Path] = typer.Argument(None, help="State directories, or directories holding them (default ./sp-cert)."),
        password: Optional[str] = typer.Option(None, "--password", envvar="STIRSHAKEN_PA_PASSWORD", help="STI-PA password."),
        cr_token: Optional[str] = typer.Option(None, "--cr-token", envvar="STIRSHAKEN_CR_TOKEN",
                                               help="STI-CR upload token (or env STIRSHAKEN_CR_TOKEN)."),
        eab_hmac_key: Optional[str] = typer.Option(None, "--eab-hmac-key", envvar="STIRSHAKEN_EAB_HMAC_KEY",
                                                   help="External account binding HMAC key, if the account is not yet registered (or env STIRSHAKEN_EAB_HMAC_KEY)."),
        force: bool = typer.Option(False, "--force", help="Renew even when not due."),
    ) -> None:
        """Renew every managed certificate that is due, with the options saved at the first run.

        Due: fewer days left than renew_before_days as saved by acme.  Each saved deploy hook runs
        after a renewal.

        Example: stirshaken acme renew /var/lib/stirshaken (the password from STIRSHAKEN_PA_PASSWORD)"""
        from stirshaken.pki.enrollment import AcmeConfig, load_settings, managed_state_dirs

        _existing(paths)
        dirs = [d for d in managed_state_dirs(list(paths or [Path("sp-cert")])) if load_settings(d) is not None]
        if not dirs:
            _fail("no managed certificates (run 'stirshaken acme --directory ...' first)", 2)
        if not password:
            _fail("an STI-PA password is needed (--password or STIRSHAKEN_PA_PASSWORD)", 2)
        failed = 0
        for d in dirs:
            st = load_settings(d) or {}
            cfg = AcmeConfig(
                directory_url=str(st.get("directory")), pa_url=str(st.get("pa_url")), ocn=str(st.get("ocn")),
                username=str(st.get("user")), password=password or "", state_dir=d, ca_bundle=st.get("ca_bundle"),
                cr_url=st.get("cr_url"), cr_token=cr_token, identifier_encoding=str(st.get("identifier_encoding") or "base64url"),
                contact=list(st.get("contact") or []), eab_kid=st.get("eab_kid"), eab_hmac_key=eab_hmac_key,
            )
            try:
                asyncio.run(_ensure(cfg, float(st.get("renew_before_days") or 30.0), force, st.get("deploy_hook")))
            except Exception as exc:
                failed += 1
                err.print(f"[red]error:[/red] {d}: {_describe(exc)}", highlight=False, soft_wrap=True)
        if failed:
            raise typer.Exit(1)

    # --- STI-PA ------------------------------------------------------------------------------
    @pa_app.command("serve")
    @SERVICE.into("service")
    def pa_serve(
        config: Optional[Path] = typer.Option(None, "--config", help="TOML file ([pa] section)."),
        state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Keys, CRL and SQLite database (default ./pa-state)."),
        service: dict[str, Any] = GROUP,
        trusted_ca: List[Path] = typer.Option([], "--trusted-ca", help="STI-CA root(s) for the trusted-CA list."),
        admin_password: Optional[str] = typer.Option(None, "--admin-password", envvar="STIRSHAKEN_PA_ADMIN_PASSWORD", help="Create/refresh user 'admin'."),
    ) -> None:
        """Run the STI-PA API (login, SPC tokens, /ca-list, /crl, /revoke).

        Example: stirshaken pa serve --state-dir pa-state --port 8443 --trusted-ca ca-state/ca-root.pem"""
        from stirshaken.pki.pa import PAConfig, PolicyAdministrator

        cfg = _config(config, "pa", dict(state_dir=state_dir, **service, trusted_ca=trusted_ca, admin_password=admin_password))
        _logging(cfg, "pa")
        sd, p = _state(cfg, "pa-state", 8443)
        _urls(cfg, "base_url")
        _cert_files(cfg, "trusted_ca")
        pa_cfg = PAConfig(base_url=_base_url(cfg, p), state_dir=sd, db_url=cfg.get("db_url"),
                          trusted_ca_files=[Path(x) for x in cfg.get("trusted_ca", [])])
        pa = PolicyAdministrator.create(pa_cfg, db=_database(pa_cfg.database_url))
        ssl_ctx = _tls(cfg, sd)
        if cfg.get("admin_password"):
            pa.add_account("admin", str(cfg["admin_password"]), ocn=None, admin=True)
        _serve(pa.app, cfg, p, ssl_ctx, "STI-PA")

    @pa_app.command("add-account")
    def pa_add_account(
        username: str = typer.Argument(..., help="Login name."),
        ocn: Optional[str] = typer.Option(None, "--ocn", help="OCN/SPC the account may request SPC tokens for."),
        password: Optional[str] = typer.Option(None, "--password", envvar="STIRSHAKEN_PA_PASSWORD",
                                               help="The account's password (or env STIRSHAKEN_PA_PASSWORD)."),
        admin: bool = typer.Option(False, "--admin", help="An administrator: may revoke and manage the trusted-CA list."),
        state_dir: Path = typer.Option(Path("pa-state"), "--state-dir", help="The STI-PA state directory (keys, SQLite database)."),
        db_url: Optional[str] = typer.Option(None, "--db-url", help="SQLAlchemy URL of the STI-PA database (default SQLite in the state directory)."),
    ) -> None:
        """Create or replace an STI-PA account (written to the PA database).

        Example: stirshaken pa add-account sp-1234 --ocn 1234 (the password from STIRSHAKEN_PA_PASSWORD)"""
        from stirshaken.pki.store import sqlite_url
        from stirshaken.pki.pa import OCN_RE, PAKeys, hash_password

        if not password:
            _fail("--password (or STIRSHAKEN_PA_PASSWORD) is required", 2)
        if ocn is not None and OCN_RE.fullmatch(ocn) is None:
            _fail(f"--ocn {ocn!r}: an OCN/SPC is 1-16 digits or upper-case letters", 2)
        common.directory(state_dir, "--state-dir")
        db = _database(db_url or sqlite_url(str(state_dir / "pa.db")))
        # the PA keys exist from the first command on, so an STI-CA started right after
        # 'pa serve ... &' (docs/pki.md) finds pa-root.pem and pa-crl.pem without waiting
        PAKeys.load_or_create(state_dir)
        db.pa_put_account(username, hash_password(password or ""), ocn=ocn, admin=admin)
        out.print(f"account {username} saved", highlight=False)

    # --- STI-CA ------------------------------------------------------------------------------
    @ca_app.command("serve")
    @SERVICE.into("service")
    def ca_serve(
        config: Optional[Path] = typer.Option(None, "--config", help="TOML file ([ca] section)."),
        state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="CA keys and SQLite database (default ./ca-state)."),
        service: dict[str, Any] = GROUP,
        pa_url: Optional[str] = typer.Option(None, "--pa-url", help="STI-PA base URL (token authority)."),
        pa_root: List[Path] = typer.Option([], "--pa-root", help="STI-PA root certificate(s) SPC tokens must chain to."),
        pa_crl_cert: Optional[Path] = typer.Option(None, "--pa-crl-cert", help="STI-PA CRL signer certificate (its DN becomes cRLIssuer)."),
        crl_url: Optional[str] = typer.Option(None, "--crl-url", help="SHAKEN CRL URL (default PA_URL/download/v1/crl)."),
        ca_bundle: Optional[str] = typer.Option(None, "--ca-bundle", help="PEM roots to reach the STI-PA/STI-CR over HTTPS."),
        cr_url: Optional[str] = typer.Option(None, "--cr-url", help="Publish issued chains to this STI-CR."),
        cr_token: Optional[str] = typer.Option(None, "--cr-token", envvar="STIRSHAKEN_CR_TOKEN",
                                               help="STI-CR upload token (or env STIRSHAKEN_CR_TOKEN)."),
        pa_admin_user: Optional[str] = typer.Option(None, "--pa-admin-user", help="Forward revocations to the STI-PA as this admin."),
        pa_admin_password: Optional[str] = typer.Option(None, "--pa-admin-password", envvar="STIRSHAKEN_PA_ADMIN_PASSWORD",
                                                        help="Password of --pa-admin-user (or env STIRSHAKEN_PA_ADMIN_PASSWORD)."),
        eab_required: bool = typer.Option(False, "--eab-required", help="newAccount needs an external account binding (RFC 8555 §7.3.4; keys from 'ca eab-create')."),
        allow_account_key_reuse: bool = typer.Option(False, "--allow-account-key-reuse", help="Relaxation: issue for a CSR with the account's key (RFC 8555 §11.1 says refuse); logged per issuance."),
        allow_header_only_signature: bool = typer.Option(False, "--allow-header-only-signature", help="Relaxation: accept POST-as-GET signed over the protected header alone (not RFC 7515); logged per request."),
    ) -> None:
        """Run the STI-CA ACME server.

        Example: stirshaken ca serve --pa-url https://127.0.0.1:8443 --pa-root pa-state/pa-root.pem --port 9443"""
        from stirshaken.net.http import client_session
        from stirshaken.pki.ca import CAConfig, CertificateAuthority
        from stirshaken.pki.cr import HTTPPublisher
        from stirshaken.pki.pa_client import PAClient

        cfg = _config(config, "ca", dict(state_dir=state_dir, **service, pa_url=pa_url, pa_root=pa_root,
                                         pa_crl_cert=pa_crl_cert, crl_url=crl_url, ca_bundle=ca_bundle, cr_url=cr_url,
                                         cr_token=cr_token, pa_admin_user=pa_admin_user, pa_admin_password=pa_admin_password,
                                         eab_required=eab_required, allow_account_key_reuse=allow_account_key_reuse,
                                         allow_header_only_signature=allow_header_only_signature))
        _logging(cfg, "ca")
        if not cfg.get("pa_url") or not cfg.get("pa_root"):
            _fail("--pa-url and --pa-root are required", 2)
        sd, p = _state(cfg, "ca-state", 9443)
        _urls(cfg, "pa_url", "base_url", "crl_url", "cr_url")
        roots = _cert_files(cfg, "pa_root")
        crl_issuer = _cert_files(cfg, "pa_crl_cert")[0].subject if cfg.get("pa_crl_cert") else None
        if cfg.get("ca_bundle"):
            _cert_files(cfg, "ca_bundle")
        pa_base = str(cfg["pa_url"]).rstrip("/")
        publisher = HTTPPublisher(cfg["cr_url"], str(cfg.get("cr_token", "")), ca_bundle=cfg.get("ca_bundle")) if cfg.get("cr_url") else None
        hook = None
        if cfg.get("pa_admin_user") and cfg.get("pa_admin_password"):
            async def hook(cert: Any, reason: Any) -> None:
                async with client_session(ca_bundle=cfg.get("ca_bundle")) as s:
                    pac = PAClient(pa_base, s)
                    await pac.login(str(cfg["pa_admin_user"]), str(cfg["pa_admin_password"]))
                    await pac.revoke(serial=cert.serial_number, reason=str(reason) if reason is not None else None)

        ca_cfg = CAConfig(base_url=_base_url(cfg, p), state_dir=sd, token_authority=pa_base,
                          crl_url=str(cfg.get("crl_url") or pa_base + "/download/v1/crl"), crl_issuer=crl_issuer, pa_trust_anchors=roots,
                          ca_bundle=cfg.get("ca_bundle"), db_url=cfg.get("db_url"), eab_required=bool(cfg.get("eab_required")),
                          allow_account_key_reuse=bool(cfg.get("allow_account_key_reuse")),
                          allow_header_only_signature=bool(cfg.get("allow_header_only_signature")))
        ca = CertificateAuthority.create(ca_cfg, db=_database(ca_cfg.database_url), publisher=publisher, revocation_hook=hook)
        ssl_ctx = _tls(cfg, sd)
        out.print(f"STI-CA root: {sd / 'ca-root.pem'} (register it with the STI-PA trusted-CA list)", highlight=False)
        _serve(ca.app, cfg, p, ssl_ctx, "STI-CA (ACME directory at /acme/directory)")

    @ca_app.command("eab-create")
    def ca_eab_create(
        spc: Optional[str] = typer.Option(None, "--spc", help="SPC the bound ACME account may order certificates for."),
        account: Optional[str] = typer.Option(None, "--account", help="STI-PA account the key belongs to."),
        state_dir: Path = typer.Option(Path("ca-state"), "--state-dir", help="The STI-CA state directory (its ca.db)."),
        db_url: Optional[str] = typer.Option(None, "--db-url", help="SQLAlchemy URL of the STI-CA database."),
    ) -> None:
        """Mint an external account binding key (RFC 8555 §7.3.4) for one SP.

        Prints a key identifier and an HMAC key (shown once) for the SP's stirshaken acme
        --eab-kid/--eab-hmac-key.

        Example: stirshaken ca eab-create --spc 1234 --state-dir ca-state"""
        from stirshaken.pki.ca import mint_eab_key
        from stirshaken.pki.pa import OCN_RE
        from stirshaken.pki.store import sqlite_url

        if not spc and not account:
            _fail("give --spc and/or --account: the key is bound to an SP", 2)
        if spc is not None and OCN_RE.fullmatch(spc) is None:
            _fail("--spc: an SPC is 1-16 digits or upper-case letters", 2)
        common.directory(state_dir, "--state-dir")
        db = _database(db_url or sqlite_url(str(state_dir / "ca.db")))
        try:
            kid, key = mint_eab_key(db, spc=spc, pa_account=account)
        finally:
            db.close()
        out.print(f"eab_kid      {kid}\neab_hmac_key {key}\n(the HMAC key is shown only now)", highlight=False)

    # --- STI-CR ------------------------------------------------------------------------------
    @cr_app.command("serve")
    @SERVICE.into("service")
    def cr_serve(
        config: Optional[Path] = typer.Option(None, "--config", help="TOML file ([cr] section)."),
        state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="SQLite database (default ./cr-state)."),
        service: dict[str, Any] = GROUP,
        upload_token: List[str] = typer.Option([], "--upload-token", help="TOKEN=OWNER allowed to PUT chains (repeatable)."),
        trust_anchor: List[Path] = typer.Option([], "--trust-anchor", help="Uploaded chains must validate to one of these roots."),
    ) -> None:
        """Run the STI-CR (GET/PUT /NAME.pem, application/pem-certificate-chain).

        Example: stirshaken cr serve --upload-token s3cret=sp-1234 --trust-anchor ca-state/ca-root.pem --port 7443"""
        from stirshaken.pki.cr import CertificateRepository
        from stirshaken.pki.store import sqlite_url

        cfg = _config(config, "cr", dict(state_dir=state_dir, **service, upload_token=upload_token, trust_anchor=trust_anchor))
        _logging(cfg, "cr")
        sd, p = _state(cfg, "cr-state", 7443)
        _urls(cfg, "base_url")
        tokens: dict[str, str] = {}
        for item in cfg.get("upload_token", []):
            token, sep, owner = str(item).partition("=")
            if not token or (sep and not owner):
                _fail(f"--upload-token {str(item)!r}: give TOKEN=OWNER (or TOKEN)", 2)
            tokens[token] = owner or "uploader"
        anchors = _cert_files(cfg, "trust_anchor")
        db = _database(cfg.get("db_url") or sqlite_url(str(sd / "cr.db")))
        ssl_ctx = _tls(cfg, sd)
        repo = CertificateRepository(db, _base_url(cfg, p), upload_tokens=tokens, trust_anchors=anchors)
        _serve(repo.app, cfg, p, ssl_ctx, "STI-CR")


__all__ = ["register"]
