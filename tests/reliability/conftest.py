"""Fixtures of the reliability battery: a live server (the recorder is in ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.live import LiveServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``fedsparsify serve`` on loopback, stopped afterwards."""
    srv = LiveServer(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()
