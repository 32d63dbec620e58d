"""docs/pki.md "Running the services separately" works as written: this test reads the shell
block between ``<!-- lab-commands -->`` markers and runs it as processes (a line ending in ``&``
is started in the background and waited for on its port), changing only the ports to free ones."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.test_pki_cli import STIR, _free_ports

DOC = Path(__file__).resolve().parent.parent / "docs" / "pki.md"


def lab_commands() -> list[str]:
    text = DOC.read_text()
    block = text.split("<!-- lab-commands -->", 1)[1].split("<!-- /lab-commands -->", 1)[0]
    body = block.split("```sh", 1)[1].split("```", 1)[0]
    return [line.strip() for line in body.replace("\\\n", " ").splitlines() if line.strip()]


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_docs_lab_commands_run_as_written(tmp_path: Path) -> None:
    ports = dict(zip(("8443", "7443", "9443"), map(str, _free_ports(3))))
    procs: list[subprocess.Popen[bytes]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("STIRSHAKEN_")}
    outputs: list[str] = []
    try:
        for line in lab_commands():
            for old, new in ports.items():
                line = re.sub(rf"\b{old}\b", new, line)
            background = line.endswith("&")
            argv = shlex.split(line.rstrip("&").strip())
            assert argv[0] == "stirshaken", line
            cmd = STIR + argv[1:]
            if background:
                procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                              start_new_session=True))
                _wait_port(int(argv[argv.index("--port") + 1]))
            else:
                res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
                assert res.returncode == 0, (line, res.stdout, res.stderr)
                outputs.append(res.stdout)
        assert any("obtained certificate" in o for o in outputs)
        assert "conforms to the ATIS-1000080 profile" in outputs[-1]
        assert (tmp_path / "sp-cert" / "current" / "chain.pem").exists()
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
