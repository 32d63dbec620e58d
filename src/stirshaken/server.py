"""Process model of ``stirshaken serve``: workers, sockets, logging, graceful shutdown.

* ``workers = 1``: everything runs in the calling process.
* ``workers = N > 1``: the parent validates the configuration, checks that every address can be
  bound, creates the UDP sockets and forks N workers.  Each worker binds its own TCP listening
  sockets (HTTP and SIP) with ``SO_REUSEPORT`` so the kernel spreads connections over workers.
  UDP sockets are created once (also ``SO_REUSEPORT``) and inherited: with a per-worker reuseport
  UDP socket the kernel hashes each peer's 4-tuple to one worker, so a single SBC/proxy (one
  address and port, the usual deployment) would load only one worker; sharing the socket lets
  every idle worker read the next datagram, as Kamailio's UDP children do.
* The parent supervises: a worker that dies is restarted (unless it failed at start, which stops
  the service with status 2), and SIGTERM/SIGINT is forwarded to the workers, which stop
  accepting, finish what is in flight (up to ``shutdown_timeout``) and exit.

Logs are JSON lines (one object per record) on stderr; nothing logs key material.
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
from dataclasses import fields
from typing import Any

import orjson

from .config import Address, Config, ConfigError

log = logging.getLogger("stirshaken.server")

__all__ = ["JSONFormatter", "run", "setup_logging"]

_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, worker, plus ``extra`` fields."""

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
        return orjson.dumps(out, default=str).decode()


def setup_logging(level: str = "INFO", fmt: str = "json", worker: int | str = 0) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JSONFormatter(worker) if fmt == "json" else logging.Formatter(f"%(asctime)s %(levelname)s [{worker}] %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


# --- sockets -----------------------------------------------------------------------------------


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
            s.listen(4096)
        s.setblocking(False)
        return s
    except OSError as exc:
        s.close()
        what = "TCP" if kind == socket.SOCK_STREAM else "UDP"
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {addr} ({what}): {reason}") from None


def _tcp_addrs(cfg: Config) -> list[Address]:
    s = cfg.server
    return [a for a in (s.http, s.sip_signing, s.sip_verification) if a is not None]


def _udp_sockets(cfg: Config) -> dict[str, socket.socket]:
    out = {}
    for role, addr in (("signing", cfg.server.sip_signing), ("verification", cfg.server.sip_verification)):
        if addr is not None:
            out[role] = _bind(addr, socket.SOCK_DGRAM, reuseport=True, listen=False, rcvbuf=cfg.server.sip_udp_buffer)
    return out


# --- worker --------------------------------------------------------------------------------------


def _verifier_config(cfg: Config) -> Any:
    from .vs import VerifierConfig

    v = cfg.verification
    names = {f.name for f in fields(VerifierConfig)}
    kwargs: dict[str, Any] = dict(
        trust_anchors=list(v.trust_anchors),
        crls=list(v.crls),
        max_age=v.max_age,
        future_skew=v.future_skew,
        require_date=v.require_date,
        allow_http_x5u=v.allow_http_x5u,
        allow_private_x5u=v.allow_private_x5u,
        x5u_ca_bundle=v.x5u_ca_bundle or None,
        redis=v.redis or None,
        replay_detection=v.replay_detection,
        check_authority=v.check_authority,
        authority_blocks={k: list(p) for k, p in v.authority_blocks.items()},
        reason_protocol=v.reason_protocol,
    )
    if v.ca_list:
        kwargs["ca_list"] = v.ca_list
    if "fetch_timeout" in names:
        kwargs["fetch_timeout"] = v.x5u_timeout
    return VerifierConfig(**{k: val for k, val in kwargs.items() if k in names})


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

    async def start(self) -> None:
        from .metrics import Metrics
        from .rest import FastHTTPProtocol, RestAPI, make_app
        from .signing import SigningService
        from .sipservice import SipService, start_sip

        cfg = self.cfg
        s = cfg.server
        self.metrics = Metrics(self.metrics_dir, self.index)
        signing = SigningService(cfg.signing) if cfg.signing.enabled else None
        call_info = None
        if cfg.verification.enabled:
            from .vs import CallInfo, Verifier

            self.verifier = Verifier(_verifier_config(cfg))
            self.metrics.stats_sources.append(self.verifier)
            call_info = CallInfo
        reuse = s.workers > 1
        if s.http is not None:
            api = RestAPI(signing=signing, verifier=self.verifier, metrics=self.metrics, max_age=cfg.verification.max_age,
                          future_skew=cfg.verification.future_skew, max_body=s.max_body, call_info=call_info,
                          ready=lambda: self.ready, access_log=s.access_log)
            sock = _bind(s.http, socket.SOCK_STREAM, reuseport=reuse, listen=True)
            if s.http_engine == "fast":
                state: dict[str, Any] = {"conns": set()}
                server = await asyncio.get_running_loop().create_server(lambda: FastHTTPProtocol(api, state), sock=sock)
                self.closers.append(server)
                self.conn_sets.append(state["conns"])
            else:
                from aiohttp import web

                self.runner = web.AppRunner(make_app(api), access_log=None, handle_signals=False,
                                            shutdown_timeout=s.shutdown_timeout)
                await self.runner.setup()
                site = web.SockSite(self.runner, sock, shutdown_timeout=s.shutdown_timeout)
                await site.start()
            log.info("http listening", extra={"address": str(s.http), "engine": s.http_engine})
        for role, addr in (("signing", s.sip_signing), ("verification", s.sip_verification)):
            if addr is None:
                continue
            svc = SipService(role, metrics=self.metrics, signing=signing if role == "signing" else None,
                             verifier=self.verifier if role == "verification" else None, vcfg=cfg.verification,
                             call_info=call_info, ttl=s.sip_transaction_ttl, cache_size=s.sip_transaction_cache)
            tcp = _bind(addr, socket.SOCK_STREAM, reuseport=reuse, listen=True)
            udp = self.udp.get(role)
            if udp is None:
                udp = _bind(addr, socket.SOCK_DGRAM, reuseport=True, listen=False, rcvbuf=s.sip_udp_buffer)
            closers, conns = await start_sip(svc, udp_sock=udp, tcp_sock=tcp, max_message=s.sip_max_message)
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
        if self.verifier is not None:
            try:
                await asyncio.wait_for(self.verifier.aclose(), 2)
            except Exception:  # noqa: BLE001
                pass
        if self.metrics_dir:
            self.metrics.write_snapshot()


async def _worker_main(cfg: Config, index: int, udp: dict[str, socket.socket], metrics_dir: str | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    w = Worker(cfg, index, udp, metrics_dir)
    try:
        await w.start()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        await w.stop()
        return 2
    log.info("worker ready", extra={"index": index})
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
        if metrics_dir:
            w.metrics.write_snapshot()
    log.info("worker stopping", extra={"index": index})
    await w.stop()
    log.info("worker stopped", extra={"index": index})
    return 0


def _run_worker(cfg: Config, index: int, udp: dict[str, socket.socket], metrics_dir: str | None) -> int:
    setup_logging(cfg.server.log_level, cfg.server.log_format, index)
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_worker_main(cfg, index, udp, metrics_dir))


# --- parent / supervisor ----------------------------------------------------------------------


def run(cfg: Config) -> int:
    """Serve ``cfg`` until SIGTERM/SIGINT; returns the exit status (2: could not start)."""
    s = cfg.server
    setup_logging(s.log_level, s.log_format, "main")
    try:
        udp = _udp_sockets(cfg)
        if s.workers > 1:  # refuse early when an address is taken (reuseport would hide nothing else)
            for a in _tcp_addrs(cfg):
                _bind(a, socket.SOCK_STREAM, reuseport=True, listen=False).close()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log.info("starting", extra={"config": cfg.path, "workers": s.workers})
    if s.workers == 1:
        return _run_worker(cfg, 0, udp, None)
    metrics_dir = s.metrics_dir or tempfile.mkdtemp(prefix="stirshaken-metrics-")
    os.makedirs(metrics_dir, exist_ok=True)
    return _supervise(cfg, udp, metrics_dir)


def _spawn(cfg: Config, index: int, udp: dict[str, socket.socket], metrics_dir: str) -> int:
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            code = _run_worker(cfg, index, udp, metrics_dir)
        except BaseException:  # noqa: BLE001
            logging.getLogger("stirshaken.server").exception("worker crashed")
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def _supervise(cfg: Config, udp: dict[str, socket.socket], metrics_dir: str) -> int:
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children: dict[int, tuple[int, float]] = {}  # pid -> (index, started)
    for i in range(cfg.server.workers):
        children[_spawn(cfg, i, udp, metrics_dir)] = (i, time.monotonic())
    restarts: list[float] = []
    status = 0
    while children and not stopping:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
            continue
        index, started = children.pop(pid, (None, 0.0))
        if index is None:
            continue
        code = os.waitstatus_to_exitcode(st)
        if stopping:
            break
        if code == 2 and time.monotonic() - started < 10:
            log.error("worker failed to start; stopping", extra={"index": index})
            status = 2
            stopping = True
            break
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < 60] + [now]
        if len(restarts) > 10:
            log.error("workers keep dying; giving up")
            status = 1
            stopping = True
            break
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
    """``python -m stirshaken.server --config FILE`` (same as ``stirshaken serve``)."""
    import argparse

    from .config import load_config

    p = argparse.ArgumentParser(prog="stirshaken-serve")
    p.add_argument("--config", "-c", default="stirshaken.toml")
    p.add_argument("--check", action="store_true", help="validate the configuration and exit")
    a = p.parse_args(argv)
    try:
        cfg = load_config(a.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.check:
        print(f"{a.config}: OK")
        return 0
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
