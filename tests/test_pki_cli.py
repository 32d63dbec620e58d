"""The PKI commands as a user runs them: ``stirshaken testbed`` and the separate
``pa serve`` / ``ca serve`` / ``cr serve`` processes driven by ``stirshaken acme``."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stirshaken.core import certificates as certs

STIR = [sys.executable, "-m", "stirshaken.cli"] if not Path(sys.executable).with_name("stirshaken").exists() else [str(Path(sys.executable).with_name("stirshaken"))]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free ports in 22000-22999: drawn one at a time they could
    repeat, and a second service on a taken port leaves the first one answering
    for both (CI once saw the CR's 404 for the CA's ACME directory)."""
    ports: list[int] = []
    for _ in range(400):
        port = random.randint(22000, 22999)
        if port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free ports in 22000-22999")


def _wait(url: str, ca: Path, timeout: float = 15.0, any_status: bool = True) -> None:
    """Wait until ``url`` answers over TLS; with ``any_status`` false, until it answers 2xx."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ca.exists():
            try:
                urllib.request.urlopen(url, context=ssl.create_default_context(cafile=str(ca)), timeout=2)
                return
            except urllib.error.HTTPError:
                if any_status:
                    return
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


def test_testbed_command(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run(STIR + ["testbed", "--state-dir", str(tmp_path / "tb")], capture_output=True, text=True, timeout=55)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 55
    out = proc.stdout
    assert "TN-Validation-Passed" in out and "TN-Validation-Failed" in out
    assert " 438 " in out and " 437 " in out
    assert "Traceback" not in out + proc.stderr
    # re-running on the same state directory works (same ports, same accounts)
    proc = subprocess.run(STIR + ["testbed", "--state-dir", str(tmp_path / "tb")], capture_output=True, text=True, timeout=55)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_separate_services_and_acme_command(tmp_path: Path) -> None:
    pa_port, ca_port, cr_port = _free_ports(3)
    pa_dir, ca_dir, cr_dir, sp_dir = (tmp_path / n for n in ("pa", "ca", "cr", "sp"))
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "STIRSHAKEN_PA_PASSWORD": "sp-pw"}

    def spawn(*args: str) -> None:
        procs.append(subprocess.Popen(STIR + list(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                      start_new_session=True))

    try:
        ok = subprocess.run(STIR + ["pa", "add-account", "sp-1234", "--ocn", "1234", "--state-dir", str(pa_dir)],
                            capture_output=True, text=True, env=env, timeout=30)
        assert ok.returncode == 0, ok.stderr
        # one TLS root for all three services: the PA generates it, the others reuse the files
        spawn("pa", "serve", "--state-dir", str(pa_dir), "--port", str(pa_port))
        tls_root = pa_dir / "tls" / "tls-root.pem"
        _wait(f"https://127.0.0.1:{pa_port}/ca-list", tls_root)
        tls = ["--tls-cert", str(pa_dir / "tls" / "tls-server.pem"), "--tls-key", str(pa_dir / "tls" / "tls-server.key")]
        (cr_dir).mkdir()
        (cr_dir / "cr.toml").write_text(f'[cr]\nport = {cr_port}\nupload_token = ["tok123=sp-1234"]\n')
        spawn("cr", "serve", "--config", str(cr_dir / "cr.toml"), "--state-dir", str(cr_dir), *tls)
        spawn("ca", "serve", "--state-dir", str(ca_dir), "--port", str(ca_port), *tls,
              "--pa-url", f"https://127.0.0.1:{pa_port}", "--pa-root", str(pa_dir / "pa-root.pem"),
              "--pa-crl-cert", str(pa_dir / "pa-crl.pem"), "--ca-bundle", str(tls_root))
        _wait(f"https://127.0.0.1:{ca_port}/acme/directory", tls_root, any_status=False)
        _wait(f"https://127.0.0.1:{cr_port}/", tls_root)
        acme = STIR + ["acme", "--directory", f"https://127.0.0.1:{ca_port}/acme/directory", "--pa-url", f"https://127.0.0.1:{pa_port}",
                       "--ocn", "1234", "--user", "sp-1234", "--state-dir", str(sp_dir), "--ca-bundle", str(tls_root),
                       "--cr-url", f"https://127.0.0.1:{cr_port}", "--cr-token", "tok123"]
        res = subprocess.run(acme, capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "obtained certificate" in res.stdout
        leaf = certs.load_certificates((sp_dir / "sp.pem").read_bytes())[0]
        assert certs.check_profile(leaf, "sp") == []
        x5u = f"https://127.0.0.1:{cr_port}/1234-{leaf.serial_number:x}.pem"
        with urllib.request.urlopen(x5u, context=ssl.create_default_context(cafile=str(tls_root))) as r:
            assert r.headers["Content-Type"] == "application/pem-certificate-chain"
            assert certs.load_certificates(r.read())[0] == leaf
        # second run: still valid, nothing renewed
        res = subprocess.run(acme, capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0 and "current certificate" in res.stdout, res.stdout + res.stderr
        # wrong password: one line, no traceback
        res = subprocess.run(acme + ["--force", "--password", "nope"], capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode != 0 and "Traceback" not in res.stderr and "error" in res.stderr
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.mark.parametrize("args", [["ca", "serve"], ["acme", "--directory", "x", "--pa-url", "y", "--ocn", "1", "--user", "u"]])
def test_missing_arguments_are_reported(args: list[str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "STIRSHAKEN_PA_PASSWORD"}
    res = subprocess.run(STIR + args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=30)
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_pa_add_account_creates_the_pa_keys(tmp_path: Path) -> None:
    """docs/pki.md starts 'pa serve &' and 'ca serve --pa-root pa-state/pa-root.pem &' one after the
    other without waiting: the PA root and CRL signer must exist once 'pa add-account' has run."""
    pa_dir = tmp_path / "pa-state"
    res = subprocess.run(STIR + ["pa", "add-account", "sp-1234", "--ocn", "1234", "--password", "pw", "--state-dir", str(pa_dir)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    for name in ("pa-root", "pa-signing", "pa-crl"):
        assert certs.load_certificates((pa_dir / f"{name}.pem").read_bytes())
        assert (pa_dir / f"{name}.key").stat().st_mode & 0o077 == 0
    root = (pa_dir / "pa-root.pem").read_bytes()
    res = subprocess.run(STIR + ["pa", "add-account", "sp-5678", "--ocn", "5678", "--password", "pw", "--state-dir", str(pa_dir)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and (pa_dir / "pa-root.pem").read_bytes() == root
