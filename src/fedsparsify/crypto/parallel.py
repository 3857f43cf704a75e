"""Encrypt and decrypt an update's frames in a few worker processes, in order.

Frames are independent (each has its own chunk of values, its own pairwise mask
``PairwiseMasker.frame_mask(frame, ...)`` and its own seed), and TenSEAL does not parallelise
one process's encryption, so a site with idle cores can spread an update's frames over worker
processes. Each worker holds the site's secret context, sent once when it starts (a child of
this process, on this machine: nothing leaves the site). Work goes out in batches of frames, at
most two batches per worker in flight, and comes back in order, so memory stays at a few
batches whatever the update's size.

Whether it pays depends on the update's size and on idle cores: ``fedsparsify bench pool``
measures the crossover. :class:`FramePool` is off unless a caller builds one.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from fedsparsify.crypto.context import Frame, SecretContext
from fedsparsify.crypto.pairwise import PairwiseMasker
from fedsparsify.errors import ConfigError

__all__ = ["FramePool"]

log = logging.getLogger(__name__)

_worker_ctx: SecretContext | None = None


def _init_worker(secret_bytes: bytes) -> None:
    global _worker_ctx
    _worker_ctx = SecretContext.from_secret_bytes(secret_bytes)


def _encrypt_batch(
    first: int, chunks: list[np.ndarray], masker: PairwiseMasker | None
) -> list[bytes]:
    ctx = _worker_ctx
    assert ctx is not None
    moduli, ring = ctx.public().moduli, ctx.preset.poly_modulus_degree
    out = []
    for offset, chunk in enumerate(chunks):
        mask = masker.frame_mask(first + offset, moduli, ring) if masker is not None else None
        out.append(ctx._encrypt_chunk(chunk, mask=mask))
    return out


def _decrypt_batch(frames: list[tuple[Frame, int]]) -> list[np.ndarray]:
    ctx = _worker_ctx
    assert ctx is not None
    return [ctx._decrypt_frame(frame, count) for frame, count in frames]


class FramePool:
    """``workers`` processes holding ``ctx``; use as a context manager or :meth:`close` it."""

    def __init__(self, ctx: SecretContext, *, workers: int = 2, batch: int = 8) -> None:
        if not isinstance(ctx, SecretContext):
            raise ConfigError("a frame pool needs the secret context")
        if workers < 1 or batch < 1:
            raise ConfigError("a frame pool needs at least one worker and one frame per batch")
        self.context = ctx
        self.workers = workers
        self.batch = batch
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(ctx.secret_bytes(),),
        )

    def __enter__(self) -> FramePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def warm_up(self) -> None:
        """Start every worker now (spawning and loading the key take a moment)."""
        futures = [self._executor.submit(_decrypt_batch, []) for _ in range(self.workers)]
        for future in futures:
            future.result()

    def encrypt(
        self, chunks: Iterable[np.ndarray], masker: PairwiseMasker | None
    ) -> Iterator[bytes]:
        """The packed payload of each chunk (frame ``i`` masked with ``masker``), in order."""
        jobs = self._batches(chunks)
        return self._ordered(
            self._executor.submit(_encrypt_batch, first, batch, masker) for first, batch in jobs
        )

    def decrypt(self, frames: Iterable[tuple[Frame, int]]) -> Iterator[np.ndarray]:
        """The values of each (frame, value count), in order."""
        return self._ordered(
            self._executor.submit(_decrypt_batch, batch) for _first, batch in self._batches(frames)
        )

    def _batches(self, items: Iterable[Any]) -> Iterator[tuple[int, list[Any]]]:
        batch: list[Any] = []
        first = 0
        for item in items:
            batch.append(item)
            if len(batch) == self.batch:
                yield first, batch
                first += len(batch)
                batch = []
        if batch:
            yield first, batch

    def _ordered(self, submissions: Iterator[Future[list[Any]]]) -> Iterator[Any]:
        window: deque[Future[list[Any]]] = deque()
        for future in submissions:
            window.append(future)
            if len(window) >= 2 * self.workers:
                yield from window.popleft().result()
        while window:
            yield from window.popleft().result()
