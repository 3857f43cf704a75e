"""Fixtures of the reliability battery: a live server (the recorder is in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.live import LiveServer


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
