"""Metrics that add up across aggregator processes: every process's samples in the database.

Each process keeps its Prometheus metrics in memory (:class:`~fedsparsify.api.metrics.
ServerMetrics`) and writes its current samples to ``metric_samples`` under its instance id every
``metrics_flush_interval_s`` and before it answers ``/metrics``; ``/metrics`` on any process
answers the sum over every process. Counters and histograms of a process that died stay in the
sum (a counter never goes down): the leader folds them into one ``retired`` row set. A process
killed with SIGKILL loses the increments of its last interval; nothing else is lost.

Why the database and not ``prometheus_client``'s multiprocess mode: that mode keeps files named
by pid in one local directory, so it neither spans hosts nor survives two hosts reusing a pid.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from sqlalchemy import delete, func, select

from fedsparsify.api.db import Database, MetricSampleRow, now

__all__ = ["RETIRED", "SharedMetrics"]

log = logging.getLogger(__name__)

#: Instance name under which the samples of dead processes are kept.
RETIRED = "retired"
_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")


def _sort_key(row: tuple[str, str, float]) -> tuple[str, float, str]:
    name, labels, _value = row
    le = json.loads(labels).get("le")
    return name, float(le) if le is not None else 0.0, labels


class SharedMetrics:
    """One process's metrics in the database, and the cross-process sums for ``/metrics``."""

    def __init__(self, db: Database, registry: CollectorRegistry, instance: str) -> None:
        self.db = db
        self.registry = registry
        self.instance = instance
        self._flushed: dict[tuple[str, str], float] = {}
        self.scrape_registry = CollectorRegistry(auto_describe=False)
        self.scrape_registry.register(_SumCollector(self))

    def _samples(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = json.dumps(dict(sorted(sample.labels.items())))
                out[(sample.name, labels)] = float(sample.value)
        return out

    def _upsert(self, rows: list[dict[str, Any]], *, add: bool) -> Any:
        if self.db.is_postgresql:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        stmt = insert(MetricSampleRow).values(rows)
        value = MetricSampleRow.value + stmt.excluded.value if add else stmt.excluded.value
        return stmt.on_conflict_do_update(
            index_elements=["instance", "name", "labels"],
            set_={"value": value, "updated_at": stmt.excluded.updated_at},
        )

    def flush(self) -> int:
        """Write the samples that changed since the last flush; how many."""
        current = self._samples()
        changed = {k: v for k, v in current.items() if self._flushed.get(k) != v}
        if not changed:
            return 0
        at = now()
        rows = [
            {"instance": self.instance, "name": n, "labels": lb, "value": v, "updated_at": at}
            for (n, lb), v in changed.items()
        ]
        with self.db.session() as session:
            session.execute(self._upsert(rows, add=False))
            session.commit()
        self._flushed.update(changed)
        return len(changed)

    def totals(self) -> list[tuple[str, str, float]]:
        """``(sample name, labels JSON, sum over processes)``."""
        with self.db.read() as session:
            rows = session.execute(
                select(
                    MetricSampleRow.name, MetricSampleRow.labels, func.sum(MetricSampleRow.value)
                ).group_by(MetricSampleRow.name, MetricSampleRow.labels)
            ).all()
        return sorted(((str(n), str(lb), float(v)) for n, lb, v in rows), key=_sort_key)

    def instances(self) -> list[str]:
        """Instance ids with samples (the retired set excluded)."""
        with self.db.read() as session:
            found = session.scalars(
                select(MetricSampleRow.instance)
                .where(MetricSampleRow.instance != RETIRED)
                .distinct()
            ).all()
        return sorted(found)

    def retire(self, instance: str) -> None:
        """Fold a dead process's counters and histograms into the retired set (its gauges
        go: they described a process that no longer runs)."""
        gauges = {f.name for f in self.registry.collect() if f.type == "gauge"}
        at = now()
        with self.db.session() as session:
            dead = session.execute(
                select(MetricSampleRow.name, MetricSampleRow.labels, MetricSampleRow.value).where(
                    MetricSampleRow.instance == instance
                )
            ).all()
            rows = [
                {"instance": RETIRED, "name": n, "labels": lb, "value": v, "updated_at": at}
                for n, lb, v in dead
                if n not in gauges
            ]
            if rows:
                session.execute(self._upsert(rows, add=True))
            session.execute(delete(MetricSampleRow).where(MetricSampleRow.instance == instance))
            session.commit()
        log.info("metrics of dead instance %s folded into %r", instance, RETIRED)


class _SumCollector:
    """Yields this process's metric families with the cross-process sums as their samples."""

    def __init__(self, shared: SharedMetrics) -> None:
        self.shared = shared

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        owner: dict[str, str] = {}
        for family in self.shared.registry.collect():
            families[family.name] = Metric(family.name, family.documentation, family.type)
            for suffix in _SUFFIXES:
                owner[family.name + suffix] = family.name
        for name, labels, value in self.shared.totals():
            fam = owner.get(name)
            if fam is not None:
                parsed: dict[str, Any] = json.loads(labels)
                families[fam].add_sample(name, {k: str(v) for k, v in parsed.items()}, value)
        yield from families.values()
