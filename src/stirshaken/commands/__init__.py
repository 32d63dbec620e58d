"""Sub-command groups of the ``stirshaken`` CLI that live beside their services.

Each module exposes ``register(app: typer.Typer) -> None``.
"""

from __future__ import annotations

import importlib

import typer

COMMAND_MODULES = ("serve", "pki")


def register_all(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        modname = f"{__name__}.{name}"
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            raise
        module.register(app)
