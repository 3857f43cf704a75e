"""A throwaway PostgreSQL server on loopback, for the tests and the replicas benchmark.

``initdb`` and ``pg_ctl`` (PostgreSQL 15 on this project's machines: found on ``PATH`` or under
``/usr/lib/postgresql/*/bin``) make a cluster in a temporary directory, listening on a free
127.0.0.1 port with trust authentication and no Unix socket. As root, they run as the
``postgres`` user (``runuser``), which owns the directory. ``durable=False`` turns fsync off
(tests: nothing there must survive a power cut); the benchmark keeps PostgreSQL's defaults, so
that it pays for durability as SQLite's ``synchronous=FULL`` does.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from fedsparsify.clients.launcher import free_port
from fedsparsify.errors import ConfigError

__all__ = ["LocalPostgres", "find_postgres_bin"]

log = logging.getLogger(__name__)

SERVICE_USER = "postgres"


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` (the newest version), or None."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "pg_ctl").is_file() and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    return None


class LocalPostgres:
    """``start()`` a cluster, ``url(db)`` for SQLAlchemy, ``create_database``, ``stop()``."""

    def __init__(self, *, durable: bool = False, max_connections: int = 300) -> None:
        found = find_postgres_bin()
        if found is None:
            raise ConfigError(
                "PostgreSQL not found (initdb and pg_ctl on PATH or under "
                "/usr/lib/postgresql/*/bin); install postgresql (Debian: apt-get install "
                "postgresql)"
            )
        self.bin_dir: Path = found
        self.durable = durable
        self.max_connections = max_connections
        self.port = 0
        self.root: Path | None = None
        self._as_root = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self._as_root:
            command = ["runuser", "-u", SERVICE_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConfigError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()}")

    def start(self) -> LocalPostgres:
        """initdb in a fresh temporary directory and start the server; waits until it accepts."""
        self.root = Path(tempfile.mkdtemp(prefix="fedsparsify-pg-"))
        if self._as_root:
            shutil.chown(self.root, SERVICE_USER, SERVICE_USER)
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.port = free_port()
        options = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            "-c unix_socket_directories=''",
            f"-c max_connections={self.max_connections}",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
            "-o", " ".join(options), "start",
        )  # fmt: skip
        log.info("PostgreSQL on 127.0.0.1:%d (%s)", self.port, self.root)
        return self

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of ``database`` on this server (psycopg 3)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        if not name.replace("_", "").isalnum():
            raise ConfigError(f"bad database name {name!r}")
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still on it."""
        if not name.replace("_", "").isalnum():
            raise ConfigError(f"bad database name {name!r}")
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        if self.root is None:
            return
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        except ConfigError as exc:
            log.warning("PostgreSQL did not stop cleanly: %s", exc)
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
