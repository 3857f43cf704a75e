"""The ``fedsparsify`` command."""

from __future__ import annotations

import typer

from fedsparsify import __version__

app = typer.Typer(
    help="fedsparsify: federated training with progressive pruning and sparse CKKS aggregation.",
    no_args_is_help=True,
)


@app.command()
def version() -> None:
    """Print the installed version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()
