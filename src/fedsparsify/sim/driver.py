"""The simulation's driver: the federation's rounds over N simulated sites on an engine.

Per round: sample the participants (:mod:`.sampling`), compute their capped weights and the
participant-set digest over their mask keys, bind the round (:class:`RoundBinding`), put the
round's job (previous global state, previous encrypted aggregate, keys) once into the engine,
and run every participant's :func:`~fedsparsify.sim.site_round.run_site_round`. Their encrypted
updates are added into a running sum as they arrive (:class:`.RunningSum`); the driver holds at
most a window of sites in flight and a few updates, so its memory does not grow with N.

The driver also plays one observer site (the "global" site, holding the test set and the CKKS
secret key, as every member does): it decrypts each aggregate, evaluates the global model on the
test set, and begins the next round with it; its state is what the next round's sites restore
before they decrypt the same aggregate themselves, so every site trains from the same model.
Every site of a real federation catches up on every aggregate; a simulated one restores the
global state instead, which is the same bits (decryption, rounding and pruning are
deterministic). What a simulation leaves out: registration, key envelopes (the driver creates
the key set and hands it to the sites), deadlines and dropouts (a failed site ends the run).
"""

from __future__ import annotations

import logging
import math
import resource
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.crypto import RoundBinding, create_secret_context, participants_digest
from fedsparsify.errors import ConfigError, MaskError
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.masks import sparsity
from fedsparsify.platform.round_rules import channels_for
from fedsparsify.platform.rounds import GlobalUpdate, Site, check_compatible
from fedsparsify.platform.spec import FederationSpec
from fedsparsify.sim.engines import Engine
from fedsparsify.sim.running_sum import RunningSum
from fedsparsify.sim.sampling import ClientSampler, sampled_weights
from fedsparsify.sim.site_round import RoundJob, SiteResult, mask_public_keys, run_site_round
from fedsparsify.sim.sources import SiteSource

__all__ = ["SimProgress", "SimResult", "SimRow", "Simulation"]

log = logging.getLogger(__name__)
_MB = 1024 * 1024


@dataclass
class SimProgress:
    """What the live display shows: the round, sites done in it, and the time left."""

    round: int
    rounds: int
    done: int
    participants: int
    elapsed_s: float
    eta_s: float
    last: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SimRow:
    """One round. Means are over the round's participants; bytes are what crossed the wire."""

    round: int
    participants: int
    sparsity: float
    n_values: int
    val_metric: float
    test: dict[str, float]
    upload_bytes_per_site: float
    upload_bytes: int
    aggregate_bytes: int
    download_bytes: int
    encrypt_ms: float
    decrypt_ms: float
    train_ms: float
    aggregate_ms: float
    seconds: float
    driver_rss_mb: float
    worker_peak_rss_mb: float

    @property
    def bytes_per_round(self) -> int:
        """Uploads plus the aggregate each participant downloaded at the round's start."""
        return self.upload_bytes + self.download_bytes


@dataclass
class SimResult:
    """A whole run; ``participation``: rounds each site took part in (sites that never did are
    left out)."""

    engine: str
    n_sites: int
    per_round: int
    rows: list[SimRow] = field(default_factory=list)
    final_test: dict[str, float] = field(default_factory=dict)
    final_sparsity: float = 0.0
    final_state: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    driver_peak_rss_mb: float = 0.0
    worker_peak_rss_mb: float = 0.0
    aggregate_bytes: int = 0
    participation: dict[str, int] = field(default_factory=dict)


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / _MB


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else float("nan")


class Simulation:
    """A federation of ``source.n_sites`` simulated sites under ``spec`` on ``engine``.

    ``sample``: a fraction or count of sites per round (None: all), drawn from ``spec.seed``.
    ``window``: sites in flight at once (default: twice the engine's slots).
    """

    def __init__(
        self,
        spec: FederationSpec,
        source: SiteSource,
        engine: Engine,
        *,
        sample: float | int | None = None,
        window: int | None = None,
        threads_per_site: int = 1,
        on_progress: Callable[[SimProgress], None] | None = None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.engine = engine
        self.sampler = ClientSampler(source.n_sites, sample, seed=spec.seed)
        self.sampler.check(spec)
        self.window = window if window is not None else max(2, 2 * engine.slots())
        if self.window < 1:
            raise ConfigError(f"window must be at least 1, got {window}")
        self.threads = max(1, threads_per_site)
        self.on_progress = on_progress
        n = source.n_sites
        self.names = [source.site_name(k) for k in range(n)]
        if len(set(self.names)) != n:
            raise ConfigError("site names must be unique")
        self.samples = [source.num_train(k) for k in range(n)]
        cap = spec.max_samples_per_site
        for name, count in zip(self.names, self.samples, strict=True):
            if count < 1:
                raise ConfigError(f"site {name!r} has no training samples")
            if cap is not None and count > cap:
                raise ConfigError(
                    f"site {name!r} declares {count} samples, above the spec's "
                    f"max_samples_per_site of {cap}"
                )
        self.federation_id = f"sim-{secrets.token_hex(8)}"
        self._identity_secret = secrets.token_bytes(32)
        self.mask_keys = mask_public_keys(self._identity_secret, self.names)
        x_test, y_test = source.test_set()
        self._observer_data = SiteData("global", source.task, x_test, y_test, x_test, y_test)
        check_compatible(spec, source.site(0))

    def run(self) -> SimResult:
        """Play every round; returns the rows and the final global model's test metrics."""
        spec = self.spec
        started = time.monotonic()
        context = create_secret_context(spec.crypto_preset)
        public = context.public()
        secret_bytes = context.secret_bytes()
        codec = UpdateCodec(context, contributor="global")
        observer = Site(spec, self._observer_data, name="global")
        result = SimResult(self.engine.name, len(self.names), self.sampler.per_round)
        previous: GlobalUpdate | None = None
        aggregate: dict[str, bytes] | None = None
        total_tasks = spec.rounds * self.sampler.per_round
        finished_tasks = 0
        with tempfile.TemporaryDirectory(prefix="fedsparsify-sim-") as tmp:
            scratch = Path(tmp)
            for index in range(spec.rounds):
                round_started = time.monotonic()
                state = observer.state_dict() if index > 0 else None
                plan = observer.begin_round(index, previous)
                chosen = self.sampler.participants(index)
                names = [self.names[k] for k in chosen]
                counts = {self.names[k]: self.samples[k] for k in chosen}
                weights = sampled_weights(spec, counts)
                keys = {n: self.mask_keys[n] for n in names}
                binding = RoundBinding(self.federation_id, index, 0, participants_digest(keys))
                job = RoundJob(
                    spec=spec,
                    round_index=index,
                    binding=binding,
                    weights=weights,
                    mask_keys=keys,
                    context=secret_bytes,
                    source=self.source,
                    identity_secret=self._identity_secret,
                    state=state,
                    aggregate=aggregate,
                    threads=self.threads,
                )
                sums = {
                    ch: RunningSum(
                        public,
                        scratch,
                        channel=ch,
                        binding=binding,
                        mask_digest=plan.mask_digest,
                        weights=weights,
                    )
                    for ch in channels_for(spec.method)
                }
                results: list[SiteResult] = []
                for site_result in self.engine.map_unordered(
                    run_site_round, job, chosen, window=self.window
                ):
                    if site_result.mask_digest != plan.mask_digest:
                        raise MaskError(
                            f"site {site_result.name} trained round {index} under mask "
                            f"{site_result.mask_digest[:12]}, the round's is "
                            f"{plan.mask_digest[:12]}"
                        )
                    for channel, blob in site_result.uploads.items():
                        sums[channel].add(site_result.name, blob)
                    site_result.uploads = {}
                    results.append(site_result)
                    seen = result.participation.get(site_result.name, 0)
                    result.participation[site_result.name] = seen + 1
                    finished_tasks += 1
                    self._progress(
                        index,
                        len(results),
                        len(chosen),
                        started,
                        finished_tasks,
                        total_tasks,
                        result,
                    )
                files = {ch: s.finish() for ch, s in sums.items()}
                aggregate = {ch: path.read_bytes() for ch, path in files.items()}
                for path in files.values():
                    path.unlink()
                previous, _stats = codec.decode(self._write(scratch, aggregate))
                test, model_sparsity = self._evaluate(observer, previous)
                row = self._row(
                    index,
                    plan.n_values,
                    model_sparsity,
                    test,
                    results,
                    aggregate,
                    sums,
                    time.monotonic() - round_started,
                )
                result.rows.append(row)
                log.info(
                    "round %d: %d sites, sparsity %.3f, %s, %.1f s",
                    index,
                    len(results),
                    model_sparsity,
                    ", ".join(f"{k} {v:.4f}" for k, v in test.items()),
                    row.seconds,
                )
                self._progress(
                    index, len(results), len(chosen), started, finished_tasks, total_tasks, result
                )
            mask = observer.finish(previous) if previous is not None else observer.mask
        result.final_test = observer.evaluate(self._observer_data.x_val, self._observer_data.y_val)
        result.final_sparsity = sparsity(mask)
        result.final_state = {k: v.detach().clone() for k, v in observer.model.state_dict().items()}
        result.aggregate_bytes = sum(len(b) for b in (aggregate or {}).values())
        result.wall_s = time.monotonic() - started
        result.driver_peak_rss_mb = _peak_rss_mb()
        result.worker_peak_rss_mb = max((r.worker_peak_rss_mb for r in result.rows), default=0.0)
        return result

    @staticmethod
    def _write(scratch: Path, aggregate: dict[str, bytes]) -> dict[str, Path]:
        paths = {}
        for channel, blob in aggregate.items():
            path = scratch / f"aggregate-{channel}.bin"
            path.write_bytes(blob)
            paths[channel] = path
        return paths

    def _evaluate(self, observer: Site, update: GlobalUpdate) -> tuple[dict[str, float], float]:
        """The global model after ``update`` on the test set (a throw-away copy of the
        observer, which stays at the round's start for the next round's sites)."""
        probe = Site(self.spec, self._observer_data, name="global")
        probe.load_state_dict(observer.state_dict())
        mask = probe.finish(update)
        data = self._observer_data
        return probe.evaluate(data.x_val, data.y_val), sparsity(mask)

    def _row(
        self,
        index: int,
        n_values: int,
        model_sparsity: float,
        test: dict[str, float],
        results: list[SiteResult],
        aggregate: dict[str, bytes],
        sums: dict[str, RunningSum],
        seconds: float,
    ) -> SimRow:
        metric = "val_accuracy" if self.source.task == "classification" else "val_mae"
        uploads = [float(r.upload_bytes) for r in results]
        return SimRow(
            round=index,
            participants=len(results),
            sparsity=model_sparsity,
            n_values=n_values,
            val_metric=_mean([r.metrics[metric] for r in results]),
            test=test,
            upload_bytes_per_site=_mean(uploads),
            upload_bytes=int(sum(uploads)),
            aggregate_bytes=sum(len(b) for b in aggregate.values()),
            download_bytes=sum(r.download_bytes for r in results),
            encrypt_ms=1000 * _mean([r.encrypt_s for r in results]),
            decrypt_ms=1000 * _mean([r.decrypt_s for r in results]),
            train_ms=1000 * _mean([r.metrics["train_s"] for r in results]),
            aggregate_ms=1000 * sum(s.seconds for s in sums.values()),
            seconds=seconds,
            driver_rss_mb=_rss_mb(),
            worker_peak_rss_mb=max(r.peak_rss for r in results) / _MB,
        )

    def _progress(
        self,
        index: int,
        done: int,
        participants: int,
        started: float,
        finished: int,
        total: int,
        result: SimResult,
    ) -> None:
        if self.on_progress is None:
            return
        elapsed = time.monotonic() - started
        eta = elapsed / finished * (total - finished) if finished else float("nan")
        last: dict[str, float] = {}
        if result.rows:
            row = result.rows[-1]
            last = {"sparsity": row.sparsity, **row.test, "bytes": row.upload_bytes_per_site}
        self.on_progress(
            SimProgress(index, self.spec.rounds, done, participants, elapsed, eta, last)
        )
