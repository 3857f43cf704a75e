"""Fixtures shared by every test directory.

- A real PostgreSQL server, started once when a test first needs it:
  :class:`fedsparsify.bench.postgres.LocalPostgres` (``initdb`` + ``pg_ctl`` on a temporary
  directory and a free loopback port, as the ``postgres`` user when run as root). Each test that
  asks for ``pg_url`` gets a database of its own, dropped afterwards. PostgreSQL is part of this
  project's machines and CI; where it is missing the tests fail and say so, unless
  ``FEDSPARSIFY_SKIP_POSTGRES=1`` asks to skip them.
- The recorder of the reliability battery's report: ``benchmarks/reliability.py`` sets
  ``FEDSPARSIFY_RELIABILITY_RECORD`` to a JSON-lines file; every battery test appends what it
  measured (cases, faults, memory, edge figures, replicas) there. Without it, nothing is kept.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedsparsify.bench.postgres import LocalPostgres, find_postgres_bin

Recorder = Callable[..., None]

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One PostgreSQL server for the whole session."""
    if os.environ.get("FEDSPARSIFY_SKIP_POSTGRES") == "1":
        pytest.skip("FEDSPARSIFY_SKIP_POSTGRES=1")
    if find_postgres_bin() is None:
        pytest.fail(
            "PostgreSQL 15 (initdb, pg_ctl) is needed by these tests and was not found; "
            "install it, or set FEDSPARSIFY_SKIP_POSTGRES=1 to skip them"
        )
    with LocalPostgres(durable=False) as server:
        yield server


@pytest.fixture
def pg_url(postgres: LocalPostgres) -> Iterator[str]:
    """A fresh, empty database on the session's server (SQLAlchemy URL)."""
    name = f"test_{os.getpid()}_{next(_databases)}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Recorder:
    """``record(kind, **fields)`` appends one JSON line to the battery's record, if any."""
    target = os.environ.get("FEDSPARSIFY_RELIABILITY_RECORD")

    def write(kind: str, **fields: Any) -> None:
        if not target:
            return
        line = {"kind": kind, "test": request.node.nodeid, **fields}
        with Path(target).open("a") as out:
            out.write(json.dumps(line) + "\n")

    return write
