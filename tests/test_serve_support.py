"""Helpers for the ``serve`` tests: a test PKI on disk, an x5u file server thread, and
``stirshaken serve`` started as a real process on loopback ports (range 21000-21999).

Imported by test_serve_*, test_rest_* and test_sip_* modules."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core.certificates import create_intermediate, create_root, create_sp_certificate, pem
from stirshaken.core.keys import write_private_key

ROOT = Path(__file__).resolve().parent.parent
STIRSHAKEN = ROOT / ".venv" / "bin" / "stirshaken"
ORIG = "12155551212"
DEST = "12155551213"
_next_port = [21000 + (os.getpid() % 60) * 15]


def port_is_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def serve_port() -> int:
    """A free TCP+UDP port in the serve range 21000-21999."""
    for _ in range(1000):
        p = _next_port[0]
        _next_port[0] = 21000 + (p - 21000 + 1) % 1000
        if port_is_free(p):
            return p
    raise RuntimeError("no free port in 21000-21999")


@dataclass
class TestPKI:
    __test__ = False
    dir: Path
    root: Path
    sp_key: Path
    sp_chain: Path
    sp_cert: Path
    sp2_key: Path
    sp2_chain: Path
    sp_key_obj: ec.EllipticCurvePrivateKey


def make_pki(d: Path) -> TestPKI:
    """Root → intermediate → SP (SPC 1234) and SP2 (SPC 5678), written as PEM files."""
    d.mkdir(parents=True, exist_ok=True)
    rk = ec.generate_private_key(ec.SECP256R1())
    root = create_root(rk)
    ik = ec.generate_private_key(ec.SECP256R1())
    inter = create_intermediate(ik, root, rk)
    out: dict[str, Any] = {}
    for name, spc in (("sp", "1234"), ("sp2", "5678")):
        k = ec.generate_private_key(ec.SECP256R1())
        cert = create_sp_certificate(k, inter, ik, spc=spc)
        write_private_key(d / f"{name}.key", k, public=False)
        (d / f"{name}-chain.pem").write_bytes(pem([cert, inter]))
        (d / f"{name}.pem").write_bytes(pem([cert]))
        out[name] = k
    (d / "root.pem").write_bytes(pem([root]))
    (d / "ca-root.pem").write_bytes(pem([root]))
    return TestPKI(d, d / "root.pem", d / "sp.key", d / "sp-chain.pem", d / "sp.pem", d / "sp2.key", d / "sp2-chain.pem", out["sp"])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:  # noqa: D401
        pass


class FileServer:
    """Serves a directory over http on 127.0.0.1 (the x5u repository) in a thread."""

    def __init__(self, directory: Path):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_tcp(port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def serve_command() -> list[str]:
    if STIRSHAKEN.exists():
        return [str(STIRSHAKEN), "serve"]
    return [sys.executable, "-m", "stirshaken.serve"]


class ServeProcess:
    """``stirshaken serve --config FILE`` in its own process group."""

    def __init__(self, workdir: Path, toml: str, wait_port: int | None, name: str = "serve"):
        self.config = workdir / f"{name}.toml"
        self.config.write_text(toml)
        self.log = workdir / f"{name}.log"
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(serve_command() + ["--config", str(self.config)], stdout=self._logf, stderr=subprocess.STDOUT,
                                     cwd=workdir, start_new_session=True)
        if wait_port is not None:
            try:
                wait_tcp(wait_port, proc=self.proc)
            except Exception as exc:
                self.stop()
                raise RuntimeError(f"serve did not start: {exc}: {self.log.read_text()[-2000:]}") from None
            time.sleep(0.3)  # every worker up

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._logf.close()
        return self.proc.returncode


def serve_toml(pki: TestPKI, x5u: FileServer, *, http: int | None, sip_signing: int | None = None, sip_verification: int | None = None,
               workers: int = 1, engine: str | None = None, extra_verification: str = "", extra_signing: str = "") -> str:
    lines = ["[server]"]
    if http:
        lines.append(f'http = "127.0.0.1:{http}"')
    if sip_signing:
        lines.append(f'sip_signing = "127.0.0.1:{sip_signing}"')
    if sip_verification:
        lines.append(f'sip_verification = "127.0.0.1:{sip_verification}"')
    if engine is not None:  # otherwise the default engine
        lines.append(f'http_engine = "{engine}"')
    lines += [f"workers = {workers}", "log_level = \"INFO\"", "",
              "[signing]", f'key = "{pki.sp_key}"', f'x5u = "{x5u.url("sp-chain.pem")}"', 'spc = "1234"',
              "allow_http_x5u = true", "allow_private_x5u = true",  # the x5u file server is http on loopback
              extra_signing, "",
              "[[signing.tenant]]", 'name = "other"', 'spc = "5678"', f'key = "{pki.sp2_key}"', f'x5u = "{x5u.url("sp2-chain.pem")}"',
              'tns = ["1999"]', "",
              "[verification]", f'trust_anchors = ["{pki.root}"]', "allow_http_x5u = true", "allow_private_x5u = true", extra_verification]
    return "\n".join(lines) + "\n"


def test_support_pki(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    assert pki.sp_chain.read_bytes().count(b"BEGIN CERTIFICATE") == 2
