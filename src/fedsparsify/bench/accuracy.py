"""FedSparsify against its baselines over several seeds: test metric at sparsity 0.8, 0.9, 0.95.

Methods, all through :func:`fedsparsify.platform.runner.run_federation` as it is (the round
logic the networked clients run, with the federation's weight cap and results rounded to the
grid, without HTTP or encryption):

- ``fedavg``: dense FedAvg, the reference.
- ``fedsparsify-global``: progressive magnitude pruning of the aggregate; one shrinking mask.
- ``fedsparsify-local``: the same schedule, each site prunes its own model; majority vote.
- ``random``: the same progressive schedule, random coordinates pruned (same on every site).
- ``one-shot``: global magnitude pruning straight to the target at one early-middle round.

Protocol: every method of a dataset shares data, initial model, optimiser, learning rate, local
epochs, batch size and number of rounds. The progressive schedules prune every round from
``prune_start`` and reach the target at ``prune_end``, a few rounds before the end, so that
the pruned model can recover. Hyper-parameters were tuned on dense FedAvg alone, on the sites'
validation data.

Seeds: each seed draws its own data (digits: its own stratified test split and Dirichlet
partition; brain age: its own subjects, site profiles and test set) and its own initial model,
so seeds are repeated splits as well as repeated trainings; every method of a seed shares them.
A run's value is its test metric averaged over the last 5 rounds (the final model's value moves
by more than the method differences from round to round); the table gives mean ± sample
standard deviation (ddof 1) over seeds. Digits holds out 40 % (719 images, 0.14-point steps)
instead of 20 %, because 359 test images move accuracy in 0.28-point steps, the size of the
differences to measure.

    .venv/bin/python benchmarks/accuracy.py            # the committed results (make bench-accuracy)
    .venv/bin/python benchmarks/accuracy.py --quick    # tiny smoke run for CI (< 60 s)

Writes ``accuracy.json`` (provenance, per-seed ``runs``, ``summary`` per method and sparsity,
per-round ``curves``, the configuration) and ``accuracy_<dataset>.png`` into ``--out``
(default ``benchmarks/results``; ``--quick`` defaults to the gitignored ``benchmarks/.cache``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from fedsparsify.bench.accuracy_report import format_table, plot_curves, summarise
from fedsparsify.bench.provenance import provenance
from fedsparsify.platform.data import (
    COARSE_SHAPE,
    FederatedData,
    make_brainage_federation,
    make_digits_federation,
)
from fedsparsify.platform.runner import RoundRow, run_federation
from fedsparsify.platform.schedules import progressive_between, target_sparsity
from fedsparsify.platform.spec import (
    FederationSpec,
    Method,
    ModelSpec,
    ScheduleSpec,
    TrainingSpec,
)

__all__ = ["METHODS", "RUN_KEYS", "SETUPS", "TAIL", "Setup", "load_data", "main", "make_spec"]

#: Defaults relative to the working directory (the repository root, where ``make`` runs).
RESULTS = Path("benchmarks") / "results"
CACHE = Path("benchmarks") / ".cache"
METHODS = ("fedavg", "fedsparsify-global", "fedsparsify-local", "random", "one-shot")
TARGETS = (0.8, 0.9, 0.95)
SEEDS = (0, 1, 2)
#: A run's value is the mean of its last ``TAIL`` rounds' test metric.
TAIL = 5
RUN_KEYS = (
    "dataset",
    "method",
    "target_sparsity",
    "seed",
    "final_sparsity",
    "metric",
    "value",
    "final_value",
    "rounds",
    "seconds",
    "commit",
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    """One dataset's federation: data, model, training and schedule, shared by every method."""

    dataset: str
    metric: str  # the test metric reported ("accuracy" or "mae")
    higher_is_better: bool
    rounds: int
    prune_start: int  # first round trained under a pruned mask (progressive schedules)
    prune_end: int  # round from which the target sparsity is reached
    one_shot_round: int
    model: ModelSpec
    training: TrainingSpec
    data: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Every setting as plain JSON values."""
        plain = {k: v for k, v in asdict(self).items() if k not in ("model", "training")}
        model = self.model.model_dump(mode="json")
        return {**plain, "model": model, "training": self.training.model_dump(mode="json")}


def digits_setup(quick: bool) -> Setup:
    """Ten Dirichlet(0.5) label-skewed sites; the paper's MLP (two hidden layers of 128)."""
    if quick:
        return Setup(
            dataset="digits",
            metric="accuracy",
            higher_is_better=True,
            rounds=6,
            prune_start=1,
            prune_end=3,
            one_shot_round=2,
            model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=32),
            training=TrainingSpec(lr=0.05, batch_size=32, local_epochs=1),
            data={"n_sites": 4, "partition": "dirichlet", "alpha": 0.5, "test_fraction": 0.4},
        )
    return Setup(
        dataset="digits",
        metric="accuracy",
        higher_is_better=True,
        rounds=60,
        prune_start=10,
        prune_end=45,
        one_shot_round=20,
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=128),
        training=TrainingSpec(lr=0.02, momentum=0.9, batch_size=32, local_epochs=4),
        data={"n_sites": 10, "partition": "dirichlet", "alpha": 0.5, "test_fraction": 0.4},
    )


def brainage_setup(quick: bool) -> Setup:
    """Four non-IID sites (own ages and scanners) on the coarse grid; reduced BrainAge CNN."""
    if quick:
        return Setup(
            dataset="brainage",
            metric="mae",
            higher_is_better=False,
            rounds=5,
            prune_start=1,
            prune_end=2,
            one_shot_round=1,
            model=ModelSpec(kind="brainage", input_shape=COARSE_SHAPE, width=2),
            training=TrainingSpec(lr=1e-3, optimizer="adam", batch_size=8, local_epochs=1),
            data={"n_sites": 2, "subjects_per_site": 10, "test_subjects": 8},
        )
    return Setup(
        dataset="brainage",
        metric="mae",
        higher_is_better=False,
        rounds=40,
        prune_start=10,
        prune_end=30,
        one_shot_round=15,
        model=ModelSpec(kind="brainage", input_shape=COARSE_SHAPE, width=4),
        training=TrainingSpec(lr=2e-3, optimizer="adam", batch_size=8, local_epochs=1),
        data={"n_sites": 4, "subjects_per_site": 150, "test_subjects": 200},
    )


SETUPS: dict[str, Callable[[bool], Setup]] = {"digits": digits_setup, "brainage": brainage_setup}


def load_data(setup: Setup, *, seed: int, cache_dir: Path) -> FederatedData:
    """The dataset's federation, deterministic in ``seed`` (brain-age volumes cached on disk)."""
    if setup.dataset == "digits":
        return make_digits_federation(seed=seed, **setup.data)
    if setup.dataset == "brainage":
        return make_brainage_federation(
            shape=COARSE_SHAPE, iid=False, seed=seed, cache_dir=cache_dir, **setup.data
        )
    raise ValueError(f"unknown dataset {setup.dataset!r}")


def make_spec(setup: Setup, method: str, target: float, *, seed: int) -> FederationSpec:
    """The federation spec of one (method, target) cell."""
    schedule: ScheduleSpec
    fed_method: Method
    if method == "fedavg":
        fed_method, schedule = "fedavg", ScheduleSpec(kind="none")
    elif method == "one-shot":
        fed_method = "fedsparsify-global"
        schedule = ScheduleSpec(kind="one-shot", target=target, start_round=setup.one_shot_round)
    elif method in ("fedsparsify-global", "fedsparsify-local", "random"):
        fed_method = cast(Method, method)
        schedule = progressive_between(target, setup.prune_start, setup.prune_end)
    else:
        raise ValueError(f"unknown method {method!r}")
    n_sites = int(setup.data["n_sites"])
    spec = FederationSpec(
        name=f"accuracy-{setup.dataset}-{method}-{target:g}",
        rounds=setup.rounds,
        min_clients=n_sites,
        quorum=n_sites,
        crypto_preset="plaintext",
        method=fed_method,
        schedule=schedule,
        model=setup.model,
        training=setup.training,
        seed=seed,
    )
    if method != "fedavg":
        reached = target_sparsity(spec.schedule, setup.rounds - 1, setup.rounds)
        if abs(reached - target) > 1e-9:
            raise ValueError(f"{method} reaches {reached:.4f}, not {target}, by the last round")
    return spec


@dataclass(frozen=True)
class Cell:
    """One federation to run: dataset, method, target sparsity and seed."""

    dataset: str
    method: str
    target: float
    seed: int


def run_cell(
    setup: Setup, data: FederatedData, cell: Cell, *, device: str | None
) -> tuple[dict[str, Any], list[RoundRow]]:
    """Run one federation; return its result row and per-round curve."""
    spec = make_spec(setup, cell.method, cell.target, seed=cell.seed)
    start = time.perf_counter()
    curve = run_federation(spec, data, device=device)
    elapsed = time.perf_counter() - start
    tail = [float(r[setup.metric]) for r in curve[-TAIL:]]
    row = {
        "dataset": setup.dataset,
        "method": cell.method,
        "target_sparsity": 0.0 if cell.method == "fedavg" else cell.target,
        "seed": cell.seed,
        "final_sparsity": float(curve[-1]["sparsity"]),
        "metric": setup.metric,
        "value": sum(tail) / len(tail),
        "final_value": float(curve[-1][setup.metric]),
        "rounds": setup.rounds,
        "seconds": round(elapsed, 2),
    }
    assert tuple(row) == RUN_KEYS[:-1]
    logger.info(
        "%s %s %.2f seed %d: %s %.4f (last %d rounds) at sparsity %.4f (%.1f s)",
        setup.dataset,
        cell.method,
        cell.target,
        cell.seed,
        setup.metric,
        row["value"],
        TAIL,
        row["final_sparsity"],
        elapsed,
    )
    return row, curve


def curve_entry(setup: Setup, row: dict[str, Any], curve: list[RoundRow]) -> dict[str, Any]:
    """A run's per-round curve (test metric, sparsity, upload size, training loss) for the JSON."""
    keys = ("round", "sparsity", "n_values", setup.metric, "train_loss")
    exact = ("round", "n_values")
    per_round = [{k: r[k] if k in exact else _sig(r[k]) for k in keys} for r in curve]
    ident = ("dataset", "method", "target_sparsity", "seed")
    return {**{k: row[k] for k in ident}, "per_round": per_round}


def _sig(value: float) -> float:
    return float(f"{float(value):.6g}")


_WORKER: dict[str, Any] = {}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def run_key(setup: Setup, cell: Cell, device: str | None) -> str:
    """What a finished run is stored under: a digest of its whole configuration."""
    config = {"setup": setup.describe(), "cell": asdict(cell), "device": device or "cpu"}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:24]


def _run_job(
    quick: bool,
    cell: Cell,
    cache_dir: Path,
    device: str | None,
    runs_dir: Path | None,
    commit: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One federation, or its stored result when ``runs_dir`` holds a run of the same
    configuration (``--resume``); every stored run names the commit whose code ran it (the
    checkout's commit when the benchmark started)."""
    setup = SETUPS[cell.dataset](quick)
    stored = runs_dir / f"{run_key(setup, cell, device)}.json" if runs_dir else None
    if stored is not None and stored.is_file():
        saved = json.loads(stored.read_text())
        logger.info("%s: stored run of commit %s", cell, str(saved["row"]["commit"])[:12])
        return saved["row"], saved["curve"]
    key = f"{cell.dataset}/{cell.seed}"
    if key not in _WORKER:
        _WORKER.clear()  # hold one data set at a time
        _WORKER[key] = load_data(setup, seed=cell.seed, cache_dir=cache_dir)
    row, curve = run_cell(setup, _WORKER[key], cell, device=device)
    row["commit"] = commit
    entry = curve_entry(setup, row, curve)
    if stored is not None:
        stored.parent.mkdir(parents=True, exist_ok=True)
        tmp = stored.with_suffix(".tmp")
        tmp.write_text(json.dumps({"row": row, "curve": entry}))
        tmp.replace(stored)
    return row, entry


def plan_cells(
    datasets: list[str], methods: list[str], targets: list[float], seeds: list[int]
) -> list[Cell]:
    """Every federation of a run, grouped by dataset and seed (one data set loaded at a time)."""
    cells = []
    for dataset in datasets:
        for seed in seeds:
            if "fedavg" in methods:
                cells.append(Cell(dataset, "fedavg", 0.0, seed))
            cells += [Cell(dataset, m, t, seed) for t in targets for m in methods if m != "fedavg"]
    return cells


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fedsparsify bench accuracy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="tiny CI run: few rounds, s=0.9")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--datasets", nargs="+", choices=sorted(SETUPS), default=None)
    parser.add_argument("--targets", nargs="+", type=float, default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=None, help="data and model seeds (default 0 1 2)"
    )
    parser.add_argument("--cache-dir", type=Path, default=CACHE / "brainage")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per job")
    parser.add_argument("--jobs", type=int, default=1, help="federations run in parallel")
    parser.add_argument("--device", default=None, help="e.g. cuda (default: CPU)")
    parser.add_argument(
        "--stored-only",
        action="store_true",
        help="report only the runs --resume has stored, run nothing (an unfinished run's "
        "state; the JSON lists the missing runs)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep each finished run under benchmarks/.cache/accuracy-runs and reuse the "
        "stored runs of the same configuration (a long run on a shared machine can stop and "
        "go on; the JSON lists the commit of every run)",
    )
    args = parser.parse_args(argv)
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds: each seed once")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out: Path = args.out or (CACHE / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    datasets = args.datasets or list(SETUPS)
    targets = args.targets or ([0.9] if args.quick else list(TARGETS))
    methods = args.methods or list(METHODS)
    seeds = args.seeds or ([0, 1] if args.quick else list(SEEDS))
    record = provenance(["benchmarks/accuracy.py", *(sys.argv[1:] if argv is None else argv)])
    record["threads"] = args.threads

    started = time.perf_counter()
    setups = {name: SETUPS[name](args.quick) for name in datasets}
    cells = plan_cells(datasets, methods, targets, seeds)
    runs_dir = CACHE / "accuracy-runs" if args.resume or args.stored_only else None
    missing: list[Cell] = []
    if args.stored_only:
        assert runs_dir is not None
        stored = {
            c: (runs_dir / f"{run_key(setups[c.dataset], c, args.device)}.json") for c in cells
        }
        missing = [c for c in cells if not stored[c].is_file()]
        cells = [c for c in cells if stored[c].is_file()]
        if not cells:
            raise SystemExit("--stored-only: no stored run matches; run with --resume first")
    for name in datasets:  # fill the volume cache once, before jobs read it
        if name == "brainage" and not args.stored_only:
            for seed in seeds:
                load_data(setups[name], seed=seed, cache_dir=args.cache_dir)
    commit = record["commit"]
    jobs = [(args.quick, c, args.cache_dir, args.device, runs_dir, commit) for c in cells]
    if args.jobs == 1:
        results = [_run_job(*job) for job in jobs]
        _WORKER.clear()
    else:
        with ProcessPoolExecutor(
            args.jobs, initializer=_init_worker, initargs=(args.threads,)
        ) as ex:
            results = list(ex.map(_run_job, *zip(*jobs, strict=True)))
    runs = [row for row, _ in results]
    curves = [curve for _, curve in results]
    summary = summarise(runs, setups)
    for name, setup in setups.items():
        plot_curves(name, setup, curves, targets, out / f"accuracy_{name}.png")

    table = format_table(summary, setups)
    report = {
        "benchmark": "accuracy",
        **record,
        "quick": args.quick,
        "seeds": seeds,
        "missing_runs": [asdict(c) for c in missing],
        "run_commits": sorted({str(r["commit"]) for r in runs}),
        "tail_rounds": TAIL,
        "summary": summary,
        "runs": runs,
        "setups": {name: s.describe() for name, s in setups.items()},
        "table": table,
        "seconds": round(time.perf_counter() - started, 1),
        "jobs": args.jobs,
        "device": args.device or "cpu",
        "curves": curves,
    }
    (out / "accuracy.json").write_text(json.dumps(report, indent=1) + "\n")
    print(table)
    print(f"\nwrote {out / 'accuracy.json'} in {report['seconds']} s")
    return 0
