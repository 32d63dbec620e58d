"""``stirshaken serve``: the ATIS-1000082 REST API and the SIP redirect services (see docs/configuration.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from stirshaken.cli.common import fail


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to the CLI."""

    @app.command("serve")
    def serve(
        config: Path = typer.Option(Path("stirshaken.toml"), "--config", "-c", help="TOML configuration file (docs/configuration.md)."),
        check: bool = typer.Option(False, "--check", help="Only validate the configuration, load every file it names (keys, certificates, trust anchors, CRLs, ...), guard the signers as the start does (with verify_x5u the x5u is fetched) and open the inventory and records databases, then exit."),
    ) -> None:
        """Run the STI-AS/STI-VS: REST API (ATIS-1000082), SIP signing and verification (302 redirect model).

        Example: stirshaken serve --config /etc/stirshaken/stirshaken.toml --check"""
        from stirshaken.serve.config import ConfigError, check_config, load_config
        from stirshaken.serve.server import check_signers, run

        try:
            cfg = load_config(config)
            check_config(cfg)
            if check:
                check_signers(cfg)  # the guard of the start: key, certificate, x5u
            if check and cfg.inventory.enabled:
                from stirshaken.serve.inventory.runtime import check_database

                check_database(cfg.inventory)
            if check and cfg.records.url:
                from stirshaken.serve.records import check_database as check_records

                check_records(cfg.records.url)
        except ConfigError as exc:
            fail(str(exc), 2)
        if check:
            typer.echo(f"{config}: OK")
            raise typer.Exit(0)
        raise typer.Exit(run(cfg))
