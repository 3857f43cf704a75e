"""Rounds: open, collect streamed uploads into a running encrypted sum, close or fail, recover.

Files of round ``r`` (blob keys under ``federations/{fid}/rounds/{r}/``)::

    uploads/{channel}/{client_id}.bin   every accepted upload, byte for byte as received
    sum-{channel}.bin                   running sum of the accepted uploads of that channel
    aggregate-{channel}.bin             the round's result, written when it closes

Design: a running sum per channel, checked at close. Each accepted upload is folded into its
channel's sum at once (``add_updates(ctx, [sum, upload], tmp)``), so closing a round in which
everyone uploaded everything is a rename, and the last uploader gets its answer as soon as its
own upload is added. At close the sum's header (its ``contributors``) is compared with the
clients that uploaded *every* channel; when they differ (someone uploaded ``values`` but not
``votes`` before the deadline, or a crash left the sum behind the database) the aggregate is
recomputed from the stored uploads of the complete contributors, frame by frame, at most
:data:`FAN_IN` streams at a time. So a dropped client is never in either channel's ciphertext
sum nor in its weight sum, and memory stays at a few ciphertexts per stream.

Durability order of one upload: body → temporary file (validated frame by frame, fsynced) →
renamed into ``uploads/`` → new sum into a temporary file (fsynced) → database row committed →
sum renamed into place. The database is the truth: at startup, temporary files are discarded,
upload files without a row deleted, and any sum whose header contributors differ from the rows
is rebuilt from the uploads; a round caught ``aggregating``, or one that every participant
uploaded to, is closed. Other open rounds keep their deadline (stored in the database) and the
deadline checker handles them from there.

Every change to one round's files and state happens under that round's lock (one process; for
several replicas the same design needs a database advisory lock: not done yet).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import AsyncIterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.orm import Session

from fedsparsify.api.blobs import fsync_dir
from fedsparsify.api.db import (
    ClientRow,
    FederationRow,
    RoundMetricRow,
    RoundRow,
    UploadRow,
    now,
)
from fedsparsify.api.schemas import MetricsStored, RoundOut, UploadAccepted, iso
from fedsparsify.api.services.auth import Caller
from fedsparsify.api.services.federations import get_federation, keys_required, spec_of
from fedsparsify.api.services.keys import load_public_context
from fedsparsify.api.services.liveness import active_ids, complete_uploaders
from fedsparsify.api.state import AppState
from fedsparsify.crypto import PublicContext, UpdateHeader, UpdateParser, add_updates, read_update
from fedsparsify.errors import (
    ConflictError,
    CountMismatchError,
    MaskMismatchError,
    NotFoundError,
    ParameterMismatchError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RoundClosedError,
    ValueRangeError,
    WireFormatError,
)

__all__ = [
    "ACCEPTING",
    "FAN_IN",
    "RoundService",
    "StagedUpload",
    "UploadTicket",
    "stage_upload",
]

log = logging.getLogger(__name__)

ACCEPTING = ("open", "collecting")
UNFINISHED = ("open", "collecting", "aggregating")
VALUES, VOTES = "values", "votes"
#: Streams summed at once when an aggregate is recomputed from stored uploads.
FAN_IN = 8
#: Bytes gathered from the request before one parser step in a worker thread.
FEED_BYTES = 256 << 10
#: Relative slack on a client's weight share (float rounding on the client).
WEIGHT_SLACK = 1e-6


def channels_for(method: str) -> list[str]:
    """FedSparsify-Local also sums encrypted 0/1 mask votes."""
    return [VALUES, VOTES] if method == "fedsparsify-local" else [VALUES]


def _round_dir(fid: str, index: int) -> str:
    return f"federations/{fid}/rounds/{index}"


def upload_key(fid: str, index: int, channel: str, client_id: str) -> str:
    """Blob key of one accepted upload."""
    return f"{_round_dir(fid, index)}/uploads/{channel}/{client_id}.bin"


def sum_key(fid: str, index: int, channel: str) -> str:
    """Blob key of a channel's running sum."""
    return f"{_round_dir(fid, index)}/sum-{channel}.bin"


def aggregate_key(fid: str, index: int, channel: str) -> str:
    """Blob key of a closed round's aggregate."""
    return f"{_round_dir(fid, index)}/aggregate-{channel}.bin"


def read_header(path: Path) -> UpdateHeader | None:
    """The header of a stored stream, or None if it is missing or unreadable."""
    try:
        with path.open("rb") as fh:
            header, _frames = read_update(fh, expect_kind=None)
            return header
    except (OSError, WireFormatError):
        return None


@dataclass(frozen=True)
class UploadTicket:
    """What the streaming reader must check an upload against (decided before the body)."""

    federation_id: str
    index: int
    channel: str
    client_id: str
    ctx: PublicContext
    context_digest: str
    expect_mask: str | None
    expect_values: int | None
    max_bytes: int


@dataclass(frozen=True)
class StagedUpload:
    """A fully received and validated body in a temporary file (fsynced)."""

    tmp: Path
    header: UpdateHeader
    bytes: int
    sha256: str


def _feed(parser: UpdateParser, fh: BinaryIO, data: bytes) -> None:
    parser.feed(data)
    fh.write(data)


async def stage_upload(
    state: AppState, ticket: UploadTicket, chunks: AsyncIterable[bytes]
) -> StagedUpload:
    """Read an upload body, validating frame by frame, into an fsynced temporary file.

    Raises the typed wire error at the first bad byte and :class:`PayloadTooLargeError` past
    ``ticket.max_bytes``; the temporary file is removed on any error. Memory: one frame plus
    :data:`FEED_BYTES`.
    """
    parser = UpdateParser(
        ticket.ctx,
        expect_kind="update",
        expect_context_digest=ticket.context_digest,
        expect_mask_digest=ticket.expect_mask,
        expect_values=ticket.expect_values,
    )
    digest = hashlib.sha256()
    total = 0
    pending: list[bytes] = []
    pending_bytes = 0
    tmp = state.blobs.temp_path(f"upload-{ticket.channel}")
    fh = tmp.open("wb")
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            total += len(chunk)
            if total > ticket.max_bytes:
                raise PayloadTooLargeError(f"upload exceeds the limit of {ticket.max_bytes} bytes")
            digest.update(chunk)
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= FEED_BYTES:
                data = b"".join(pending)
                pending, pending_bytes = [], 0
                await anyio.to_thread.run_sync(_feed, parser, fh, data)
        if pending:
            await anyio.to_thread.run_sync(_feed, parser, fh, b"".join(pending))
        header = parser.finish()
        fh.flush()
        await anyio.to_thread.run_sync(os.fsync, fh.fileno())
        fh.close()
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise
    return StagedUpload(tmp=tmp, header=header, bytes=total, sha256=digest.hexdigest())


class RoundService:
    """Every round operation; methods are blocking (run them in a worker thread)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.blobs = state.blobs

    # -- views ----------------------------------------------------------------------------

    def _round(self, session: Session, fid: str, index: int | None) -> RoundRow:
        query = select(RoundRow).where(RoundRow.federation_id == fid)
        if index is None:
            rnd = session.scalars(query.order_by(RoundRow.index.desc()).limit(1)).first()
            if rnd is None:
                raise NotFoundError(f"federation {fid} has no round yet")
            return rnd
        rnd = session.scalars(query.where(RoundRow.index == index)).first()
        if rnd is None:
            raise NotFoundError(f"federation {fid} has no round {index}")
        return rnd

    def _uploads(self, session: Session, rnd: RoundRow) -> list[UploadRow]:
        return list(
            session.scalars(
                select(UploadRow).where(UploadRow.round_id == rnd.id).order_by(UploadRow.id)
            )
        )

    @staticmethod
    def _complete(rnd: RoundRow, uploads: Sequence[UploadRow]) -> list[str]:
        """Participants that uploaded every channel, in participant order."""
        return complete_uploaders(rnd, uploads)

    def round_out(self, session: Session, rnd: RoundRow) -> RoundOut:
        """The public view of a round."""
        uploads = self._uploads(session, rnd)
        per_channel: dict[str, list[str]] = {ch: [] for ch in rnd.channels}
        for up in uploads:
            per_channel.setdefault(up.channel, []).append(up.client_id)
        return RoundOut(
            index=rnd.index,
            state=rnd.state,
            reason=rnd.reason,
            participants=list(rnd.participants),
            total_samples=rnd.total_samples,
            deadline=iso(rnd.deadline),
            quorum=rnd.quorum,
            channels=list(rnd.channels),
            context_digest=rnd.context_digest,
            mask_digest=rnd.mask_digest,
            value_count=rnd.value_count,
            uploaded=self._complete(rnd, uploads),
            uploads=per_channel,
            contributors=list(rnd.contributors or []),
            aggregate_ready=rnd.state == "closed",
            opened_at=iso(rnd.opened_at),
            closed_at=iso(rnd.closed_at),
        )

    def get_round(self, fid: str, index: int | None) -> RoundOut:
        """One round (``None``: the latest), after applying any passed deadline."""
        self.check_deadlines(fid)
        with self.state.db.session() as session:
            get_federation(session, fid)
            return self.round_out(session, self._round(session, fid, index))

    def list_rounds(self, fid: str) -> list[RoundOut]:
        """Every round of a federation."""
        self.check_deadlines(fid)
        with self.state.db.session() as session:
            get_federation(session, fid)
            rows = session.scalars(
                select(RoundRow).where(RoundRow.federation_id == fid).order_by(RoundRow.index)
            ).all()
            return [self.round_out(session, r) for r in rows]

    # -- opening --------------------------------------------------------------------------

    def open_next_round(self, fid: str) -> RoundOut:
        """Admin: open the next round (:class:`ConflictError` saying why it cannot open)."""
        self.check_deadlines(fid)
        with self.state.db.session() as session:
            fed = session.get(FederationRow, fid, with_for_update=True)
            if fed is None:
                raise NotFoundError(f"no federation {fid!r}")
            rnd = self._open(session, fed)
            return self.round_out(session, rnd)

    def _open(self, session: Session, fed: FederationRow) -> RoundRow:
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
            .where(ClientRow.federation_id == fed.id)
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
        opened = now()
        participants = self._live(session, fed.id, index, holders, spec.quorum, opened)
        rnd = RoundRow(
            federation_id=fed.id,
            index=index,
            state="open",
            participants=[c.id for c in participants],
            total_samples=sum(c.num_samples for c in participants),
            quorum=spec.quorum,
            channels=channels_for(spec.method),
            deadline=opened + spec.round_timeout_s,
            opened_at=opened,
            context_digest=fed.context_digest,
        )
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

    # -- uploads --------------------------------------------------------------------------

    def prepare_upload(self, fid: str, index: int, channel: str, caller: Caller) -> UploadTicket:
        """Check that ``caller`` may upload ``channel`` to round ``index`` now."""
        self.check_deadlines(fid, index)
        with self.state.db.session() as session:
            fed = get_federation(session, fid)
            rnd = self._round(session, fid, index)
            if channel not in rnd.channels:
                raise NotFoundError(
                    f"round {index} has no channel {channel!r} (channels: {rnd.channels})"
                )
            client_id = caller.client_id
            if client_id is None or client_id not in rnd.participants:
                raise PermissionDeniedError(f"you are not a participant of round {index}")
            existing = session.scalars(
                select(UploadRow.id).where(
                    UploadRow.round_id == rnd.id,
                    UploadRow.client_id == client_id,
                    UploadRow.channel == channel,
                )
            ).first()
            if existing is None and rnd.state not in ACCEPTING:
                raise RoundClosedError(f"round {index} is {rnd.state}: it takes no uploads")
            ctx = load_public_context(self.state, fed)
            return UploadTicket(
                federation_id=fid,
                index=index,
                channel=channel,
                client_id=client_id,
                ctx=ctx,
                context_digest=rnd.context_digest or ctx.digest,
                expect_mask=rnd.mask_digest,
                expect_values=rnd.value_count,
                max_bytes=self.state.settings.max_upload_bytes,
            )

    def commit_upload(self, ticket: UploadTicket, staged: StagedUpload) -> UploadAccepted:
        """Store a validated upload and add it into the round's running sum (or refuse it)."""
        try:
            with self.state.round_lock(ticket.federation_id, ticket.index):
                accepted, complete = self._commit_locked(ticket, staged)
                if complete:
                    try:
                        self._finish_locked(ticket.federation_id, ticket.index)
                    except Exception:
                        # The upload is stored and counted; the checker retries the close.
                        log.exception("closing round %d failed; will retry", ticket.index)
        finally:
            staged.tmp.unlink(missing_ok=True)
        if not accepted.duplicate:
            self.state.metrics.uploads_accepted.labels(channel=ticket.channel).inc()
        return accepted.model_copy(update={"round_state": self._state_of(ticket)})

    def _state_of(self, ticket: UploadTicket) -> str:
        with self.state.db.session() as session:
            return self._round(session, ticket.federation_id, ticket.index).state

    def _commit_locked(
        self, ticket: UploadTicket, staged: StagedUpload
    ) -> tuple[UploadAccepted, bool]:
        fid, index, channel, client_id = (
            ticket.federation_id,
            ticket.index,
            ticket.channel,
            ticket.client_id,
        )
        header = staged.header
        with self.state.db.session() as session:
            fed = get_federation(session, fid)
            rnd = self._round(session, fid, index)
            uploads = self._uploads(session, rnd)
            mine = [u for u in uploads if u.client_id == client_id and u.channel == channel]
            if mine:
                if mine[0].sha256 != staged.sha256:
                    raise ConflictError(
                        f"you already uploaded channel {channel!r} of round {index} (different "
                        "bytes); an upload cannot be replaced"
                    )
                return self._accepted(ticket, staged, rnd.state, duplicate=True), False
            if rnd.state not in ACCEPTING:
                raise RoundClosedError(f"round {index} is {rnd.state}: it takes no uploads")
            if now() >= rnd.deadline:
                raise RoundClosedError(f"round {index} passed its deadline")
            self._check_header(session, fed, rnd, ticket, header)
            # End the read transaction: no database lock is held while ciphertexts are added.
            # Nothing else changes this round meanwhile: every writer holds the round lock.
            session.commit()
            ctx = ticket.ctx
            upload_path = self.blobs.commit(staged.tmp, upload_key(fid, index, channel, client_id))
            new_sum: Path | None = None
            try:
                same = [u.client_id for u in uploads if u.channel == channel]
                started = time.perf_counter()
                new_sum = self._add_to_sum(ctx, fid, index, channel, same, upload_path)
                seconds = time.perf_counter() - started
                session.add(
                    UploadRow(
                        round_id=rnd.id,
                        client_id=client_id,
                        channel=channel,
                        bytes=staged.bytes,
                        sha256=staged.sha256,
                        weight=header.weight,
                    )
                )
                if rnd.mask_digest is None:
                    rnd.mask_digest = header.mask_digest
                if rnd.value_count is None:
                    rnd.value_count = header.n_values
                rnd.state = "collecting"
                rnd.aggregation_s = rnd.aggregation_s + seconds
                session.commit()
            except BaseException:
                upload_path.unlink(missing_ok=True)
                if new_sum is not None:
                    new_sum.unlink(missing_ok=True)
                raise
            self.blobs.commit(new_sum, sum_key(fid, index, channel))
            self.state.metrics.aggregation_seconds.labels(step="add").observe(seconds)
            log.info(
                "federation %s round %d: %s accepted from %s (%d bytes)",
                fid,
                index,
                channel,
                client_id,
                staged.bytes,
            )
            complete = set(self._complete(rnd, self._uploads(session, rnd)))
            return (
                self._accepted(ticket, staged, rnd.state, duplicate=False),
                complete == set(rnd.participants),
            )

    @staticmethod
    def _accepted(
        ticket: UploadTicket, staged: StagedUpload, state: str, *, duplicate: bool
    ) -> UploadAccepted:
        return UploadAccepted(
            accepted=True,
            duplicate=duplicate,
            round=ticket.index,
            channel=ticket.channel,
            client_id=ticket.client_id,
            bytes=staged.bytes,
            sha256=staged.sha256,
            weight=staged.header.weight,
            n_values=staged.header.n_values,
            n_ciphertexts=staged.header.n_ciphertexts,
            round_state=state,
        )

    def _check_header(
        self,
        session: Session,
        fed: FederationRow,
        rnd: RoundRow,
        ticket: UploadTicket,
        header: UpdateHeader,
    ) -> None:
        """What the parser could not know when the body started: the round may have been
        fixed by a concurrent upload since, and the weight share depends on the round."""
        preset = spec_of(fed).crypto_preset
        if header.preset != preset:
            raise ParameterMismatchError(
                f"update made under preset {header.preset!r}, the federation uses {preset!r}"
            )
        if rnd.mask_digest is not None and header.mask_digest != rnd.mask_digest:
            raise MaskMismatchError(
                f"update made under mask {header.mask_digest[:16]}…, the round's mask is "
                f"{rnd.mask_digest[:16]}…"
            )
        if rnd.value_count is not None and header.n_values != rnd.value_count:
            raise CountMismatchError(
                f"update carries {header.n_values} values, the round expects {rnd.value_count}"
            )
        if header.contributors != (ticket.client_id,):
            raise PermissionDeniedError(
                f"the update's header names contributors {list(header.contributors)}; it must "
                f"name exactly you ({ticket.client_id})"
            )
        if ticket.channel == VALUES:
            client = self._client(session, fed.id, ticket.client_id)
            share = client.num_samples / rnd.total_samples
            what = f"num_samples / total_samples = {client.num_samples}/{rnd.total_samples}"
        else:
            share = 1.0 / len(rnd.participants)
            what = f"1 / participants = 1/{len(rnd.participants)}"
        if header.weight > share * (1.0 + WEIGHT_SLACK) + 1e-12:
            raise ValueRangeError(
                f"weight {header.weight:.9g} exceeds your share {share:.9g} ({what}): the "
                "weights of a round must sum to at most 1"
            )

    @staticmethod
    def _client(session: Session, fid: str, client_id: str) -> ClientRow:
        client = session.get(ClientRow, client_id)
        if client is None or client.federation_id != fid:
            raise NotFoundError(f"no client {client_id!r}")
        return client

    def _add_to_sum(
        self,
        ctx: PublicContext,
        fid: str,
        index: int,
        channel: str,
        already: Sequence[str],
        upload: Path,
    ) -> Path:
        """A temporary file holding the channel's sum with ``upload`` added (not committed)."""
        current = self.blobs.path(sum_key(fid, index, channel))
        if already:
            header = read_header(current)
            if header is None or sorted(header.contributors) != sorted(already):
                log.warning("round %d %s sum is stale; rebuilding it", index, channel)
                paths = [self.blobs.path(upload_key(fid, index, channel, c)) for c in already]
                return self._fold(ctx, [*paths, upload])
            return self._fold(ctx, [current, upload])
        return self._fold(ctx, [upload])

    def _fold(self, ctx: PublicContext, paths: Sequence[Path]) -> Path:
        """Sum streams into a temporary file, :data:`FAN_IN` at a time (bounded memory)."""
        acc: Path | None = None
        rest = list(paths)
        while rest or acc is None:
            take = FAN_IN - (acc is not None)
            batch = ([acc] if acc is not None else []) + rest[:take]
            rest = rest[take:]
            try:
                with ExitStack() as stack:
                    sources = [stack.enter_context(p.open("rb")) for p in batch]
                    with self.blobs.writer("sum") as (tmp, out):
                        add_updates(ctx, sources, out)
            finally:
                if acc is not None:
                    acc.unlink(missing_ok=True)
            acc = tmp
        return acc

    # -- closing --------------------------------------------------------------------------

    def check_deadlines(self, fid: str | None = None, index: int | None = None) -> None:
        """Close (quorum met) or fail every accepting round whose deadline has passed, and
        finish any round left ``aggregating`` by a failed close."""
        with self.state.db.session() as session:
            query = select(RoundRow.federation_id, RoundRow.index).where(
                or_(
                    and_(RoundRow.state.in_(ACCEPTING), RoundRow.deadline <= now()),
                    RoundRow.state == "aggregating",  # a close that failed: retry it
                )
            )
            if fid is not None:
                query = query.where(RoundRow.federation_id == fid)
            if index is not None:
                query = query.where(RoundRow.index == index)
            due = [(row[0], row[1]) for row in session.execute(query).all()]
        for due_fid, due_index in due:
            with self.state.round_lock(due_fid, due_index):
                self._finish_locked(due_fid, due_index)

    def _finish_locked(self, fid: str, index: int) -> None:
        """Close or fail the round if it is due (all uploaded, or deadline passed)."""
        with self.state.db.session() as session:
            rnd = self._round(session, fid, index)
            if rnd.state not in UNFINISHED:
                return
            complete = self._complete(rnd, self._uploads(session, rnd))
            if rnd.state == "aggregating":
                decision = "close"
                complete = list(rnd.contributors or complete)
            elif set(complete) == set(rnd.participants):
                decision = "close"
            elif now() >= rnd.deadline:
                decision = "close" if len(complete) >= rnd.quorum else "fail"
            else:
                return
            if decision == "fail":
                rnd.state = "failed"
                rnd.reason = f"deadline passed with {len(complete)} of quorum {rnd.quorum} uploads"
                rnd.closed_at = now()
                session.commit()
                self.state.metrics.rounds_failed.inc()
                log.warning("federation %s round %d failed: %s", fid, index, rnd.reason)
            else:
                rnd.state = "aggregating"
                rnd.contributors = list(complete)
                session.commit()
                self._close(session, rnd, complete)
        self._discard_round_files(fid, index)
        self._after_finish(fid, index)

    def _close(self, session: Session, rnd: RoundRow, complete: list[str]) -> None:
        fid, index = rnd.federation_id, rnd.index
        fed = get_federation(session, fid)
        ctx = load_public_context(self.state, fed)
        session.commit()  # no database lock while the aggregate is written
        started = time.perf_counter()
        sizes: dict[str, int] = {}
        for channel in rnd.channels:
            target = aggregate_key(fid, index, channel)
            running = self.blobs.path(sum_key(fid, index, channel))
            final = read_header(self.blobs.path(target))
            if final is not None and sorted(final.contributors) == sorted(complete):
                pass  # already written before a restart
            elif (h := read_header(running)) is not None and sorted(h.contributors) == sorted(
                complete
            ):
                self.blobs.commit(running, target)
            else:
                paths = [self.blobs.path(upload_key(fid, index, channel, c)) for c in complete]
                self.blobs.commit(self._fold(ctx, paths), target)
            sizes[channel] = self.blobs.size(target)
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

    def _discard_round_files(self, fid: str, index: int) -> None:
        """After a round finished: its running sums go, and its uploads unless kept."""
        rnd_dir = _round_dir(fid, index)
        for key in self.blobs.list(rnd_dir):
            if key.rsplit("/", 1)[-1].startswith("sum-"):
                self.blobs.delete(key)
        if not self.state.settings.keep_uploads:
            self.blobs.delete_tree(f"{rnd_dir}/uploads")

    def _after_finish(self, fid: str, index: int) -> None:
        """Complete the federation after its last round, or open the next one if asked."""
        with self.state.db.session() as session:
            fed = session.get(FederationRow, fid, with_for_update=True)
            if fed is None or fed.state != "running":
                return
            rnd = self._round(session, fid, index)
            spec = spec_of(fed)
            if index >= spec.rounds - 1:
                fed.state = "completed" if rnd.state == "closed" else "failed"
                fed.reason = None if rnd.state == "closed" else f"last round: {rnd.reason}"
                fed.finished_at = now()
                session.commit()
                log.info("federation %s %s", fid, fed.state)
            elif spec.auto_advance:
                try:
                    self._open(session, fed)
                except ConflictError as exc:
                    session.rollback()
                    log.warning("federation %s: next round not opened: %s", fid, exc)

    # -- results --------------------------------------------------------------------------

    def aggregate_path(self, fid: str, index: int, channel: str) -> Path:
        """The closed round's aggregate of ``channel``; 409 until the round is closed."""
        self.check_deadlines(fid, index)
        with self.state.db.session() as session:
            get_federation(session, fid)
            rnd = self._round(session, fid, index)
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
        with self.state.db.session() as session:
            get_federation(session, fid)
            rnd = self._round(session, fid, index)
            if caller.client_id is None or caller.client_id not in rnd.participants:
                raise PermissionDeniedError(f"you are not a participant of round {index}")
            row = session.scalars(
                select(RoundMetricRow).where(
                    RoundMetricRow.round_id == rnd.id,
                    RoundMetricRow.client_id == caller.client_id,
                )
            ).first()
            clean = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
            if row is None:
                row = RoundMetricRow(round_id=rnd.id, client_id=caller.client_id, metrics=clean)
                session.add(row)
            else:
                row.metrics = {**row.metrics, **clean}
                row.updated_at = now()
            session.commit()
            return MetricsStored(round=index, client_id=caller.client_id, metrics=row.metrics)

    # -- restart --------------------------------------------------------------------------

    def recover(self) -> None:
        """Bring files and database back in line after a crash (see the module docstring)."""
        dropped = self.blobs.discard_temporaries()
        if dropped:
            log.warning("discarded %d partially written temporary file(s)", dropped)
        with self.state.db.session() as session:
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
                    self._finish_locked(fid, index)
                elif state == "aggregating":
                    self._finish_locked(fid, index)
                else:
                    self._discard_round_files(fid, index)
        with self.state.db.session() as session:
            running = session.scalars(
                select(FederationRow.id).where(FederationRow.state == "running")
            ).all()
        for fid in running:
            with self.state.db.session() as session:
                try:
                    last = self._round(session, fid, None)
                except NotFoundError:
                    continue
                finished = last.state in ("closed", "failed")
            if finished:
                self._after_finish(fid, last.index)

    def _recover_accepting(self, fid: str, index: int) -> None:
        with self.state.db.session() as session:
            fed = get_federation(session, fid)
            rnd = self._round(session, fid, index)
            uploads = self._uploads(session, rnd)
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
                uploads = self._uploads(session, rnd)
            ctx = load_public_context(self.state, fed) if uploads else None
            for channel in rnd.channels:
                known = sorted(u.client_id for u in uploads if u.channel == channel)
                folder = f"{_round_dir(fid, index)}/uploads/{channel}"
                for key in self.blobs.list(folder):
                    client = key.rsplit("/", 1)[-1].removesuffix(".bin")
                    if client not in known:
                        log.warning("round %d: discarding unrecorded upload of %s", index, client)
                        self.blobs.delete(key)
                running = self.blobs.path(sum_key(fid, index, channel))
                if not known:
                    running.unlink(missing_ok=True)
                    continue
                header = read_header(running)
                if header is not None and sorted(header.contributors) == known:
                    continue
                assert ctx is not None
                log.warning(
                    "round %d: rebuilding the %s sum from %d uploads", index, channel, len(known)
                )
                paths = [self.blobs.path(upload_key(fid, index, channel, c)) for c in known]
                self.blobs.commit(self._fold(ctx, paths), sum_key(fid, index, channel))
        fsync_dir(self.blobs.root)
