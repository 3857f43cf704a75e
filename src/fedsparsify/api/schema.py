"""The database schema's version: check it at start, upgrade it on demand (Alembic).

- :func:`prepare` (``fedsparsify serve``): an empty database is created at the newest revision
  (a fresh install needs no extra step); a database at the newest revision is used as it is;
  anything else is refused with an error that names ``fedsparsify db upgrade``. The server never
  changes an existing schema by itself.
- :func:`upgrade` (``fedsparsify db upgrade``): applies the missing revisions. A database that
  release 0.1 wrote has no version table: it is checked against revision ``0001`` (release 0.1's
  schema), adopted as that revision, then upgraded. A database from before 0.1's
  ``clients.last_seen_at`` gets that column first, as 0.1 itself would have done.

On PostgreSQL both run under an advisory lock, so processes starting together on an empty
database create it once, and :func:`upgrade` refuses while aggregator processes are connected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from fedsparsify.api.db import Database, redact
from fedsparsify.errors import ConfigError

__all__ = [
    "BASELINE",
    "SchemaStatus",
    "head_revision",
    "new_revision",
    "prepare",
    "status",
    "upgrade",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The revision that is release 0.1's schema.
BASELINE = "0001"
#: Tables and columns of release 0.1 (what an unversioned database must hold to be adopted).
RELEASE_0_1: dict[str, tuple[str, ...]] = {
    "server_secrets": ("name", "value_hash", "created_at"),
    "federations": (
        "id",
        "name",
        "spec",
        "state",
        "reason",
        "enrollment_token_hash",
        "dealer_id",
        "context_digest",
        "context_bytes",
        "created_at",
        "finished_at",
    ),
    "clients": (
        "id",
        "federation_id",
        "name",
        "public_key",
        "fingerprint",
        "num_samples",
        "token_hash",
        "is_dealer",
        "envelope_bytes",
        "created_at",
        "last_seen_at",
    ),
    "rounds": (
        "id",
        "federation_id",
        "round_index",
        "state",
        "reason",
        "participants",
        "total_samples",
        "quorum",
        "channels",
        "deadline",
        "opened_at",
        "closed_at",
        "context_digest",
        "mask_digest",
        "value_count",
        "aggregation_s",
        "contributors",
        "aggregate_bytes",
    ),
    "uploads": (
        "id",
        "round_id",
        "client_id",
        "channel",
        "bytes",
        "sha256",
        "weight",
        "created_at",
    ),
    "round_metrics": ("id", "round_id", "client_id", "metrics", "updated_at"),
}
#: Columns a database from before release 0.1 may lack; 0.1 added them at start.
_ADDED_BY_0_1 = (("clients", "last_seen_at", "FLOAT"),)


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands: ``empty``, ``unversioned`` (release 0.1), ``behind``,
    ``current`` or ``ahead`` (written by a newer release)."""

    state: str
    revision: str | None
    head: str


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision this release knows."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise ConfigError(f"the migrations have {len(heads)} heads ({heads}); they must chain")
    return str(heads[0])


def _status(conn: Connection) -> SchemaStatus:
    head = head_revision()
    revision = MigrationContext.configure(conn).get_current_revision()
    if revision is None:
        tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
        return SchemaStatus("unversioned" if tables else "empty", None, head)
    if revision == head:
        return SchemaStatus("current", revision, head)
    known = {r.revision for r in ScriptDirectory.from_config(_config()).walk_revisions()}
    return SchemaStatus("behind" if revision in known else "ahead", revision, head)


def status(db: Database) -> SchemaStatus:
    """The database's schema status."""
    with _connect(db, lock=False) as conn:
        return _status(conn)


@contextmanager
def _connect(db: Database, *, lock: bool) -> Iterator[Connection]:
    """A connection; on PostgreSQL with the schema advisory lock held when ``lock``."""
    from fedsparsify.api.pg_coordination import SCHEMA

    try:
        conn = db.engine.connect()
    except DBAPIError as exc:
        raise ConfigError(f"cannot open the database {redact(db.url)}: {exc.orig}") from exc
    try:
        if lock and db.is_postgresql:
            conn.execute(text("SELECT pg_advisory_lock(:ns, 0)"), {"ns": SCHEMA})
            conn.commit()
        try:
            yield conn
        finally:
            if lock and db.is_postgresql:
                conn.rollback()
                conn.execute(text("SELECT pg_advisory_unlock(:ns, 0)"), {"ns": SCHEMA})
                conn.commit()
    finally:
        conn.close()


def _upgrade_command(db: Database) -> str:
    if db.is_sqlite:
        return "fedsparsify db upgrade --data-dir DIR (or --database-url URL)"
    return f"fedsparsify db upgrade --database-url {redact(db.url)}"


def prepare(db: Database) -> SchemaStatus:
    """At start: create an empty database at the newest revision, accept a current one, refuse
    any other with a :class:`ConfigError` naming the command that upgrades it."""
    with _connect(db, lock=True) as conn:
        found = _status(conn)
        if found.state == "empty":
            command.upgrade(_config(conn), "head")
            conn.commit()
            log.info("created the database schema at revision %s", found.head)
            return SchemaStatus("current", found.head, found.head)
    if found.state == "current":
        return found
    if found.state == "ahead":
        raise ConfigError(
            f"the database is at schema revision {found.revision}, which this release "
            f"({found.head} is its newest) does not know: it was written by a newer fedsparsify"
        )
    was = "release 0.1's unversioned schema" if found.revision is None else found.revision
    raise ConfigError(
        f"the database schema is older than this release: {was}, this release needs "
        f"{found.head}. Stop every aggregator on it, back it up, and run `{_upgrade_command(db)}`"
    )


def _adopt_release_0_1(conn: Connection) -> None:
    """Stamp an unversioned database as :data:`BASELINE` once it is checked to be 0.1's."""
    inspector = inspect(conn)
    tables = set(inspector.get_table_names())
    missing_tables = sorted(set(RELEASE_0_1) - tables)
    if missing_tables:
        raise ConfigError(
            f"not a fedsparsify database (no version table, and tables {missing_tables} are "
            "missing): refusing to touch it"
        )
    for table, column, sql_type in _ADDED_BY_0_1:
        names = {c["name"] for c in inspector.get_columns(table)}
        if column not in names:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
            log.warning("database from before release 0.1: added column %s.%s", table, column)
    inspector = inspect(conn)
    for table, columns in RELEASE_0_1.items():
        have = {c["name"] for c in inspector.get_columns(table)}
        missing = [c for c in columns if c not in have]
        extra = sorted(have - set(columns))
        if missing or extra:
            raise ConfigError(
                f"table {table!r} is not release 0.1's (missing {missing}, unknown {extra}): "
                "refusing to adopt this database"
            )
    command.stamp(_config(conn), BASELINE)
    log.info("adopted release 0.1's database as schema revision %s", BASELINE)


def upgrade(db: Database, *, allow_live: bool = False) -> tuple[SchemaStatus, SchemaStatus]:
    """Apply every missing revision; returns the status before and after.

    On PostgreSQL it refuses while aggregator processes of this release are connected (they
    would run on a schema they do not know) unless ``allow_live``.
    """
    with _connect(db, lock=True) as conn:
        before = _status(conn)
        if before.state == "ahead":
            raise ConfigError(
                f"the database is at revision {before.revision}, newer than this release's "
                f"{before.head}: upgrade fedsparsify instead"
            )
        if before.state == "current":
            return before, before
        if db.is_postgresql and not allow_live:
            from fedsparsify.api.pg_coordination import live_instances

            live = live_instances(conn)
            conn.rollback()
            if live:
                raise ConfigError(
                    f"{len(live)} aggregator process(es) are connected to this database "
                    f"({', '.join(live)}): stop them before upgrading its schema"
                )
        if before.state == "unversioned":
            _adopt_release_0_1(conn)
        command.upgrade(_config(conn), "head")
        conn.commit()
        after = _status(conn)
    log.info("database schema upgraded from %s to %s", before.revision or before.state, after.head)
    return before, after


def new_revision(message: str) -> Path:
    """Write the next revision file, autogenerated against a database built from the revisions
    (developers: see :mod:`fedsparsify.api.migrations`)."""
    import tempfile

    number = f"{int(head_revision()) + 1:04d}"
    with tempfile.TemporaryDirectory(prefix="fedsparsify-revision-") as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'head.db'}")
        try:
            with _connect(db, lock=False) as conn:
                command.upgrade(_config(conn), "head")
                conn.commit()
                script = command.revision(
                    _config(conn),
                    message=message,
                    autogenerate=True,
                    rev_id=number,
                )
        finally:
            db.dispose()
    if script is None or isinstance(script, list):
        raise ConfigError("alembic wrote no single revision")
    return Path(script.path)
