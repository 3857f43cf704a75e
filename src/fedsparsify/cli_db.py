"""``fedsparsify db``: the aggregator database's schema version and its upgrade."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedsparsify.cli_common import fail

if TYPE_CHECKING:
    from fedsparsify.api import Settings
    from fedsparsify.api.db import Database

__all__ = ["db_app"]

db_app = typer.Typer(
    help="The aggregator's database schema: status, upgrade (Alembic revisions).",
    no_args_is_help=True,
)

DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="the aggregator's data directory (SQLite database inside)"),
]
UrlOpt = Annotated[
    str | None,
    typer.Option(
        help="the database URL (postgresql+psycopg://... or sqlite:///...); "
        "default: $FEDSPARSIFY_DATABASE_URL"
    ),
]


def _open(data_dir: Path | None, database_url: str | None) -> tuple[Settings, Database]:
    """Settings and database for ``--data-dir`` / ``--database-url`` (or the environment)."""
    from sqlalchemy.engine import make_url

    from fedsparsify.api import Settings
    from fedsparsify.api.db import Database

    settings = Settings.from_options(data_dir=data_dir, database_url=database_url)
    url = settings.effective_database_url
    if settings.is_embedded:
        path = make_url(url).database
        if not path or not Path(path).is_file():
            raise typer.BadParameter(f"no database at {path}", param_hint="--data-dir")
    return settings, Database(url)


@db_app.command("status")
def db_status(data_dir: DataDirOpt = None, database_url: UrlOpt = None) -> None:
    """Print the schema revision of the database and the newest one this release knows."""
    from fedsparsify.api import schema
    from fedsparsify.errors import FedsparsifyError

    _settings, db = _open(data_dir, database_url)
    try:
        found = schema.status(db)
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    finally:
        db.dispose()
    typer.echo(f"{found.state}: revision {found.revision or '-'} (this release: {found.head})")


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, database_url: UrlOpt = None) -> None:
    """Apply the missing schema revisions (release 0.1's database included). Stop the
    aggregator first: SQLite's data directory must be free, and on PostgreSQL no aggregator
    process may be connected. Back the database up before."""
    from fedsparsify.api import schema
    from fedsparsify.api.datadir import DataDirLock
    from fedsparsify.errors import FedsparsifyError

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    settings, db = _open(data_dir, database_url)
    lock = DataDirLock(settings.data_dir, purpose="fedsparsify db upgrade")
    try:
        if settings.is_embedded and settings.data_dir.is_dir():
            lock.acquire()  # no aggregator may run on this data directory meanwhile
        before, after = schema.upgrade(db)
    except FedsparsifyError as exc:
        raise fail(exc) from exc
    finally:
        lock.release()
        db.dispose()
    if before.revision == after.revision:
        typer.echo(f"already at the newest revision {after.revision}")
    else:
        typer.echo(f"upgraded from {before.revision or before.state} to {after.revision}")


@db_app.command("revision")
def db_revision(
    message: Annotated[str, typer.Option("--message", "-m", help="what the revision changes")],
) -> None:
    """Developers: write the next revision file from the models' changes (autogenerate; read
    and fix it before committing)."""
    from fedsparsify.api import schema

    typer.echo(f"wrote {schema.new_revision(message)}")
