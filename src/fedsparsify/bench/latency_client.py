"""One benchmark site: a separate process running the real client, with a probe on its steps.

It runs jobs from a queue (one job per benchmark row: a fresh federation), so the process and
its imports are paid once. Per job it starts a :class:`~fedsparsify.clients.runtime.ClientRuntime`
on a state directory whose identity the benchmark confirmed to every site (``peers``), which
registers, gets the CKKS key from the dealer and takes part in every round until the federation
completes, exactly as ``fedsparsify client`` does. Three hooks: a :class:`PhaseProbe` records
the seconds of each step (the codec's crypto phases included), training is replaced by taking
the untrained model's kept coordinates (:func:`untrained`), so the rounds carry real updates
of the right size without minutes of training in the way, and evaluation by nothing
(:func:`unevaluated`): four sites on two cores would otherwise run their BrainAge forward
passes while the others' phases are timed.
"""

from __future__ import annotations

import logging
import multiprocessing.queues
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedsparsify.clients.codec import CodecStats
from fedsparsify.clients.runtime import ClientRuntime
from fedsparsify.crypto import create_secret_context
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.rounds import LocalUpdate, Site

__all__ = [
    "CLIENT_PHASES",
    "ClientJob",
    "PhaseProbe",
    "client_main",
    "site_data",
    "split_phases",
    "unevaluated",
    "untrained",
]

log = logging.getLogger(__name__)

#: Client phases in round order; their sum is the client's round time (waiting excluded).
CLIENT_PHASES = (
    "mask_pack",
    "pairwise_mask",
    "encrypt",
    "serialise",
    "upload",
    "download",
    "deserialise",
    "decrypt",
    "unpack",
)
#: Training samples of every benchmark site (equal weights).
NUM_SAMPLES = 2
#: How often a site polls by default: the real client's default (every 10 ms, four sites loaded
#: the shared machine and the aggregator while the others' phases were timed).
POLL_S = 0.5
WAIT_LIMIT_S = 3600.0
#: torch's own thread count in a fresh process (one per core), for ``threads=0``.
_DEFAULT_THREADS = torch.get_num_threads()


@dataclass(frozen=True)
class ClientJob:
    """One benchmark row, as one site sees it."""

    url: str
    federation_id: str
    enrollment_token: str
    name: str
    state_dir: Path
    peers: Path
    preset: str
    rounds: int
    seed: int
    poll_s: float = POLL_S
    threads: int = 1
    evaluate: bool = False


def site_data(name: str, task: str, shape: tuple[int, ...], seed: int) -> SiteData:
    """A tiny synthetic data set of the model's input shape (two training volumes, one for
    validation): the runtime evaluates on it; the benchmark does not train."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((NUM_SAMPLES + 1, *shape), generator=gen)
    if task == "regression":
        y = 20.0 + 60.0 * torch.rand(NUM_SAMPLES + 1, generator=gen)
    else:
        y = torch.randint(0, 10, (NUM_SAMPLES + 1,), generator=gen)
    n = NUM_SAMPLES
    return SiteData(name, task, x[:n], y[:n], x[n:], y[n:])  # type: ignore[arg-type]


def untrained(site: Site) -> LocalUpdate:
    """What :meth:`Site.train` returns, without training: the round's global model's kept
    coordinates (what a site uploads, minus the local steps)."""
    plan = site.plan
    assert plan is not None
    return LocalUpdate(
        values=plan.layout.flatten(site.model.state_dict()),
        num_samples=site.data.num_samples,
        mask_digest=plan.mask_digest,
    )


def unevaluated(site: Site) -> dict[str, float]:
    """What stands in for :meth:`Site.evaluate`: no metrics. Evaluating is the model's compute,
    the same in every mode, and on a shared machine one site's evaluation (a forward pass of
    the BrainAge CNN on all cores) would slow the other sites' measured phases."""
    del site
    return {}


class PhaseProbe:
    """Collects the runtime's step seconds and codec stats by round."""

    def __init__(self) -> None:
        self.seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.stats: dict[int, dict[str, CodecStats]] = defaultdict(dict)

    def step(self, round_index: int, name: str, seconds: float, stats: CodecStats | None) -> None:
        """Record one step (the runtime's :class:`~fedsparsify.clients.runtime.RoundProbe`)."""
        self.seconds[round_index][name] += seconds
        if stats is not None:
            self.stats[round_index][name] = stats

    def records(self, name: str, rounds: int) -> list[dict[str, Any]]:
        """One record per round: the phases of its upload and of taking in its aggregate."""
        out = []
        for index in range(rounds):
            steps, stats = self.seconds[index], self.stats[index]
            encode, decode = stats.get("encode", CodecStats()), stats.get("decode", CodecStats())
            # Taking the aggregate in is the next round's "begin" (or "finish" after the last).
            take_in = self.seconds[index + 1].get("begin", 0.0) + steps.get("finish", 0.0)
            phases = split_phases(steps, encode, decode, take_in)
            own = sum(steps.get(k, 0.0) for k in ("train", "masks", "encode", "upload"))
            other = steps.get("take_part", 0.0) - own - self._catch_up(index)
            out.append(
                {
                    "client": name,
                    "round": index,
                    "n_kept": encode.values,
                    "upload_bytes": encode.bytes,
                    "download_bytes": decode.bytes,
                    "phases": phases,
                    "client_round_s": sum(phases.values()),
                    # roster check, evaluation, state files, metrics report: not in the phases
                    "other_s": max(0.0, other),
                }
            )
        return out

    def _catch_up(self, index: int) -> float:
        """Seconds of round ``index``'s attempt spent taking in the previous aggregate."""
        begin = self.seconds[index].get("begin", 0.0)
        if index == 0:
            return begin
        prev = self.seconds[index - 1]
        return prev.get("download", 0.0) + prev.get("decode", 0.0) + begin


def split_phases(
    steps: dict[str, float], encode: CodecStats, decode: CodecStats, take_in: float
) -> dict[str, float]:
    """Client phase seconds from the runtime's steps and the codec's stats: codec time outside
    its crypto phases (headers, file writes; reading headers, dividing by the weight) goes to
    ``serialise`` and ``unpack``, and so does writing the mean back into the model
    (``take_in``, the platform's begin of the next round), so that the phases add up to the
    measured wall time of those steps."""
    enc, dec = encode.phases, decode.phases
    return {
        "mask_pack": steps.get("train", 0.0) + enc.get("pack", 0.0),
        "pairwise_mask": steps.get("masks", 0.0) + enc.get("mask", 0.0),
        "encrypt": enc.get("encrypt", 0.0),
        "serialise": encode.seconds
        - enc.get("pack", 0.0)
        - enc.get("mask", 0.0)
        - enc.get("encrypt", 0.0),
        "upload": steps.get("upload", 0.0),
        "download": steps.get("download", 0.0),
        "deserialise": dec.get("deserialise", 0.0),
        "decrypt": dec.get("decrypt", 0.0),
        "unpack": decode.seconds - dec.get("deserialise", 0.0) - dec.get("decrypt", 0.0) + take_in,
    }


def run_job(job: ClientJob, warmed: set[str]) -> list[dict[str, Any]]:
    """Take part in every round of the job's federation; one record per round."""
    # Four sites share two cores here, where each would have a machine of its own: with torch's
    # default of one thread per core, their OpenMP workers spin while the others' phases are
    # timed (the aggregator's launcher sets OMP_NUM_THREADS=1 for the same reason). 0: default.
    torch.set_num_threads(job.threads or _DEFAULT_THREADS)
    if job.preset not in warmed:
        _warm_up(job.preset)
        warmed.add(job.preset)
    probe = PhaseProbe()

    def load(shape: tuple[int, ...]) -> SiteData:
        task = "regression" if len(shape) == 4 else "classification"
        return site_data(job.name, task, shape, job.seed)

    runtime = ClientRuntime(
        server=job.url,
        federation_id=job.federation_id,
        data_loader=load,
        state_dir=job.state_dir,
        enrollment_token=job.enrollment_token,
        name=job.name,
        poll_s=job.poll_s,
        peers=job.peers,
        probe=probe,
        train=untrained,
        evaluate=None if job.evaluate else unevaluated,
    )
    runtime.run(max_wait_s=WAIT_LIMIT_S)
    return probe.records(job.name, job.rounds)


def client_main(
    jobs: multiprocessing.queues.Queue[Any], results: multiprocessing.queues.Queue[Any]
) -> None:
    """Process entry point: run jobs until ``None``; report ``("done", name, records)`` or
    ``("error", name, message)`` for each."""
    logging.basicConfig(level=logging.WARNING)
    warmed: set[str] = set()
    while (job := jobs.get()) is not None:
        try:
            results.put(("done", job.name, run_job(job, warmed)))
        except Exception as exc:  # reported to the orchestrator, which stops the run
            log.exception("site %s failed", job.name)
            results.put(("error", job.name, f"{type(exc).__name__}: {exc}"))


def _warm_up(preset: str) -> None:
    """Encrypt and decrypt one chunk once per preset, so no round pays first-call costs."""
    import io

    import numpy as np

    from fedsparsify.crypto import decrypt_sum, encrypt_update

    ctx = create_secret_context(preset)
    x = np.zeros(ctx.preset.values_per_ciphertext, dtype=np.float32)
    decrypt_sum(ctx, io.BytesIO(b"".join(encrypt_update(ctx, x, weight=1.0, mask_digest="w"))))
