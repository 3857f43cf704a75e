"""The demo's report: per-round table, JSON metrics and PNG plots, side by side per run.

Rounds are named by their index (0 to rounds - 1) here, in the live progress and in every
site's log. The plots carry a title and, where the demo ran one, the in-process plaintext
reference of the same spec as a dashed line. Regression runs (brain age) report MAE;
classification runs (``task="classification"``, e.g. ``fedsparsify simulate`` on the synthetic
task) report accuracy in its place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Reference", "RoundRow", "RunResult", "render_table", "write_report"]


@dataclass(frozen=True)
class RoundRow:
    """One round of one run, as the demo reports it (means over contributing sites)."""

    round: int
    sparsity: float
    val_mae: float
    upload_bytes: float
    encrypt_ms: float
    aggregate_ms: float
    contributors: int
    participants: int
    #: bytes the aggregator received this round, every site and channel (its own count)
    upload_total_bytes: float = 0.0
    #: this round's aggregate times the sites that took it in: the download traffic
    download_total_bytes: float = 0.0
    val_accuracy: float = float("nan")


@dataclass
class RunResult:
    """One federation run of the demo."""

    name: str
    preset: str
    method: str
    rows: list[RoundRow] = field(default_factory=list)
    final_test_mae: float | None = None
    final_sparsity: float | None = None
    wall_s: float = 0.0
    events: list[str] = field(default_factory=list)
    task: str = "regression"
    final_test_accuracy: float | None = None

    @property
    def total_bytes(self) -> tuple[float, float]:
        """Uploaded and downloaded bytes over all rounds and sites."""
        return (
            sum(r.upload_total_bytes for r in self.rows),
            sum(r.download_total_bytes for r in self.rows),
        )


@dataclass(frozen=True)
class Reference:
    """The in-process plaintext run of the same spec: per-round sparsity, final test MAE."""

    final_test_mae: float
    final_sparsity: float
    sparsity: tuple[float, ...] = ()


COLUMNS = (
    ("round", "round", "{:d}"),
    ("sparsity", "sparsity", "{:.3f}"),
    ("val_mae", "val MAE (y)", "{:.2f}"),
    ("upload_bytes", "upload B/client", "{:,.0f}"),
    ("encrypt_ms", "encrypt ms", "{:.1f}"),
    ("aggregate_ms", "aggregate ms", "{:.1f}"),
    ("contributors", "sites", "{:d}"),
)


_ACCURACY_COLUMN = ("val_accuracy", "val accuracy", "{:.4f}")


def _columns(run: RunResult) -> tuple[tuple[str, str, str], ...]:
    if run.task != "classification":
        return COLUMNS
    return tuple(_ACCURACY_COLUMN if column[0] == "val_mae" else column for column in COLUMNS)


def _classification(runs: Sequence[RunResult]) -> bool:
    return bool(runs) and all(run.task == "classification" for run in runs)


def _cell(fmt: str, value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)


def render_table(run: RunResult) -> str:
    """A Markdown table of one run's rounds."""
    columns = _columns(run)
    head = "| " + " | ".join(title for _, title, _ in columns) + " |"
    rule = "|" + "|".join("---:" for _ in columns) + "|"
    lines = [head, rule]
    for row in run.rows:
        values = asdict(row)
        cells = [_cell(fmt, values[key]) for key, _, fmt in columns]
        if key_sites := values["participants"]:
            cells[-1] = f"{values['contributors']}/{key_sites}"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(
    runs: Sequence[RunResult],
    key: str,
    ylabel: str,
    path: Path,
    *,
    log: bool,
    title: str,
    reference: Reference | None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for run in runs:
        xs = [r.round for r in run.rows]
        ys = [getattr(r, key) for r in run.rows]
        ax.plot(xs, ys, marker="o", markersize=3, label=run.name)
    if reference is not None and key == "val_mae":
        ax.axhline(
            reference.final_test_mae,
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"in process, plaintext: final test MAE {reference.final_test_mae:.2f}",
        )
    elif reference is not None and key == "sparsity" and reference.sparsity:
        ax.plot(
            range(len(reference.sparsity)),
            reference.sparsity,
            color="black",
            linestyle="--",
            linewidth=1,
            label="in process, no HTTP or encryption",
        )
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (index)")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    out_dir: Path,
    runs: Sequence[RunResult],
    *,
    title: str,
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    reference: Reference | None = None,
) -> Path:
    """Write ``report.md``, ``metrics.json`` and plots into ``out_dir``; return report.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    accuracy = _classification(runs)
    first = ("accuracy.png", ("val_accuracy", "accuracy", False, "Validation accuracy per round"))
    if not accuracy:
        first = (
            "mae.png",
            ("val_mae", "validation MAE (years)", False, "Validation MAE per round"),
        )
    plots = {
        first[0]: first[1],
        "sparsity.png": ("sparsity", "sparsity", False, "Sparsity of the global model per round"),
        "bytes.png": ("upload_bytes", "bytes", True, "Upload per site per round"),
    }
    for name, (key, label, log, caption) in plots.items():
        mean = key in ("val_mae", "val_accuracy")
        plot_title = f"{caption} (mean over sites)" if mean else caption
        _plot(runs, key, label, out_dir / name, log=log, title=plot_title, reference=reference)
    payload = {
        "title": title,
        "runs": [asdict(run) for run in runs],
        "notes": list(notes),
        **(dict(extra) if extra else {}),
    }
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2))
    lines = [f"# {title}", ""]
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    metric = "accuracy" if accuracy else "MAE"
    lines += [
        f"| run | preset | method | final test {metric} | final sparsity | uploaded MB/site "
        "(all rounds) | last upload B/site | MB up + down, all sites | wall s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        mae = "-" if run.final_test_mae is None else f"{run.final_test_mae:.2f}"
        if accuracy:
            acc = run.final_test_accuracy
            mae = "-" if acc is None else f"{acc:.4f}"
        sp = "-" if run.final_sparsity is None else f"{run.final_sparsity:.3f}"
        sent = [r.upload_bytes for r in run.rows if not math.isnan(r.upload_bytes)]
        total = f"{sum(sent) / 1e6:.2f}" if sent else "-"
        last = f"{sent[-1]:,.0f}" if sent else "-"
        up, down = run.total_bytes
        lines.append(
            f"| {run.name} | {run.preset} | {run.method} | {mae} | {sp} | {total} | {last} "
            f"| {up / 1e6:.2f} + {down / 1e6:.2f} | {run.wall_s:.0f} |"
        )
    for run in runs:
        lines += ["", f"## {run.name}", "", render_table(run)]
        if run.events:
            lines += ["", *[f"- {event}" for event in run.events]]
    lines += ["", f"![{metric}]({first[0]}) ![sparsity](sparsity.png) ![bytes](bytes.png)", ""]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines))
    return report
