"""Client liveness: who has been heard from lately, so that a dead site does not stall rounds.

A client is *seen* when it registers and whenever a request authenticates with its token
(:func:`touch`, called by :func:`fedsparsify.api.services.auth.record_seen`; written at most
once per :data:`TOUCH_INTERVAL_S` so that polling does not turn into a database write per request).

A client is *active* when it was seen within ``Settings.client_liveness_s``, or when it uploaded
every channel of the federation's latest round (a site that uploaded early in a long round may
have been quiet since, training nothing, and is alive all the same). A new round's participants
are the active key holders; see
:meth:`fedsparsify.api.services.lifecycle.RoundLifecycle.open_round`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from sqlalchemy import or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from fedsparsify.api.db import ClientRow, Database, RoundRow, UploadRow

__all__ = [
    "TOUCH_INTERVAL_S",
    "active_ids",
    "complete_uploaders",
    "is_recent",
    "last_seen",
    "latest_round_completers",
    "touch",
]

log = logging.getLogger(__name__)

#: ``last_seen_at`` is rewritten only when at least this old (capped at half the window).
TOUCH_INTERVAL_S = 1.0


def last_seen(client: ClientRow) -> float:
    """When the client was last heard from: its last authenticated request or registration."""
    return max(client.last_seen_at or 0.0, client.created_at)


def is_recent(client: ClientRow, at: float, window_s: float) -> bool:
    """Seen within ``window_s`` seconds before ``at``."""
    return at - last_seen(client) <= window_s


def touch(db: Database, client_id: str, previous: float | None, at: float, window_s: float) -> bool:
    """Record that client ``client_id`` (last seen at ``previous``) was seen at ``at``, unless
    ``previous`` is less than ``min(TOUCH_INTERVAL_S, window_s / 2)`` old. Returns whether it
    wrote.

    The write is a short transaction of its own, so that the caller's session can be a read
    (on SQLite a read transaction that starts writing can be refused). Best effort: a database
    too busy to take the write leaves the old time (the request goes on).
    """
    if previous is not None and at - previous < min(TOUCH_INTERVAL_S, window_s / 2):
        return False
    try:
        with db.session() as session:
            session.execute(
                update(ClientRow)
                .where(ClientRow.id == client_id)
                .where(or_(ClientRow.last_seen_at.is_(None), ClientRow.last_seen_at < at))
                .values(last_seen_at=at)
            )
            session.commit()
    except OperationalError as exc:
        log.warning("could not record that client %s was seen: %s", client_id, exc.orig)
        return False
    return True


def complete_uploaders(rnd: RoundRow, uploads: Iterable[UploadRow]) -> list[str]:
    """Participants of ``rnd`` that uploaded every channel, in participant order."""
    have: dict[str, set[str]] = {}
    for up in uploads:
        have.setdefault(up.client_id, set()).add(up.channel)
    return [c for c in rnd.participants if have.get(c, set()) >= set(rnd.channels)]


def latest_round_completers(session: Session, federation_id: str) -> set[str]:
    """Clients that uploaded every channel of the federation's latest round (none before one)."""
    rnd = session.scalars(
        select(RoundRow)
        .where(RoundRow.federation_id == federation_id)
        .order_by(RoundRow.index.desc())
        .limit(1)
    ).first()
    if rnd is None:
        return set()
    uploads = session.scalars(select(UploadRow).where(UploadRow.round_id == rnd.id))
    return set(complete_uploaders(rnd, uploads))


def active_ids(
    session: Session,
    federation_id: str,
    clients: Sequence[ClientRow],
    *,
    at: float,
    window_s: float,
) -> set[str]:
    """The ids of ``clients`` that are active at ``at`` (see the module docstring)."""
    completed = latest_round_completers(session, federation_id)
    return {c.id for c in clients if c.id in completed or is_recent(c, at, window_s)}
