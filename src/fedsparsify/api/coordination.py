"""What aggregator processes sharing one database agree on: round locks, one leader, liveness.

- :meth:`Coordinator.round_lock` serialises everything that changes one round's files and state
  (uploads' commits, closing, recovery), across every process on the database.
- :meth:`Coordinator.try_lead` elects one process that runs the deadline checker and the sweeps
  of dead processes' leftovers, so that exactly one checker runs at a time.
- :meth:`Coordinator.claim_dead` tells whether the process that owns some temporary files (or
  metric samples) is gone, and holds that claim while they are cleaned up, so that no process
  ever removes the in-flight work of a live one.

Two implementations: :class:`LocalCoordinator` for embedded mode (SQLite: one process owns the
data directory, held with :class:`~fedsparsify.api.datadir.DataDirLock`, so locks are threading
locks and every other owner is dead), and
:class:`~fedsparsify.api.pg_coordination.PostgresCoordinator` (advisory locks).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from fedsparsify.api.datadir import DataDirLock

__all__ = ["Coordinator", "LocalCoordinator", "ThreadLocks", "new_instance_id"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def new_instance_id() -> str:
    """A name for this process, unique across hosts and restarts: ``host-pid-random``."""
    host = _UNSAFE.sub("_", socket.gethostname())[:48] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class Coordinator(Protocol):
    """Mutual exclusion and liveness among the processes that share one database."""

    instance_id: str

    def round_lock(self, federation_id: str, index: int) -> AbstractContextManager[None]:
        """Held while one round's files and state change."""
        ...

    def try_lead(self) -> bool:
        """Whether this process is (now) the one that runs the deadline checker and sweeps."""
        ...

    def claim_dead(self, instance_id: str) -> AbstractContextManager[bool]:
        """True (held for the block) when the process ``instance_id`` is gone for sure."""
        ...

    def check(self) -> None:
        """Raise when the coordination itself is broken (for ``/healthz``)."""
        ...

    def close(self) -> None:
        """Give up every lock."""
        ...


class ThreadLocks:
    """One :class:`threading.Lock` per key, made on first use."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: tuple[str, int]) -> Iterator[None]:
        """Hold the lock of ``key`` for the block."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


class LocalCoordinator:
    """Embedded mode: this process owns the data directory; everything else is dead."""

    def __init__(self, data_dir: Path, instance_id: str | None = None) -> None:
        self.instance_id = instance_id or new_instance_id()
        self._dir_lock = DataDirLock(data_dir)
        self._dir_lock.acquire()
        self._locks = ThreadLocks()

    def round_lock(self, federation_id: str, index: int) -> AbstractContextManager[None]:
        """A threading lock: no other process uses this data directory."""
        return self._locks.hold((federation_id, index))

    def try_lead(self) -> bool:
        """Always the leader."""
        return True

    @contextmanager
    def claim_dead(self, instance_id: str) -> Iterator[bool]:
        """Every owner but this process is dead: the data directory lock says so."""
        yield instance_id != self.instance_id

    def check(self) -> None:
        """Nothing to check: the lock lives as long as the process."""

    def close(self) -> None:
        """Release the data directory."""
        self._dir_lock.release()
