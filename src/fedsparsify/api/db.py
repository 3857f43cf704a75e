"""Storage of federation state: SQLAlchemy 2 models, engine and sessions.

Works with any SQLAlchemy URL. SQLite (the default, a file in the data directory) is set up for
a server: WAL journal, ``synchronous=FULL`` (a committed upload survives a power cut), a busy
timeout, foreign keys, and ``BEGIN IMMEDIATE`` transactions so that concurrent writers wait for
each other instead of failing on a lock upgrade. Tables are created at startup.

There are no migrations. ``create_all`` creates missing tables but never changes existing ones,
so a column added after a table first shipped is listed in :data:`ADDED_COLUMNS` and added at
startup with ``ALTER TABLE ... ADD COLUMN`` when a database from an older version lacks it
(nullable columns only: existing rows read NULL). Anything beyond that needs a real migration tool.

Times are stored as UNIX seconds (floats): portable across databases and free of time zones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "ADDED_COLUMNS",
    "Base",
    "ClientRow",
    "DashboardSessionRow",
    "Database",
    "FederationRow",
    "IdempotentAnswerRow",
    "RoundMetricRow",
    "RoundRow",
    "ServerSecretRow",
    "UploadRow",
    "add_missing_columns",
    "now",
]

log = logging.getLogger(__name__)

ID_LENGTH = 32


def now() -> float:
    """The current UNIX time in seconds."""
    return time.time()


class Base(DeclarativeBase):
    """Declarative base of the aggregator's tables."""


class ServerSecretRow(Base):
    """Server-wide secrets, stored hashed (the admin token)."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class FederationRow(Base):
    """A federation: its spec, state, enrolment token hash and key status."""

    __tablename__ = "federations"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="enrolling")
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    enrollment_token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    dealer_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), default=None)
    context_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    context_bytes: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    #: Join-code policy: when it expires, how many registrations it allows and has allowed,
    #: and when it was revoked (NULL in rows of release 0.1: no limits, never revoked).
    enrollment_expires_at: Mapped[float | None] = mapped_column(Float, default=None)
    enrollment_max_uses: Mapped[int | None] = mapped_column(Integer, default=None)
    enrollment_uses: Mapped[int | None] = mapped_column(Integer, default=0)
    enrollment_revoked_at: Mapped[float | None] = mapped_column(Float, default=None)


class ClientRow(Base):
    """A registered client (site) of one federation."""

    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("federation_id", "name", name="uq_client_name"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    federation_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("federations.id"), index=True
    )
    name: Mapped[str] = mapped_column(String(128))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint: Mapped[str] = mapped_column(String(128))
    num_samples: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    is_dealer: Mapped[bool] = mapped_column(Boolean, default=False)
    envelope_bytes: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    #: Last request authenticated with this client's token (registration counts); written at
    #: most about once a second per client. NULL in rows from before the column existed.
    last_seen_at: Mapped[float | None] = mapped_column(Float, default=None)
    #: Ed25519 signing key and X25519 mask key (NULL for members registered by release 0.1).
    signing_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    mask_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    #: Set when the admin removed the member: its token no longer works, it is in no new round.
    removed_at: Mapped[float | None] = mapped_column(Float, default=None)


class RoundRow(Base):
    """One round of one federation."""

    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("federation_id", "round_index", name="uq_round_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    federation_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("federations.id"), index=True
    )
    index: Mapped[int] = mapped_column("round_index", Integer)
    state: Mapped[str] = mapped_column(String(16), default="open")
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    participants: Mapped[list[str]] = mapped_column(JSON)
    total_samples: Mapped[int] = mapped_column(Integer)
    quorum: Mapped[int] = mapped_column(Integer)
    channels: Mapped[list[str]] = mapped_column(JSON)
    deadline: Mapped[float] = mapped_column(Float)
    opened_at: Mapped[float] = mapped_column(Float, default=now)
    closed_at: Mapped[float | None] = mapped_column(Float, default=None)
    context_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    mask_digest: Mapped[str | None] = mapped_column(String(256), default=None)
    value_count: Mapped[int | None] = mapped_column(Integer, default=None)
    aggregation_s: Mapped[float] = mapped_column(Float, default=0.0)
    contributors: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    aggregate_bytes: Mapped[dict[str, int] | None] = mapped_column(JSON, default=None)
    #: Attempt of the round (a restart with the sites that uploaded when one missed the
    #: deadline), the digest of its participant set, and each participant's weight.
    attempt: Mapped[int | None] = mapped_column(Integer, default=0)
    participants_digest: Mapped[str | None] = mapped_column(String(64), default=None)
    weights: Mapped[dict[str, float] | None] = mapped_column(JSON, default=None)


class UploadRow(Base):
    """One accepted upload: one client, one round, one channel."""

    __tablename__ = "uploads"
    __table_args__ = (UniqueConstraint("round_id", "client_id", "channel", name="uq_upload_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(Integer, ForeignKey("rounds.id"), index=True)
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    channel: Mapped[str] = mapped_column(String(16))
    bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    weight: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class RoundMetricRow(Base):
    """Plaintext evaluation scalars one client reported for one round."""

    __tablename__ = "round_metrics"
    __table_args__ = (UniqueConstraint("round_id", "client_id", name="uq_metric_client"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(Integer, ForeignKey("rounds.id"), index=True)
    client_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class DashboardSessionRow(Base):
    """A browser's dashboard sign-in: only the SHA-256 of the session id (the cookie's value)
    is stored, with the hash of the token it was opened with, so that a rotated admin token or
    a revoked client ends its sessions. Added after release 0.1: ``create_all`` creates it."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    credential_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class IdempotentAnswerRow(Base):
    """The first successful answer to a POST sent with an ``Idempotency-Key``, kept for replay.

    ``id`` is SHA-256 over the credential the caller presented and its key, so neither is
    stored; ``sealed`` is the answer encrypted under a key derived from both (it may hold a
    one-time token). See :mod:`fedsparsify.api.services.idempotency`.
    """

    __tablename__ = "idempotent_answers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


#: Columns added to existing tables after they first shipped: ``(table, column)``, nullable.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("clients", "last_seen_at"),
    ("clients", "signing_key"),
    ("clients", "mask_key"),
    ("clients", "removed_at"),
    ("rounds", "attempt"),
    ("rounds", "participants_digest"),
    ("rounds", "weights"),
    ("federations", "enrollment_expires_at"),
    ("federations", "enrollment_max_uses"),
    ("federations", "enrollment_uses"),
    ("federations", "enrollment_revoked_at"),
)


def add_missing_columns(engine: Engine) -> list[str]:
    """Add each of :data:`ADDED_COLUMNS` that an existing table lacks; idempotent.

    Returns the ``table.column`` names added. Two processes racing here is harmless: the loser's
    ``ALTER TABLE`` fails, and the column is then found present.
    """
    added: list[str] = []
    for table_name, column_name in ADDED_COLUMNS:
        if _has_column(engine, table_name, column_name):
            continue
        column = Base.metadata.tables[table_name].c[column_name]
        ddl = (
            f"ALTER TABLE {table_name} ADD COLUMN {column_name} "
            f"{column.type.compile(dialect=engine.dialect)}"
        )
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(ddl)
        except DBAPIError:
            if not _has_column(engine, table_name, column_name):
                raise
            continue
        log.warning("database from an older version: added column %s.%s", table_name, column_name)
        added.append(f"{table_name}.{column_name}")
    return added


def _has_column(engine: Engine, table_name: str, column_name: str) -> bool:
    return any(c["name"] == column_name for c in inspect(engine).get_columns(table_name))


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """An engine plus a session factory; one per app."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine, busy_timeout_ms)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Create missing tables, and add :data:`ADDED_COLUMNS` missing from older ones."""
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose open transaction is rolled back unless committed."""
        with self._factory() as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
