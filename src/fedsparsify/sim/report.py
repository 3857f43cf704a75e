"""A simulation's report in the demo's format, and its live progress line.

``report.md``, ``metrics.json`` and the plots come from :func:`fedsparsify.clients.report.
write_report`; ``metrics.json`` also carries the simulation's own per-round figures (seconds,
bytes up and down, driver and worker memory) under ``simulation``.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedsparsify.clients.report import RoundRow, RunResult, render_table, write_report
from fedsparsify.platform.spec import FederationSpec
from fedsparsify.sim.driver import SimProgress, SimResult

__all__ = ["format_progress", "run_result", "summary_table", "write_simulation_report"]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_progress(p: SimProgress) -> str:
    """One line: round, sites done this round, elapsed, time left, last round's metrics."""
    last = p.last
    parts = [
        f"round {p.round + 1}/{p.rounds}",
        f"{p.done}/{p.participants} sites",
        f"elapsed {_duration(p.elapsed_s)}",
        f"left ~{_duration(p.eta_s)}",
    ]
    if last:
        metric = "accuracy" if "accuracy" in last else "mae"
        parts.append(f"sparsity {last['sparsity']:.3f}  test {metric} {last[metric]:.4f}")
        parts.append(f"{last['bytes']:,.0f} B/site")
    return " | ".join(parts)


def run_result(result: SimResult, spec: FederationSpec, *, name: str) -> RunResult:
    """The simulation as one run of the demo's report."""
    classification = "accuracy" in result.final_test
    run = RunResult(
        name,
        spec.crypto_preset,
        spec.method,
        wall_s=result.wall_s,
        task="classification" if classification else "regression",
    )
    for i, row in enumerate(result.rows):
        # round i's aggregate is what round i + 1's participants download
        later = result.rows[i + 1].download_bytes if i + 1 < len(result.rows) else 0
        run.rows.append(
            RoundRow(
                round=row.round,
                sparsity=row.sparsity,
                val_mae=float("nan") if classification else row.val_metric,
                val_accuracy=row.val_metric if classification else float("nan"),
                upload_bytes=row.upload_bytes_per_site,
                encrypt_ms=row.encrypt_ms,
                aggregate_ms=row.aggregate_ms,
                contributors=row.participants,
                participants=row.participants,
                upload_total_bytes=float(row.upload_bytes),
                download_total_bytes=float(later),
            )
        )
    if classification:
        run.final_test_accuracy = result.final_test["accuracy"]
    else:
        run.final_test_mae = result.final_test.get("mae")
    run.final_sparsity = result.final_sparsity
    return run


def write_simulation_report(
    out_dir: Path,
    result: SimResult,
    spec: FederationSpec,
    *,
    data: str,
    command: str = "",
) -> Path:
    """Write the report; return ``report.md``."""
    run = run_result(result, spec, name=f"{result.engine}-{result.n_sites}")
    notes = [
        f"{result.n_sites} simulated sites ({data}), {result.per_round} per round, "
        f"{spec.rounds} rounds, engine {result.engine}, preset {spec.crypto_preset}, "
        f"pairwise masks {'on' if spec.pairwise_masks else 'off'}, seed {spec.seed}",
        "final test "
        + ", ".join(f"{k} {v:.4f}" for k, v in result.final_test.items())
        + f" at sparsity {result.final_sparsity:.3f}",
        f"driver peak RSS {result.driver_peak_rss_mb:.0f} MiB, worker peak RSS "
        f"{result.worker_peak_rss_mb:.0f} MiB, {result.wall_s:.1f} s in all",
    ]
    if command:
        notes.append(f"command: `{command}`")
    rows: list[dict[str, Any]] = [
        {**asdict(row), "bytes_per_round": row.bytes_per_round} for row in result.rows
    ]
    extra = {
        "simulation": {
            "engine": result.engine,
            "sites": result.n_sites,
            "per_round": result.per_round,
            "spec": spec.model_dump(mode="json"),
            "data": data,
            "final_test": result.final_test,
            "driver_peak_rss_mb": result.driver_peak_rss_mb,
            "worker_peak_rss_mb": result.worker_peak_rss_mb,
            "rounds": rows,
            "command": command,
        }
    }
    return write_report(
        out_dir,
        [run],
        title="fedsparsify simulate: a simulated federation",
        notes=notes,
        extra=extra,
    )


def summary_table(result: SimResult, spec: FederationSpec) -> str:
    """The per-round Markdown table the CLI prints at the end."""
    return render_table(run_result(result, spec, name=result.engine))
