"""SEAL byte I/O: per-thread scratch files, fresh after a fork, nothing left on the disk."""

from __future__ import annotations

import io
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from fedsparsify.crypto import SecretContext, _seal, add_updates, decrypt_sum
from tests.crypto._helpers import stream, values


def test_threads_encrypt_and_add_concurrently(lean: SecretContext) -> None:
    xs = [values(9000, seed=i) for i in range(8)]

    def round_trip(x: np.ndarray) -> float:
        out = io.BytesIO()
        add_updates(lean.public(), [io.BytesIO(stream(lean, x, weight=1.0))], out)
        out.seek(0)
        _, total = decrypt_sum(lean, out)
        return float(np.abs(total - x).max())

    with ThreadPoolExecutor(4) as pool:
        errors = list(pool.map(round_trip, xs))
    assert max(errors) < 1e-6


def test_each_thread_has_its_own_scratch_file() -> None:
    barrier = threading.Barrier(2)

    def path(_: int) -> str:
        scratch = _seal._scratch()
        barrier.wait(timeout=10)  # both threads (and their scratch files) alive at once
        return scratch.path

    with ThreadPoolExecutor(2) as pool:
        paths = set(pool.map(path, range(2)))
    assert len(paths) == 2


def test_a_forked_process_gets_a_fresh_scratch_file(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _seal._scratch()
    monkeypatch.setattr(os, "getpid", lambda: before.pid + 1)
    after = _seal._scratch()
    assert after is not before and after.pid == before.pid + 1


def test_nothing_is_left_in_the_scratch_directory(lean: SecretContext) -> None:
    base = _seal._BASE_DIR or tempfile.gettempdir()
    ours = {n for n in os.listdir(base) if n.startswith("fedsparsify-seal-")}
    SecretContext.from_secret_bytes(lean.secret_bytes())
    decrypt_sum(lean, [stream(lean, values(100))])
    if _seal._USE_PROC_FD:
        assert {n for n in os.listdir(base) if n.startswith("fedsparsify-seal-")} == ours
        assert os.fstat(_seal._scratch().file.fileno()).st_nlink == 0  # type: ignore[union-attr]


def test_secret_key_bytes_do_not_linger(lean: SecretContext) -> None:
    SecretContext.from_secret_bytes(lean.secret_bytes())
    assert _seal._scratch().read() == b""
