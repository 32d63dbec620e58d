"""Process model of ``stirshaken serve``: workers, sockets, logging, graceful shutdown.

* ``workers = 1``: everything runs in the calling process.
* ``workers = N > 1``: the parent validates the configuration, checks that every address can be
  bound, creates the UDP sockets and forks N workers.  Each worker binds its own TCP listening
  sockets (HTTP and SIP) with ``SO_REUSEPORT`` so the kernel spreads connections over workers.
  UDP sockets are created once (also ``SO_REUSEPORT``) and inherited: with a per-worker reuseport
  UDP socket the kernel hashes each peer's 4-tuple to one worker, so a single SBC/proxy (one
  address and port, the usual deployment) would load only one worker; sharing the socket lets
  every idle worker read the next datagram, as Kamailio's UDP children do.
* With ``[verification] replay_detection``, the parent also makes the replay table before forking
  (:class:`~stirshaken.vs.replay.ReplayTable`, shared memory): every worker sees the PASSporTs any
  of them verified, so a replay or a retransmission is recognised whichever worker reads it.
* The parent supervises: a worker that dies is restarted (unless it failed at start, which stops
  the service with status 2); when more than 10 die within 60 s, restarts back off (1 s doubling
  up to 60 s) while the living workers keep serving, and SIGTERM/SIGINT is forwarded to the workers, which stop
  accepting, finish what is in flight (up to ``shutdown_timeout``) and exit.
* SIGHUP reloads the signers: every worker reads the signer tables of the configuration file
  (key, certificate and x5u; :func:`~stirshaken.serve.signing.signers_from_file`), their key and
  certificate files (for ``[...acme]`` signers, the key, certificate and x5u of the current ACME
  certificate), guards them as at start (key matches certificate, validity, TNAuthList, with
  ``verify_x5u`` the certificate served at the x5u) and switches between two requests; with
  several workers the parent forwards SIGHUP to each worker.  A reload that fails keeps the
  current signers and logs the one line that says why.  The same SIGHUP makes each worker's
  verifier read its trust sources again (trust anchors, CA-list roots, CRL signers, CRL files,
  the CA list; all or nothing, one log line:
  :meth:`stirshaken.vs.credentials.CredentialSource.areload_trust`).
* Signing certificates expiring within ``[signing] expiry_warning_days`` are logged once a day
  (worker 0) and make ``/healthz`` degraded; ``stirshaken_signer_certificate_expiry_seconds``
  gives the seconds left per signer.
* ACME (``[signing.acme]``, ``[signing.tenant.acme]``): before serving, :func:`run` makes sure
  each such signer has a valid certificate (:func:`stirshaken.pki.enrollment.ensure_certificate`), or exits
  with status 2 and one line on stderr.  Then renewal runs beside the workers: with one worker as
  a task of its event loop; with several, in a renewer process the supervisor forks and restarts
  (the supervisor itself stays single-threaded and loop-free, so forking workers stays safe).  A
  renewal ends with a SIGHUP to the supervisor, which reloads its own copy of the keys (for
  workers it starts later) and forwards SIGHUP to every worker.

Logs are JSON lines (one object per record) on stderr; nothing logs key material.  Per-call
records (``[records]``) go to their own logger, ``stirshaken.records`` (:mod:`stirshaken.serve.records`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import errno
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stirshaken.serve import allocator
from stirshaken.serve.config import AcmeSettings, Address, Config, ConfigError
from stirshaken.serve.records import json_text

log = logging.getLogger("stirshaken.serve")

__all__ = ["JSONFormatter", "TextFormatter", "check_signers", "run", "setup_logging"]

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, worker, plus ``extra`` fields; characters
    that are not printable written as JSON ``\\u`` escapes (:func:`~stirshaken.serve.records.json_text`)."""

    def __init__(self, worker: int | str = 0):
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "worker": self.worker,
            "pid": record.process,
        }
        for k, v in record.__dict__.items():
            if k not in _STD_ATTRS and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json_text(out)  # (C1 controls and the like as \u escapes, as in the records)


class TextFormatter(logging.Formatter):
    """``<asctime> LEVEL [worker] logger: message key=value ...``: the ``extra`` fields of the
    record as ``key=value`` (the JSON form's fields; a value with spaces or quotes as a JSON
    string, ``-`` for None)."""

    def __init__(self, worker: int | str = 0):
        super().__init__(f"%(asctime)s %(levelname)s [{worker}] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        from stirshaken.serve.records import text_value

        line = super().format(record)
        extra = " ".join(f"{k}={text_value(v)}" for k, v in record.__dict__.items() if k not in _STD_ATTRS and not k.startswith("_"))
        if not extra:
            return line
        head, nl, rest = line.partition("\n")  # a traceback stays below the line
        return f"{head} {extra}{nl}{rest}"


#: this process's :class:`~stirshaken.serve.logoutput.LogOutput` (workers and the ACME renewer;
#: None in the supervisor, which forks and so stays single-threaded)
_OUTPUT: Any = None


def setup_logging(level: str = "INFO", fmt: str = "json", worker: int | str = 0, *, threaded: bool = False, buffer: int = 0,
                  dropping: bool = False) -> None:
    """Log records of ``level`` and above to stderr, as JSON lines (``fmt`` ``"json"``) or
    :class:`TextFormatter` lines (``"text"``), naming ``worker``.  ``threaded``: through a
    :class:`~stirshaken.serve.logoutput.LogOutput` (kept in ``_OUTPUT``), so that a stderr nobody
    reads never stalls the process; ``buffer``: its limit in bytes (0: its default);
    ``dropping`` (the supervisor): through a :class:`~stirshaken.serve.logoutput.DroppingOutput`,
    a line written at once or dropped."""
    global _OUTPUT
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    stream: Any = sys.stderr
    if threaded:
        from stirshaken.serve.logoutput import LogOutput

        sys.stderr.flush()
        stream = _OUTPUT = LogOutput(sys.stderr.fileno(), buffer) if buffer else LogOutput(sys.stderr.fileno())
    elif dropping:
        from stirshaken.serve.logoutput import DroppingOutput

        sys.stderr.flush()
        stream = DroppingOutput(sys.stderr.fileno())
    h = logging.StreamHandler(stream)
    h.setFormatter(JSONFormatter(worker) if fmt == "json" else TextFormatter(worker))
    root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestLine) for f in server.filters):
        server.addFilter(_BadRequestLine())


class _BadRequestLine(logging.Filter):
    """aiohttp's own lines for a request it could not parse (``http_engine = "aiohttp"``: a control
    character in a field value, a malformed request line, a body it cannot decode...) or whose
    peer left before its end, which it logs as an ERROR with a traceback: a peer's doing, so one
    WARNING line (``bad HTTP request refused`` / ``connection lost before the request's end``)
    with the peer and the first line of the reason (``error``), as the default engine answers or
    closes without one.  Other errors of aiohttp's keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from aiohttp.http_exceptions import HttpProcessingError
        from aiohttp.web_protocol import RequestPayloadError

        from stirshaken.serve.http import _first_line

        if isinstance(exc, (HttpProcessingError, RequestPayloadError, ConnectionResetError)):
            record.peer = str(record.args[0]) if isinstance(record.args, tuple) and record.args else None
            record.error = _first_line(exc)
            record.msg = "connection lost before the request's end" if isinstance(exc, ConnectionResetError) else "bad HTTP request refused"
            record.args = ()
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
        return True


# --- sockets -----------------------------------------------------------------------------------

#: listen(2) backlog; also passed to ``create_server`` / ``SockSite``, which listen again (default 100 / 128)
LISTEN_BACKLOG = 4096


def _listen_error(addr: Address, kind: int, exc: OSError) -> ConfigError:
    what = "TCP" if kind == socket.SOCK_STREAM else "UDP"
    reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
    return ConfigError(f"cannot listen on {addr} ({what}): {reason}")


def _bind(addr: Address, kind: int, *, reuseport: bool, listen: bool, rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(addr.family, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport and hasattr(socket, "SO_REUSEPORT"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if rcvbuf:
            for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
                if opt is None:
                    continue
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, rcvbuf)
                    break
                except OSError:
                    continue
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, min(rcvbuf, 4 << 20))
            except OSError:
                pass
        s.bind((addr.host, addr.port))
        if listen:
            s.listen(LISTEN_BACKLOG)
        s.setblocking(False)
        return s
    except OSError as exc:
        s.close()
        raise _listen_error(addr, kind, exc) from None


def _probe(addr: Address, kind: int) -> None:
    """Refuse an address another process serves, before sockets that share it are made.

    Our own sockets use ``SO_REUSEPORT`` (and UDP ``SO_REUSEADDR``), which would let a second
    ``serve`` on the same ports silently share them; a probe without those options fails when
    anything is bound there (TCP keeps ``SO_REUSEADDR`` so that connections in TIME_WAIT from a
    previous run do not count).  Raises :class:`ConfigError` naming the address."""
    s = socket.socket(addr.family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr.host, addr.port))
    except OSError as exc:
        raise _listen_error(addr, kind, exc) from None
    finally:
        s.close()


def _udp_sockets(cfg: Config) -> dict[str, socket.socket]:
    out = {}
    for role, addr in (("signing", cfg.server.sip_signing), ("verification", cfg.server.sip_verification)):
        if addr is not None:
            out[role] = _bind(addr, socket.SOCK_DGRAM, reuseport=True, listen=False, rcvbuf=cfg.server.sip_udp_buffer)
    return out


# --- worker --------------------------------------------------------------------------------------

#: what the supervisor makes before forking and every worker inherits: the replay table
#: (``"replay_table"``), so that a retransmission or a replay reaching any worker is recognised
_INHERITED: dict[str, Any] = {}


class Worker:
    """Everything one worker process serves."""

    def __init__(self, cfg: Config, index: int, udp: dict[str, socket.socket], metrics_dir: str | None):
        self.cfg = cfg
        self.index = index
        self.udp = udp
        self.metrics_dir = metrics_dir
        self.ready = False
        self.closers: list[Any] = []
        self.conn_sets: list[set[Any]] = []
        self.runner: Any = None
        self.verifier: Any = None
        self.signing: Any = None
        self.reload_pending = False
        self.inventory: Any = None  # serve.inventory.runtime.InventoryRuntime with [inventory]
        self.health: Any = None  # serve.health.Health, checked in the background
        self._health_task: Any = None
        self._reloads: set[Any] = set()  # reloads waiting for their x5u check (verify_x5u)
        self.records: Any = None  # serve.records.Records with [records] log or database

    def reload(self, why: str = "SIGHUP") -> bool:
        """Re-read the signers (SIGHUP: from the configuration file too; a renewal: the ACME
        state) and switch to them once guarded; False if that failed (the current signers stay).
        With ``verify_x5u`` the x5u check runs as a task of the event loop and the switch follows
        it."""
        from stirshaken.serve.signing import KeyMaterialError, load_signers, signers_from_file

        if self.signing is None:
            self.reload_pending = self.cfg.signing.enabled  # still starting: reload once the signers exist
            return False
        try:
            new = self.signing.cfg
            if why == "SIGHUP" and self.cfg.path:
                new = signers_from_file(self.cfg.path, new)
            new = load_signers(new)
        except KeyMaterialError as exc:
            return self._reload_failed(why, exc)
        if new.verify_x5u:
            task = asyncio.ensure_future(self._verify_then_switch(new, why))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)
            return True
        return self._switch(new, why)

    async def _verify_then_switch(self, new: Any, why: str) -> bool:
        from stirshaken.serve.signing import KeyMaterialError, verify_x5u

        try:
            new = await verify_x5u(new)
        except KeyMaterialError as exc:
            return self._reload_failed(why, exc)
        return self._switch(new, why)

    def _reload_failed(self, why: str, exc: Exception) -> bool:
        self.metrics.inc("stirshaken_signer_reloads_total", (("result", "failed"),))
        log.warning("signing key reload failed; keeping the current keys", extra={"why": why, "error": str(exc)})
        return False

    def _switch(self, new: Any, why: str) -> bool:
        changed = self.signing.reload(new)
        self.metrics.inc("stirshaken_signer_reloads_total", (("result", "ok"),))
        x5u = {t.name: t.config.x5u for t in ([self.signing.default] if self.signing.default else []) + self.signing.tenants}
        log.info("signing keys reloaded", extra={"why": why, "changed": changed, "x5u": x5u})
        return True

    def on_sighup(self) -> None:
        """SIGHUP: the signing keys (:meth:`reload`) and, in the background, the verifier's trust;
        options that need a restart and changed are named (by the supervisor when there is one)."""
        if self.cfg.server.workers == 1:
            _warn_restart_changes(self.cfg)
        self.reload()
        if self.verifier is not None:
            asyncio.ensure_future(self.reload_trust())

    async def reload_trust(self) -> bool:
        """Read the verifier's trust sources again; one log line either way; False if it failed
        (the previous trust stays in use)."""
        from stirshaken.vs.credentials import TrustReloadError

        try:
            summary = await self.verifier.areload_trust()
        except TrustReloadError as exc:
            self.metrics.inc("stirshaken_trust_reloads_total", (("result", "failed"),))
            log.warning("trust reload failed; keeping the current trust anchors, CRL signers, CRLs and CA list",
                        extra={"error": exc.description})
            return False
        self.metrics.inc("stirshaken_trust_reloads_total", (("result", "ok"),))
        log.info("trust reloaded", extra=summary)  # /healthz follows at its next check
        return True

    async def start(self) -> None:
        from stirshaken.serve.metrics import Metrics
        from stirshaken.serve.limits import ConnectionGuard, ConnectionLimits
        from stirshaken.serve.http import FastHTTPProtocol, serve_aiohttp
        from stirshaken.serve.rest import RestAPI
        from stirshaken.serve.signing import SigningService
        from stirshaken.serve.sip import SipService, start_sip

        cfg = self.cfg
        s = cfg.server
        limits = self.limits = ConnectionLimits.from_config(cfg)
        self.metrics = Metrics(self.metrics_dir, self.index)
        if cfg.inventory.enabled:  # loads the current inventory, then follows its changes
            from stirshaken.serve.inventory.runtime import InventoryRuntime

            self.inventory = InventoryRuntime(cfg.inventory)
            self.inventory.start()
            self.metrics.stats_sources.append(self.inventory.live)
        inv = self.inventory
        signing = self.signing = SigningService(cfg.signing, inventory=inv.live if inv else None, inventory_cfg=cfg.inventory) if cfg.signing.enabled else None
        if self.reload_pending:
            self.reload_pending = False
            self.reload()
        # the signing service is made once per worker (reload swaps keys inside it)
        expiry = signing.certificate_expiry if signing is not None else None
        self.metrics.certificate_expiry = expiry
        call_info = None
        if cfg.verification.enabled:
            from stirshaken.vs.verifier import CallInfo, Verifier

            vconf = cfg.verification.verifier_config()
            self.verifier = Verifier(vconf, replay_table=_INHERITED.get("replay_table"))
            self.metrics.stats_sources.append(self.verifier)
            call_info = CallInfo
        from stirshaken.serve.health import Health
        from stirshaken.serve.records import Records

        verifier = self.verifier

        def trust_problems() -> list[str]:  # and start what is due: an idle node's trust stays current
            verifier.maintain()
            return verifier.trust_problems()  # type: ignore[no-any-return]

        records = self.records = Records.from_config(cfg.records, fmt=s.log_format, worker=self.index, stream=_OUTPUT)
        if records is not None:
            records.start()
            self.metrics.counter_sources.append(records.counters)
        if _OUTPUT is not None:
            self.metrics.counter_sources.append(_OUTPUT.counters)
        self.health = Health(redis_url=cfg.verification.redis if cfg.verification.enabled else None,
                             certificate_expiry=expiry, expiry_warning=cfg.signing.expiry_warning_days * 86400.0,
                             log_expiry=self.index == 0, trust_problems=trust_problems if verifier is not None else None,
                             records=records, log_output=_OUTPUT)
        await self.health.check()
        self._health_task = asyncio.ensure_future(self.health.run())
        reuse = s.workers > 1
        if s.http is not None:
            api = RestAPI(signing=signing, verifier=self.verifier, metrics=self.metrics, max_age=cfg.verification.max_age,
                          future_skew=cfg.verification.future_skew, max_body=s.max_body, call_info=call_info,
                          ready=lambda: self.ready, access_log=s.access_log, admin=inv.admin if inv else None,
                          health=self.health, records=records)
            if s.inspect and self.verifier is not None:
                from stirshaken.serve.inspect import WebInspector

                api.inspector = WebInspector(self.verifier.config)
            sock = _bind(s.http, socket.SOCK_STREAM, reuseport=reuse, listen=True)
            if s.http_engine == "fast":
                state: dict[str, Any] = {"conns": set(), "guard": ConnectionGuard(limits, "http", self.metrics)}
                server = await asyncio.get_running_loop().create_server(lambda: FastHTTPProtocol(api, state), sock=sock,
                                                                        backlog=LISTEN_BACKLOG)
                self.closers.extend((server, state["guard"]))  # a guard's close() stops its sweeper
                self.conn_sets.append(state["conns"])
            else:
                self.runner, server, guard = await serve_aiohttp(api, sock, limits, shutdown_timeout=s.shutdown_timeout,
                                                                 backlog=LISTEN_BACKLOG, metrics=self.metrics)
                self.closers.extend((server, guard))
            loop_kind = type(asyncio.get_running_loop()).__module__.partition(".")[0]  # "uvloop" unless unavailable
            log.info("http listening", extra={"address": str(s.http), "engine": s.http_engine, "loop": loop_kind})
        for role, addr in (("signing", s.sip_signing), ("verification", s.sip_verification)):
            if addr is None:
                continue
            svc = SipService(role, metrics=self.metrics, signing=signing if role == "signing" else None,
                             verifier=self.verifier if role == "verification" else None, vcfg=cfg.verification,
                             call_info=call_info, ttl=s.sip_transaction_ttl, cache_size=s.sip_transaction_cache,
                             dno_check=inv.dno_check if inv and role == "verification" else None, records=records)
            tcp = _bind(addr, socket.SOCK_STREAM, reuseport=reuse, listen=True)
            udp = self.udp.get(role)
            if udp is None:
                udp = _bind(addr, socket.SOCK_DGRAM, reuseport=True, listen=False, rcvbuf=s.sip_udp_buffer)
            closers, conns = await start_sip(svc, udp_sock=udp, tcp_sock=tcp, max_message=s.sip_max_message,
                                             backlog=LISTEN_BACKLOG, limits=limits)
            self.closers.extend(closers)
            self.conn_sets.append(conns)
            log.info("sip listening", extra={"role": role, "address": str(addr), "transports": "udp,tcp"})
        self.ready = True

    async def stop(self) -> None:
        """Stop accepting, let in-flight work finish (bounded), release everything."""
        self.ready = False
        timeout = self.cfg.server.shutdown_timeout
        for c in self.closers:
            c.close()
        for conns in self.conn_sets:
            for p in list(conns):
                if hasattr(p, "shutdown"):
                    p.shutdown()
                elif getattr(p, "transport", None) is not None:
                    p.transport.close()
        if self.runner is not None:
            try:
                await asyncio.wait_for(self.runner.cleanup(), timeout + 1)
            except asyncio.TimeoutError:
                pass
        deadline = time.monotonic() + timeout
        while any(conns for conns in self.conn_sets) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._health_task is not None:
            self._health_task.cancel()
            try:
                await self._health_task
            except BaseException:  # noqa: BLE001 - cancelled
                pass
        if self.verifier is not None:
            try:
                await asyncio.wait_for(self.verifier.aclose(), 2)
            except Exception:  # noqa: BLE001
                pass
        if self.records is not None:  # what is queued for the records database, within the grace period
            self.records.close(timeout=min(2.0, timeout))
        if self.metrics_dir:
            self.metrics.write_snapshot()
        if self.inventory is not None:
            self.inventory.close()


async def _worker_main(cfg: Config, index: int, udp: dict[str, socket.socket], metrics_dir: str | None, renew: bool = False) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    w = Worker(cfg, index, udp, metrics_dir)
    loop.add_signal_handler(signal.SIGHUP, w.on_sighup)
    try:
        await w.start()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        await w.stop()
        return 2
    log.info("worker ready", extra={"index": index, "malloc": _MALLOC})
    renewals = [asyncio.ensure_future(_renew(a, lambda _st: w.reload("certificate renewed"))) for a in cfg.signing.acme] if renew else []
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        if metrics_dir:
            w.metrics.write_snapshot()
    log.info("worker stopping", extra={"index": index})
    for t in renewals:
        t.cancel()
    await asyncio.gather(*renewals, return_exceptions=True)
    await w.stop()
    log.info("worker stopped", extra={"index": index})
    return 0


def _loop_factory() -> Any:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        return None


#: what :func:`stirshaken.serve.allocator.tune` did in this worker (its "worker ready" line says it)
_MALLOC = ""


def _run_worker(cfg: Config, index: int, udp: dict[str, socket.socket], metrics_dir: str | None, renew: bool = False) -> int:
    global _MALLOC
    setup_logging(cfg.server.log_level, cfg.server.log_format, index, threaded=True, buffer=cfg.server.log_buffer)
    _MALLOC = allocator.tune(cfg.server.malloc_tuning)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_worker_main(cfg, index, udp, metrics_dir, renew))
    finally:
        if _OUTPUT is not None:  # the last lines, within a bound (stderr may not be read)
            _OUTPUT.drain(2.0)


# --- ACME certificates ------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _renew(acme: AcmeSettings, on_renewed: Any) -> None:
    """Keep one signer's certificate current (:func:`stirshaken.pki.enrollment.renew_forever`)."""
    from stirshaken.pki.enrollment import renew_forever

    def renewed(st: Any) -> None:
        log.info("certificate renewed", extra={"acme": acme.where, "serial": format(st.serial, "x"), "x5u": st.x5u,
                                                 "not_after": st.not_after.isoformat()})
        on_renewed(st)

    await renew_forever(acme.acme_config(), renew_before_days=acme.renew_before_days, check_interval=acme.check_interval,
                        on_renewed=renewed)


async def _ensure_certificates(cfg: Config) -> None:
    """Before serving: a valid certificate for every ACME signer, or :class:`ConfigError`."""
    from stirshaken.pki.enrollment import current_certificate, ensure_certificate
    from stirshaken.serve.signing import KeyMaterialError, acme_material

    for a in cfg.signing.acme:
        acfg = a.acme_config()
        try:
            st = await ensure_certificate(acfg, renew_before_days=a.renew_before_days)
        except Exception as exc:  # noqa: BLE001 - network, STI-PA, ACME: all end the start the same way
            cur = current_certificate(acfg.state_dir)
            if cur is None or cur.not_after <= dt.datetime.now(dt.timezone.utc):
                raise ConfigError(f"{a.where}: cannot obtain a certificate from {a.directory_url}: {_one_line(exc)}") from None
            log.warning("certificate renewal failed; serving with the current one", extra={
                "acme": a.where, "serial": format(cur.serial, "x"), "not_after": cur.not_after.isoformat(), "error": _one_line(exc)})
            continue
        try:
            acme_material(a)
        except KeyMaterialError as exc:  # e.g. an interrupted renewal left key and certificate apart
            log.warning("certificate state unusable; obtaining a new certificate", extra={"acme": a.where, "error": str(exc)})
            try:
                st = await ensure_certificate(acfg, force=True)
                acme_material(a)
            except KeyMaterialError as exc2:
                raise ConfigError(str(exc2)) from None
            except Exception as exc2:  # noqa: BLE001
                raise ConfigError(f"{a.where}: cannot obtain a certificate from {a.directory_url}: {_one_line(exc2)}") from None
        log.info("certificate ready", extra={"acme": a.where, "serial": format(st.serial, "x"), "x5u": st.x5u,
                                             "not_after": st.not_after.isoformat(), "renewed": st.renewed})


def _prepare_signers(cfg: Config) -> Config:
    """Obtain missing ACME certificates, then load and guard every signer
    (:func:`~stirshaken.serve.signing.prepare_signers`); :class:`ConfigError` (one line) refuses
    the start."""
    from stirshaken.serve.signing import KeyMaterialError, prepare_signers

    if not cfg.signing.enabled:
        return cfg
    if cfg.signing.acme:
        asyncio.run(_ensure_certificates(cfg))
    try:
        return cfg.model_copy(update={"signing": prepare_signers(cfg.signing)})
    except KeyMaterialError as exc:
        raise ConfigError(str(exc)) from None


def check_signers(cfg: Config) -> None:
    """``serve --check``: guard every signer as the start would (key and certificate files,
    validity, TNAuthList, x5u rule; with ``verify_x5u`` the x5u is fetched), except ACME signers
    that have no certificate yet (nothing is obtained here).  Raises :class:`ConfigError`."""
    from stirshaken.serve.signing import KeyMaterialError, prepare_signers

    s = cfg.signing
    if not s.enabled:
        return

    def ready(t: Any) -> bool:
        return t.acme is None or (Path(t.acme.state_dir) / "cert.json").exists()

    checked = s.model_copy(update={"default": s.default if s.default is not None and ready(s.default) else None,
                                   "tenants": tuple(t for t in s.tenants if ready(t))})
    try:
        prepare_signers(checked)
    except KeyMaterialError as exc:
        raise ConfigError(str(exc)) from None


def _run_renewer(cfg: Config, parent: int) -> int:
    """The renewer process (several workers): renew every ACME certificate when due and tell
    the supervisor with SIGHUP; exits when the supervisor is gone."""
    setup_logging(cfg.server.log_level, cfg.server.log_format, "acme", threaded=True, buffer=cfg.server.log_buffer)

    def renewed(_st: Any) -> None:
        if os.getppid() == parent:
            os.kill(parent, signal.SIGHUP)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, me.cancel)
        tasks = [asyncio.ensure_future(_renew(a, renewed)) for a in cfg.signing.acme]
        try:
            while os.getppid() == parent:
                await asyncio.sleep(1.0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        pass
    return 0


# --- parent / supervisor ----------------------------------------------------------------------


def _hold_std_descriptors() -> None:
    """Stdin, stdout or stderr closed at the start (``2>&-``; Python then makes ``sys.stderr``
    None): /dev/null takes the descriptor, and ``sys.stderr`` is it.  Else the worker's log output
    failed on None (serve exited with 1, saying nothing), and the next socket or event loop
    descriptor became 2 (or 0, 1): log lines would have gone into it, and libuv, which asserts that
    what it closes is above 2, aborted the process (SIGABRT) at every stop."""
    held = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            got = os.open(os.devnull, os.O_RDONLY if fd == 0 else os.O_WRONLY)
            if got != fd:
                os.dup2(got, fd)
                os.close(got)
            held.add(fd)
    if sys.stderr is None:  # (2 taken since the start by a descriptor of this process: one of its own)
        fd = 2 if 2 in held else os.open(os.devnull, os.O_WRONLY)
        sys.stderr = open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=fd != 2)


def run(cfg: Config) -> int:
    """Serve ``cfg`` until SIGTERM/SIGINT; returns the exit status (2: could not start)."""
    _hold_std_descriptors()
    s = cfg.server
    setup_logging(s.log_level, s.log_format, "main", dropping=True)
    try:  # a SIGHUP while starting (e.g. obtaining certificates) must not end the process
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError:  # pragma: no cover - not the main thread
        pass
    udp: dict[str, socket.socket] = {}
    try:
        # refuse early when an address is taken, also by another `serve` (SO_REUSEPORT would share it)
        for a in s.addresses:
            _probe(a, socket.SOCK_STREAM)
        for a in (s.sip_signing, s.sip_verification):
            if a is not None:
                _probe(a, socket.SOCK_DGRAM)
        udp = _udp_sockets(cfg)
        cfg = _prepare_signers(cfg)
        if cfg.inventory.enabled:  # one line and status 2 here, not one per worker
            from stirshaken.serve.inventory.runtime import check_database

            check_database(cfg.inventory)
    except ConfigError as exc:
        for sock in udp.values():
            sock.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("starting", extra={"config": cfg.path, "workers": s.workers})
    if s.workers == 1:
        return _run_worker(cfg, 0, udp, None, renew=True)
    v = cfg.verification
    if v.enabled and v.replay_detection:  # one replay table for every worker of this node
        from stirshaken.vs.replay import ReplayTable

        _INHERITED["replay_table"] = ReplayTable.for_config(v.verifier_config(), shared=True)
    metrics_dir = s.metrics_dir or tempfile.mkdtemp(prefix="stirshaken-metrics-")
    os.makedirs(metrics_dir, exist_ok=True)
    return _supervise(cfg, udp, metrics_dir)


def _spawn(cfg: Config, index: int, udp: dict[str, socket.socket], metrics_dir: str) -> int:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop handles it
            if index < 0:
                for sock in udp.values():
                    sock.close()
                code = _run_renewer(cfg, parent)
            else:
                code = _run_worker(cfg, index, udp, metrics_dir)
        except BaseException:  # noqa: BLE001
            logging.getLogger("stirshaken.serve").exception("worker crashed")
        finally:
            sys.stderr.flush()
            if _OUTPUT is not None:  # ("worker crashed", the renewer's last lines), within a bound
                _OUTPUT.drain(2.0)
            os._exit(code)
    return pid


RENEWER = -1  # child index of the ACME renewer process


#: the sections of the configuration file whose options SIGHUP does not apply (docs/configuration.md:
#: it reloads the signers and the contents of the trust sources' files)
_RESTART_SECTIONS = ("server", "verification", "inventory", "records")


def restart_changes(cfg: Config) -> list[str]:
    """``[section] option`` of each option of :data:`_RESTART_SECTIONS` that differs between
    ``cfg`` (as started) and its file now: what a SIGHUP leaves as it was, for one warning line.
    Empty when the file does not load (the reload's own line says why) or ``cfg`` has none."""
    from stirshaken.serve.config import load_config

    if not cfg.path:
        return []
    try:
        new = load_config(cfg.path)
    except ConfigError:
        return []
    out: list[str] = []
    for section in _RESTART_SECTIONS:
        old_s, new_s = getattr(cfg, section), getattr(new, section)
        out += [f"[{section}] {name}" for name in type(old_s).model_fields if getattr(old_s, name) != getattr(new_s, name)]
    return out


def _warn_restart_changes(cfg: Config) -> None:
    changes = restart_changes(cfg)
    if changes:
        log.warning("configuration changes that take effect only at a restart", extra={"options": ", ".join(changes)})


def _reload_parent(cfg: Config) -> Config:
    """The supervisor's copy of the signers, for workers it starts later (SIGHUP): read and
    guarded as the workers do (:meth:`Worker.reload`)."""
    from stirshaken.serve.signing import KeyMaterialError, prepare_signers, signers_from_file

    if not cfg.signing.enabled:
        return cfg
    try:
        signing = signers_from_file(cfg.path, cfg.signing) if cfg.path else cfg.signing
        return cfg.model_copy(update={"signing": prepare_signers(signing)})
    except KeyMaterialError as exc:
        log.warning("signing key reload failed in the supervisor; keeping the current keys", extra={"error": str(exc)})
        return cfg


def _supervise(cfg: Config, udp: dict[str, socket.socket], metrics_dir: str) -> int:
    stopping = False
    hup = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, frame: Any) -> None:
        nonlocal hup
        hup = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started); index RENEWER: the ACME renewer
    for i in range(cfg.server.workers):
        children[_spawn(cfg, i, udp, metrics_dir)] = (i, time.monotonic())
    if cfg.signing.acme:
        children[_spawn(cfg, RENEWER, udp, metrics_dir)] = (RENEWER, time.monotonic())
    renewer_due = 0.0  # restart time of a renewer that died
    restarts: list[float] = []
    due: dict[int, float] = {}  # worker index -> when to start it again (back-off)
    backoff = 0.0
    status = 0
    while (children or due) and not stopping:
        now = time.monotonic()
        for index, when in list(due.items()):
            if when <= now:
                del due[index]
                children[_spawn(cfg, index, udp, metrics_dir)] = (index, now)
        if hup:
            hup = False
            cfg = _reload_parent(cfg)
            _warn_restart_changes(cfg)
            for pid, (index, _) in children.items():
                if index != RENEWER:
                    try:
                        os.kill(pid, signal.SIGHUP)
                    except ProcessLookupError:
                        pass
            log.info("reload forwarded to the workers")
        if renewer_due and time.monotonic() >= renewer_due:
            renewer_due = 0.0
            children[_spawn(cfg, RENEWER, udp, metrics_dir)] = (RENEWER, time.monotonic())
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # every worker dead, restarts due later (back-off)
            pid = 0
        if pid == 0:
            time.sleep(0.1)
            continue
        index, started = children.pop(pid, (None, 0.0))
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(st)
        if stopping:
            break
        if index == RENEWER:
            log.warning("certificate renewer exited; restarting in 10 s", extra={"exit": code})
            renewer_due = time.monotonic() + 10
            continue
        if code == 2 and time.monotonic() - started < 10:
            log.error("worker failed to start; stopping", extra={"index": index})
            status = 2
            stopping = True
            break
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > 10:
            # workers keep dying: restart them more and more slowly (1 s doubling to 60 s) and
            # keep serving with those that live
            backoff = min(60.0, backoff * 2 if backoff else 1.0)
            due[index] = now + backoff
            log.error("workers keep dying; restarting with back-off", extra={
                "index": index, "exit": code, "deaths_60s": len(restarts), "restart_in_s": backoff,
                "workers_alive": sum(1 for i, _ in children.values() if i != RENEWER)})
            continue
        backoff = 0.0
        log.warning("worker exited; restarting", extra={"index": index, "exit": code})
        children[_spawn(cfg, index, udp, metrics_dir)] = (index, now)
    # graceful stop of every worker, then SIGKILL after the grace period
    for pid in children:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + cfg.server.shutdown_timeout + 2
    while children and time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
        else:
            children.pop(pid, None)
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    for sock in udp.values():
        sock.close()
    if not cfg.server.metrics_dir:
        for f in os.listdir(metrics_dir):
            try:
                os.unlink(os.path.join(metrics_dir, f))
            except OSError:
                pass
        try:
            os.rmdir(metrics_dir)
        except OSError:
            pass
    log.info("stopped", extra={"status": status})
    return status


def main(argv: list[str] | None = None) -> int:
    """``python -m stirshaken.serve --config FILE`` (same as ``stirshaken serve``)."""
    import argparse

    from stirshaken.serve.config import check_config, load_config

    p = argparse.ArgumentParser(prog="stirshaken-serve")
    p.add_argument("--config", "-c", default="stirshaken.toml")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config)
        check_config(cfg)
        if a.check:
            check_signers(cfg)
        if a.check and cfg.inventory.enabled:
            from stirshaken.serve.inventory.runtime import check_database

            check_database(cfg.inventory)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.check:
        print(f"{a.config}: OK")
        return 0
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
