"""The demo's live view: a progress bar on a terminal, plain lines elsewhere, a final summary.

On a terminal (rich): one bar per federation with rounds done, elapsed and remaining time, and
the last closed round's metrics. When stdout is not a terminal (a log file, CI): one plain line
per closed round, nothing rewritten in place. Rounds are named ``round 3 (4/60)`` as in the
sites' logs and by their index in the report's table.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from fedsparsify.clients.report import Reference, RoundRow, RunResult
from fedsparsify.clients.site_log import describe_round

__all__ = ["DemoDisplay", "LiveStatus", "format_bytes", "format_duration", "summary_lines"]


@dataclass
class LiveStatus:
    """What the demo knows about the federation it is running, at one poll."""

    run: str
    rounds: int = 0
    round: int = -1
    state: str = "starting"
    uploaded: int = 0
    participants: int = 0
    done: int = 0
    row: RoundRow | None = None
    started: float = field(default_factory=time.monotonic)


def format_duration(seconds: float) -> str:
    """``52 s``, ``3 min 12 s``, ``1 h 02 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def format_bytes(n: float) -> str:
    """``49.8 kB``, ``8.85 MB``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _metrics(row: RoundRow | None) -> str:
    if row is None:
        return "waiting for the first round to close"
    parts = []
    if not math.isnan(row.val_mae):
        parts.append(f"val MAE {row.val_mae:.2f} y")
    if not math.isnan(row.sparsity):
        parts.append(f"sparsity {row.sparsity:.3f}")
    if not math.isnan(row.upload_bytes):
        parts.append(f"{format_bytes(row.upload_bytes)}/site")
    return ", ".join(parts)


def _left(status: LiveStatus) -> float | None:
    if status.done == 0:
        return None
    per_round = (time.monotonic() - status.started) / status.done
    return per_round * (status.rounds - status.done)


class DemoDisplay:
    """Shows :class:`LiveStatus` updates; a context manager around the demo's run."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.terminal = bool(console.is_terminal)
        self._live: Any = None
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._status: dict[str, Any] = {}
        self._printed: dict[str, int] = {}

    def __enter__(self) -> DemoDisplay:
        if self.terminal:
            from rich.live import Live
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("rounds"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
            )
            self._live = Live(self._group(), console=self.console, refresh_per_second=4)
            self._live.__enter__()
        return self

    def _group(self) -> Any:
        from rich.console import Group

        return Group(self._progress, *self._status.values())

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.__exit__(kind, exc, tb)
            self._live = None  # closing early (before the report's summary) is allowed

    def phase(self, text: str) -> None:
        """A step before or after the rounds (data, the in-process reference)."""
        if self._live is not None:
            self._live.console.print(f"[dim]{text}[/]", highlight=False)
        else:
            self.console.print(text, highlight=False, soft_wrap=True)

    def update(self, status: LiveStatus) -> None:
        """One poll of the running federation."""
        if self._live is not None:
            self._update_bar(status)
        elif status.done > self._printed.get(status.run, 0) and status.row is not None:
            self._printed[status.run] = status.done
            left = _left(status)
            row = status.row
            self.console.print(
                f"{status.run} {describe_round(row.round, status.rounds)}: {_metrics(row)}, "
                f"{row.contributors}/{row.participants} sites; "
                f"{format_duration(time.monotonic() - status.started)} elapsed"
                + ("" if left is None else f", about {format_duration(left)} left"),
                highlight=False,
                soft_wrap=True,
            )

    def _update_bar(self, status: LiveStatus) -> None:
        from rich.text import Text

        if status.run not in self._tasks:
            self._tasks[status.run] = self._progress.add_task(status.run, total=status.rounds)
            self._status[status.run] = Text("", no_wrap=True, overflow="ellipsis")
            self._live.update(self._group())
        self._progress.update(self._tasks[status.run], completed=status.done)
        now = (
            f"{describe_round(status.round, status.rounds)} {status.state} "
            f"{status.uploaded}/{status.participants}"
            if status.round >= 0
            else "sites joining and receiving the key"
        )
        self._status[status.run].plain = f"  {now} | {_metrics(status.row)}"


def summary_lines(
    results: Sequence[RunResult], reference: Reference | None, wall_s: float
) -> list[str]:
    """The demo's closing lines: per run final MAE, sparsity, time and bytes; then the total."""
    lines = []
    for run in results:
        up, down = run.total_bytes
        mae = "-" if run.final_test_mae is None else f"{run.final_test_mae:.2f} y"
        sparsity = "-" if run.final_sparsity is None else f"{run.final_sparsity:.3f}"
        lines.append(
            f"{run.name}: final test MAE {mae} at sparsity {sparsity}, {len(run.rows)} rounds in "
            f"{format_duration(run.wall_s)}, {format_bytes(up + down)} moved "
            f"({format_bytes(up)} up, {format_bytes(down)} down, all sites)"
        )
    if reference is not None:
        lines.append(
            f"in process, no HTTP or encryption: final test MAE {reference.final_test_mae:.2f} y "
            f"at sparsity {reference.final_sparsity:.3f}"
        )
    lines.append(f"demo wall time {format_duration(wall_s)}")
    return lines
