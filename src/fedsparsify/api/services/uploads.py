"""Uploads: who may upload what, the streamed body checked frame by frame, and the commit.

One upload, in order: each frame of the body is validated as it arrives and, at once, added to
the channel's running sum as it stood when the body began (:class:`RunningSum`), while the raw
body goes to a temporary file; at the end the body file is fsynced (the upload's one data sync).
Under the round lock: the body is renamed into ``uploads/`` (directory synced), the new sum is
the streamed one if nobody else's upload was committed meanwhile (else the upload is folded
into the current sum, as before), the database row is committed, and the new sum is renamed
into place with its digest, unsynced (:mod:`.round_store`: it can be rebuilt from the uploads).
The database is the truth; :mod:`.recovery` brings files back in line after a crash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session

from fedsparsify.api.db import ClientRow, FederationRow, RoundRow, UploadRow, now
from fedsparsify.api.schemas import UploadAccepted
from fedsparsify.api.services.auth import Caller
from fedsparsify.api.services.federations import get_federation, spec_of
from fedsparsify.api.services.keys import load_public_context
from fedsparsify.api.services.lifecycle import RoundLifecycle
from fedsparsify.api.services.liveness import complete_uploaders
from fedsparsify.api.services.round_queries import ACCEPTING, get_round_row, uploads_of
from fedsparsify.api.services.round_store import PendingSum, RoundFiles, SumFile, upload_key
from fedsparsify.api.state import AppState
from fedsparsify.crypto import PublicContext, RoundBinding, UpdateHeader, UpdateParser
from fedsparsify.crypto.aggregate import RunningSum
from fedsparsify.errors import (
    ConflictError,
    CountMismatchError,
    FedsparsifyError,
    MaskMismatchError,
    NotFoundError,
    ParameterMismatchError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RoundClosedError,
    RoundMismatchError,
    ValueRangeError,
)
from fedsparsify.platform.round_rules import VALUES, vote_weight

__all__ = [
    "FEED_BYTES",
    "StagedUpload",
    "UploadService",
    "UploadTicket",
    "binding_of",
    "stage_upload",
]

log = logging.getLogger(__name__)

#: Bytes gathered from the request before one parser step in a worker thread.
FEED_BYTES = 256 << 10
#: Relative slack on a client's weight share (float rounding on the client).
WEIGHT_SLACK = 1e-6


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
    binding: RoundBinding


@dataclass(frozen=True)
class StreamedSum:
    """The running sum with a staged upload added while it streamed in (not committed)."""

    made: SumFile
    base: tuple[str, ...]
    seconds: float


@dataclass(frozen=True)
class StagedUpload:
    """A fully received and validated body in a temporary file (fsynced), and the running sum
    it was added to on the way (None when that could not be done: the commit adds it)."""

    tmp: Path
    header: UpdateHeader
    bytes: int
    sha256: str
    streamed: StreamedSum | None = None

    def discard(self) -> None:
        """Remove the temporary files left (after a commit, only what it did not use)."""
        self.tmp.unlink(missing_ok=True)
        if self.streamed is not None:
            self.streamed.made.tmp.unlink(missing_ok=True)


class _Receiver:
    """Validates an upload body as it arrives, keeps it, and adds it to the running sum."""

    def __init__(self, state: AppState, files: RoundFiles, ticket: UploadTicket) -> None:
        self.ticket = ticket
        self.files = files
        self.parser = UpdateParser(
            ticket.ctx,
            expect_kind="update",
            expect_context_digest=ticket.context_digest,
            expect_mask_digest=ticket.expect_mask,
            expect_values=ticket.expect_values,
            expect_binding=ticket.binding,
            expect_channel=ticket.channel,
        )
        self.tmp = state.blobs.temp_path(f"upload-{ticket.channel}")
        self.fh: BinaryIO = self.tmp.open("wb")
        self.blobs = state.blobs
        self._sum: RunningSum | None = None
        self._out: PendingSum | None = None
        self._base: BinaryIO | None = None
        self._sum_s = 0.0
        self._tried = False

    def feed(self, data: bytes) -> None:
        """Check ``data`` (typed wire errors), keep it, add its completed frames to the sum."""
        loaded = self.parser._feed(data)
        self.fh.write(data)
        if not self._tried and self.parser.header is not None:
            self._tried = True
            self._guard(self._start, self.parser.header)
        if self._sum is not None:
            for _payload, frame in loaded:
                self._guard(self._sum.add, frame)

    def _start(self, header: UpdateHeader) -> None:
        t = self.ticket
        self._base = self.files.open_sum(t.federation_id, t.index, t.channel)
        self._out = PendingSum(self.blobs)
        self._sum = RunningSum(t.ctx, self._base, self._out)
        self._sum.start(header)

    def _guard(self, step: Callable[..., object], arg: object) -> None:
        """Run a running-sum step; any failure only gives up the streamed sum (the base may
        have been discarded or may not combine with this upload: the commit decides)."""
        started = time.perf_counter()
        try:
            step(arg)
        except (FedsparsifyError, OSError) as exc:
            log.debug("upload of %s: not summed while streaming: %s", self.ticket.client_id, exc)
            self._drop()
        finally:
            self._sum_s += time.perf_counter() - started

    def _drop(self) -> None:
        if self._out is not None:
            self._out.discard()
        if self._base is not None:
            self._base.close()
        self._sum = self._out = self._base = None

    def finish(self, tail: bytes) -> tuple[UpdateHeader, StreamedSum | None]:
        """The body's last bytes, then its end: the header (truncated: typed error) and the
        streamed sum (one worker-thread hop for both)."""
        if tail:
            self.feed(tail)
        header = self.parser.finish()
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        streamed = None
        if self._sum is not None and self._out is not None:
            running = self._sum
            self._guard(lambda _: running.finish(), None)
        if self._sum is not None and self._out is not None:
            base = self._sum.base_contributors
            if self._base is not None:
                self._base.close()
            streamed = StreamedSum(self._out.close(), base, self._sum_s)
        return header, streamed

    def abort(self) -> None:
        """Remove everything this body left."""
        self.fh.close()
        self.tmp.unlink(missing_ok=True)
        self._drop()


async def stage_upload(
    state: AppState, files: RoundFiles, ticket: UploadTicket, chunks: AsyncIterable[bytes]
) -> StagedUpload:
    """Read an upload body, validating frame by frame and adding each frame to the running
    sum as it arrives, into an fsynced temporary file.

    Raises the typed wire error at the first bad byte and :class:`PayloadTooLargeError` past
    ``ticket.max_bytes``; the temporary files are removed on any error. Memory: one frame per
    stream (body, running sum) plus :data:`FEED_BYTES`.
    """
    receiver = _Receiver(state, files, ticket)
    digest = hashlib.sha256()
    total = 0
    pending: list[bytes] = []
    pending_bytes = 0
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
                await anyio.to_thread.run_sync(receiver.feed, data)
        header, streamed = await anyio.to_thread.run_sync(receiver.finish, b"".join(pending))
    except BaseException:
        receiver.abort()
        raise
    return StagedUpload(receiver.tmp, header, total, digest.hexdigest(), streamed)


class UploadService:
    """Checks and commits uploads; blocking (run in a worker thread)."""

    def __init__(self, state: AppState, files: RoundFiles, lifecycle: RoundLifecycle) -> None:
        self.state = state
        self.blobs = state.blobs
        self.files = files
        self.lifecycle = lifecycle

    def prepare(self, fid: str, index: int, channel: str, caller: Caller) -> UploadTicket:
        """Check that ``caller`` may upload ``channel`` to round ``index`` now (read only: the
        deadline checker, not this, closes a round whose deadline passed)."""
        with self.state.db.read() as session:
            fed = get_federation(session, fid)
            rnd = get_round_row(session, fid, index)
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
            if existing is None and now() >= rnd.deadline:
                raise RoundClosedError(f"round {index} passed its deadline")
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
                binding=binding_of(rnd),
            )

    def commit(self, ticket: UploadTicket, staged: StagedUpload) -> UploadAccepted:
        """Store a validated upload and add it into the round's running sum (or refuse it)."""
        try:
            with self.state.round_lock(ticket.federation_id, ticket.index):
                accepted, complete = self._commit_locked(ticket, staged)
                if complete:
                    try:
                        self.lifecycle.finish_locked(ticket.federation_id, ticket.index)
                    except Exception:
                        # The upload is stored and counted; the checker retries the close.
                        log.exception("closing round %d failed; will retry", ticket.index)
        finally:
            staged.discard()
        if not accepted.duplicate:
            self.state.metrics.uploads_accepted.labels(channel=ticket.channel).inc()
        if not complete:  # the state it committed in ("collecting")
            return accepted
        return accepted.model_copy(update={"round_state": self._state_of(ticket)})

    def _state_of(self, ticket: UploadTicket) -> str:
        with self.state.db.read() as session:
            return get_round_row(session, ticket.federation_id, ticket.index).state

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
            rnd = get_round_row(session, fid, index)
            uploads = uploads_of(session, rnd)
            mine = [u for u in uploads if u.client_id == client_id and u.channel == channel]
            if mine:
                if mine[0].sha256 != staged.sha256:
                    raise ConflictError(
                        f"you already uploaded channel {channel!r} of round {index} (different "
                        "bytes); an upload cannot be replaced"
                    )
                # A retry after the process that stored it died before closing the round:
                # close it now if everyone is in.
                everyone = set(complete_uploaders(rnd, uploads)) == set(rnd.participants)
                return (
                    self._accepted(ticket, staged, rnd.state, duplicate=True),
                    everyone and rnd.state in ACCEPTING,
                )
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
            new_sum: SumFile | None = None
            try:
                same = [u.client_id for u in uploads if u.channel == channel]
                streamed = staged.streamed
                if streamed is not None and sorted(streamed.base) == sorted(same):
                    new_sum, seconds = streamed.made, streamed.seconds
                else:  # someone else's upload was committed while this one streamed in
                    started = time.perf_counter()
                    new_sum = self.files.add_to_sum(ctx, fid, index, channel, same, upload_path)
                    seconds = time.perf_counter() - started
                row = UploadRow(
                    round_id=rnd.id,
                    client_id=client_id,
                    channel=channel,
                    bytes=staged.bytes,
                    sha256=staged.sha256,
                    weight=header.weight,
                )
                session.add(row)
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
                    new_sum.tmp.unlink(missing_ok=True)
                raise
            self.files.commit_sum(new_sum, fid, index, channel)
            self.state.metrics.aggregation_seconds.labels(step="add").observe(seconds)
            log.info(
                "federation %s round %d: %s accepted from %s (%d bytes)",
                fid,
                index,
                channel,
                client_id,
                staged.bytes,
            )
            # Under the round lock nobody else added an upload: no need to read them again.
            complete = set(complete_uploaders(rnd, [*uploads, row]))
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
        if header.binding != binding_of(rnd) or header.channel != ticket.channel:
            raise RoundMismatchError(
                f"update made for round {header.round} attempt {header.attempt}; round {rnd.index}"
                f" is at attempt {rnd.attempt or 0} with another participant set: upload again"
            )
        if header.contributors != (ticket.client_id,):
            raise PermissionDeniedError(
                f"the update's header names contributors {list(header.contributors)}; it must "
                f"name exactly you ({ticket.client_id})"
            )
        if ticket.channel == VALUES and rnd.weights:
            share = float(rnd.weights[ticket.client_id])
            what = "the round's weight for you (weighting and max_weight_share of the spec)"
        elif ticket.channel == VALUES:  # a round opened by release 0.1
            client = session.get(ClientRow, ticket.client_id)
            assert client is not None
            share = client.num_samples / rnd.total_samples
            what = f"num_samples / total_samples = {client.num_samples}/{rnd.total_samples}"
        else:
            share = vote_weight(len(rnd.participants))
            what = f"1 / participants = 1/{len(rnd.participants)}"
        if header.weight > share * (1.0 + WEIGHT_SLACK) + 1e-12:
            raise ValueRangeError(
                f"weight {header.weight:.9g} exceeds your share {share:.9g} ({what}): no site "
                "may weigh more than its share, and the weights of a round sum to at most 1"
            )


def binding_of(rnd: RoundRow) -> RoundBinding:
    """What an upload to the round's current attempt must be made for."""
    return RoundBinding(
        federation_id=rnd.federation_id,
        round=rnd.index,
        attempt=rnd.attempt or 0,
        participants_digest=rnd.participants_digest or "",
    )
