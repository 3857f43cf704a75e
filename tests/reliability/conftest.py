"""Fixtures of the reliability battery: a live server, and a recorder for the battery's report.

``benchmarks/reliability.py`` sets ``FEDSPARSIFY_RELIABILITY_RECORD`` to a JSON-lines file;
every test appends what it measured (cases, faults, memory) there. Without it, nothing is kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.live import LiveServer

Recorder = Callable[..., None]


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


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str | None:
    """The battery's live-server tests run on SQLite (embedded) and on PostgreSQL."""
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def server(tmp_path: Path, database_url: str | None) -> Iterator[LiveServer]:
    """A real ``fedsparsify serve`` on loopback, stopped afterwards."""
    srv = LiveServer(tmp_path, database_url=database_url)
    try:
        yield srv
    finally:
        srv.stop()
