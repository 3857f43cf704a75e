"""The accuracy benchmark's report: mean ± std over seeds, the comparison with FedAvg, plots.

A cell's ``versus_fedavg`` is ``"within one std"`` when its mean is within one standard
deviation of dense FedAvg's (the larger of the two cells' standard deviations), else
``"better"`` or ``"worse"``; ``paired_delta`` is the mean ± std over seeds of the per-seed
difference to FedAvg (each seed's runs share data and initial model). With 3 seeds neither is a
significance test: they say what the spread does and does not support.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["format_table", "plot_curves", "summarise"]


class _Setup(Protocol):
    @property
    def metric(self) -> str: ...

    @property
    def higher_is_better(self) -> bool: ...


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _verdict(mean: float, std: float, ref_mean: float, ref_std: float, higher: bool) -> str:
    if abs(mean - ref_mean) <= max(std, ref_std):
        return "within one std"
    return "better" if (mean > ref_mean) == higher else "worse"


def summarise(
    runs: Sequence[Mapping[str, Any]], setups: Mapping[str, _Setup]
) -> list[dict[str, Any]]:
    """One entry per (dataset, method, target): mean and std over seeds, against FedAvg."""
    cells: dict[tuple[str, str, float], list[Mapping[str, Any]]] = {}
    for run in runs:
        cells.setdefault((run["dataset"], run["method"], run["target_sparsity"]), []).append(run)
    out = []
    for (dataset, method, target), group in cells.items():
        group = sorted(group, key=lambda r: r["seed"])
        values = [float(r["value"]) for r in group]
        entry: dict[str, Any] = {
            "dataset": dataset,
            "method": method,
            "target_sparsity": target,
            "metric": group[0]["metric"],
            "seeds": [r["seed"] for r in group],
            "values": values,
            "mean": statistics.fmean(values),
            "std": _std(values),
            "final_sparsity_mean": statistics.fmean(float(r["final_sparsity"]) for r in group),
        }
        dense = {r["seed"]: float(r["value"]) for r in cells.get((dataset, "fedavg", 0.0), [])}
        if method != "fedavg" and dense and all(r["seed"] in dense for r in group):
            ref = [dense[r["seed"]] for r in group]
            deltas = [v - d for v, d in zip(values, ref, strict=True)]
            entry["paired_delta_mean"] = statistics.fmean(deltas)
            entry["paired_delta_std"] = _std(deltas)
            if len(values) > 1:
                entry["versus_fedavg"] = _verdict(
                    entry["mean"],
                    entry["std"],
                    statistics.fmean(ref),
                    _std(ref),
                    setups[dataset].higher_is_better,
                )
        out.append(entry)
    return out


def _cell_text(entry: Mapping[str, Any], metric: str) -> str:
    if len(entry["values"]) < 2:  # one seed: no spread to show
        return (
            f"{entry['mean']:.4f} (n=1)" if metric == "accuracy" else f"{entry['mean']:.2f} (n=1)"
        )
    if metric == "accuracy":
        text = f"{entry['mean']:.4f} ± {entry['std']:.4f}"
    else:
        text = f"{entry['mean']:.2f} ± {entry['std']:.2f}"
    verdict = entry.get("versus_fedavg")
    if verdict is not None:
        text += " (≈)" if verdict == "within one std" else f" ({verdict})"
    return text


def format_table(summary: Sequence[Mapping[str, Any]], setups: Mapping[str, _Setup]) -> str:
    """Markdown: one line per (dataset, method), one column per target sparsity, mean ± std;
    ``(≈)`` marks a mean within one std of FedAvg's."""
    targets = sorted({e["target_sparsity"] for e in summary if e["method"] != "fedavg"})
    head = "| dataset | metric | method | " + " | ".join(f"s={t:g}" for t in targets) + " |"
    lines = [head, "|" + "---|" * (3 + len(targets))]
    for dataset, setup in setups.items():
        methods = list(dict.fromkeys(e["method"] for e in summary if e["dataset"] == dataset))
        for method in methods:
            cells = []
            for t in targets:
                found = [
                    e
                    for e in summary
                    if e["dataset"] == dataset
                    and e["method"] == method
                    and (method == "fedavg" or e["target_sparsity"] == t)
                ]
                cells.append(_cell_text(found[0], setup.metric) if found else "-")
            lines.append(f"| {dataset} | {setup.metric} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(
    dataset: str,
    setup: _Setup,
    curves: Sequence[Mapping[str, Any]],
    targets: Sequence[float],
    path: Path,
) -> None:
    """Test metric (mean over seeds, band ± std) and sparsity per round; one column per target
    sparsity, FedAvg in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for curve in curves:
            if curve["dataset"] != dataset:
                continue
            if curve["method"] != "fedavg" and curve["target_sparsity"] != target:
                continue
            groups.setdefault(curve["method"], []).append(curve)
        for method, group in groups.items():
            rounds = [r["round"] for r in group[0]["per_round"]]
            metric = np.array([[r[setup.metric] for r in c["per_round"]] for c in group])
            spars = np.array([[r["sparsity"] for r in c["per_round"]] for c in group])
            mean, std = metric.mean(axis=0), metric.std(axis=0, ddof=1 if len(group) > 1 else 0)
            colour = colours.get(method, "grey")
            label = f"{method} (n={len(group)})"
            axes[0][col].plot(rounds, mean, color=colour, label=label, lw=1.4)
            axes[0][col].fill_between(rounds, mean - std, mean + std, color=colour, alpha=0.15)
            axes[1][col].plot(rounds, spars.mean(axis=0), color=colour, lw=1.4)
        axes[0][col].set_title(f"{dataset}: target sparsity {target:g}")
        axes[0][col].set_ylabel(f"test {setup.metric} (mean ± std over seeds)")
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
