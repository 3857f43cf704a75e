"""Rounds, as the routes see them: one facade over the round modules.

- :mod:`.round_store`: blob layout, running sums, aggregates;
- :mod:`.round_queries`: reading rounds and their public view;
- :mod:`.lifecycle`: open, close or fail at the deadline, auto-advance;
- :mod:`.uploads`: streamed, validated uploads and their commit;
- :mod:`.recovery`: bringing files and database in line after a crash.

Design: a running sum per channel, checked at close. Each accepted upload is folded into its
channel's sum at once, so closing a round in which everyone uploaded everything is a rename and
the last uploader gets its answer as soon as its own upload is added.

Reads take no lock and apply no deadline: :meth:`RoundService.housekeeping`, run every
``deadline_check_interval_s`` by one process (the leader, on PostgreSQL), closes or fails the
rounds whose deadline passed, so a GET may show a round as ``collecting`` for up to one interval
after its deadline (an upload then is refused all the same).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fedsparsify.api.db import RoundMetricRow, RoundRow, now
from fedsparsify.api.schemas import MAX_METRICS, MetricsStored, RoundOut, UploadAccepted
from fedsparsify.api.services.auth import Caller
from fedsparsify.api.services.federations import get_federation
from fedsparsify.api.services.lifecycle import RoundLifecycle
from fedsparsify.api.services.recovery import Recovery
from fedsparsify.api.services.round_queries import get_round_row, round_out
from fedsparsify.api.services.round_store import RoundFiles, aggregate_key
from fedsparsify.api.services.uploads import StagedUpload, UploadService, UploadTicket
from fedsparsify.api.state import AppState
from fedsparsify.errors import ConfigError, ConflictError, NotFoundError, PermissionDeniedError

__all__ = ["RoundService"]


class RoundService:
    """Every round operation; methods are blocking (run them in a worker thread)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.blobs = state.blobs
        self.files = RoundFiles(state.blobs)
        self.lifecycle = RoundLifecycle(state, self.files)
        self.uploads = UploadService(state, self.files, self.lifecycle)
        self.recovery = Recovery(state, self.files, self.lifecycle)
        self._last_flush = self._last_sweep = time.monotonic()

    def get_round(self, fid: str, index: int | None) -> RoundOut:
        """One round (``None``: the latest)."""
        with self.state.db.read() as session:
            get_federation(session, fid)
            return round_out(session, get_round_row(session, fid, index))

    def list_rounds(self, fid: str) -> list[RoundOut]:
        """Every round of a federation."""
        with self.state.db.read() as session:
            get_federation(session, fid)
            rows = session.scalars(
                select(RoundRow).where(RoundRow.federation_id == fid).order_by(RoundRow.index)
            ).all()
            return [round_out(session, r) for r in rows]

    def open_next_round(self, fid: str) -> RoundOut:
        """Admin: open the next round."""
        return self.lifecycle.open_next_round(fid)

    def check_deadlines(self, fid: str | None = None, index: int | None = None) -> None:
        """Close or fail every round past its deadline."""
        self.lifecycle.check_deadlines(fid, index)

    def housekeeping(self) -> None:
        """One tick of the background loop: check this process's locks; on the leader, apply
        deadlines and (every ``orphan_sweep_interval_s``) sweep dead processes' leftovers;
        write this process's metrics to the database (PostgreSQL) when they are due."""
        settings = self.state.settings
        self.state.coordinator.check()
        if self.state.coordinator.try_lead():
            self.lifecycle.check_deadlines()
            if time.monotonic() - self._last_sweep >= settings.orphan_sweep_interval_s:
                self._last_sweep = time.monotonic()
                self.recovery.sweep()
        shared = self.state.shared_metrics
        if shared is not None and time.monotonic() - self._last_flush >= (
            settings.metrics_flush_interval_s
        ):
            self._last_flush = time.monotonic()
            shared.flush()

    def prepare_upload(self, fid: str, index: int, channel: str, caller: Caller) -> UploadTicket:
        """Check that ``caller`` may upload ``channel`` to round ``index`` now."""
        return self.uploads.prepare(fid, index, channel, caller)

    def commit_upload(self, ticket: UploadTicket, staged: StagedUpload) -> UploadAccepted:
        """Store a validated upload and add it into the round's running sum."""
        return self.uploads.commit(ticket, staged)

    def recover(self) -> None:
        """Bring files and database back in line after a crash."""
        self.recovery.run()

    def aggregate_path(self, fid: str, index: int, channel: str) -> Path:
        """The closed round's aggregate of ``channel``; 409 until the round is closed."""
        with self.state.db.read() as session:
            get_federation(session, fid)
            rnd = get_round_row(session, fid, index)
            if channel not in rnd.channels:
                raise NotFoundError(f"round {index} has no channel {channel!r}")
            if rnd.state == "failed":
                raise ConflictError(f"round {index} failed ({rnd.reason}): it has no aggregate")
            if rnd.state != "closed":
                raise ConflictError(
                    f"round {index} is {rnd.state}: the aggregate is ready once it closes"
                )
        return self.blobs.path(aggregate_key(fid, index, channel))

    def report_metrics(
        self, fid: str, index: int, caller: Caller, metrics: dict[str, float]
    ) -> MetricsStored:
        """Store (merge) plaintext scalars a participant reports for a round."""
        try:
            return self._report_metrics(fid, index, caller, metrics)
        except IntegrityError:
            # Another process stored this client's first report meanwhile: merge into it.
            return self._report_metrics(fid, index, caller, metrics)

    def _report_metrics(
        self, fid: str, index: int, caller: Caller, metrics: dict[str, float]
    ) -> MetricsStored:
        with self.state.db.session() as session:
            get_federation(session, fid)
            rnd = get_round_row(session, fid, index)
            if caller.client_id is None or caller.client_id not in rnd.participants:
                raise PermissionDeniedError(f"you are not a participant of round {index}")
            row = session.scalars(
                select(RoundMetricRow)
                .where(
                    RoundMetricRow.round_id == rnd.id,
                    RoundMetricRow.client_id == caller.client_id,
                )
                .with_for_update()
            ).first()
            clean = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
            stored = dict(row.metrics) if row is not None else {}
            merged = {**stored, **clean}
            if len(merged) > MAX_METRICS:
                raise ConfigError(
                    f"this report would bring your metrics for round {index} to {len(merged)} "
                    f"({len(stored)} stored, {len(merged) - len(stored)} new); at most "
                    f"{MAX_METRICS} are kept per client and round"
                )
            if row is None:
                row = RoundMetricRow(round_id=rnd.id, client_id=caller.client_id, metrics=clean)
                session.add(row)
            else:
                row.metrics = {**row.metrics, **clean}
                row.updated_at = now()
            session.commit()
            return MetricsStored(round=index, client_id=caller.client_id, metrics=row.metrics)
