"""Fixtures shared by every test directory: the recorder of the reliability battery's report.

``benchmarks/reliability.py`` sets ``FEDSPARSIFY_RELIABILITY_RECORD`` to a JSON-lines file;
every battery test appends what it measured (cases, faults, memory, edge figures) there.
Without it, nothing is kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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
