"""serve/signing.py: the signing certificate guard (issue 12 item 5) and the signers' x5u rule.

In-process: :func:`load_signers` (key ↔ certificate, validity, TNAuthList, the x5u rule) and
:func:`verify_x5u` against a real loopback x5u server.  Real ``stirshaken serve`` processes: the
start and ``serve --check`` refuse a mismatch with one line; SIGHUP re-reads the signers of the
configuration file (a new x5u is taken, a mismatched certificate or a wrong x5u is refused and
the previous signer keeps signing); a certificate expiring within ``expiry_warning_days`` is
logged, degrades /healthz and has its seconds to expiry in the per-signer gauge.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core.certificates import create_root, create_sp_certificate, pem
from stirshaken.core.keys import write_private_key
from stirshaken.serve.config import ConfigError, parse_config
from stirshaken.serve.signing import KeyMaterialError, SigningService, load_signers, verify_x5u

from tests import _core_support as V
from tests.test_serve_ops import http
from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_command, serve_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("guard")
    p = make_pki(d)
    # a certificate without TNAuthList, with its own key: a self-signed root
    rk = ec.generate_private_key(ec.SECP256R1())
    write_private_key(d / "notn.key", rk, public=False)
    (d / "notn.pem").write_bytes(pem([create_root(rk)]))
    # an SP certificate that expired yesterday, and one that expires in four and a half days
    chain = V.make_chain()
    now = dt.datetime.now(dt.timezone.utc)
    for name, not_after in (("old", now - dt.timedelta(days=1)), ("soon", now + dt.timedelta(days=4, hours=12))):
        k = ec.generate_private_key(ec.SECP256R1())
        cert = create_sp_certificate(k, chain.inter, chain.inter_key, spc="1234", not_before=now - dt.timedelta(days=40), not_after=not_after)
        write_private_key(d / f"{name}.key", k, public=False)
        (d / f"{name}-chain.pem").write_bytes(pem([cert, chain.inter]))
    return p


def signing(pki: Any, text: str) -> Any:
    return parse_config(tomllib.loads('[server]\nhttp = "127.0.0.1:8080"\n' + text), pki.dir).signing


def signer(key: str, cert: str = "", x5u: str = "https://cr.example.net/sp.pem", more: str = "") -> str:
    return f'[signing]\nkey = "{key}"\nx5u = "{x5u}"\n' + (f'certificate = "{cert}"\n' if cert else "") + more


# --- in process -----------------------------------------------------------------------------


def test_guard_accepts_the_right_certificate(pki: Any) -> None:
    s = load_signers(signing(pki, signer("sp.key", "sp-chain.pem")))
    assert len(s.default.chain) == 2 and s.default.chain[0].serial_number
    expiry = SigningService(s).certificate_expiry()
    assert expiry == {"default": s.default.chain[0].not_valid_after_utc.timestamp()}
    assert SigningService(load_signers(signing(pki, signer("sp.key")))).certificate_expiry() == {}  # no certificate known


@pytest.mark.parametrize("key,cert,problem", [
    ("sp.key", "sp2-chain.pem", "signer 'default': the private key does not belong to the certificate CN=SHAKEN 5678"),
    ("old.key", "old-chain.pem", "signer 'default': certificate CN=SHAKEN 1234"),
    ("notn.key", "notn.pem", "carries no TNAuthList (RFC 8226 §9): it authorizes no telephone number"),
])
def test_guard_refuses_with_one_line(pki: Any, key: str, cert: str, problem: str) -> None:
    with pytest.raises(KeyMaterialError) as e:
        load_signers(signing(pki, signer(key, cert)))
    line = str(e.value)
    assert problem in line and line.endswith(f"({pki.dir / cert})") and "\n" not in line
    if key == "old.key":
        assert " expired on " in line


def test_certificate_option(pki: Any) -> None:
    with pytest.raises(ConfigError, match=r"^\[signing\].certificate: '.*absent.pem' does not exist$"):
        signing(pki, signer("sp.key", "absent.pem"))
    with pytest.raises(ConfigError, match=r"^\[signing.tenant.1\].certificate: "):
        signing(pki, signer("sp.key") + '[[signing.tenant]]\nname = "t"\nkey = "sp2.key"\nx5u = "https://a.example/b"\ncertificate = "x.pem"\n')


@pytest.mark.parametrize("x5u,line", [
    ("http://cr.example.net/sp.pem", "[signing].x5u: x5u http://cr.example.net/sp.pem refused: not https (ATIS-1000074 §5.3.1; "
                                     "allow_http_x5u = true allows it)"),
    ("https://192.168.1.2/sp.pem", "[signing].x5u: x5u https://192.168.1.2/sp.pem refused: host 192.168.1.2 is a private, loopback or "
                                   "reserved address (allow_private_x5u = true allows it, lab only)"),
    ("https://cr.example.net:444/sp.pem", "[signing].x5u: x5u https://cr.example.net:444/sp.pem refused: port 444 is not 443 or 8443 "
                                          "(allow_private_x5u = true allows it, lab only)"),
])
def test_x5u_rule_of_the_verifier(pki: Any, x5u: str, line: str) -> None:
    with pytest.raises(ConfigError) as e:
        signing(pki, signer("sp.key", x5u=x5u))
    assert str(e.value) == line
    signing(pki, signer("sp.key", x5u=x5u, more="allow_http_x5u = true\nallow_private_x5u = true\n"))


def test_verify_x5u(pki: Any) -> None:
    """The x5u must serve the signer's certificate; without a certificate file the served one is
    guarded like a file and adopted (for the expiry gauge)."""
    srv = FileServer(pki.dir)
    lab = "allow_http_x5u = true\nallow_private_x5u = true\nverify_x5u = true\n"
    try:
        ok = asyncio.run(verify_x5u(load_signers(signing(pki, signer("sp.key", "sp-chain.pem", srv.url("sp-chain.pem"), lab)))))
        assert ok.default.chain[0].serial_number == load_signers(signing(pki, signer("sp.key", "sp-chain.pem"))).default.chain[0].serial_number
        adopted = asyncio.run(verify_x5u(load_signers(signing(pki, signer("sp.key", "", srv.url("sp-chain.pem"), lab)))))
        assert len(adopted.default.chain) == 2
        for cert, url, problem in (
            ("sp-chain.pem", srv.url("sp2-chain.pem"), "serves certificate serial "),
            ("", srv.url("sp2-chain.pem"), "the private key does not belong to the certificate CN=SHAKEN 5678 (served at "),
            ("sp-chain.pem", srv.url("absent.pem"), "cannot be checked: "),
        ):
            with pytest.raises(KeyMaterialError) as e:
                asyncio.run(verify_x5u(load_signers(signing(pki, signer("sp.key", cert, url, lab)))))
            assert str(e.value).startswith(f"signer 'default': ") and problem in str(e.value), str(e.value)
    finally:
        srv.close()


# --- real processes -------------------------------------------------------------------------


def serve_text(pki: Any, port: int, signing_table: str, workers: int = 1) -> str:
    return f'[server]\nhttp = "127.0.0.1:{port}"\nworkers = {workers}\n' + signing_table


def errors(r: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def test_start_and_check_refuse_a_mismatch(pki: Any, tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(serve_text(pki, serve_port(), signer(str(pki.sp_key), str(pki.sp2_chain))))
    for extra in (["--check"], []):
        r = subprocess.run(serve_command() + ["--config", str(conf), *extra], capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert errors(r) == [f"error: signer 'default': the private key does not belong to the certificate CN=SHAKEN 5678"
                             f" ({pki.sp2_chain})"], r.stderr
    conf.write_text(serve_text(pki, serve_port(), signer(str(pki.sp_key), str(pki.sp_chain))))
    r = subprocess.run(serve_command() + ["--config", str(conf), "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"{conf}: OK", r.stderr


def sign_rest(port: int) -> str:
    st, body = http(port, "/stir/v1/signing", {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()),
                                                                  "orig": {"tn": ORIG}}})
    assert st == 200, body
    return str(orjson.loads(body)["signingResponse"]["identity"])


def x5u_of(identity: str) -> str:
    h = identity.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["x5u"])


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_rereads_the_signers_and_refuses_a_mismatch(pki: Any, tmp_path: Path, workers: int) -> None:
    """SIGHUP takes the x5u written in the file now (and checks the x5u serves the certificate);
    a certificate that does not match the key, or an x5u serving another certificate, is refused
    with its line and the previous signer keeps signing."""
    srv = FileServer(pki.dir)
    port = serve_port()
    lab = "allow_http_x5u = true\nallow_private_x5u = true\nverify_x5u = true\n"
    cert = tmp_path / "signer.pem"
    cert.write_bytes(pki.sp_chain.read_bytes())
    first, second = srv.url("sp-chain.pem"), srv.url("copy.pem")
    (pki.dir / "copy.pem").write_bytes(pki.sp_chain.read_bytes())
    p = ServeProcess(tmp_path, serve_text(pki, port, signer(str(pki.sp_key), str(cert), first, lab), workers), port)
    try:
        assert x5u_of(sign_rest(port)) == first
        p.config.write_text(serve_text(pki, port, signer(str(pki.sp_key), str(cert), second, lab), workers))
        os.kill(p.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: all(x5u_of(sign_rest(port)) == second for _ in range(6))), p.log.read_text()[-2000:]
        # the certificate file now holds another provider's certificate: refused, still signing
        cert.write_bytes(pki.sp2_chain.read_bytes())
        os.kill(p.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: p.log.read_text().count("signing key reload failed") >= workers), p.log.read_text()[-2000:]
        assert "the private key does not belong to the certificate CN=SHAKEN 5678" in p.log.read_text()
        assert all(x5u_of(sign_rest(port)) == second for _ in range(6))
        # the x5u serves another certificate: refused once fetched, still signing with the same x5u
        cert.write_bytes(pki.sp_chain.read_bytes())
        p.config.write_text(serve_text(pki, port, signer(str(pki.sp_key), str(cert), srv.url("sp2-chain.pem"), lab), workers))
        before = p.log.read_text().count("signing key reload failed")
        os.kill(p.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: p.log.read_text().count("signing key reload failed") >= before + workers), p.log.read_text()[-2000:]
        assert "serves certificate serial" in p.log.read_text()
        assert all(x5u_of(sign_rest(port)) == second for _ in range(6))
        # a configuration file that no longer validates: refused with its line
        p.config.write_text(serve_text(pki, port, signer(str(pki.sp_key), str(cert), "http://x", ""), workers))
        before = p.log.read_text().count("signing key reload failed")
        os.kill(p.proc.pid, signal.SIGHUP)
        assert wait_for(lambda: p.log.read_text().count("signing key reload failed") >= before + workers)
        assert "refused: not https" in p.log.read_text()
        assert x5u_of(sign_rest(port)) == second
    finally:
        code = p.stop()
        srv.close()
    assert code == 0


def test_expiring_certificate_is_logged_gauged_and_degrades(pki: Any, tmp_path: Path) -> None:
    port = serve_port()
    p = ServeProcess(tmp_path, serve_text(pki, port, signer(str(pki.dir / "soon.key"), str(pki.dir / "soon-chain.pem"))), port)
    try:
        st, body = http(port, "/healthz")
        doc = orjson.loads(body)
        assert st == 200 and doc["status"] == "degraded" and doc["reasons"][0].startswith("signing certificate of 'default' expires in 4.5 days")
        st, text = http(port, "/metrics")
        left = [float(line.split()[-1]) for line in text.decode().splitlines()
                if line.startswith('stirshaken_signer_certificate_expiry_seconds{tenant="default"}')]
        assert left and 4 * 86400 < left[0] <= 5 * 86400
        daily = [orjson.loads(line) for line in p.log.read_text().splitlines() if '"expiry_warning_days"' in line]
        assert len(daily) == 1 and daily[0]["level"] == "WARNING" and daily[0]["expiry_warning_days"] == 14, daily
        assert daily[0]["msg"].startswith("signing certificate of 'default' expires in 4.5 days")
    finally:
        assert p.stop() == 0
    # with a shorter warning period the same certificate is fine
    port = serve_port()
    p = ServeProcess(tmp_path, serve_text(pki, port, signer(str(pki.dir / "soon.key"), str(pki.dir / "soon-chain.pem"),
                                                            more="expiry_warning_days = 3\n")), port, name="later")
    try:
        assert http(port, "/healthz") == (200, b'{"status":"ok","reasons":[]}')
        assert "expiry_warning_days" not in p.log.read_text()
    finally:
        assert p.stop() == 0
