"""The ``stirshaken`` command line: the top layer, over the services (serve, pki), the STI-VS and the core."""

from stirshaken.cli.main import app, main

__all__ = ["app", "main"]
