"""Coordination of several aggregator processes through PostgreSQL advisory locks.

Session-level advisory locks live as long as the connection that took them, so a process that
dies (``kill -9``, a crash, a host gone) loses them as soon as PostgreSQL notices its connection
is gone (at once on a closed socket; within about 25 s on a silent host, through TCP keepalives
set on every lock connection). Locks are ``pg_advisory_lock(namespace, key)`` pairs of 32-bit
integers; the namespaces below keep them apart from other users of the database.

- Round lock: ``(ROUND, hash(federation, round))``, taken on a pooled connection for the block
  (and behind a threading lock, so one thread per process waits on the database). A collision
  of two rounds' hashes only makes them wait for each other.
- Leader: ``(LEADER, 0)``, kept on a dedicated connection by the process that got it.
- Instance: ``(INSTANCE, hash(instance id))``, kept by every process for its lifetime; another
  process that can take it knows the owner is dead. A hash collision only makes a dead owner
  look alive (its leftovers stay): it never makes a live one look dead.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from fedsparsify.api.coordination import ThreadLocks, new_instance_id
from fedsparsify.errors import ConfigError, UnavailableError

__all__ = [
    "INSTANCE",
    "LEADER",
    "ROUND",
    "SCHEMA",
    "PostgresCoordinator",
    "advisory_key",
    "live_instances",
    "lock_connect_args",
]

log = logging.getLogger(__name__)

#: Advisory lock namespaces ("FS" and a kind), the first of the two 32-bit keys.
ROUND = 0x46530001
LEADER = 0x46530002
INSTANCE = 0x46530003
SCHEMA = 0x46530004

#: A round lock not granted within this many seconds gives up (503: the client retries).
ROUND_LOCK_TIMEOUT_S = 300
#: TCP keepalives on lock connections: a silent peer is noticed after idle + count * interval.
_KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}


def advisory_key(*parts: object) -> int:
    """A signed 32-bit key from ``parts`` (SHA-256)."""
    raw = hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(raw[:4], "big", signed=True)


def lock_connect_args(url: str, application_name: str) -> dict[str, Any]:
    """psycopg connection arguments: a name for ``pg_stat_activity`` and TCP keepalives on both
    ends, so that a dead peer's locks are released within seconds."""
    server_side = " ".join(f"-c tcp_keepalives_{k}={v}" for k, v in _KEEPALIVE.items())
    existing = make_url(url).query.get("options")
    if isinstance(existing, str) and existing:
        server_side = f"{existing} {server_side}"
    return {
        "application_name": application_name[:63],
        "keepalives": 1,
        "keepalives_idle": _KEEPALIVE["idle"],
        "keepalives_interval": _KEEPALIVE["interval"],
        "keepalives_count": _KEEPALIVE["count"],
        "options": server_side,
    }


def live_instances(connection: Connection) -> list[str]:
    """``application_name`` of every aggregator process that holds its instance lock now."""
    rows = connection.execute(
        text(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = :ns "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"ns": INSTANCE},
    ).all()
    return sorted(str(r[0]) for r in rows)


def _try_lock(conn: Connection, namespace: int, key: int) -> bool:
    got = conn.execute(
        text("SELECT pg_try_advisory_lock(:ns, :key)"), {"ns": namespace, "key": key}
    ).scalar()
    return bool(got)


def _unlock(conn: Connection, namespace: int, key: int) -> None:
    conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), {"ns": namespace, "key": key})


def _alive(conn: Connection | None) -> bool:
    if conn is None:
        return False
    try:
        conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


def _drop(conn: Connection | None) -> None:
    if conn is None:
        return
    with suppress(SQLAlchemyError):
        conn.invalidate()  # closes the socket: PostgreSQL releases its locks
        conn.close()


class PostgresCoordinator:
    """Round locks, leadership and liveness for N processes on one PostgreSQL database."""

    def __init__(self, url: str, instance_id: str | None = None) -> None:
        self.instance_id = instance_id or new_instance_id()
        self._key = advisory_key("instance", self.instance_id)
        self.engine: Engine = create_engine(
            url,
            pool_size=2,
            max_overflow=8,
            pool_pre_ping=True,
            isolation_level="AUTOCOMMIT",
            connect_args=lock_connect_args(url, f"fedsparsify {self.instance_id}"),
        )
        self._threads = ThreadLocks()
        self._guard = threading.Lock()  # check() and try_lead() run on several threads
        self._leader: Connection | None = None
        self._instance: Connection | None = None
        try:
            self._instance = self._take_instance_lock()
        except OperationalError as exc:
            self.engine.dispose()
            raise ConfigError(f"cannot reach the database: {exc.orig}") from exc

    def _take_instance_lock(self) -> Connection:
        conn = self.engine.connect()
        if not _try_lock(conn, INSTANCE, self._key):
            _drop(conn)
            raise ConfigError(f"instance id {self.instance_id!r} is held by a live process")
        return conn

    @contextmanager
    def round_lock(self, federation_id: str, index: int) -> Iterator[None]:
        """The round's advisory lock, on a connection held for the block."""
        key = advisory_key("round", federation_id, index)
        with self._threads.hold((federation_id, index)):
            conn = self.engine.connect()
            try:
                conn.execute(text(f"SET lock_timeout = '{ROUND_LOCK_TIMEOUT_S}s'"))
                conn.execute(text("SELECT pg_advisory_lock(:ns, :key)"), {"ns": ROUND, "key": key})
            except DBAPIError as exc:
                _drop(conn)
                raise UnavailableError(
                    f"round {index} is busy in another aggregator process; try again"
                ) from exc
            try:
                yield
            finally:
                try:
                    _unlock(conn, ROUND, key)
                    conn.close()
                except DBAPIError:
                    log.error("round %d lock: its connection broke while held", index)
                    _drop(conn)

    def try_lead(self) -> bool:
        """Keep or take the leader lock; False while another live process holds it."""
        with self._guard:
            return self._try_lead()

    def _try_lead(self) -> bool:
        if self._leader is not None:
            if _alive(self._leader):
                return True
            log.warning("lost the leader lock's connection; trying to lead again")
            _drop(self._leader)
            self._leader = None
        try:
            conn = self.engine.connect()
        except DBAPIError:
            return False
        try:
            got = _try_lock(conn, LEADER, 0)
        except DBAPIError:
            _drop(conn)
            return False
        if not got:
            conn.close()
            return False
        self._leader = conn
        log.info("instance %s leads: deadline checks and sweeps run here", self.instance_id)
        return True

    @contextmanager
    def claim_dead(self, instance_id: str) -> Iterator[bool]:
        """Take a process's instance lock: granted only when that process is gone."""
        if instance_id == self.instance_id:
            yield False
            return
        key = advisory_key("instance", instance_id)
        conn = self.engine.connect()
        try:
            got = _try_lock(conn, INSTANCE, key)
            try:
                yield got
            finally:
                if got:
                    _unlock(conn, INSTANCE, key)
        finally:
            conn.close()

    def check(self) -> None:
        """Make sure this process still holds its instance lock (re-take it after a lost
        connection); :class:`UnavailableError` when the database cannot be reached."""
        with self._guard:
            self._check()

    def _check(self) -> None:
        if _alive(self._instance):
            return
        _drop(self._instance)
        self._instance = None
        try:
            self._instance = self._take_instance_lock()
        except (DBAPIError, ConfigError) as exc:
            raise UnavailableError(f"lost this process's database lock: {exc}") from exc
        log.warning("instance %s: the lock connection broke and was re-taken", self.instance_id)

    def close(self) -> None:
        """Release every lock and connection (unlocked before the sockets close, so that
        another process sees them free at once)."""
        with self._guard:
            self._close()

    def _close(self) -> None:
        for conn in (self._leader, self._instance):
            if conn is not None:
                with suppress(SQLAlchemyError):
                    conn.execute(text("SELECT pg_advisory_unlock_all()"))
                with suppress(SQLAlchemyError):
                    conn.close()
        self._leader = self._instance = None
        self.engine.dispose()
