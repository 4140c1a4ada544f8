"""The ``redkit`` command line (typer + rich)."""

from redkit.cli.app import app, main

__all__ = ["app", "main"]
