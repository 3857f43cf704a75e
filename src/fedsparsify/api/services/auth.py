"""Who is calling: the admin, or one client of one federation.

Bearer tokens are looked up by their SHA-256 (clients, enrolment) or compared in constant time
with :func:`hmac.compare_digest` (admin). The admin token comes from the settings, or is
generated on first start, logged once, and only its hash is kept.

Every request a client's token authenticates marks that client as seen (throttled, see
:mod:`fedsparsify.api.services.liveness`).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedsparsify.api.db import ClientRow, ServerSecretRow, now
from fedsparsify.api.security import ADMIN_PREFIX, hash_token, new_token
from fedsparsify.api.services.liveness import touch
from fedsparsify.api.state import AppState
from fedsparsify.errors import AuthenticationError, PermissionDeniedError

__all__ = [
    "Caller",
    "bootstrap_admin_token",
    "identify",
    "record_seen",
    "require_admin",
    "require_client",
    "require_member",
    "resolve_caller",
]

log = logging.getLogger(__name__)

ADMIN_SECRET = "admin_token"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the admin (no client id) or a client of one federation."""

    is_admin: bool
    client_id: str | None = None
    federation_id: str | None = None
    is_dealer: bool = False
    #: When the client was last seen, as read with its token (for :func:`record_seen`).
    last_seen_at: float | None = None

    def is_member_of(self, federation_id: str) -> bool:
        """A client of ``federation_id``."""
        return self.client_id is not None and self.federation_id == federation_id


def bootstrap_admin_token(state: AppState) -> str | None:
    """Install the admin token's hash; return the token only when it was generated now.

    With ``FEDSPARSIFY_ADMIN_TOKEN`` set, that token is the admin token (its hash replaces any
    stored one). Otherwise the stored hash is used, or a token is generated, stored hashed and
    logged once: it cannot be retrieved again. Several processes on one database: give them all
    the same token (each keeps the hash it installed), or none (they share the stored one).
    """
    try:
        digest, generated = _install_admin_hash(state)
    except IntegrityError:
        # Another aggregator process stored the first hash at the same moment: read it.
        digest, generated = _install_admin_hash(state)
    state.admin_token_hash = digest
    if generated is not None:
        log.warning(
            "generated the admin token (shown once, stored hashed; set FEDSPARSIFY_ADMIN_TOKEN "
            "to choose one): %s",
            generated,
        )
    return generated


def _install_admin_hash(state: AppState) -> tuple[str, str | None]:
    configured = state.settings.admin_token
    generated: str | None = None
    with state.db.session() as session:
        row = session.get(ServerSecretRow, ADMIN_SECRET)
        if configured is not None:
            digest = hash_token(configured.get_secret_value())
            if row is None:
                session.add(ServerSecretRow(name=ADMIN_SECRET, value_hash=digest))
            else:
                row.value_hash = digest
        elif row is None:
            generated = new_token(ADMIN_PREFIX)
            digest = hash_token(generated)
            session.add(ServerSecretRow(name=ADMIN_SECRET, value_hash=digest))
        else:
            digest = row.value_hash
        session.commit()
    return digest, generated


def resolve_caller(state: AppState, session: Session, token: str | None) -> Caller:
    """The caller a bearer token stands for; :class:`AuthenticationError` if none.

    A client's token also records that the client was seen: pass the answer to
    :func:`record_seen` once ``session`` is closed (the write is a transaction of its own, and
    holding both connections at once would let concurrent requests drain the pool)."""
    if not token:
        raise AuthenticationError("missing bearer token (Authorization: Bearer <token>)")
    caller, _ = identify(state, session, hash_token(token))
    return caller


def identify(state: AppState, session: Session, digest: str) -> tuple[Caller, ClientRow | None]:
    """The caller whose token hashes to ``digest`` (and its client row), without marking it
    seen; :class:`AuthenticationError` if none. Dashboard sessions, which hold only the hash of
    the token they were opened with, resolve through here: a person looking at the dashboard
    with a site's token does not make that site a live participant."""
    if state.admin_token_hash is not None and hmac.compare_digest(digest, state.admin_token_hash):
        return Caller(is_admin=True), None
    client = session.scalars(select(ClientRow).where(ClientRow.token_hash == digest)).first()
    if client is None or not hmac.compare_digest(digest, client.token_hash):
        raise AuthenticationError("unknown or revoked token")
    if client.removed_at is not None:
        raise AuthenticationError("this client was removed from its federation by the admin")
    caller = Caller(
        is_admin=False,
        client_id=client.id,
        federation_id=client.federation_id,
        is_dealer=client.is_dealer,
        last_seen_at=client.last_seen_at,
    )
    return caller, client


def record_seen(state: AppState, caller: Caller) -> None:
    """Mark a client caller as seen now (throttled; see :func:`touch`)."""
    if caller.client_id is not None:
        touch(
            state.db, caller.client_id, caller.last_seen_at, now(), state.settings.client_liveness_s
        )


def require_admin(caller: Caller) -> Caller:
    """Only the admin."""
    if not caller.is_admin:
        raise PermissionDeniedError("this needs the admin token")
    return caller


def require_member(caller: Caller, federation_id: str) -> Caller:
    """The admin or a client of ``federation_id``."""
    if caller.is_admin or caller.is_member_of(federation_id):
        return caller
    raise PermissionDeniedError("this token belongs to another federation")


def require_client(caller: Caller, federation_id: str) -> Caller:
    """A client of ``federation_id`` (not the admin)."""
    if caller.is_admin:
        raise PermissionDeniedError("this needs a client token of the federation, not admin")
    return require_member(caller, federation_id)
