"""``/v1/federations/{fid}/keys``: public context and per-client envelopes (opaque here)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from fedsparsify.api.routes.deps import ClientDep, MemberDep, StateDep, read_body
from fedsparsify.api.schemas import ContextStored, EnvelopeStored, ErrorBody
from fedsparsify.api.services import keys as service
from fedsparsify.api.services.auth import Caller
from fedsparsify.api.state import AppState

router = APIRouter(
    prefix="/v1/federations/{fid}/keys",
    tags=["keys"],
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
    },
)

_RAW_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
_RAW_ANSWER: dict[int | str, dict[str, Any]] = {200: {"content": {"application/octet-stream": {}}}}


@router.put(
    "/context",
    status_code=201,
    response_model=ContextStored,
    summary="Upload the public CKKS context (dealer)",
    openapi_extra=_RAW_BODY,
    responses={400: {"model": ErrorBody}, 409: {"model": ErrorBody}, 413: {"model": ErrorBody}},
)
async def put_context(
    fid: str, request: Request, response: Response, caller: ClientDep, state: StateDep
) -> ContextStored:
    """Raw body: ``SecretContext.public_bytes()``. Refused (400) if it holds a secret key or is
    unreadable, 422 for insecure parameters, 409 ``parameter_mismatch`` when its preset is not
    the spec's. Stored once: 201; the same bytes again: 200; other bytes: 409."""
    data = await read_body(request, state, state.settings.max_context_bytes, "context")
    stored = await run_in_threadpool(_put_context, state, fid, caller, data)
    if not stored.created:
        response.status_code = 200
    return stored


def _put_context(state: AppState, fid: str, caller: Caller, data: bytes) -> ContextStored:
    with state.db.session() as session:
        return service.put_public_context(state, session, fid, caller, data)


@router.get(
    "/context",
    response_class=FileResponse,
    summary="Download the public context (member)",
    responses=_RAW_ANSWER,
)
def get_context(fid: str, _caller: MemberDep, state: StateDep) -> FileResponse:
    """The public context's bytes, streamed; header ``X-Context-Digest`` (SHA-256 hex)."""
    with state.db.read() as session:
        path, digest = service.public_context_path(state, session, fid)
    state.metrics.bytes_served.labels(kind="context").inc(path.stat().st_size)
    return FileResponse(
        path, media_type="application/octet-stream", headers={"X-Context-Digest": digest}
    )


@router.put(
    "/envelopes/{client_id}",
    status_code=201,
    response_model=EnvelopeStored,
    summary="Store a client's key envelope (dealer)",
    openapi_extra=_RAW_BODY,
    responses={409: {"model": ErrorBody}, 413: {"model": ErrorBody}},
)
async def put_envelope(
    fid: str,
    client_id: str,
    request: Request,
    response: Response,
    caller: ClientDep,
    state: StateDep,
) -> EnvelopeStored:
    """Raw body: the envelope sealed for ``client_id`` (opaque to the aggregator). 201 when
    new, 200 when it replaces an earlier one; 413 past the size limit."""
    data = await read_body(request, state, state.settings.max_envelope_bytes, "envelope")
    stored = await run_in_threadpool(_put_envelope, state, fid, caller, client_id, data)
    if stored.replaced:
        response.status_code = 200
    return stored


def _put_envelope(
    state: AppState, fid: str, caller: Caller, client_id: str, data: bytes
) -> EnvelopeStored:
    with state.db.session() as session:
        return service.put_envelope(state, session, fid, caller, client_id, data)


@router.get(
    "/envelope",
    response_class=FileResponse,
    summary="Download your own envelope (client)",
    responses=_RAW_ANSWER,
)
def get_envelope(fid: str, caller: ClientDep, state: StateDep) -> FileResponse:
    """The envelope sealed for the caller, and only for the caller; 404 until sealed."""
    with state.db.read() as session:
        path = service.own_envelope_path(state, session, fid, caller)
    state.metrics.bytes_served.labels(kind="envelope").inc(path.stat().st_size)
    return FileResponse(path, media_type="application/octet-stream")
