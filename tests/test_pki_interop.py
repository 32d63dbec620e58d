"""Calls signed with certificates our STI-CA issued pass secsipidx (asipto/secsipidx) checks,
including Go's certificate path validation against our STI-CA root (``-cert-verify 5``)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from stirshaken.core import certificates as certs
from stirshaken.pki.enrollment import obtain_certificate
from stirshaken.core.keys import load_private_key
from stirshaken.core.passport import Signer

from tests.test_pki_support import running_testbed


async def _secsipidx(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    exe = shutil.which("secsipidx")
    assert exe is not None, "secsipidx is not installed (CI installs it via scripts/install-deps.sh)"
    proc = await asyncio.create_subprocess_exec(
        exe, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode or 0, out.decode(errors="replace")


@pytest.mark.interop
async def test_secsipidx_accepts_acme_issued_certificate(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        st = await obtain_certificate(tb.acme_config("sp"))
        assert st.x5u
        root = tmp_path / "sti-ca-root.pem"
        root.write_bytes(certs.pem([tb.ca.keys.root]))  # type: ignore[union-attr]
        identity = Signer(load_private_key(st.key_path), st.x5u).identity(orig="12155551212", dest=["12155551213"], attest="A")
        ident_file = tmp_path / "identity.txt"
        ident_file.write_text(identity)
        base = ["-check", "-expire", "60", "-fidentity", str(ident_file), "-cert-verify", "5", "-ca-file", str(root)]
        # the chain as a file
        rc, out = await _secsipidx(*base, "-fpubkey", str(st.chain_path))
        assert rc == 0 and "ok" in out, out
        # the chain URL at our STI-CR over HTTPS (Go trusts the testbed TLS root via SSL_CERT_FILE)
        env = {**os.environ, "SSL_CERT_FILE": str(tb.tls.root)}  # type: ignore[union-attr]
        rc, out = await _secsipidx(*base, "-fpubkey", st.x5u, "-timeout", "5", env=env)
        assert rc == 0 and "ok" in out, out
        # negative control: another root makes Go's path validation fail
        other = tmp_path / "other-root.pem"
        other.write_bytes(certs.pem([tb.pa.keys.root]))  # type: ignore[union-attr]
        rc, out = await _secsipidx(*base[:-1], str(other), "-fpubkey", str(st.chain_path))
        assert rc != 0, out
