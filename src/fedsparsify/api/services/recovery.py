"""Restart: bring files and database back in line after a crash.

The database is the truth: temporary files of dead processes are discarded, upload files
without a row deleted, and any running sum whose header contributors differ from the rows, or
whose digest file does not match it (running sums are written without syncs), is rebuilt from
the uploads; a round caught ``aggregating``, or one that every participant uploaded to, is
closed. Other open rounds keep their deadline (stored in the database) and the deadline checker
handles them.

Several processes on one database (PostgreSQL) each run this at start, and it never touches a
live process's work: every round is recovered under its round lock (which a live process holds
from the moment it renames an upload into place until its row is committed and the sum renamed),
and only the temporary folders of processes whose instance lock can be taken (dead ones) are
removed. :meth:`Recovery.sweep`, run by the leader, does the same for processes that die later,
and folds their metric samples into the retired set.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select

from fedsparsify.api.blobs import fsync_dir
from fedsparsify.api.db import FederationRow, RoundRow, UploadRow
from fedsparsify.api.services.federations import get_federation
from fedsparsify.api.services.keys import load_public_context
from fedsparsify.api.services.lifecycle import RoundLifecycle
from fedsparsify.api.services.round_queries import ACCEPTING, get_round_row, uploads_of
from fedsparsify.api.services.round_store import RoundFiles, round_dir, sum_key, upload_key
from fedsparsify.api.state import AppState
from fedsparsify.errors import NotFoundError

__all__ = ["Recovery"]

log = logging.getLogger(__name__)


class Recovery:
    """Runs once at startup, before requests are served."""

    def __init__(self, state: AppState, files: RoundFiles, lifecycle: RoundLifecycle) -> None:
        self.state = state
        self.blobs = state.blobs
        self.files = files
        self.lifecycle = lifecycle

    def run(self) -> None:
        """Bring files and database back in line after a crash (see the module docstring)."""
        self._sweep_temporaries()
        with self.state.db.read() as session:
            rows = [
                (r.federation_id, r.index, r.state)
                for r in session.scalars(select(RoundRow).order_by(RoundRow.id))
            ]
        for fid, index, state in rows:
            with self.state.round_lock(fid, index):
                if state in ACCEPTING:
                    self._recover_accepting(fid, index)
                    # A crash between the last upload's commit and the close: close it now,
                    # else the round would wait for its deadline (a re-upload is a duplicate).
                    self.lifecycle.finish_locked(fid, index)
                elif state == "aggregating":
                    self.lifecycle.finish_locked(fid, index)
                else:
                    self.files.discard(fid, index, keep_uploads=self.state.settings.keep_uploads)
        with self.state.db.read() as session:
            running = session.scalars(
                select(FederationRow.id).where(FederationRow.state == "running")
            ).all()
        for fid in running:
            with self.state.db.read() as session:
                try:
                    last = get_round_row(session, fid, None)
                except NotFoundError:
                    continue
                finished = last.state in ("closed", "failed")
            if finished:
                self.lifecycle.after_finish(fid, last.index)

    def sweep(self) -> None:
        """Remove what processes that died since left behind: temporary files, and (metrics in
        the database) fold their samples into the retired set."""
        self._sweep_temporaries()
        shared = self.state.shared_metrics
        if shared is None:
            return
        for instance in shared.instances():
            with self.state.coordinator.claim_dead(instance) as dead:
                if dead:
                    shared.retire(instance)

    def _sweep_temporaries(self) -> None:
        loose = self.blobs.discard_loose_temporaries()
        if loose:
            log.warning("discarded %d temporary file(s) left by an older release", loose)
        for owner in self.blobs.temporary_owners():
            with self.state.coordinator.claim_dead(owner) as dead:
                if not dead:
                    continue
                dropped = self.blobs.sweep_temporaries(owner)
                if dropped:
                    log.warning(
                        "discarded %d partially written temporary file(s) of dead process %s",
                        dropped,
                        owner,
                    )

    def _recover_accepting(self, fid: str, index: int) -> None:
        with self.state.db.session() as session:
            fed = get_federation(session, fid)
            rnd = get_round_row(session, fid, index)
            uploads = uploads_of(session, rnd)
            lost = [
                u
                for u in uploads
                if not self.blobs.exists(upload_key(fid, index, u.channel, u.client_id))
            ]
            for u in lost:
                log.error(
                    "round %d: upload file of %s/%s is missing; the client must upload again",
                    index,
                    u.client_id,
                    u.channel,
                )
            if lost:
                session.execute(delete(UploadRow).where(UploadRow.id.in_([u.id for u in lost])))
                session.commit()
                uploads = uploads_of(session, rnd)
            ctx = load_public_context(self.state, fed) if uploads else None
            for channel in rnd.channels:
                known = sorted(u.client_id for u in uploads if u.channel == channel)
                folder = f"{round_dir(fid, index)}/uploads/{channel}"
                for key in self.blobs.list(folder):
                    client = key.rsplit("/", 1)[-1].removesuffix(".bin")
                    if client not in known:
                        log.warning("round %d: discarding unrecorded upload of %s", index, client)
                        self.blobs.delete(key)
                running = self.blobs.path(sum_key(fid, index, channel))
                if not known:
                    running.unlink(missing_ok=True)
                    continue
                if self.files.sum_matches(fid, index, channel, known):
                    continue
                assert ctx is not None
                log.warning(
                    "round %d: rebuilding the %s sum from %d uploads", index, channel, len(known)
                )
                paths = self.files.upload_paths(fid, index, channel, known)
                self.files.commit_sum(self.files.fold(ctx, paths), fid, index, channel)
        fsync_dir(self.blobs.root)
