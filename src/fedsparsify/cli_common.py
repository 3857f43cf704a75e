"""What the ``fedsparsify`` command's modules share: the one way a command fails."""

from __future__ import annotations

import typer

__all__ = ["fail"]


def fail(exc: Exception) -> typer.Exit:
    """Print ``error: ...`` (one line per line of the message) and return the exit (status 1)
    for the caller to raise."""
    for line in str(exc).splitlines() or [type(exc).__name__]:
        typer.secho(f"error: {line}", err=True, fg="red")
    return typer.Exit(code=1)
