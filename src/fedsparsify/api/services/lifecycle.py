"""A round's life: open (participants, deadline), close or fail at the deadline, auto-advance.

A round closes when every participant uploaded every channel. At its deadline, with pairwise
masks (the default for encrypted presets) the missing participants' masks do not cancel, so the
round restarts as a new *attempt* with the ones that uploaded (same index, new participant set,
weights and masks; the survivors upload again) while ``quorum`` is met and ``max_attempts`` is
not used up, and fails otherwise; without masks it closes with the ones that uploaded (or fails
below ``quorum``). At close the aggregate holds exactly the clients that
uploaded *every* channel (:meth:`RoundFiles.write_aggregate`), so a dropped client is never in
either channel's ciphertext sum nor in its weight sum. After the last round the federation is
``completed``; with ``auto_advance`` the next round opens when one finishes.

Every change to one round's files and state happens under that round's lock (across processes
on PostgreSQL: see :mod:`fedsparsify.api.coordination`). Opening a round locks the federation's
row, so two processes never open the same round twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fedsparsify.api.db import ClientRow, FederationRow, RoundRow, UploadRow, now
from fedsparsify.api.schemas import RoundOut
from fedsparsify.api.services.federations import get_federation, keys_required, spec_of
from fedsparsify.api.services.keys import load_public_context
from fedsparsify.api.services.liveness import active_ids, complete_uploaders
from fedsparsify.api.services.round_queries import (
    UNFINISHED,
    get_round_row,
    round_out,
    uploads_of,
)
from fedsparsify.api.services.round_store import RoundFiles
from fedsparsify.api.state import AppState
from fedsparsify.crypto import participants_digest
from fedsparsify.errors import ConflictError, NotFoundError
from fedsparsify.platform.round_rules import channels_for, round_weights
from fedsparsify.platform.spec import FederationSpec

__all__ = ["RoundLifecycle"]

log = logging.getLogger(__name__)


class RoundLifecycle:
    """Opening, closing, failing and advancing rounds; blocking (run in a worker thread)."""

    def __init__(self, state: AppState, files: RoundFiles) -> None:
        self.state = state
        self.files = files

    def open_next_round(self, fid: str) -> RoundOut:
        """Admin: open the next round (:class:`ConflictError` saying why it cannot open)."""
        self.check_deadlines(fid)
        with self.state.db.session() as session:
            fed = session.get(FederationRow, fid, with_for_update=True)
            if fed is None:
                raise NotFoundError(f"no federation {fid!r}")
            rnd = self.open_round(session, fed)
            return round_out(session, rnd)

    def open_round(self, session: Session, fed: FederationRow) -> RoundRow:
        spec = spec_of(fed)
        if fed.state in ("completed", "failed"):
            raise ConflictError(f"federation {fed.id} is {fed.state}")
        last = session.scalars(
            select(RoundRow)
            .where(RoundRow.federation_id == fed.id)
            .order_by(RoundRow.index.desc())
            .limit(1)
        ).first()
        if last is not None and last.state in UNFINISHED:
            raise ConflictError(f"round {last.index} is still {last.state}")
        index = 0 if last is None else last.index + 1
        if index >= spec.rounds:
            raise ConflictError(f"all {spec.rounds} rounds of the federation have run")
        clients = session.scalars(
            select(ClientRow)
            .where(ClientRow.federation_id == fed.id, ClientRow.removed_at.is_(None))
            .order_by(ClientRow.created_at)
        ).all()
        if len(clients) < spec.min_clients:
            raise ConflictError(
                f"{len(clients)} client(s) registered, the federation needs {spec.min_clients}"
            )
        if fed.context_digest is None:
            raise ConflictError("the key dealer has not uploaded the public context yet")
        if keys_required(fed):
            holders = [c for c in clients if c.is_dealer or c.envelope_bytes is not None]
            if len(holders) < spec.min_clients:
                raise ConflictError(
                    f"only {len(holders)} client(s) hold the key (the dealer and those "
                    f"with an envelope); the federation needs {spec.min_clients}"
                )
        else:
            holders = list(clients)
        if spec.pairwise_masks and any(c.mask_key is None for c in holders):
            raise ConflictError(
                "the spec asks for pairwise masks but some key holders registered no mask key "
                "(release 0.1 registrations): they must register again"
            )
        opened = now()
        participants = self._live(session, fed.id, index, holders, spec.quorum, opened)
        rnd = RoundRow(
            federation_id=fed.id,
            index=index,
            state="open",
            quorum=spec.quorum,
            channels=channels_for(spec.method),
            opened_at=opened,
            context_digest=fed.context_digest,
        )
        self._set_participants(rnd, spec, participants, attempt=0, at=opened)
        session.add(rnd)
        fed.state = "running"
        session.commit()
        self.state.metrics.rounds_opened.inc()
        log.info(
            "federation %s: round %d open, %d participants, deadline in %.0fs",
            fed.id,
            index,
            len(participants),
            spec.round_timeout_s,
        )
        return rnd

    @staticmethod
    def _set_participants(
        rnd: RoundRow,
        spec: FederationSpec,
        participants: Sequence[ClientRow],
        *,
        attempt: int,
        at: float,
    ) -> None:
        """Fix an attempt's participants, their weights, the set's digest and the deadline."""
        rnd.attempt = attempt
        rnd.participants = [c.id for c in participants]
        rnd.total_samples = sum(c.num_samples for c in participants)
        rnd.weights = round_weights(
            {c.id: c.num_samples for c in participants},
            weighting=spec.weighting,
            max_weight_share=spec.max_weight_share,
        )
        rnd.participants_digest = participants_digest(
            {c.id: c.mask_key or b"" for c in participants}
        )
        rnd.deadline = at + spec.round_timeout_s

    def _live(
        self,
        session: Session,
        fid: str,
        index: int,
        holders: Sequence[ClientRow],
        quorum: int,
        at: float,
    ) -> list[ClientRow]:
        """The active ones of ``holders`` (seen within ``client_liveness_s``, or done with the
        previous round), or all of them when fewer than ``quorum`` are active."""
        window = self.state.settings.client_liveness_s
        active = active_ids(session, fid, holders, at=at, window_s=window)
        live = [c for c in holders if c.id in active]
        left_out = [c.id for c in holders if c.id not in active]
        if len(live) < quorum:
            log.warning(
                "federation %s round %d: only %d of %d key holder(s) active (seen in the last %gs "
                "or done with the previous round), quorum %d: every key holder is a participant",
                fid,
                index,
                len(live),
                len(holders),
                window,
                quorum,
            )
            return list(holders)
        if left_out:
            log.info(
                "federation %s round %d: left out %d key holder(s) not seen in the last %gs: %s",
                fid,
                index,
                len(left_out),
                window,
                ", ".join(left_out),
            )
        return live

    def check_deadlines(self, fid: str | None = None, index: int | None = None) -> None:
        """Close (quorum met) or fail every accepting round whose deadline has passed, close
        every accepting round that every participant uploaded to, and finish any round left
        ``aggregating`` by a failed close (the last two: left so by a process that died)."""
        with self.state.db.read() as session:
            query = select(RoundRow).where(RoundRow.state.in_(UNFINISHED))
            if fid is not None:
                query = query.where(RoundRow.federation_id == fid)
            if index is not None:
                query = query.where(RoundRow.index == index)
            at = now()
            due = [
                (rnd.federation_id, rnd.index)
                for rnd in session.scalars(query).all()
                if rnd.state == "aggregating"
                or rnd.deadline <= at
                or set(complete_uploaders(rnd, uploads_of(session, rnd))) == set(rnd.participants)
            ]
        for due_fid, due_index in due:
            with self.state.round_lock(due_fid, due_index):
                self.finish_locked(due_fid, due_index)

    def finish_locked(self, fid: str, index: int) -> None:
        """Close or fail the round if it is due (all uploaded, or deadline passed)."""
        with self.state.db.session() as session:
            rnd = get_round_row(session, fid, index)
            if rnd.state not in UNFINISHED:
                return
            complete = complete_uploaders(rnd, uploads_of(session, rnd))
            spec = spec_of(get_federation(session, fid))
            if rnd.state == "aggregating":
                decision = "close"
                complete = list(rnd.contributors or complete)
            elif set(complete) == set(rnd.participants):
                decision = "close"
            elif now() >= rnd.deadline:
                enough = len(complete) >= rnd.quorum
                if enough and spec.pairwise_masks:
                    # The missing ones' masks do not cancel: restart with those that uploaded.
                    decision = "retry" if (rnd.attempt or 0) + 1 < spec.max_attempts else "fail"
                else:
                    decision = "close" if enough else "fail"
            else:
                return
            if decision == "retry":
                self._next_attempt(session, rnd, spec, complete)
                return
            if decision == "fail":
                rnd.state = "failed"
                if len(complete) < rnd.quorum:
                    rnd.reason = (
                        f"deadline passed with {len(complete)} of quorum {rnd.quorum} uploads "
                        f"(attempt {rnd.attempt or 0})"
                    )
                else:
                    rnd.reason = (
                        f"deadline passed with {len(complete)} of {len(rnd.participants)} "
                        f"uploads and no attempt left ({spec.max_attempts} allowed with "
                        "pairwise masks)"
                    )
                rnd.closed_at = now()
                session.commit()
                self.state.metrics.rounds_failed.inc()
                log.warning("federation %s round %d failed: %s", fid, index, rnd.reason)
            else:
                rnd.state = "aggregating"
                rnd.contributors = list(complete)
                session.commit()
                self._close(session, rnd, complete)
        self.files.discard(fid, index, keep_uploads=self.state.settings.keep_uploads)
        self.after_finish(fid, index)

    def _next_attempt(
        self, session: Session, rnd: RoundRow, spec: FederationSpec, complete: list[str]
    ) -> None:
        """Restart the round with ``complete`` (new attempt, new masks, new weights): the
        uploads of this attempt are dropped, the survivors upload again."""
        fid, index = rnd.federation_id, rnd.index
        missing = [c for c in rnd.participants if c not in complete]
        rows = {
            c.id: c
            for c in session.scalars(select(ClientRow).where(ClientRow.id.in_(complete))).all()
        }
        attempt = (rnd.attempt or 0) + 1
        session.execute(delete(UploadRow).where(UploadRow.round_id == rnd.id))
        self._set_participants(rnd, spec, [rows[c] for c in complete], attempt=attempt, at=now())
        rnd.state = "open"
        rnd.reason = (
            f"attempt {attempt - 1} missed {len(missing)} participant(s) ({', '.join(missing)}); "
            f"attempt {attempt} with the {len(complete)} that uploaded"
        )
        session.commit()
        self.files.discard_uploads(fid, index)
        self.state.metrics.rounds_retried.inc()
        log.warning("federation %s round %d: %s", fid, index, rnd.reason)

    def _close(self, session: Session, rnd: RoundRow, complete: list[str]) -> None:
        fid, index = rnd.federation_id, rnd.index
        fed = get_federation(session, fid)
        ctx = load_public_context(self.state, fed)
        session.commit()  # no database lock while the aggregate is written
        started = time.perf_counter()
        sizes: dict[str, int] = {}
        for channel in rnd.channels:
            sizes[channel] = self.files.write_aggregate(ctx, fid, index, channel, complete)
        seconds = time.perf_counter() - started
        rnd.state = "closed"
        rnd.reason = None
        rnd.closed_at = now()
        rnd.aggregate_bytes = sizes
        rnd.aggregation_s = rnd.aggregation_s + seconds
        session.commit()
        self.state.metrics.rounds_closed.inc()
        self.state.metrics.aggregation_seconds.labels(step="close").observe(seconds)
        log.info(
            "federation %s round %d closed with %d contributor(s) in %.3fs",
            fid,
            index,
            len(complete),
            seconds,
        )

    def after_finish(self, fid: str, index: int) -> None:
        """Complete the federation after its last round, or open the next one if asked.

        Idempotent and safe to race: the federation's row is locked (PostgreSQL) or the
        transaction holds the write lock (SQLite), and nothing happens once a later round exists.
        """
        with self.state.db.session() as session:
            fed = session.get(FederationRow, fid, with_for_update=True)
            if fed is None or fed.state != "running":
                return
            latest = get_round_row(session, fid, None)
            if latest.index != index:
                return  # another process (or an earlier call) advanced already
            rnd = latest
            spec = spec_of(fed)
            if index >= spec.rounds - 1:
                fed.state = "completed" if rnd.state == "closed" else "failed"
                fed.reason = None if rnd.state == "closed" else f"last round: {rnd.reason}"
                fed.finished_at = now()
                session.commit()
                log.info("federation %s %s", fid, fed.state)
            elif spec.auto_advance:
                try:
                    self.open_round(session, fed)
                except ConflictError as exc:
                    session.rollback()
                    log.warning("federation %s: next round not opened: %s", fid, exc)
