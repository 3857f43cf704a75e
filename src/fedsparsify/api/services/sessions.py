"""Dashboard sign-in sessions: a browser trades a token for a server-side session id.

The session id (``fsd_`` + 32 random bytes) is handed to the browser once, in a cookie; the
database keeps only its SHA-256, with the SHA-256 of the token it was opened with (the same hash
the aggregator already stores for that token), a creation and an expiry time. Every request
resolves the session back to its caller through :func:`~fedsparsify.api.services.auth.identify`,
so a session ends with its token: a rotated admin token or a removed client signs its browsers
out. Sessions expire after ``Settings.dashboard_session_s``; signing out deletes the row.

Resolving a session never marks a client as seen: a person looking at the dashboard with a
site's token is not that site taking part in rounds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fedsparsify.api.db import DashboardSessionRow, now
from fedsparsify.api.security import hash_token, new_token
from fedsparsify.api.services.auth import Caller, identify
from fedsparsify.api.state import AppState
from fedsparsify.errors import AuthenticationError

__all__ = [
    "MAX_SESSIONS_PER_TOKEN",
    "SESSION_PREFIX",
    "OpenedSession",
    "end_session",
    "open_session",
    "resolve_session",
    "session_expiry",
]

log = logging.getLogger(__name__)

SESSION_PREFIX = "fsd_"
#: A token may hold this many live sessions; signing in once more ends the oldest.
MAX_SESSIONS_PER_TOKEN = 16
#: Longest session id accepted from a cookie (ours are 47 characters).
MAX_SESSION_ID_CHARS = 128


@dataclass(frozen=True)
class OpenedSession:
    """A new session: its id (for the cookie, never stored), who it is, when it ends."""

    session_id: str
    caller: Caller
    expires_at: float


def open_session(state: AppState, session: Session, token: str) -> OpenedSession:
    """Sign in with the admin token or a client's token; :class:`AuthenticationError` for any
    other (an enrolment token included). Expired sessions are purged on the way."""
    if not token:
        raise AuthenticationError("enter the admin token or a site's client token")
    digest = hash_token(token)
    caller, _client = identify(state, session, digest)
    at = now()
    session.execute(delete(DashboardSessionRow).where(DashboardSessionRow.expires_at <= at))
    live = session.scalars(
        select(DashboardSessionRow)
        .where(DashboardSessionRow.credential_hash == digest)
        .order_by(DashboardSessionRow.created_at)
    ).all()
    for old in live[: max(0, len(live) - MAX_SESSIONS_PER_TOKEN + 1)]:
        session.delete(old)
    session_id = new_token(SESSION_PREFIX)
    expires_at = at + state.settings.dashboard_session_s
    session.add(
        DashboardSessionRow(
            id_hash=hash_token(session_id),
            credential_hash=digest,
            created_at=at,
            expires_at=expires_at,
        )
    )
    session.commit()
    log.info("dashboard sign-in: %s", _who(caller))
    return OpenedSession(session_id=session_id, caller=caller, expires_at=expires_at)


def resolve_session(state: AppState, session: Session, session_id: str) -> Caller:
    """The caller of a live session; :class:`AuthenticationError` when it is unknown, expired,
    signed out, or its token is no longer valid (then the row is deleted)."""
    if not session_id or len(session_id) > MAX_SESSION_ID_CHARS:
        raise AuthenticationError("no dashboard session: sign in again")
    row = session.get(DashboardSessionRow, hash_token(session_id))
    if row is None or row.expires_at <= now():
        raise AuthenticationError("the dashboard session expired or was signed out: sign in again")
    try:
        caller, _client = identify(state, session, row.credential_hash)
    except AuthenticationError:
        session.delete(row)
        session.commit()
        raise AuthenticationError(
            "the token this dashboard session was opened with is no longer valid"
        ) from None
    return caller


def end_session(session: Session, session_id: str) -> bool:
    """Sign out: delete the session; whether there was one."""
    if not session_id or len(session_id) > MAX_SESSION_ID_CHARS:
        return False
    row = session.get(DashboardSessionRow, hash_token(session_id))
    if row is None:
        return False
    session.delete(row)
    session.commit()
    return True


def session_expiry(session: Session, session_id: str) -> float | None:
    """When a session ends (None if there is none)."""
    row = session.get(DashboardSessionRow, hash_token(session_id))
    return row.expires_at if row is not None else None


def _who(caller: Caller) -> str:
    if caller.is_admin:
        return "admin"
    return f"client {caller.client_id} of federation {caller.federation_id}"
