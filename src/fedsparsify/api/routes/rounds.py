"""``/v1/federations/{fid}/rounds``: open, status, streamed uploads, aggregates, metrics."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from fedsparsify.api.routes.deps import (
    AdminDep,
    ClientDep,
    MemberDep,
    OnceDep,
    RoundsDep,
    SessionDep,
    StateDep,
    counted_stream,
    mark_replayed,
)
from fedsparsify.api.schemas import (
    ErrorBody,
    MetricsReport,
    MetricsStored,
    RoundOut,
    UploadAccepted,
)
from fedsparsify.api.services.idempotency import run_once
from fedsparsify.api.services.uploads import stage_upload
from fedsparsify.errors import FedsparsifyError

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1/federations/{fid}/rounds",
    tags=["rounds"],
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
    },
)

RoundIndex = Annotated[int, Path(ge=0, le=1_000_000, description="round index, from 0")]


@router.post(
    "",
    status_code=201,
    response_model=RoundOut,
    summary="Open the next round (admin)",
    responses={409: {"model": ErrorBody}},
)
def open_round(
    fid: str,
    _admin: AdminDep,
    rounds: RoundsDep,
    session: SessionDep,
    state: StateDep,
    once: OnceDep,
    response: Response,
) -> RoundOut:
    """Open the next round. 409 when a round is still open, all ``spec.rounds`` have run, fewer
    than ``min_clients`` are registered, or (encrypted presets) the public context is missing or
    fewer than ``min_clients`` hold the key. Participants: the key holders, i.e. the dealer and
    every client with an envelope (encrypted presets) or every registered client
    (``plaintext``), that are active: seen within the server's ``client_liveness_s`` (any
    request with their token, or registration) or done with the previous round. When fewer
    than ``quorum`` are active, every key holder is a participant. With ``spec.auto_advance``
    later rounds open by themselves when one closes or fails (same rule). With an
    ``Idempotency-Key``, a retry returns the round the first attempt opened."""
    answer, replayed = run_once(
        session,
        once.request(),
        RoundOut,
        lambda: rounds.open_next_round(fid),
        ttl_s=state.settings.idempotency_ttl_s,
        status_code=201,
        produce_commits=True,
    )
    mark_replayed(response, replayed)
    return answer


@router.get("", response_model=list[RoundOut], summary="List rounds (member)")
def list_rounds(fid: str, _caller: MemberDep, rounds: RoundsDep) -> list[RoundOut]:
    """Every round, oldest first."""
    return rounds.list_rounds(fid)


@router.get("/current", response_model=RoundOut, summary="The latest round (member)")
def current_round(fid: str, _caller: MemberDep, rounds: RoundsDep) -> RoundOut:
    """The latest round (404 before the first one opens)."""
    return rounds.get_round(fid, None)


@router.get("/{index}", response_model=RoundOut, summary="One round (member)")
def get_round(fid: str, index: RoundIndex, _caller: MemberDep, rounds: RoundsDep) -> RoundOut:
    """Round ``index``: state (``open`` → ``collecting`` → ``aggregating`` → ``closed``, or
    ``failed`` with a ``reason``), participants, ``total_samples`` (a client's weight is
    ``num_samples / total_samples``), deadline, quorum, channels, the mask digest and value
    count fixed by the first accepted upload, who uploaded, and ``aggregate_ready``."""
    return rounds.get_round(fid, index)


@router.put(
    "/{index}/updates/{channel}",
    status_code=201,
    response_model=UploadAccepted,
    summary="Upload an encrypted update, streamed (participant)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={
        200: {"model": UploadAccepted, "description": "byte-identical re-upload (idempotent)"},
        400: {"model": ErrorBody, "description": "malformed, truncated or trailing bytes"},
        408: {"model": ErrorBody, "description": "the body stalled or trickled: dropped"},
        409: {"model": ErrorBody, "description": "round_closed, context/mask/count mismatch"},
        413: {"model": ErrorBody},
        422: {"model": ErrorBody, "description": "weight above the client's share"},
        503: {"model": ErrorBody, "description": "too many uploads at once: retry"},
    },
)
async def upload_update(
    fid: str,
    index: RoundIndex,
    channel: str,
    request: Request,
    response: Response,
    caller: ClientDep,
    state: StateDep,
    rounds: RoundsDep,
) -> UploadAccepted:
    """Raw body: one encrypted-update stream (``fedsparsify.crypto`` wire format), made with
    ``encrypt_update(ctx, kept_values, weight=w, mask_digest=d, contributor=<your client id>)``,
    where ``w = num_samples / total_samples`` for ``values`` and ``1 / len(participants)`` for
    ``votes`` (FedSparsify-Local). Validated frame by frame while it streams in: context digest,
    preset, mask digest and value count (the round's, once the first upload fixed them),
    ciphertext count, every ciphertext. Refusals: 400 ``malformed_stream`` /
    ``truncated_stream`` / ``trailing_bytes``; 409 ``context_mismatch``, ``parameter_mismatch``,
    ``mask_mismatch``, ``count_mismatch``, ``round_closed`` (closed, failed, past the deadline),
    ``conflict`` (already uploaded other bytes); 403 not a participant or a header naming
    another contributor; 413 over the size limit (at once when ``Content-Length`` says so);
    408 a body that stalls or trickles (dropped, nothing kept); 503 when the aggregator receives
    as many uploads as it takes at once (retry); 422 weight above your share. The same bytes
    again: 200 with ``duplicate: true``. Accepted: 201, added into the round's encrypted sum."""
    metrics = state.metrics
    try:
        ticket = await run_in_threadpool(rounds.prepare_upload, fid, index, channel, caller)
        started = time.perf_counter()
        staged = await stage_upload(
            state, rounds.files, ticket, counted_stream(request, state, "update")
        )
        metrics.upload_stage_seconds.observe(time.perf_counter() - started)
        result = await run_in_threadpool(rounds.commit_upload, ticket, staged)
    except FedsparsifyError as exc:
        metrics.uploads_refused.labels(code=exc.code).inc()
        log.info("upload to %r round %d %r refused: %s: %s", fid, index, channel, exc.code, exc)
        raise
    if result.duplicate:
        response.status_code = 200
    return result


@router.get(
    "/{index}/aggregate/{channel}",
    response_class=FileResponse,
    summary="Download a closed round's encrypted sum (member)",
    responses={
        200: {"content": {"application/octet-stream": {}}},
        409: {"model": ErrorBody, "description": "the round is not closed (yet)"},
    },
)
def get_aggregate(
    fid: str,
    index: RoundIndex,
    channel: str,
    _caller: MemberDep,
    state: StateDep,
    rounds: RoundsDep,
) -> FileResponse:
    """The encrypted sum of the complete uploaders' updates for ``channel``, streamed: an
    ``aggregate`` stream whose header carries the weight sum and the contributors. Decrypt with
    ``decrypt_sum`` and divide by ``header.weight``. 409 until the round is closed."""
    path = rounds.aggregate_path(fid, index, channel)
    state.metrics.bytes_served.labels(kind="aggregate").inc(path.stat().st_size)
    return FileResponse(path, media_type="application/octet-stream")


@router.post(
    "/{index}/metrics",
    response_model=MetricsStored,
    summary="Report evaluation metrics (participant)",
    responses={422: {"model": ErrorBody, "description": "over 64 metrics for this round"}},
)
def report_metrics(
    fid: str,
    index: RoundIndex,
    body: MetricsReport,
    caller: ClientDep,
    rounds: RoundsDep,
    session: SessionDep,
    state: StateDep,
    once: OnceDep,
    response: Response,
) -> MetricsStored:
    """Plaintext scalars for the round (e.g. ``sparsity``, ``val_mae``); merged with earlier
    reports of the same client (at most 64 names per client and round: a report that would
    exceed that is refused with 422); shown in the federation's history."""
    answer, replayed = run_once(
        session,
        once.request(body),
        MetricsStored,
        lambda: rounds.report_metrics(fid, index, caller, body.metrics),
        ttl_s=state.settings.idempotency_ttl_s,
        status_code=200,
        produce_commits=True,
    )
    mark_replayed(response, replayed)
    return answer
