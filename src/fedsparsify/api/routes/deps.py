"""Dependencies as ``Annotated`` aliases: state, session, caller (admin / member / client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from fedsparsify.api.services.auth import (
    Caller,
    record_seen,
    require_admin,
    require_client,
    require_member,
    resolve_caller,
)
from fedsparsify.api.services.rounds import RoundService
from fedsparsify.api.state import AppState
from fedsparsify.errors import PayloadTooLargeError, TruncatedStreamError

__all__ = [
    "AdminDep",
    "CallerDep",
    "ClientDep",
    "MemberDep",
    "ReadSessionDep",
    "RoundsDep",
    "SessionDep",
    "StateDep",
    "bearer_scheme",
    "counted_stream",
    "drain",
    "read_body",
]

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="admin token, or a client token returned by registration",
)


def get_state(request: Request) -> AppState:
    """The app's :class:`AppState`."""
    state: AppState = request.app.state.fedsparsify
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_rounds(request: Request) -> RoundService:
    """The app's :class:`RoundService`."""
    rounds: RoundService = request.app.state.rounds
    return rounds


RoundsDep = Annotated[RoundService, Depends(get_rounds)]


def get_session(state: StateDep) -> Iterator[Session]:
    """A database session for a request that writes."""
    with state.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(state: StateDep) -> Iterator[Session]:
    """A read-only database session (takes no lock on SQLite)."""
    with state.db.read() as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def get_caller(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    """Who the bearer token stands for (401 if missing or unknown)."""
    token = credentials.credentials if credentials is not None else None
    with state.db.read() as session:
        caller = resolve_caller(state, session, token)
    record_seen(state, caller)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_admin(caller: CallerDep) -> Caller:
    """Only the admin token."""
    return require_admin(caller)


AdminDep = Annotated[Caller, Depends(get_admin)]


def get_member(fid: str, caller: CallerDep) -> Caller:
    """The admin or a client of federation ``fid``."""
    return require_member(caller, fid)


MemberDep = Annotated[Caller, Depends(get_member)]


def get_client(fid: str, caller: CallerDep) -> Caller:
    """A client of federation ``fid``."""
    return require_client(caller, fid)


ClientDep = Annotated[Caller, Depends(get_client)]


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def check_declared_length(request: Request, limit: int, what: str) -> None:
    """413 at once when Content-Length already exceeds ``limit``."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLargeError(f"{what} of {declared} bytes exceeds the limit of {limit}")


async def counted_stream(request: Request, state: AppState, kind: str) -> AsyncIterator[bytes]:
    """The request body as it arrives, counted in ``fedsparsify_bytes_received``."""
    counter = state.metrics.bytes_received.labels(kind=kind)
    try:
        async for chunk in request.stream():
            counter.inc(len(chunk))
            yield chunk
    except ClientDisconnect as exc:
        raise TruncatedStreamError("the client disconnected before the body ended") from exc


async def read_body(request: Request, state: AppState, limit: int, what: str) -> bytes:
    """A small raw body (context, envelope), refused with 413 past ``limit``."""
    check_declared_length(request, limit, what)
    parts: list[bytes] = []
    size = 0
    async for chunk in counted_stream(request, state, what):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"{what} exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def drain(request: Request, limit: int) -> None:
    """Read and drop what is left of a refused body (up to ``limit``), so that the client
    reads the error answer instead of a reset connection."""
    # Starlette marks the body consumed once its last message arrived; nothing to drain then.
    if getattr(request, "_stream_consumed", True):
        return
    seen = 0
    while seen <= limit:
        message = await request.receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
