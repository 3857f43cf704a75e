"""Load: many sites upload full-size encrypted updates to one round at once.

Encrypting 32 distinct 2.9 M-value updates costs about a minute on two cores, so ``distinct``
updates are encrypted and their ciphertext frames reused by several sites: only the stream's
header (which names the contributor) differs per site. Every site has the same sample count, so
the expected average is the mean of the sites' vectors (each distinct one counted as often as it
is reused). The aggregator's resident memory is sampled with psutil throughout.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from fedsparsify.crypto import encrypt_update
from fedsparsify.platform.models import build_model, count_trainable
from fedsparsify.platform.spec import ModelSpec
from tests.reliability.live import MASK, Federation, LiveServer, expected_average
from tests.sites import binding_of

__all__ = ["BRAINAGE", "LoadResult", "brainage_size", "run_load"]

#: The full-size BrainAge model: T1 volumes of 91 x 109 x 91 voxels, width 32.
BRAINAGE = ModelSpec(kind="brainage", input_shape=(1, 91, 109, 91), width=32)
MIB = 1 << 20


def brainage_size() -> int:
    """Trainable parameters of :data:`BRAINAGE` (2,948,801), from the real model."""
    return count_trainable(build_model(BRAINAGE, seed=0))


@dataclass
class RssSampler:
    """Samples a process's RSS every ``interval_s`` on a background thread."""

    pid: int
    interval_s: float = 0.05
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._proc = psutil.Process(self.pid)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - start, self._proc.memory_info().rss))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    clients: int
    n_values: int
    distinct_updates: int
    upload_bytes: int
    statuses: dict[int, int]
    accepted: int
    lost: int
    seconds: float
    rss_baseline_mib: float
    rss_peak_mib: float
    rss_end_mib: float
    rss_first_quarter_peak_mib: float
    rss_last_quarter_peak_mib: float
    rss_slope_mib_per_upload: float
    max_abs_error: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in vars(self).items()}
        out["max_abs_error"] = self.max_abs_error
        return out


def _bodies(
    fed: Federation, server: LiveServer, n_values: int, distinct: int
) -> tuple[list[bytes], np.ndarray]:
    """One upload body per site, and the expected average."""
    dealer = fed.sites[0]
    assert dealer.key_set is not None
    rng = np.random.default_rng(42)
    weight = 1.0 / len(fed.sites)
    binding = binding_of(fed.round(server, 0), fed.id)
    heads: list[bytes] = []
    frames: list[bytes] = []
    vectors: list[np.ndarray] = []
    for _ in range(distinct):
        v = rng.normal(0, 0.05, n_values).astype(np.float32)
        stream = encrypt_update(
            dealer.key_set,
            v,
            weight=weight,
            mask_digest=MASK,
            contributor=dealer.client_id,
            binding=binding,
        )
        heads.append(next(stream))
        frames.append(b"".join(stream))
        vectors.append(v)
    bodies = []
    for j, site in enumerate(fed.sites):
        assert len(site.client_id) == len(dealer.client_id)  # same header length
        head = heads[j % distinct].replace(dealer.client_id.encode(), site.client_id.encode())
        bodies.append(head + frames[j % distinct])
    used = [vectors[j % distinct] for j in range(len(fed.sites))]
    return bodies, expected_average(used, [1.0] * len(used))


def _slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def run_load(
    server: LiveServer, *, clients: int = 32, n_values: int, distinct: int = 8
) -> LoadResult:
    """``clients`` sites upload to one round at once; returns statuses, memory and error."""
    # Unmasked: the server's work per upload is the same with or without pairwise masks, and
    # without them one encrypted update can be reused by several sites (only the header differs).
    fed = Federation.create(
        server, [100] * clients, rounds=1, round_timeout_s=3600, pairwise_masks=False
    )
    bodies, want = _bodies(fed, server, n_values, distinct)
    done: list[float] = []
    with RssSampler(server.pid) as rss:
        time.sleep(0.5)  # baseline
        started = time.monotonic()

        def send(j: int) -> int:
            r = fed.upload(server, fed.sites[j], 0, bodies[j])
            done.append(time.monotonic() - started + 0.5)
            return r.status_code

        with ThreadPoolExecutor(max_workers=clients) as pool:
            statuses = list(pool.map(send, range(clients)))
        seconds = time.monotonic() - started
        rnd = fed.wait_state(server, 0, ("closed", "failed"), timeout_s=300)
        time.sleep(0.5)
    samples = rss.samples
    baseline = max(s[1] for s in samples if s[0] <= 0.5) / MIB
    peak = max(s[1] for s in samples) / MIB
    # RSS at each completed upload, against the number of uploads done so far.
    done.sort()
    per_upload = []
    for k, t in enumerate(done, start=1):
        near = min(samples, key=lambda s, t=t: abs(s[0] - t))
        per_upload.append((float(k), near[1] / MIB))
    quarter = max(1, clients // 4)
    first_q = max(v for _, v in per_upload[:quarter])
    last_q = max(v for _, v in per_upload[-quarter:])
    contributors, avg = fed.decrypted_average(server, fed.sites[0], 0)
    accepted = sum(1 for s in statuses if s == 201)
    lost = clients - len(set(rnd.get("contributors") or []) & contributors)
    return LoadResult(
        clients=clients,
        n_values=n_values,
        distinct_updates=distinct,
        upload_bytes=len(bodies[0]),
        statuses={s: statuses.count(s) for s in sorted(set(statuses))},
        accepted=accepted,
        lost=lost,
        seconds=seconds,
        rss_baseline_mib=baseline,
        rss_peak_mib=peak,
        rss_end_mib=samples[-1][1] / MIB,
        rss_first_quarter_peak_mib=first_q,
        rss_last_quarter_peak_mib=last_q,
        rss_slope_mib_per_upload=_slope(per_upload),
        max_abs_error=float(np.abs(avg - want).max()),
    )
