"""One process per data directory in embedded (SQLite) mode.

The aggregator holds an exclusive ``flock`` on ``aggregator.lock`` in its data directory for as
long as it runs, with its pid, host and start time written in the file. A second process on the
same directory cannot take the lock and stops at once with an error naming the holder. The
kernel drops the lock when the holder exits in any way (``kill -9`` included), so a stale file
never blocks a restart. ``flock`` locks belong to an open file, not to a process: a second
:class:`DataDirLock` in the same process is refused too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from fedsparsify.errors import ConfigError

__all__ = ["LOCK_NAME", "DataDirLock", "read_holder"]

log = logging.getLogger(__name__)

LOCK_NAME = "aggregator.lock"


def read_holder(path: Path) -> dict[str, Any]:
    """What the lock file says about its holder (empty when unreadable)."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


class DataDirLock:
    """An exclusive lock on a data directory, held until :meth:`release`."""

    def __init__(self, data_dir: Path, *, purpose: str = "fedsparsify serve") -> None:
        self.path = data_dir / LOCK_NAME
        self.purpose = purpose
        self._fh: IO[str] | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fh is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ConfigError` naming the process that holds it."""
        if self._fh is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise ConfigError(self._in_use_message()) from None
        except OSError as exc:
            fh.close()
            raise ConfigError(f"cannot lock {self.path}: {exc.strerror}") from exc
        fh.seek(0)
        fh.truncate()
        json.dump(
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "purpose": self.purpose,
            },
            fh,
        )
        fh.flush()
        os.fsync(fh.fileno())
        self._fh = fh
        log.debug("locked data directory %s", self.path.parent)

    def _in_use_message(self) -> str:
        holder = read_holder(self.path)
        who = (
            f"{holder.get('purpose', 'a process')} (pid {holder.get('pid', '?')} on host "
            f"{holder.get('host', '?')}, since {holder.get('since', '?')})"
            if holder
            else "another process (it has not written its pid yet)"
        )
        return (
            f"data directory {self.path.parent} is in use by {who}. In embedded mode (SQLite) "
            "one process owns a data directory: stop that one first, or run several aggregator "
            "processes on PostgreSQL (--database-url postgresql+psycopg://...)"
        )

    def release(self) -> None:
        """Give the lock up (the file stays; its content no longer matters)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            fh.close()

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
