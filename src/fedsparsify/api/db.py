"""Storage of federation state: SQLAlchemy 2 models, engine and sessions.

Two engines are supported: SQLite (the default, a file in the data directory; one process) and
PostgreSQL (``postgresql+psycopg://``; any number of aggregator processes). SQLite is set up
for a server: WAL journal, ``synchronous=FULL`` (a committed upload survives a power cut), a
busy timeout and foreign keys. :meth:`Database.session` is for transactions that write: on
SQLite they start with ``BEGIN IMMEDIATE``, so concurrent writers wait for each other instead
of failing on a lock upgrade; the writing transactions of this process also queue on a lock
of their own from ``BEGIN`` to ``COMMIT`` or ``ROLLBACK``: SQLite's busy handler polls with
sleeps of up to 100 ms, so a writer waiting inside SQLite can sleep on long after the lock is
free, where one waiting on a Python lock starts the moment the other ends (SQLite's busy timeout
still holds across processes). :meth:`Database.read` is for transactions that only read: a
deferred ``BEGIN`` that takes no lock, so under WAL a polling GET never waits for an upload's
commit (a read session must not write; SQLite refuses the upgrade when another writer came
first).

The schema is made and changed only by the Alembic revisions in
:mod:`fedsparsify.api.migrations` (see :mod:`fedsparsify.api.schema`); every change to the models
here comes with a revision, and a test checks that the revisions produce exactly these models.

Times are stored as UNIX seconds (floats): portable across databases and free of time zones.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from fedsparsify.errors import ConfigError

__all__ = [
    "Base",
    "ClientRow",
    "DashboardSessionRow",
    "Database",
    "FederationRow",
    "IdempotentAnswerRow",
    "MetricSampleRow",
    "RoundMetricRow",
    "RoundRow",
    "ServerSecretRow",
    "UploadRow",
    "now",
    "redact",
]

log = logging.getLogger(__name__)

ID_LENGTH = 32
#: Counts that may pass 2^31 (samples, bytes): BIGINT on PostgreSQL; SQLite's INTEGER is 64-bit.
COUNT = BigInteger().with_variant(Integer(), "sqlite")


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


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
    #: Format of ``spec`` (:data:`fedsparsify.platform.spec_compat.SPEC_VERSION` when written);
    #: rows from release 0.1 read 1.
    spec_version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
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
    num_samples: Mapped[int] = mapped_column(COUNT)
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
    total_samples: Mapped[int] = mapped_column(COUNT)
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
    bytes: Mapped[int] = mapped_column(COUNT)
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
    a revoked client ends its sessions."""

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


class MetricSampleRow(Base):
    """One Prometheus sample of one aggregator process (PostgreSQL mode): ``/metrics`` answers
    the sum over every process, so counters add up across replicas."""

    __tablename__ = "metric_samples"

    instance: Mapped[str] = mapped_column(String(96), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    labels: Mapped[str] = mapped_column(String(512), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, writer: threading.Lock) -> None:
    wait_s = busy_timeout_ms / 1000.0

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
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        # This process's writers queue here, where a release wakes the next one at once;
        # after the busy timeout, go on and let SQLite's own busy handling decide.
        if not read_only and writer.acquire(timeout=wait_s):
            conn.info[_WRITER] = True
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    def _release(info: dict[str, Any]) -> None:
        if info.pop(_WRITER, False):
            writer.release()

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: Any) -> None:
        if not conn.invalidated:  # else released on invalidation (and info would reconnect)
            _release(conn.info)

    # A connection reset, given back, invalidated or closed without commit or rollback.
    @event.listens_for(engine, "reset")
    def _on_reset(_dbapi_connection: Any, record: Any, _reset_state: Any) -> None:
        _release(record.info)

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(_dbapi_connection: Any, record: Any, _exception: Any) -> None:
        _release(record.info)

    @event.listens_for(engine, "checkin")
    @event.listens_for(engine, "close")
    def _on_gone(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            _release(record.info)


#: ``Connection.info`` key: this connection's transaction holds the process's writer lock.
_WRITER = "fedsparsify_writer"
_READ_ONLY = "fedsparsify_read_only"


class Database:
    """An engine plus session factories (writing and read-only); one per app."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 10_000, pool_size: int = 5) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgresql = url.startswith("postgresql")
        kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": 2 * pool_size}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = create_engine(url, **kwargs)
        except (ArgumentError, ImportError) as exc:
            raise ConfigError(f"database URL {redact(url)!r}: {exc}") from exc
        #: This process's SQLite writers queue on it (see the module's docstring).
        self._writer = threading.Lock()
        if self.is_sqlite:
            _configure_sqlite(self.engine, busy_timeout_ms, self._writer)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        self._read_factory = sessionmaker(
            self.engine.execution_options(**{_READ_ONLY: True}), expire_on_commit=False
        )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for a transaction that writes (``BEGIN IMMEDIATE`` on SQLite); its open
        transaction is rolled back unless committed."""
        with self._factory() as session:
            try:
                yield session
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for a transaction that only reads (deferred on SQLite: no lock taken)."""
        with self._read_factory() as session:  # closing ends the transaction
            yield session

    def ping(self) -> None:
        """Run ``SELECT 1``; raises the driver's error when the database cannot answer."""
        with self.read() as session:
            session.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
