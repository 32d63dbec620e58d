"""``stirshaken testbed``: the whole SHAKEN ecosystem on loopback (:mod:`stirshaken.lab.testbed`).

The only command that imports the lab; production commands (``serve``, ``pa|ca|cr serve``, ``acme``)
do not (an import-linter contract in the tests says so).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from stirshaken.cli import common
from stirshaken.cli.common import fail as _fail
from stirshaken.cli.pki import out


def register(app: typer.Typer) -> None:
    """Add the ``testbed`` command to the CLI."""

    @app.command("testbed")
    def testbed_cmd(
        state_dir: Optional[Path] = typer.Option(None, "--state-dir", help="Keep all state here (default: a temporary directory)."),
        keep_running: bool = typer.Option(False, "--keep-running", help="Stay up after the sample calls and print the URLs."),
        db_url: Optional[str] = typer.Option(None, "--db-url", help="SQLAlchemy URL (default: SQLite in the state directory)."),
        pa_port: int = typer.Option(0, "--pa-port", min=0, max=65535, help="STI-PA port (0: ephemeral)."),
        ca_port: int = typer.Option(0, "--ca-port", min=0, max=65535, help="STI-CA port (0: ephemeral)."),
        cr_port: int = typer.Option(0, "--cr-port", min=0, max=65535, help="STI-CR port (0: ephemeral)."),
        vs_port: int = typer.Option(0, "--vs-port", min=0, max=65535, help="STI-VS REST port (0: ephemeral)."),
    ) -> None:
        """Run the whole SHAKEN ecosystem on loopback and print the verdicts of sample calls.

        Starts STI-PA, STI-CA, STI-CR and an STI-VS, provisions an SP certificate via ACME with an
        SPC token, then signs and verifies sample calls.

        Example: stirshaken testbed --state-dir /tmp/testbed --keep-running"""
        from stirshaken.lab.testbed import run_testbed
        from stirshaken.pki.store import DatabaseError

        if state_dir is not None:
            common.directory(state_dir, "--state-dir")
        ports = {k: v for k, v in (("pa", pa_port), ("ca", ca_port), ("cr", cr_port), ("vs", vs_port)) if v}
        try:
            verdicts = asyncio.run(run_testbed(state_dir, keep_running=keep_running, ports=ports, db_url=db_url, console=Console(width=max(out.width, 110))))
        except KeyboardInterrupt:
            raise typer.Exit(0)
        except DatabaseError as exc:
            _fail(str(exc), 2)
        except OSError as exc:
            _fail(f"cannot start the testbed: {exc.strerror or exc}")
            return
        except Exception as exc:  # a readable line, no traceback
            _fail(f"testbed failed: {type(exc).__name__}: {exc}")
            return
        if not all(v.ok for v in verdicts):
            _fail("some verdicts differ from the expected ones")

