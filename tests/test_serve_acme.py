"""``stirshaken serve`` keeps its own signing certificate current through ACME ([signing.acme]).

End to end on loopback: the PKI testbed (STI-PA, STI-CA, STI-CR over HTTPS) runs in this test's
event loop, ``stirshaken serve`` runs as a real process.  Serve obtains its certificate before it
listens, signs with the STI-CR URL as x5u, renews (``renew_before_days`` larger than the
certificate's validity makes every check renew), and every worker switches to the new key and
x5u without a failed request; calls signed before and after verify through the STI-VS logic
(x5u fetched from the STI-CR, CA list and CRL from the STI-PA).  SIGHUP reloads key files.
"""

from __future__ import annotations

import asyncio
import re
import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.pki.enrollment import ensure_certificate
from stirshaken.serve.config import ConfigError, parse_config
from stirshaken.core.keys import write_private_key
from stirshaken.core.passport import verify_signature
from stirshaken.vs.verifier import CallInfo, Verifier

from tests.test_pki_support import running_testbed
from tests.test_serve_support import DEST, ORIG, ServeProcess, make_pki, serve_command, serve_port

PASSWORD_ENV = "STIRSHAKEN_TEST_PA_PASSWORD"


def acme_toml(tb: Any, http: int, *, workers: int, renew_before_days: float, check_interval: float = 1.0,
              directory_url: str | None = None, tenant: bool = False) -> str:
    tenant_toml = TENANT.format(ca=tb.urls["ca"], pa=tb.urls["pa"], ocn=tb.ocn, env=PASSWORD_ENV, root=tb.tls.root) if tenant else ""
    return f"""
[server]
http = "127.0.0.1:{http}"
workers = {workers}
log_level = "INFO"

[signing]
spc = "{tb.ocn}"
allow_private_x5u = true   # the lab STI-CR publishes on a loopback port


[signing.acme]
directory_url = "{directory_url or tb.urls['ca'] + '/acme/directory'}"
pa_url = "{tb.urls['pa']}"
username = "sp-{tb.ocn}"
password_env = "{PASSWORD_ENV}"
state_dir = "acme-state"
ca_bundle = "{tb.tls.root}"
renew_before_days = {renew_before_days}
check_interval = {check_interval}
{tenant_toml}"""


TENANT = """
[[signing.tenant]]
name = "t2"
tns = ["1999"]
[signing.tenant.acme]
directory_url = "{ca}/acme/directory"
pa_url = "{pa}"
ocn = "{ocn}"
username = "sp-{ocn}"
password_env = "{env}"
state_dir = "acme-t2"
ca_bundle = "{root}"
"""


def start_serve(d: Path, tb: Any, toml: str) -> ServeProcess:
    os.environ[PASSWORD_ENV] = tb.sp_password  # inherited by the serve process
    return ServeProcess(d, toml, None)


async def wait_ready(p: ServeProcess, port: int, timeout: float = 30.0) -> None:
    """Poll /healthz without blocking the loop (the testbed answers serve's ACME requests here)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if p.proc.poll() is not None:
                raise AssertionError(f"serve exited with {p.proc.returncode}: {p.log.read_text()[-3000:]}")
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"serve not ready: {p.log.read_text()[-3000:]}")


async def sign(s: aiohttp.ClientSession, port: int, tenant: str | None = None) -> tuple[int, str]:
    body = {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}}}
    headers = {"X-Tenant": tenant} if tenant else {}
    async with s.post(f"http://127.0.0.1:{port}/stir/v1/signing", json=body, headers=headers) as r:
        doc = await r.json()
        return r.status, doc.get("signingResponse", {}).get("identity", "") if r.status == 200 else str(doc)


def x5u_of(identity: str) -> str:
    h = identity.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))["x5u"])


async def verify_all(tb: Any, identities: list[str]) -> None:
    v = Verifier(tb.verifier_config())
    try:
        for ident in identities:
            r = await v.averify(CallInfo(identities=[ident], from_=ORIG, to=[DEST]))
            assert r.verstat == "TN-Validation-Passed", (x5u_of(ident), r)
    finally:
        await v.aclose()


@pytest.mark.parametrize("workers", [1, 2])
async def test_serve_obtains_and_renews_its_certificate(tmp_path: Path, workers: int) -> None:
    async with running_testbed(tmp_path / "tb") as tb:
        http = serve_port()
        d = tmp_path / "serve"
        d.mkdir()
        # the default signer renews at every check; tenant t2 (its own state) keeps its certificate
        p = start_serve(d, tb, acme_toml(tb, http, workers=workers, renew_before_days=3650, tenant=True))
        try:
            await wait_ready(p, http)
            state = d / "acme-state"
            assert (state / "cert.json").exists() and oct((state / "sp.key").stat().st_mode & 0o777) == "0o600"
            async with aiohttp.ClientSession() as s:
                status, first = await sign(s, http)
                assert status == 200, first
                first_x5u = x5u_of(first)
                assert first_x5u.startswith(tb.urls["cr"] + "/"), first_x5u  # the STI-CR URL
                status, t2_first = await sign(s, http, "t2")
                assert status == 200 and x5u_of(t2_first).startswith(tb.urls["cr"] + "/") and x5u_of(t2_first) != first_x5u
                # every check renews (renew_before_days > validity): keep signing until the x5u
                # changes, and a while after; not one request may fail meanwhile
                seen: dict[str, str] = {first_x5u: first}
                after: list[str] = []
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and len(after) < 20:
                    status, ident = await sign(s, http)
                    assert status == 200, ident
                    x5u = x5u_of(ident)
                    seen.setdefault(x5u, ident)
                    if x5u != first_x5u:
                        after.append(ident)
                    await asyncio.sleep(0.05)
                assert len(seen) >= 2, f"the x5u never changed: {p.log.read_text()[-3000:]}"
                status, t2_after = await sign(s, http, "t2")
                assert status == 200 and x5u_of(t2_after) == x5u_of(t2_first)
                # /metrics: seconds to the notAfter of both ACME-managed signing certificates
                async with s.get(f"http://127.0.0.1:{http}/metrics") as r:
                    text = await r.text()
                expiry = dict(re.findall(r'^stirshaken_signer_certificate_expiry_seconds\{tenant="([^"]+)"\} (-?\d+)$', text, re.M))
                assert set(expiry) == {"default", "t2"} and all(0 < int(v) < 400 * 86400 for v in expiry.values()), expiry
            await verify_all(tb, [first] + after[:1] + after[-1:] + list(seen.values())[:4] + [t2_first, t2_after])
            log = p.log.read_text()
            assert "certificate renewed" in log and "signing keys reloaded" in log
        finally:
            code = await asyncio.to_thread(p.stop)
        assert code == 0, p.log.read_text()[-3000:]


async def test_serve_sighup_after_external_renewal(tmp_path: Path) -> None:
    """An operator renews with ``stirshaken acme --force`` (same state directory) and sends SIGHUP."""
    async with running_testbed(tmp_path / "tb") as tb:
        http = serve_port()
        d = tmp_path / "serve"
        d.mkdir()
        p = start_serve(d, tb, acme_toml(tb, http, workers=2, renew_before_days=30, check_interval=3600))
        try:
            await wait_ready(p, http)
            async with aiohttp.ClientSession() as s:
                _, before = await sign(s, http)
                cfg = parse_config(_toml(acme_toml(tb, http, workers=2, renew_before_days=30)), d).signing.acme[0].acme_config()
                st = await ensure_certificate(cfg, force=True)
                assert st.renewed and st.x5u != x5u_of(before)
                os.kill(p.proc.pid, signal.SIGHUP)
                deadline = time.monotonic() + 10
                x5us = set()
                while time.monotonic() < deadline:
                    x5us = set()
                    for _ in range(8):  # both workers
                        status, ident = await sign(s, http)
                        assert status == 200
                        x5us.add(x5u_of(ident))
                    if x5us == {st.x5u}:
                        break
                    await asyncio.sleep(0.1)
                assert x5us == {st.x5u}, (x5us, st.x5u)
            await verify_all(tb, [before, ident])
        finally:
            code = await asyncio.to_thread(p.stop)
        assert code == 0


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


async def test_serve_start_fails_when_no_certificate_can_be_obtained(tmp_path: Path) -> None:
    async with running_testbed(tmp_path / "tb") as tb:
        http = serve_port()
        d = tmp_path / "serve"
        d.mkdir()
        toml = acme_toml(tb, http, workers=2, renew_before_days=30)
        (d / "serve.toml").write_text(toml.replace(f'pa_url = "{tb.urls["pa"]}"', 'pa_url = "https://127.0.0.1:1"'))
        env = dict(os.environ, **{PASSWORD_ENV: tb.sp_password})
        r = await asyncio.to_thread(subprocess.run, serve_command() + ["--config", str(d / "serve.toml")], cwd=d, env=env,
                                    capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and errors[0].startswith("error: [signing.acme]: cannot obtain a certificate from "), r.stderr
        assert "Traceback" not in r.stderr
        # a wrong password: the STI-PA refuses the login
        env[PASSWORD_ENV] = "wrong"
        (d / "serve.toml").write_text(toml)
        r = await asyncio.to_thread(subprocess.run, serve_command() + ["--config", str(d / "serve.toml")], cwd=d, env=env,
                                    capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "PAClientError" in r.stderr and "Traceback" not in r.stderr, r.stderr


# --- configuration ---------------------------------------------------------------------------------


BASE = """
[server]
http = "127.0.0.1:8080"
[signing]
spc = "1234"
[signing.acme]
directory_url = "https://ca.example/acme/directory"
pa_url = "https://pa.example"
username = "sp-1234"
password = "secret"
state_dir = "st"
"""


@pytest.mark.parametrize("old, new, message", [
    ('spc = "1234"', 'spc = "1234"\nkey = "sp.key"', "[signing].key: not allowed with [signing.acme]"),
    ('directory_url = "https://ca.example/acme/directory"', 'directory_url = "ftp://x"',
     "[signing.acme].directory_url: 'ftp://x' is not an http(s) URL"),
    ('password = "secret"', 'password = "secret"\npassword_env = "X"',
     "[signing.acme].password_env: give only one of password, password_file, password_env"),
    ('password = "secret"', "", "[signing.acme].password: required (or password_file / password_env)"),
    ('username = "sp-1234"', "", "[signing.acme].username: the STI-PA user name is required"),
    ('state_dir = "st"', 'state_dir = "st"\ncheck_interval = 0.01', "[signing.acme].check_interval: 0.01 is not between"),
    ('state_dir = "st"', 'state_dir = "st"\nrenew_before_days = -1', "[signing.acme].renew_before_days: -1.0 is not between"),
    ('state_dir = "st"', 'state_dir = "st"\nca_bundle = "missing.pem"', "[signing.acme].ca_bundle:"),
    ('state_dir = "st"', 'state_dir = "st"\ncolour = "red"', "[signing.acme].colour: unknown option"),
])
def test_acme_config_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_toml(BASE.replace(old, new)), tmp_path)
    assert message in str(e.value), str(e.value)


def test_acme_config_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.setenv("CR_TOKEN_FOR_TEST", "tok")
    text = BASE.replace('password = "secret"', 'password_file = "pw"\ncr_url = "https://cr.example"\ncr_token_env = "CR_TOKEN_FOR_TEST"')
    text += """
[[signing.tenant]]
name = "other"
[signing.tenant.acme]
directory_url = "https://ca.example/acme/directory"
pa_url = "https://pa.example"
ocn = "5678"
username = "sp-5678"
password = "pw2"
state_dir = "st2"
renew_before_days = 10
check_interval = 60
"""
    c = parse_config(_toml(text), tmp_path)
    a, b = c.signing.acme
    assert (a.where, a.ocn, a.password, a.cr_token, a.state_dir) == ("[signing.acme]", "1234", "from-file", "tok", str(tmp_path / "st"))
    assert (b.where, b.ocn, b.renew_before_days, b.check_interval) == ("[signing.tenant.1.acme]", "5678", 10.0, 60.0)
    assert c.signing.default is not None and c.signing.default.key is None and "secret" not in repr(c)
    ac = a.acme_config()
    assert ac.state_dir == tmp_path / "st" and ac.cr_token == "tok"
    with pytest.raises(ConfigError, match="already used by"):
        parse_config(_toml(text.replace('state_dir = "st2"', 'state_dir = "st"')), tmp_path)
    with pytest.raises(ConfigError, match=r"\[signing.acme\].password_env: environment variable 'NOPE_NOT_SET' is not set"):
        parse_config(_toml(BASE.replace('password = "secret"', 'password_env = "NOPE_NOT_SET"')), tmp_path)
    with pytest.raises(ConfigError, match=r"\[signing.acme\].ocn: the SPC/OCN"):
        parse_config(_toml(BASE.replace('spc = "1234"', "")), tmp_path)


# --- SIGHUP with key files ---------------------------------------------------------------------------


def _signed_by(identity: str, key: ec.EllipticCurvePrivateKey) -> bool:
    from stirshaken.core.b64 import b64url_decode

    token = identity.split(";")[0]
    h, p_, sig = token.split(".")
    try:
        verify_signature(f"{h}.{p_}".encode(), b64url_decode(sig), key.public_key())
        return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_key_files(tmp_path: Path, workers: int) -> None:
    import requests

    pki = make_pki(tmp_path / "pki")
    http = serve_port()
    key = tmp_path / "signing.key"
    key.write_bytes(pki.sp_key.read_bytes())
    toml = f"""
[server]
http = "127.0.0.1:{http}"
workers = {workers}
[signing]
key = "{key}"
x5u = "https://cr.example.net/sp.pem"
"""
    p = ServeProcess(tmp_path, toml, http)
    url = f"http://127.0.0.1:{http}/stir/v1/signing"

    def sign_sync() -> str:
        body = {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}}}
        r = requests.post(url, json=body, timeout=5)
        assert r.status_code == 200, r.text
        return str(r.json()["signingResponse"]["identity"])

    try:
        assert _signed_by(sign_sync(), pki.sp_key_obj)
        new = ec.generate_private_key(ec.SECP256R1())
        write_private_key(key, new, public=False)
        os.kill(p.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(_signed_by(sign_sync(), new) for _ in range(6)):
                break
            time.sleep(0.1)
        assert all(_signed_by(sign_sync(), new) for _ in range(6))
        # an unreadable key: the reload fails, the service keeps signing with the current key
        key.write_text("not a key")
        os.kill(p.proc.pid, signal.SIGHUP)
        time.sleep(0.5)
        assert _signed_by(sign_sync(), new)
        assert "signing key reload failed" in p.log.read_text()
    finally:
        code = p.stop()
    assert code == 0


def test_acme_eab_from_toml_reaches_the_client(tmp_path: Path) -> None:
    """RFC 8555 §7.3.4 binding given in [signing.acme] (key in a file) reaches the ACME client's config."""
    (tmp_path / "eab.key").write_text("c2VjcmV0LW1hYy1rZXk\n")
    text = BASE.replace('state_dir = "st"', 'state_dir = "st"\neab_kid = "kid-1"\neab_hmac_key_file = "eab.key"')
    acme = parse_config(_toml(text), tmp_path).signing.default.acme
    ac = acme.acme_config()
    assert (ac.eab_kid, ac.eab_hmac_key) == ("kid-1", "c2VjcmV0LW1hYy1rZXk")
    assert "c2VjcmV0" not in repr(acme)  # the MAC key is never shown
    with pytest.raises(ConfigError) as e:
        parse_config(_toml(text.replace('eab_hmac_key_file = "eab.key"', 'eab_hmac_key_file = "eab.key"\neab_hmac_key = "x"')), tmp_path)
    assert "[signing.acme].eab_hmac_key_file: give only one of eab_hmac_key, eab_hmac_key_file, eab_hmac_key_env" in str(e.value)
