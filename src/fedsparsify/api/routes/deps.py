"""Dependencies as ``Annotated`` aliases: state, session, caller (admin / member / client)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from fedsparsify.api.limits import body_refusal
from fedsparsify.api.services.auth import (
    Caller,
    record_seen,
    require_admin,
    require_client,
    require_member,
    resolve_caller,
)
from fedsparsify.api.services.idempotency import (
    MAX_KEY_LENGTH,
    IdempotentRequest,
    idempotent_request,
)
from fedsparsify.api.services.rounds import RoundService
from fedsparsify.api.services.sessions import resolve_session
from fedsparsify.api.state import AppState
from fedsparsify.errors import (
    AuthenticationError,
    PayloadTooLargeError,
    RequestTimeoutError,
    TruncatedStreamError,
)

__all__ = [
    "READ_METHODS",
    "SESSION_COOKIE",
    "AdminDep",
    "CallerDep",
    "ClientDep",
    "MemberDep",
    "Once",
    "OnceDep",
    "ReadSessionDep",
    "RoundsDep",
    "SessionDep",
    "StateDep",
    "bearer_scheme",
    "counted_stream",
    "mark_replayed",
    "read_body",
]

#: The dashboard's session cookie (HttpOnly, SameSite=Strict; see ``routes/dashboard.py``).
SESSION_COOKIE = "fedsparsify_session"
#: Methods a dashboard session may be used for.
READ_METHODS = ("GET", "HEAD")

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
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Caller:
    """Who the bearer token stands for, or else the dashboard's session cookie (401 if missing
    or unknown). The cookie only reads: a request that changes anything needs a bearer token."""
    token = credentials.credentials if credentials is not None else None
    session_id = request.cookies.get(SESSION_COOKIE)
    if token is None and session_id:
        if request.method not in READ_METHODS:
            raise AuthenticationError(
                "the dashboard's session only reads: send Authorization: Bearer <token>"
            )
        # A write transaction: an ended session's row is deleted.
        with state.db.session() as session:
            return resolve_session(state, session, session_id)
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


@dataclass(frozen=True)
class Once:
    """A POST's ``Idempotency-Key`` and the credential that scopes it."""

    key: str | None
    credential: str
    method: str
    path: str

    def request(self, body: BaseModel | None = None) -> IdempotentRequest | None:
        """The record identity of this request with ``body`` (None without a key)."""
        return idempotent_request(
            key=self.key, credential=self.credential, method=self.method, path=self.path, body=body
        )


def get_once(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=MAX_KEY_LENGTH,
            description="a fresh random value per request, the same on every retry of it: a "
            "retry gets the first answer again (kept 24 h), e.g. the same client id and token",
        ),
    ] = None,
) -> Once:
    """The request's idempotency key, scoped by whatever credential it presents."""
    presented = [request.headers.get(h) for h in ("authorization", "x-enrollment-token")]
    return Once(
        key=idempotency_key,
        credential="\x00".join(v for v in presented if v),
        method=request.method,
        path=request.url.path,
    )


OnceDep = Annotated[Once, Depends(get_once)]


def mark_replayed(response: Response, replayed: bool) -> None:
    """Say on a replayed answer that it is one (``Idempotent-Replayed: true``)."""
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"


async def counted_stream(request: Request, state: AppState, kind: str) -> AsyncIterator[bytes]:
    """The request body as it arrives, counted in ``fedsparsify_bytes_received``.

    The edge (:mod:`fedsparsify.api.limits`) bounds its size and its pace; a body it ends early
    raises :class:`PayloadTooLargeError` or :class:`RequestTimeoutError` here, a client that
    left :class:`TruncatedStreamError`."""
    counter = state.metrics.bytes_received.labels(kind=kind)
    try:
        async for chunk in request.stream():
            counter.inc(len(chunk))
            yield chunk
    except ClientDisconnect as exc:
        refusal = body_refusal(request.scope)
        if refusal == "too_large":
            raise PayloadTooLargeError(f"the {kind} body exceeds its size limit") from exc
        if refusal is not None:
            raise RequestTimeoutError(
                f"the {kind} body stalled or arrived too slowly; the upload was dropped"
            ) from exc
        raise TruncatedStreamError("the client disconnected before the body ended") from exc


async def read_body(request: Request, state: AppState, limit: int, what: str) -> bytes:
    """A small raw body (context, envelope, form), refused with 413 past ``limit`` (the edge
    has refused a declared or streamed excess of its own, larger limit already)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in counted_stream(request, state, what):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"{what} exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
