"""``stirshaken acme`` as an operator uses certbot (issue 14): ``--email``, ``--deploy-hook``,
``--dry-run``, ``acme list``, ``acme renew`` (due only, ``--force``), the stable ``current/`` paths,
and a failed STI-CR upload as an error of the command.  The command runs in-process (typer's
runner, in a thread) against the testbed's STI-PA/STI-CA/STI-CR on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from stirshaken.cli.main import app
from stirshaken.core import certificates as certs
from stirshaken.core.jose import jwk_of, thumbprint
from stirshaken.core.keys import load_private_key

from tests.test_pki_support import running_testbed


async def _acme(tb: Any, *args: str) -> Any:
    env = {"STIRSHAKEN_PA_PASSWORD": tb.sp_password}
    return await asyncio.to_thread(CliRunner().invoke, app, ["acme", *args], env=env, catch_exceptions=False)


def _base(tb: Any, state: Path) -> list[str]:
    return ["--directory", tb.urls["ca"] + "/acme/directory", "--pa-url", tb.urls["pa"], "--ocn", tb.ocn,
            "--user", f"sp-{tb.ocn}", "--state-dir", str(state), "--ca-bundle", str(tb.tls.root)]


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


async def test_acme_operator_workflow(tmp_path: Path) -> None:
    async with running_testbed(tmp_path / "tb") as tb:
        state, hook_out = tmp_path / "sp", tmp_path / "hook.txt"
        hook = f'echo "$STIRSHAKEN_CERT $STIRSHAKEN_KEY $STIRSHAKEN_CHAIN $STIRSHAKEN_X5U" >> {hook_out}'
        res = await _acme(tb, *_base(tb, state), "--email", "noc@sp.example", "--deploy-hook", hook)
        assert res.exit_code == 0, res.output
        cur = state / "current"
        assert cur.is_symlink()
        leaf = certs.load_certificates((cur / "chain.pem").read_bytes())[0]
        assert leaf.public_key() == load_private_key(cur / "key.pem").public_key()
        assert leaf == certs.load_certificates((cur / "cert.pem").read_bytes())[0]
        lines = hook_out.read_text().splitlines()
        assert len(lines) == 1 and lines[0].split()[:3] == [str(cur / "cert.pem"), str(cur / "key.pem"), str(cur / "chain.pem")]
        assert lines[0].split()[3].startswith(tb.urls["cr"])  # the x5u on the STI-CR
        acct = tb.ca.db.ca_account_by_thumbprint(thumbprint(jwk_of(load_private_key(state / "account.key"))))  # type: ignore[union-attr]
        assert acct.contact == ["mailto:noc@sp.example"]
        # acme list: the certificate and its expiry
        res = await _acme(tb, "list", str(state))
        assert res.exit_code == 0 and f"serial {leaf.serial_number:x}" in res.output and f"{leaf.not_valid_after_utc:%Y-%m-%d}" in res.output
        # renew: not due -> nothing changes, no hook
        res = await _acme(tb, "renew", str(state))
        assert res.exit_code == 0 and "current certificate" in res.output, res.output
        assert len(hook_out.read_text().splitlines()) == 1
        # renew --force: a new key and chain behind the same current/ paths, hook runs again
        res = await _acme(tb, "renew", str(state), "--force")
        assert res.exit_code == 0 and "obtained certificate" in res.output, res.output
        leaf2 = certs.load_certificates((cur / "chain.pem").read_bytes())[0]
        assert leaf2.serial_number != leaf.serial_number
        assert leaf2.public_key() == load_private_key(cur / "key.pem").public_key()
        assert len(hook_out.read_text().splitlines()) == 2
        # renew with --renew-before-days beyond the validity: due, renewed (the saved hook runs)
        res = await _acme(tb, *_base(tb, state), "--renew-before-days", "3000", "--deploy-hook", hook)
        assert res.exit_code == 0 and "obtained certificate" in res.output
        # dry run: the flow runs, no file changes, no hook
        before = _snapshot(state)
        res = await _acme(tb, *_base(tb, state), "--dry-run", "--deploy-hook", hook)
        assert res.exit_code == 0 and "dry run" in res.output, res.output
        assert _snapshot(state) == before
        assert len(hook_out.read_text().splitlines()) == 3  # the dry run ran no hook (3: first run and two renewals)


async def test_failed_cr_upload_is_an_error_of_acme(tmp_path: Path) -> None:
    async with running_testbed(tmp_path / "tb") as tb:
        assert tb.ca is not None

        async def refusing(_name: str, _chain: bytes) -> str:
            raise RuntimeError("HTTP 403: token not allowed")

        tb.ca.publisher = refusing
        res = await _acme(tb, *_base(tb, tmp_path / "a"))
        assert res.exit_code == 1
        assert "not published" in res.output and "HTTP 403: token not allowed" in res.output, res.output
        # no CA publisher, and the SP's own upload with a wrong token fails: also an error
        tb.ca.publisher = None
        res = await _acme(tb, *_base(tb, tmp_path / "b"), "--cr-url", tb.urls["cr"], "--cr-token", "wrong")
        assert res.exit_code == 1 and "upload to the STI-CR" in res.output and "401" in res.output, res.output
        assert (tmp_path / "b" / "current" / "chain.pem").exists()  # issued and kept, only not published


async def test_renew_from_another_directory(tmp_path: Path, monkeypatch: Any) -> None:
    """A first run with relative paths (as in docs/pki.md), then 'acme renew' from cron's working
    directory: the saved --ca-bundle and the hook's paths are absolute."""
    async with running_testbed(tmp_path / "tb") as tb:
        work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
        work.mkdir(), elsewhere.mkdir()
        (work / "root.pem").write_bytes(tb.tls.root.read_bytes())  # type: ignore[union-attr]
        hook = f'echo "$STIRSHAKEN_KEY $STIRSHAKEN_STATE_DIR" > {tmp_path / "hook.txt"}'
        monkeypatch.chdir(work)
        args = [a if a != str(tb.tls.root) else "root.pem" for a in _base(tb, Path("sp"))]  # type: ignore[union-attr]
        res = await _acme(tb, *args, "--deploy-hook", hook)
        assert res.exit_code == 0, res.output
        assert (tmp_path / "hook.txt").read_text().split() == [str(work / "sp" / "current" / "key.pem"), str(work / "sp")]
        monkeypatch.chdir(elsewhere)
        res = await _acme(tb, "renew", str(work / "sp"), "--force")
        assert res.exit_code == 0 and "obtained certificate" in res.output, res.output


def test_acme_errors_are_plain_lines(tmp_path: Path) -> None:
    """No library class names: a refused connection and a missing --ca-bundle in plain words."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    base = ["acme", "--directory", f"https://127.0.0.1:{port}/acme/directory", "--pa-url", f"https://127.0.0.1:{port}",
            "--ocn", "1234", "--user", "sp-1234", "--password", "pw", "--state-dir", str(tmp_path / "sp")]
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 1 and f"error: cannot connect to 127.0.0.1:{port}: Connection refused" in res.output, res.output
    assert "ClientConnectorError" not in res.output
    res = CliRunner().invoke(app, [*base, "--ca-bundle", str(tmp_path / "none.pem")])
    assert res.exit_code == 2 and "--ca-bundle" in res.output and "no such file" in res.output, res.output
