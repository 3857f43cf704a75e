"""What the benchmark reads from the aggregator: sampled RSS and Prometheus counters.

Memory is the resident set size of the aggregator process (and any children), sampled every
:data:`SAMPLE_S` by a background thread with psutil; a peak shorter than that can be missed.
Server-side seconds come from the aggregator's own ``/metrics``: histogram sums of
``fedsparsify_aggregation_seconds`` (``add``: adding an upload into the running sum; ``close``:
finishing a round) and ``fedsparsify_upload_stage_seconds`` (receiving and validating an upload
frame by frame), read before and after a round.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import psutil
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["RssSampler", "ServerCounters", "read_counters"]

SAMPLE_S = 0.02
_MB = 1024 * 1024


class RssSampler:
    """Samples a process tree's RSS in a thread (``children=False``: the process alone);
    :meth:`reset` starts a new peak window."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_S, *, children: bool = True) -> None:
        self._proc = psutil.Process(pid)
        self._children = children
        self._interval = interval_s
        self._lock = threading.Lock()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()

    def current_mb(self) -> float:
        """The RSS right now, in MiB."""
        return self._sample() / _MB

    def reset(self) -> None:
        """Forget the peak so far (start of a measured window)."""
        with self._lock:
            self._peak = self._sample()

    def peak_mb(self) -> float:
        """The highest RSS sampled since the last :meth:`reset`, in MiB."""
        with self._lock:
            return max(self._peak, self._sample()) / _MB

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> int:
        try:
            kids = self._proc.children(recursive=True) if self._children else []
            procs = [self._proc, *kids]
            return sum(p.memory_info().rss for p in procs)
        except psutil.Error:
            return 0

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            rss = self._sample()
            with self._lock:
                self._peak = max(self._peak, rss)


@dataclass(frozen=True)
class ServerCounters:
    """Cumulative server-side seconds and counts at one moment."""

    add_s: float = 0.0
    adds: float = 0.0
    close_s: float = 0.0
    stage_s: float = 0.0
    stages: float = 0.0

    def __sub__(self, other: ServerCounters) -> ServerCounters:
        return ServerCounters(
            add_s=self.add_s - other.add_s,
            adds=self.adds - other.adds,
            close_s=self.close_s - other.close_s,
            stage_s=self.stage_s - other.stage_s,
            stages=self.stages - other.stages,
        )


def read_counters(metrics_text: str) -> ServerCounters:
    """Parse the histogram sums and counts the benchmark needs out of ``/metrics`` text."""
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            step = sample.labels.get("step", "")
            values[(sample.name, step)] = float(sample.value)
    agg = "fedsparsify_aggregation_seconds"
    stage = "fedsparsify_upload_stage_seconds"
    return ServerCounters(
        add_s=values.get((f"{agg}_sum", "add"), 0.0),
        adds=values.get((f"{agg}_count", "add"), 0.0),
        close_s=values.get((f"{agg}_sum", "close"), 0.0),
        stage_s=values.get((f"{stage}_sum", ""), 0.0),
        stages=values.get((f"{stage}_count", ""), 0.0),
    )
