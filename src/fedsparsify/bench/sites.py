"""A pool of benchmark site processes (``multiprocessing`` spawn), fed one job per row."""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Sequence
from typing import Any

from fedsparsify.bench.latency_client import ClientJob, client_main
from fedsparsify.errors import FedsparsifyError

__all__ = ["SitePool"]


class SitePool:
    """``n`` long-lived site processes; each runs one :class:`ClientJob` per benchmark row."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.results: Any = ctx.Queue()
        self._jobs: list[Any] = [ctx.Queue() for _ in range(n)]
        self._procs = [
            ctx.Process(target=client_main, args=(q, self.results), name=f"site-{k}", daemon=True)
            for k, q in enumerate(self._jobs)
        ]
        self._closed = False
        for proc in self._procs:
            proc.start()

    @property
    def size(self) -> int:
        """Number of site processes."""
        return len(self._procs)

    def submit(self, jobs: Sequence[ClientJob]) -> None:
        """Give job ``k`` to process ``k``."""
        if len(jobs) != len(self._jobs):
            raise FedsparsifyError(f"{len(jobs)} jobs for {len(self._jobs)} site processes")
        for q, job in zip(self._jobs, jobs, strict=True):
            q.put(job)

    def expect(self, kind: str, *, timeout_s: float = 3600.0) -> list[Any]:
        """Wait for one ``kind`` message from every process; raise on a site's error."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < len(self._procs):
            if time.monotonic() > deadline:
                raise FedsparsifyError(f"sites: timed out waiting for {kind!r}")
            try:
                message = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.name for p in self._procs if not p.is_alive()]
                if dead:
                    raise FedsparsifyError(f"site processes died: {dead}") from None
                continue
            if message[0] == "error":
                raise FedsparsifyError(f"{message[1]} failed: {message[2]}")
            if message[0] != kind:
                raise FedsparsifyError(f"sites: expected {kind!r}, got {message[0]!r}")
            got.append(message)
        return got

    def close(self) -> None:
        """Ask every process to stop; terminate those that do not within a few seconds."""
        if self._closed:
            return
        self._closed = True
        for q in self._jobs:
            q.put(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
