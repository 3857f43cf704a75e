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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``fedsparsify serve`` on loopback, stopped afterwards."""
    srv = LiveServer(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()
