"""FedSparsify against its baselines: test metric at target sparsity 0.8, 0.9 and 0.95.

Methods, all through :func:`fedsparsify.platform.runner.run_federation` (the round logic the
networked clients run, without HTTP or encryption):

- ``fedavg``: dense FedAvg, the reference.
- ``fedsparsify-global``: progressive magnitude pruning of the aggregate; one shrinking mask.
- ``fedsparsify-local``: the same schedule, each site prunes its own model; majority vote.
- ``random``: the same progressive schedule, random coordinates pruned (same on every site).
- ``one-shot``: global magnitude pruning straight to the target at one early-middle round.

Protocol: every method of a dataset shares data, initial model, optimiser, learning rate, local
epochs, batch size and number of rounds. The progressive schedules prune every round from
``prune_start`` and reach the target at ``prune_end``, a few rounds before the end, so that
the pruned model can recover; the per-round fraction is ``1 - (1 - target)^(1 / events)``.
The reported value is the final global model's test metric (last round, no best-round pick).
Hyper-parameters were tuned on dense FedAvg alone, on the sites' validation data.

Data: scikit-learn's digits over non-IID (Dirichlet label-skew) sites, the paper's two-layer
MLP; synthetic brain-age MRI (non-IID ages and scanners) on the coarse 24x28x24 grid with a
reduced-width BrainAge CNN, MSE on ages, MAE reported.

    .venv/bin/python benchmarks/accuracy.py            # the committed results (~13 min, 1 thread)
    .venv/bin/python benchmarks/accuracy.py --quick    # tiny smoke run for CI (< 60 s)

Writes ``accuracy.json`` (rows ``dataset, method, target_sparsity, final_sparsity, metric,
value, rounds``, plus per-round curves and the configuration) and ``accuracy_<dataset>.png``
into ``--out`` (default ``benchmarks/results``; ``--quick`` defaults to the gitignored
``benchmarks/.cache/quick``).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

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

#: Defaults relative to the working directory (the repository root, where ``make`` runs).
RESULTS = Path("benchmarks") / "results"
CACHE = Path("benchmarks") / ".cache"
METHODS = ("fedavg", "fedsparsify-global", "fedsparsify-local", "random", "one-shot")
TARGETS = (0.8, 0.9, 0.95)
ROW_KEYS = (
    "dataset",
    "method",
    "target_sparsity",
    "final_sparsity",
    "metric",
    "value",
    "rounds",
)

logger = logging.getLogger("benchmarks.accuracy")


@dataclass(frozen=True)
class Setup:
    """One dataset's federation: data, model, training and schedule, shared by every method."""

    dataset: str
    metric: str  # the test metric reported ("accuracy" or "mae")
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
            rounds=4,
            prune_start=1,
            prune_end=2,
            one_shot_round=1,
            model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=32),
            training=TrainingSpec(lr=0.05, batch_size=32, local_epochs=1),
            data={"n_sites": 4, "partition": "dirichlet", "alpha": 0.5},
        )
    return Setup(
        dataset="digits",
        metric="accuracy",
        rounds=60,
        prune_start=10,
        prune_end=45,
        one_shot_round=20,
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=128),
        training=TrainingSpec(lr=0.02, momentum=0.9, batch_size=32, local_epochs=4),
        data={"n_sites": 10, "partition": "dirichlet", "alpha": 0.5},
    )


def brainage_setup(quick: bool) -> Setup:
    """Four non-IID sites (own ages and scanners) on the coarse grid; reduced BrainAge CNN."""
    if quick:
        return Setup(
            dataset="brainage",
            metric="mae",
            rounds=3,
            prune_start=1,
            prune_end=1,
            one_shot_round=1,
            model=ModelSpec(kind="brainage", input_shape=COARSE_SHAPE, width=2),
            training=TrainingSpec(lr=1e-3, optimizer="adam", batch_size=8, local_epochs=1),
            data={"n_sites": 2, "subjects_per_site": 10, "test_subjects": 8},
        )
    return Setup(
        dataset="brainage",
        metric="mae",
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


def run_cell(
    setup: Setup,
    data: FederatedData,
    method: str,
    target: float,
    *,
    seed: int,
    device: str | None,
) -> tuple[dict[str, Any], list[RoundRow], float]:
    """Run one (method, target) federation; return its result row, curve and seconds."""
    spec = make_spec(setup, method, target, seed=seed)
    start = time.perf_counter()
    curve = run_federation(spec, data, device=device)
    elapsed = time.perf_counter() - start
    last = curve[-1]
    row = {
        "dataset": setup.dataset,
        "method": method,
        "target_sparsity": 0.0 if method == "fedavg" else target,
        "final_sparsity": float(last["sparsity"]),
        "metric": setup.metric,
        "value": float(last[setup.metric]),
        "rounds": setup.rounds,
    }
    assert tuple(row) == ROW_KEYS
    logger.info(
        "%s %s %.2f: %s %.4f at sparsity %.4f (%.1f s)",
        setup.dataset,
        method,
        target,
        setup.metric,
        row["value"],
        row["final_sparsity"],
        elapsed,
    )
    return row, curve, elapsed


def curve_entry(
    setup: Setup, row: dict[str, Any], curve: list[RoundRow], seconds: float
) -> dict[str, Any]:
    """A run's per-round curve (test metric, sparsity, upload size, training loss) for the JSON.

    ``last5_mean`` (the test metric averaged over the last five rounds) shows how much of a
    difference between final values is round-to-round noise.
    """
    keys = ("round", "sparsity", "n_values", setup.metric, "train_loss")
    exact = ("round", "n_values")
    per_round = [{k: r[k] if k in exact else _sig(r[k]) for k in keys} for r in curve]
    tail = [float(r[setup.metric]) for r in curve[-5:]]
    return {
        "dataset": setup.dataset,
        "method": row["method"],
        "target_sparsity": row["target_sparsity"],
        "seconds": round(seconds, 2),
        "last5_mean": _sig(sum(tail) / len(tail)),
        "per_round": per_round,
    }


def _sig(value: float) -> float:
    return float(f"{float(value):.6g}")


def format_table(rows: list[dict[str, Any]], setups: dict[str, Setup]) -> str:
    """Markdown table: one line per (dataset, method), one column per target sparsity."""
    targets = sorted({r["target_sparsity"] for r in rows if r["method"] != "fedavg"})
    head = "| dataset | metric | method | " + " | ".join(f"s={t:g}" for t in targets) + " |"
    lines = [head, "|" + "---|" * (3 + len(targets))]
    for dataset, setup in setups.items():
        dense = [r for r in rows if r["dataset"] == dataset and r["method"] == "fedavg"]
        for method in METHODS:
            cells = []
            for t in targets:
                found = [
                    r
                    for r in rows
                    if r["dataset"] == dataset
                    and r["method"] == method
                    and (method == "fedavg" or r["target_sparsity"] == t)
                ]
                if not found:
                    cells.append("-")
                    continue
                r = found[0]
                text = f"{r['value']:.4f}" if setup.metric == "accuracy" else f"{r['value']:.2f}"
                if method != "fedavg":
                    text += f" ({r['final_sparsity']:.3f})"
                    if dense:
                        ref = dense[0]["value"]
                        if setup.metric == "accuracy":
                            text += f" {100 * (r['value'] - ref):+.1f} pt"
                        else:
                            text += f" {100 * (r['value'] / ref - 1):+.1f}%"
                cells.append(text)
            lines.append(f"| {dataset} | {setup.metric} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(
    dataset: str, setup: Setup, curves: list[dict[str, Any]], targets: list[float], path: Path
) -> None:
    """Metric and sparsity per round: one column per target sparsity, FedAvg in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "fedavg": "black",
        "fedsparsify-global": "tab:blue",
        "fedsparsify-local": "tab:green",
        "random": "tab:red",
        "one-shot": "tab:orange",
    }
    fig, axes = plt.subplots(
        2, len(targets), figsize=(4.2 * len(targets), 6.4), sharex=True, squeeze=False
    )
    for col, target in enumerate(targets):
        for curve in curves:
            if curve["dataset"] != dataset:
                continue
            if curve["method"] != "fedavg" and curve["target_sparsity"] != target:
                continue
            rounds = [r["round"] for r in curve["per_round"]]
            style = {"color": colours[curve["method"]], "label": curve["method"], "lw": 1.4}
            axes[0][col].plot(rounds, [r[setup.metric] for r in curve["per_round"]], **style)
            axes[1][col].plot(rounds, [r["sparsity"] for r in curve["per_round"]], **style)
        axes[0][col].set_title(f"{dataset}: target sparsity {target:g}")
        axes[0][col].set_ylabel(f"test {setup.metric}")
        axes[1][col].set_ylabel("sparsity")
        axes[1][col].set_xlabel("round")
        axes[1][col].set_ylim(-0.02, 1.0)
        if setup.metric == "accuracy":
            axes[0][col].set_ylim(max(0.0, axes[0][col].get_ylim()[0]), 1.0)
        else:
            low, high = axes[0][col].get_ylim()
            axes[0][col].set_ylim(low, min(high, 25.0))
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny CI run: few rounds, s=0.9")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--datasets", nargs="+", choices=sorted(SETUPS), default=None)
    parser.add_argument("--targets", nargs="+", type=float, default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=None)
    parser.add_argument("--seed", type=int, default=0, help="data and model seed")
    parser.add_argument("--cache-dir", type=Path, default=CACHE / "brainage")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default=None, help="e.g. cuda (default: CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out: Path = args.out or (CACHE / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    datasets = args.datasets or list(SETUPS)
    targets = args.targets or ([0.9] if args.quick else list(TARGETS))
    methods = args.methods or list(METHODS)

    started = time.perf_counter()
    setups = {name: SETUPS[name](args.quick) for name in datasets}
    rows: list[dict[str, Any]] = []
    curves: list[dict[str, Any]] = []
    for name, setup in setups.items():
        t0 = time.perf_counter()
        data = load_data(setup, seed=args.seed, cache_dir=args.cache_dir)
        logger.info("%s: data ready in %.1f s", name, time.perf_counter() - t0)
        cells = [("fedavg", 0.0)] if "fedavg" in methods else []
        cells += [(m, t) for t in targets for m in methods if m != "fedavg"]
        for method, target in cells:
            row, curve, elapsed = run_cell(
                setup, data, method, target, seed=args.seed, device=args.device
            )
            rows.append(row)
            curves.append(curve_entry(setup, row, curve, elapsed))
        plot_curves(name, setup, curves, targets, out / f"accuracy_{name}.png")

    table = format_table(rows, setups)
    report = {
        "benchmark": "accuracy",
        "command": "benchmarks/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "seed": args.seed,
        "rows": rows,
        "setups": {name: s.describe() for name, s in setups.items()},
        "curves": curves,
        "table": table,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.machine(),
            "threads": args.threads,
            "device": args.device or "cpu",
        },
    }
    (out / "accuracy.json").write_text(json.dumps(report, indent=1) + "\n")
    print(table)
    print(f"\nwrote {out / 'accuracy.json'} in {report['seconds']} s")
    return 0
