"""Reading rounds: the rows of one round and its uploads, and the public view of a round."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from fedsparsify.api.db import FederationRow, RoundRow, UploadRow
from fedsparsify.api.schemas import RoundOut, iso
from fedsparsify.api.services.federations import spec_of
from fedsparsify.api.services.liveness import complete_uploaders
from fedsparsify.errors import NotFoundError

__all__ = ["ACCEPTING", "UNFINISHED", "get_round_row", "round_out", "uploads_of"]

ACCEPTING = ("open", "collecting")
UNFINISHED = ("open", "collecting", "aggregating")


def get_round_row(session: Session, fid: str, index: int | None) -> RoundRow:
    """Round ``index`` of a federation (``None``: the latest); :class:`NotFoundError`."""
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


def uploads_of(session: Session, rnd: RoundRow) -> list[UploadRow]:
    """The accepted uploads of a round, oldest first."""
    return list(
        session.scalars(
            select(UploadRow).where(UploadRow.round_id == rnd.id).order_by(UploadRow.id)
        )
    )


def round_out(session: Session, rnd: RoundRow, *, pairwise_masks: bool | None = None) -> RoundOut:
    """The public view of a round."""
    if pairwise_masks is None:
        fed = session.get(FederationRow, rnd.federation_id)
        pairwise_masks = fed is not None and spec_of(fed).pairwise_masks
    uploads = uploads_of(session, rnd)
    per_channel: dict[str, list[str]] = {ch: [] for ch in rnd.channels}
    for up in uploads:
        per_channel.setdefault(up.channel, []).append(up.client_id)
    return RoundOut(
        index=rnd.index,
        attempt=rnd.attempt or 0,
        state=rnd.state,
        reason=rnd.reason,
        participants=list(rnd.participants),
        participants_digest=rnd.participants_digest,
        weights=dict(rnd.weights or {}),
        pairwise_masks=bool(pairwise_masks),
        total_samples=rnd.total_samples,
        deadline=iso(rnd.deadline),
        quorum=rnd.quorum,
        channels=list(rnd.channels),
        context_digest=rnd.context_digest,
        mask_digest=rnd.mask_digest,
        value_count=rnd.value_count,
        uploaded=complete_uploaders(rnd, uploads),
        uploads=per_channel,
        contributors=list(rnd.contributors or []),
        aggregate_ready=rnd.state == "closed",
        opened_at=iso(rnd.opened_at),
        closed_at=iso(rnd.closed_at),
    )
