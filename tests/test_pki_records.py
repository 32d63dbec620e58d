"""Access and audit records of the STI-PA, STI-CA and STI-CR (pki/records.py) and the modes of the
files holding their secrets: the loopback testbed through a whole ACME issuance and revocation,
and the separate ``pa|ca|cr serve`` processes with JSON and text logs."""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from stirshaken.pki.enrollment import obtain_certificate, save_settings
from stirshaken.pki.pa_client import PAClient
from stirshaken.pki.records import audit
from stirshaken.serve.server import JSONFormatter

from tests.test_pki_cli import STIR, _free_ports, _wait
from tests.test_pki_support import running_testbed, session_for

ACCESS_FIELDS = {"service", "method", "path", "status", "latency", "source"}


class Collect(logging.Handler):
    """Keeps the records of the ``stirshaken.pki`` loggers, and each as the JSON line it becomes."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.fmt = JSONFormatter("test")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def docs(self, logger: str) -> list[dict[str, Any]]:
        return [json.loads(self.fmt.format(r)) for r in self.records if r.name == logger]

    def text(self) -> str:
        return "\n".join(self.fmt.format(r) for r in self.records)


@pytest.fixture
def collect() -> Iterator[Collect]:
    h = Collect()
    lg = logging.getLogger("stirshaken.pki")
    old = lg.level
    lg.addHandler(h)
    lg.setLevel(logging.INFO)
    try:
        yield h
    finally:
        lg.removeHandler(h)
        lg.setLevel(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def events(c: Collect, service: str, event: str) -> list[dict[str, Any]]:
    return [d for d in c.docs("stirshaken.pki.audit") if d["service"] == service and d["event"] == event]


async def test_testbed_access_and_audit_records(tmp_path: Path, collect: Collect) -> None:
    async with running_testbed(tmp_path) as tb:
        cfg = tb.acme_config("sp")
        st = await obtain_certificate(cfg)
        serial = format(st.serial, "x")
        async with session_for(tb) as s:
            pa = PAClient(tb.urls["pa"], s)
            with pytest.raises(Exception):
                await pa.login(f"sp-{tb.ocn}", "wrong-password-123")
            access_token = await pa.login(f"sp-{tb.ocn}", tb.sp_password)
            # a query string is never recorded (a client may put a secret there)
            async with s.get(tb.urls["pa"] + "/api/v1/ca-list?password=hunter2-secret&token=qs-secret-token") as r:
                assert r.status == 200
            async with s.put(tb.urls["cr"] + "/evil.pem", data=st.chain_path.read_bytes(), headers={"Authorization": "Bearer not-the-token"}) as r:
                assert r.status == 401
            async with s.put(tb.urls["cr"] + f"/own-{serial}.pem", data=st.chain_path.read_bytes(),
                             headers={"Authorization": f"Bearer {tb.cr_token}"}) as r:
                assert r.status == 201
            async with s.post(tb.urls["pa"] + "/revoke", json={"serial": "01"}, headers={"Authorization": access_token}) as r:
                assert r.status == 403  # an SP account is no administrator
        await tb.revoke_via_acme("sp")
        state = tb.state_dir

    # access: one record per request, the same fields for every service, never a query
    access = collect.docs("stirshaken.pki.access")
    assert {d["service"] for d in access} == {"pa", "ca", "cr"}
    for d in access:
        assert ACCESS_FIELDS <= set(d) and d["logger"] == "stirshaken.pki.access" and d["msg"] == "request", d
        assert d["method"] in ("GET", "HEAD", "POST", "PUT") and d["path"].startswith("/") and "?" not in d["path"]
        assert isinstance(d["status"], int) and isinstance(d["latency"], float) and d["latency"] >= 0 and d["source"] == "127.0.0.1"
    paths = {(d["service"], d["method"], d["path"], d["status"]) for d in access}
    assert ("pa", "GET", "/api/v1/ca-list", 200) in paths
    assert ("pa", "POST", "/api/v1/auth/login", 401) in paths and ("pa", "POST", "/api/v1/auth/login", 200) in paths
    assert ("ca", "POST", "/acme/new-order", 201) in paths and ("ca", "POST", "/acme/revoke-cert", 200) in paths
    assert ("cr", "PUT", "/evil.pem", 401) in paths and ("cr", "PUT", f"/own-{serial}.pem", 201) in paths
    assert ("pa", "POST", "/revoke", 403) in paths

    # audit: the security events with their identifiers
    failed = events(collect, "pa", "login failed")
    assert [(d["user"], d["reason"], d["source"], d["level"]) for d in failed] == [(f"sp-{tb.ocn}", "wrong password", "127.0.0.1", "WARNING")]
    ok = events(collect, "pa", "login ok")
    assert {d["user"] for d in ok} == {f"sp-{tb.ocn}", "admin"}  # the SP, and the STI-CA forwarding the revocation
    issued = events(collect, "pa", "token issued")
    assert len(issued) == 1 and issued[0]["user"] == f"sp-{tb.ocn}" and issued[0]["spc"] == tb.ocn
    assert re.fullmatch(r"[0-9a-f-]{36}", issued[0]["jti"]) and issued[0]["fingerprint"].startswith("SHA256 ") and issued[0]["ca"] is False
    cert = events(collect, "ca", "certificate issued")
    assert len(cert) == 1 and cert[0]["serial"] == serial and cert[0]["spc"] == tb.ocn and cert[0]["x5u"] == st.x5u and cert[0]["account"]
    revoked = events(collect, "ca", "certificate revoked")
    assert len(revoked) == 1 and revoked[0]["serial"] == serial and revoked[0]["account"] == cert[0]["account"] and revoked[0]["by_key"] is False
    pa_revoked = events(collect, "pa", "certificate revoked")
    assert len(pa_revoked) == 1 and pa_revoked[0]["serial"] == serial and pa_revoked[0]["by"] == "admin" and pa_revoked[0]["new"] is True
    uploads = events(collect, "cr", "upload")
    assert {(d["file"], d["owner"], d["source"]) for d in uploads} == {(f"1234-{serial}.pem", "sti-ca", "database"),
                                                                        (f"own-{serial}.pem", f"sp-{tb.ocn}", "127.0.0.1")}
    refused = events(collect, "cr", "upload refused")
    assert [(d["file"], d["reason"]) for d in refused] == [("evil.pem", "no valid upload token")]
    denied = events(collect, "pa", "access denied")
    assert [(d["path"], d["reason"], d["user"]) for d in denied] == [("/revoke", "administrator rights needed", f"sp-{tb.ocn}")]

    # no secret anywhere: passwords, upload token, access token, SPC token (a JWT), query values
    text = collect.text()
    for secret in (tb.sp_password, tb.admin_password, tb.cr_token, access_token, "wrong-password-123", "not-the-token", "hunter2-secret",
                   "qs-secret-token"):
        assert secret not in text
    assert "eyJ" not in text and "Bearer" not in text

    # the files holding secrets: owner only
    assert mode(state / "testbed.db") == 0o600 and mode(state / "testbed.json") == 0o600
    for extra in ("testbed.db-wal", "testbed.db-shm"):
        if (state / extra).exists():
            assert mode(state / extra) == 0o600, extra
    for key in ("pa/pa-root.key", "pa/pa-signing.key", "pa/pa-crl.key", "ca/ca-root.key", "ca/ca-intermediate.key", "sp/sp.key",
                "sp/account.key", "tls/tls-server.key"):
        assert mode(state / key) == 0o600, key


def test_audit_refuses_secret_fields() -> None:
    with pytest.raises(ValueError, match="may not carry"):
        audit("pa", "login ok", user="u", password="x")
    with pytest.raises(ValueError, match="may not carry"):
        audit("cr", "upload", Token="x")
    with pytest.raises(ValueError, match="names of LogRecord attributes"):
        audit("cr", "upload", created=True)


def test_acme_settings_are_written_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_settings(tmp_path / "sp", {"directory": "https://ca.example/acme/directory", "user": "sp-1234"})
    finally:
        os.umask(old)
    assert mode(tmp_path / "sp" / "acme.json") == 0o600


# --- the services as processes ---------------------------------------------------------------


def _post(url: str, body: Any, ca: Path) -> int:
    req = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _put(url: str, data: bytes, token: str, ca: Path) -> int:
    req = urllib.request.Request(url, data=data, method="PUT", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(ca)), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_services_log_access_and_audit(tmp_path: Path, fmt: str) -> None:
    pa_port, cr_port, ca_port = _free_ports(3)
    pa_dir, cr_dir, ca_dir = tmp_path / "pa", tmp_path / "cr", tmp_path / "ca"
    env = {**os.environ, "STIRSHAKEN_PA_PASSWORD": "sp-secret-pw"}
    logs = {n: tmp_path / f"{n}.log" for n in ("pa", "cr", "ca")}
    procs: list[subprocess.Popen[bytes]] = []
    old = os.umask(0o022)  # what a default shell gives: files would be 0644 unless created 0600
    try:
        ok = subprocess.run(STIR + ["pa", "add-account", "sp-1234", "--ocn", "1234", "--state-dir", str(pa_dir)],
                            capture_output=True, text=True, env=env, timeout=30)
        assert ok.returncode == 0, ok.stderr

        def spawn(name: str, *args: str) -> None:
            procs.append(subprocess.Popen(STIR + [name, "serve", "--log-format", fmt, *args], stdout=subprocess.DEVNULL,
                                          stderr=open(logs[name], "wb"), env=env, start_new_session=True))

        spawn("pa", "--state-dir", str(pa_dir), "--port", str(pa_port))
        tls_root = pa_dir / "tls" / "tls-root.pem"
        _wait(f"https://127.0.0.1:{pa_port}/ca-list", tls_root)
        tls = ["--tls-cert", str(pa_dir / "tls" / "tls-server.pem"), "--tls-key", str(pa_dir / "tls" / "tls-server.key")]
        spawn("cr", "--state-dir", str(cr_dir), "--port", str(cr_port), "--upload-token", "up-secret-tok=sp-1234", *tls)
        spawn("ca", "--state-dir", str(ca_dir), "--port", str(ca_port), *tls, "--pa-url", f"https://127.0.0.1:{pa_port}",
              "--pa-root", str(pa_dir / "pa-root.pem"))
        _wait(f"https://127.0.0.1:{cr_port}/", tls_root)
        _wait(f"https://127.0.0.1:{ca_port}/acme/directory", tls_root, any_status=False)
        pa = f"https://127.0.0.1:{pa_port}"
        assert _post(pa + "/api/v1/auth/login?password=qs-secret", {"userId": "sp-1234", "password": "not-it-secret"}, tls_root) == 401
        assert _post(pa + "/api/v1/auth/login", {"userId": "sp-1234", "password": "sp-secret-pw"}, tls_root) == 200
        chain = (pa_dir / "pa-root.pem").read_bytes()
        assert _put(f"https://127.0.0.1:{cr_port}/x.pem", chain, "wrong-secret-tok", tls_root) == 401
        assert _put(f"https://127.0.0.1:{cr_port}/x.pem", chain, "up-secret-tok", tls_root) == 201
    finally:
        os.umask(old)
        for p in procs:
            try:
                os.killpg(p.pid, 15)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, 9)
    text = {n: f.read_text() for n, f in logs.items()}
    for n, t in text.items():
        for secret in ("sp-secret-pw", "not-it-secret", "qs-secret", "up-secret-tok", "wrong-secret-tok"):
            assert secret not in t, (n, secret)
        assert "Traceback" not in t
    if fmt == "json":
        docs = {n: [json.loads(line) for line in t.splitlines() if line.startswith("{")] for n, t in text.items()}
        pa_access = [d for d in docs["pa"] if d["logger"] == "stirshaken.pki.access"]
        assert {(d["method"], d["path"], d["status"]) for d in pa_access} >= {("POST", "/api/v1/auth/login", 401),
                                                                              ("POST", "/api/v1/auth/login", 200)}
        assert all(d["worker"] == "pa" and ACCESS_FIELDS <= set(d) for d in pa_access)
        audit_pa = [(d["event"], d.get("user"), d.get("reason")) for d in docs["pa"] if d["logger"] == "stirshaken.pki.audit"]
        assert audit_pa == [("login failed", "sp-1234", "wrong password"), ("login ok", "sp-1234", None)]
        audit_cr = [(d["event"], d.get("file"), d.get("owner")) for d in docs["cr"] if d["logger"] == "stirshaken.pki.audit"]
        assert audit_cr == [("upload refused", "x.pem", None), ("upload", "x.pem", "sp-1234")]
        assert any(d["logger"] == "stirshaken.pki.access" and d["path"] == "/acme/directory" and d["status"] == 200 for d in docs["ca"])
    else:
        assert re.search(r"^\S+ \S+ INFO \[pa\] stirshaken\.pki\.access: request service=pa method=POST path=/api/v1/auth/login "
                         r"status=401 latency=[0-9.]+ source=127\.0\.0\.1$", text["pa"], re.MULTILINE), text["pa"]
        assert re.search(r"WARNING \[pa\] stirshaken\.pki\.audit: login failed service=pa event=\"login failed\" user=sp-1234 "
                         r"source=127\.0\.0\.1 reason=\"wrong password\"$", text["pa"], re.MULTILINE), text["pa"]
        assert re.search(r"INFO \[cr\] stirshaken\.pki\.audit: upload service=cr event=upload file=x\.pem owner=sp-1234 new=True "
                         r"source=127\.0\.0\.1$", text["cr"], re.MULTILINE), text["cr"]
    # their databases and keys: owner only (a umask of 022 would have made the databases 0644)
    for db in (pa_dir / "pa.db", cr_dir / "cr.db", ca_dir / "ca.db"):
        assert mode(db) == 0o600, db
        for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
            if extra.exists():
                assert mode(extra) == 0o600, extra
    for key in (pa_dir / "pa-root.key", pa_dir / "tls" / "tls-server.key", ca_dir / "ca-intermediate.key"):
        assert mode(key) == 0o600, key
