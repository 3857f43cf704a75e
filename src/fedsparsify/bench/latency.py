"""Latency benchmark: dense and sparse encrypted rounds side by side over real HTTP.

One aggregator (``fedsparsify serve`` on loopback, started by
:func:`~fedsparsify.clients.launcher.start_aggregator`) and K site processes, each running the
real :class:`~fedsparsify.clients.runtime.ClientRuntime` with a probe on its steps
(:mod:`fedsparsify.bench.latency_client`; confirmed peers, signed key envelopes, pairwise
masks for the encrypted modes), run, for every workload and mode, a fresh federation of
``rounds`` rounds through the public REST API:

- ``plaintext``: dense float32 through the same API and client code (the floor);
- ``ckks-peer-dense``: every coordinate, ``peer-default`` parameters;
- ``ckks-lean-dense``: every coordinate, ``lean`` parameters;
- ``ckks-lean-sparse``: the kept coordinates only, at each sparsity;
- ``plaintext-sparse``: the kept coordinates only as float32, not encrypted: the floor every
  sparse encrypted row is compared with.

Sparse rows prune once, before round 0 (a one-shot schedule to the row's sparsity); dense rows
run FedAvg. Sites neither train nor evaluate (stand-ins take the model's kept coordinates and
report no metrics), run one torch thread each and poll as the real client does (every 0.5 s):
four sites share two cores here, and a site's training, evaluation, OpenMP workers or polling
would otherwise slow the others' timed phases (measured: run as this benchmark ran them
before, polling every 10 ms with torch's default threads and evaluating, the sparse rows at
0.95 took 2.2-2.4x longer; ``--site-poll-s 0.01 --site-threads 0 --site-evaluate``). Each
row holds the medians over sites and rounds of the client phases (their sum is
``client_round_s``; waiting for the other sites is excluded, and so is ``other_s``: the
runtime's roster check, state files and metrics report; ``upload`` is the PUT's wall time,
which includes the aggregator receiving, validating and adding the upload, because it
answers once the upload is in the sum), the server's own seconds per upload from its
``/metrics`` (``server_validate_s``: receive, validate and, since wire format 3, add while the
body streams in; ``server_add_s``: adding, streamed or at commit) and per round
(``server_close_s``), bytes up and down, and the aggregator's peak RSS during the row.
Then the aggregator scaling part (:mod:`fedsparsify.bench.scaling`) and the inference part
(:mod:`fedsparsify.bench.inference`); the report goes to ``latency.json``, ``latency.md`` and
PNG plots (:mod:`fedsparsify.bench.latency_report`).
"""

from __future__ import annotations

import logging
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from fedsparsify import __version__
from fedsparsify.bench.latency_client import CLIENT_PHASES, ClientJob
from fedsparsify.bench.latency_client import POLL_S as SITE_POLL_S
from fedsparsify.bench.probes import RssSampler, ServerCounters, read_counters
from fedsparsify.bench.provenance import git_commit
from fedsparsify.bench.sites import SitePool
from fedsparsify.bench.workloads import build_workload, model_spec
from fedsparsify.clients.launcher import confirm_peers, start_aggregator
from fedsparsify.clients.rest import AggregatorClient
from fedsparsify.errors import ConfigError, FedsparsifyError

__all__ = [
    "MODE_PRESETS",
    "SPARSITIES",
    "LatencyConfig",
    "full_config",
    "machine_info",
    "make_config",
    "quick_config",
    "run",
]

log = logging.getLogger(__name__)

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.99)
MODE_PRESETS = {
    "plaintext": "plaintext",
    "plaintext-sparse": "plaintext",
    "ckks-peer-dense": "peer-default",
    "ckks-lean-dense": "lean",
    "ckks-lean-sparse": "lean",
}
#: Modes that run at every configured sparsity (the others are dense).
SPARSE_MODES = ("plaintext-sparse", "ckks-lean-sparse")
POLL_S = 0.02


@dataclass(frozen=True)
class LatencyConfig:
    """What one run measures. ``rounds_by_workload`` and ``modes_by_workload`` override
    ``rounds`` and the mode list for the named workloads (e.g. fewer rounds at 10M values)."""

    out_dir: Path = Path("benchmarks/results")
    workloads: tuple[str, ...] = ("brainage", "vec1m", "vec10m")
    clients: int = 2
    rounds: int = 3
    rounds_by_workload: dict[str, int] = field(default_factory=dict)
    modes: tuple[str, ...] = tuple(MODE_PRESETS)
    modes_by_workload: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sparsities: tuple[float, ...] = SPARSITIES
    scaling_clients: tuple[int, ...] = (2, 4, 8, 16, 32)
    scaling_workload: str = "brainage"
    scaling_mode: str = "ckks-lean-dense"
    inference_model: str | None = "brainage"
    inference_repeats: int = 5
    seed: int = 0
    quick: bool = False
    #: How the site processes run (see the module's docstring): poll interval, torch threads
    #: (0: torch's default, one per core) and whether they evaluate each round.
    site_poll_s: float = SITE_POLL_S
    site_threads: int = 1
    site_evaluate: bool = False

    def plan(self, workload: str) -> list[tuple[str, float]]:
        """``(mode, sparsity)`` rows of one workload, in table order."""
        modes = self.modes_by_workload.get(workload, self.modes)
        out: list[tuple[str, float]] = []
        for mode in modes:
            if mode not in MODE_PRESETS:
                raise FedsparsifyError(f"unknown mode {mode!r}; choose from {list(MODE_PRESETS)}")
            if mode in SPARSE_MODES:
                out.extend((mode, s) for s in self.sparsities)
            else:
                out.append((mode, 0.0))
        return out


def full_config(out_dir: Path = Path("benchmarks/results")) -> LatencyConfig:
    """The published run: 4 sites; BrainAge, 1M and 10M values (10M: two rounds, to keep it
    short)."""
    return LatencyConfig(out_dir=out_dir, clients=4, rounds_by_workload={"vec10m": 2})


def quick_config(out_dir: Path) -> LatencyConfig:
    """CI: 100k values, every mode, two sparsities, 2 sites, 1 round, scaling to 4 clients."""
    return LatencyConfig(
        out_dir=out_dir,
        workloads=("vec100k",),
        clients=2,
        rounds=1,
        sparsities=(0.9, 0.95),
        scaling_clients=(2, 4),
        scaling_workload="vec100k",
        inference_model="brainage-small",
        inference_repeats=2,
        quick=True,
    )


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory, versions and the git commit, recorded with the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = os.cpu_count() or 0
    import psutil
    import tenseal
    import torch

    return {
        "cpu_model": cpu,
        "nproc": nproc,
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tenseal": tenseal.__version__,
        "fedsparsify": __version__,
        "git_commit": git_commit(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _wait_closed(admin: AggregatorClient, fid: str, index: int) -> None:
    deadline = time.monotonic() + 3600.0
    while not admin.get_round(fid, index).aggregate_ready:
        if time.monotonic() > deadline:
            raise FedsparsifyError(f"round {index} of {fid} did not close")
        time.sleep(POLL_S)


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def _summarise(
    records: list[dict[str, Any]], server: list[ServerCounters], peak_mb: float
) -> dict[str, Any]:
    phases = {p: _median([r["phases"][p] for r in records]) for p in CLIENT_PHASES}
    validate = _median([d.stage_s / max(d.stages, 1.0) for d in server])
    add = _median([d.add_s / max(d.adds, 1.0) for d in server])
    close = _median([d.close_s for d in server])
    phases.update(server_validate=validate, server_add=add, server_close=close)
    return {
        "n_kept": int(records[0]["n_kept"]),
        "other_s": _median([r["other_s"] for r in records]),
        "upload_bytes": int(_median([r["upload_bytes"] for r in records])),
        "download_bytes": int(_median([r["download_bytes"] for r in records])),
        "client_round_s": _median([r["client_round_s"] for r in records]),
        "client_round_s_min": min(r["client_round_s"] for r in records),
        "client_round_s_max": max(r["client_round_s"] for r in records),
        "server_validate_s": validate,
        "server_add_s": add,
        "server_close_s": close,
        "server_peak_rss_mb": peak_mb,
        "phases": phases,
    }


def row_spec(
    workload: str, mode: str, sparsity: float, *, rounds: int, clients: int, seed: int
) -> dict[str, Any]:
    """The federation one row runs: dense rows FedAvg, sparse rows pruned once before round 0."""
    spec: dict[str, Any] = {
        "name": f"latency-{workload}-{mode}-{sparsity}",
        "rounds": rounds,
        "min_clients": clients,
        "quorum": clients,
        "auto_advance": False,
        "crypto_preset": MODE_PRESETS[mode],
        "round_timeout_s": 3600.0,
        "seed": seed,
        "model": model_spec(workload).model_dump(mode="json"),
    }
    if sparsity > 0.0:
        spec["method"] = "fedsparsify-global"
        spec["schedule"] = {"kind": "one-shot", "target": sparsity, "start_round": 0}
    else:
        spec["method"] = "fedavg"
        spec["schedule"] = {"kind": "none"}
    return spec


def _wait_keyed(admin: AggregatorClient, fid: str, clients: int) -> None:
    deadline = time.monotonic() + 600.0
    while True:
        fed = admin.get_federation(fid)
        keys = fed["keys"]
        keyed = keys["context_uploaded"] and not keys["awaiting_envelope"]
        if len(fed["participants"]) >= clients and keyed:
            return
        if time.monotonic() > deadline:
            raise FedsparsifyError(f"sites of {fid} did not register and get their keys")
        time.sleep(POLL_S)


def measure_row(
    admin: AggregatorClient,
    pool: SitePool,
    sampler: RssSampler,
    *,
    workload: str,
    n_params: int,
    mode: str,
    sparsity: float,
    rounds: int,
    seed: int,
    scratch: Path,
    config: LatencyConfig,
) -> dict[str, Any]:
    """One mode at one sparsity: a fresh federation, ``rounds`` rounds with every site (run
    as ``config``'s ``site_*`` fields say)."""
    preset = MODE_PRESETS[mode]
    spec = row_spec(workload, mode, sparsity, rounds=rounds, clients=pool.size, seed=seed)
    created = admin.create_federation(spec)
    fid = str(created["id"])
    names = [f"site-{k}" for k in range(pool.size)]
    row_dir = scratch / fid
    states = {name: row_dir / name for name in names}
    peers = confirm_peers(states, row_dir / "peers.txt")
    pool.submit(
        [
            ClientJob(
                url=admin.base_url,
                federation_id=fid,
                enrollment_token=str(created["enrollment_token"]),
                name=name,
                state_dir=states[name],
                peers=peers,
                preset=preset,
                rounds=rounds,
                seed=seed,
                poll_s=config.site_poll_s,
                threads=config.site_threads,
                evaluate=config.site_evaluate,
            )
            for name in names
        ]
    )
    _wait_keyed(admin, fid, pool.size)
    sampler.reset()
    server: list[ServerCounters] = []
    for index in range(rounds):
        before = read_counters(admin.metrics())
        admin.start_round(fid)
        _wait_closed(admin, fid, index)
        server.append(read_counters(admin.metrics()) - before)
    peak = sampler.peak_mb()
    records = [r for _kind, _name, recs in pool.expect("done") for r in recs]
    return {
        "model": workload,
        "mode": mode,
        "preset": preset,
        "sparsity": sparsity,
        "n_params": n_params,
        "clients": pool.size,
        "rounds": rounds,
        **_summarise(records, server, peak),
    }


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(config: LatencyConfig) -> dict[str, Any]:
    """Run the benchmark and write ``latency.json``, ``latency.md`` and the plots."""
    from fedsparsify.bench.inference import measure_inference
    from fedsparsify.bench.latency_report import write_report
    from fedsparsify.bench.scaling import measure_scaling

    started = time.perf_counter()
    machine = machine_info()
    _progress(f"# latency: {machine['cpu_model']}, nproc {machine['nproc']}")
    rows: list[dict[str, Any]] = []
    scaling: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fedsparsify-bench-latency-") as tmp:
        agg = start_aggregator(
            Path(tmp) / "aggregator",
            admin_token=secrets.token_urlsafe(24),
        )
        sampler = RssSampler(agg.pid)
        pool = SitePool(config.clients)
        admin = agg.admin()
        try:
            idle_mb = sampler.current_mb()
            for workload in config.workloads:
                n_params = build_workload(workload, seed=config.seed).n_params
                rounds = config.rounds_by_workload.get(workload, config.rounds)
                for mode, sparsity in config.plan(workload):
                    row = measure_row(
                        admin,
                        pool,
                        sampler,
                        workload=workload,
                        n_params=n_params,
                        mode=mode,
                        sparsity=sparsity,
                        rounds=rounds,
                        seed=config.seed,
                        scratch=Path(tmp) / "sites",
                        config=config,
                    )
                    rows.append(row)
                    _progress(
                        f"  {workload:>8} {mode:>16} s={sparsity:.2f} kept={row['n_kept']:>9,} "
                        f"up={row['upload_bytes']:>12,} B round={row['client_round_s']:.3f}s "
                        f"add={row['server_add_s']:.3f}s rss={row['server_peak_rss_mb']:.0f}MB"
                    )
            pool.close()
            if config.scaling_clients:
                scaling_mode = config.scaling_mode
                scaling = measure_scaling(
                    admin,
                    sampler,
                    counts=config.scaling_clients,
                    workload=config.scaling_workload,
                    preset=MODE_PRESETS[scaling_mode],
                    sparsity=0.0 if scaling_mode != "ckks-lean-sparse" else 0.9,
                    seed=config.seed,
                )
                for s in scaling:
                    _progress(
                        f"  scaling K={s['clients']:>2} add total {s['server_add_total_s']:.3f}s "
                        f"peak rss {s['server_peak_rss_mb']:.0f}MB "
                        f"(+{s['server_rss_growth_mb']:.0f})"
                    )
        finally:
            admin.close()
            pool.close()
            sampler.close()
            agg.stop()
    inference = None
    if config.inference_model:
        inference = measure_inference(
            config.inference_model, repeats=config.inference_repeats, seed=config.seed
        )
    result: dict[str, Any] = {
        "benchmark": "latency",
        "command": config_command(config),
        "machine": machine,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "server_idle_rss_mb": idle_mb,
        "rows": rows,
        "scaling": scaling,
        "inference": inference,
        "elapsed_s": time.perf_counter() - started,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    write_report(result, config.out_dir)
    _progress(f"# done in {result['elapsed_s']:.0f} s; results in {config.out_dir}")
    return result


def config_command(config: LatencyConfig) -> str:
    """The command that reproduces a run with this configuration: the flags that make it
    differ from the default (or quick) one."""
    base = quick_config(config.out_dir) if config.quick else full_config()
    args = ["fedsparsify bench latency"] + (["--quick"] if config.quick else [])
    if config.quick or config.out_dir != base.out_dir:
        args.append(f"--out {config.out_dir}")
    if config.workloads != base.workloads:
        args.append(f"--workloads {','.join(config.workloads)}")
    if config.clients != base.clients:
        args.append(f"--clients {config.clients}")
    if (config.rounds, config.rounds_by_workload) != (base.rounds, base.rounds_by_workload):
        args.append(f"--rounds {config.rounds}")
    if config.scaling_clients != base.scaling_clients:
        args.append(f"--scaling-clients '{','.join(str(k) for k in config.scaling_clients)}'")
    if config.inference_model is None and base.inference_model is not None:
        args.append("--no-inference")
    if (config.modes, config.modes_by_workload) != (base.modes, base.modes_by_workload):
        args.append(f"--modes {','.join(config.modes)}")
    if config.sparsities != base.sparsities:
        args.append(f"--sparsities {','.join(f'{s:g}' for s in config.sparsities)}")
    if config.site_poll_s != base.site_poll_s:
        args.append(f"--site-poll-s {config.site_poll_s:g}")
    if config.site_threads != base.site_threads:
        args.append(f"--site-threads {config.site_threads}")
    if config.site_evaluate:
        args.append("--site-evaluate")
    return " ".join(args)


def make_config(
    *,
    quick: bool,
    out_dir: Path,
    workloads: tuple[str, ...] | None = None,
    clients: int | None = None,
    rounds: int | None = None,
    scaling_clients: tuple[int, ...] | None = None,
    inference: bool = True,
    modes: tuple[str, ...] | None = None,
    sparsities: tuple[float, ...] | None = None,
    site_poll_s: float | None = None,
    site_threads: int | None = None,
    site_evaluate: bool = False,
) -> LatencyConfig:
    """The quick or full configuration with the given overrides (what the CLI and the script
    build from their options)."""
    base = quick_config(out_dir) if quick else full_config(out_dir)
    changes: dict[str, Any] = {}
    if workloads:
        changes["workloads"] = workloads
    if clients:
        changes["clients"] = clients
    if rounds:
        changes["rounds"] = rounds
        changes["rounds_by_workload"] = {}
    if scaling_clients is not None:
        changes["scaling_clients"] = scaling_clients
    if not inference:
        changes["inference_model"] = None
    if modes:
        unknown = sorted(set(modes) - set(MODE_PRESETS))
        if unknown:
            raise ConfigError(f"unknown mode(s) {unknown}; choose from {sorted(MODE_PRESETS)}")
        changes["modes"] = modes
        changes["modes_by_workload"] = {}
    if sparsities:
        bad = [s for s in sparsities if not 0.0 < s < 1.0]
        if bad:
            raise ConfigError(f"sparsities must lie strictly between 0 and 1, got {bad}")
        changes["sparsities"] = sparsities
    if site_poll_s is not None:
        if not 0.0 < site_poll_s <= 10.0:
            raise ConfigError(f"the sites' poll interval must be in (0, 10] s, got {site_poll_s}")
        changes["site_poll_s"] = site_poll_s
    if site_threads is not None:
        if site_threads < 0:
            raise ConfigError(f"site threads must be >= 0 (0: torch's default), got {site_threads}")
        changes["site_threads"] = site_threads
    changes["site_evaluate"] = site_evaluate
    return replace(base, **changes)
