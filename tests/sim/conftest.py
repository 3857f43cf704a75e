"""One small private Ray cluster for the simulation tests: 2 CPUs, 80 MiB of object store, on
loopback, no dashboard; started on first use and shut down at the end of the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

# Before Ray's first import: no usage reporting, every Ray process on 127.0.0.1.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

RAY_CPUS = 2
RAY_OBJECT_STORE = 80 * 1024 * 1024


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """The ``ray`` module with this session's cluster up; :class:`RayEngine` reuses it."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            num_cpus=RAY_CPUS,
            object_store_memory=RAY_OBJECT_STORE,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    yield ray
    ray.shutdown()
