"""Client registration with a federation's join code, the member list, and member removal.

A join code (the enrolment token) has a lifetime, a number of uses (default: the spec's
``min_clients``) and can be rotated or revoked by the admin (:mod:`.enrollment`). Registration
closes when round 0 opens unless the spec allows late joiners. Declared sample counts above the
spec's ``max_samples_per_site`` are refused. Keys are validated by the request schema (no
all-zero or low-order X25519 point).
"""

from __future__ import annotations

import base64
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedsparsify.api.db import ClientRow, FederationRow, RoundRow, now
from fedsparsify.api.schemas import (
    ClientOut,
    ClientRegistered,
    ClientRegistration,
    MemberRemoved,
    iso,
)
from fedsparsify.api.security import CLIENT_PREFIX, hash_token, new_id, new_token, token_matches
from fedsparsify.api.services.enrollment import check_join_code
from fedsparsify.api.services.federations import spec_of
from fedsparsify.crypto import PublicIdentity
from fedsparsify.errors import AuthenticationError, ConfigError, ConflictError, NotFoundError
from fedsparsify.platform.names import name_key

__all__ = ["get_client", "list_clients", "register_client", "remove_client"]

log = logging.getLogger(__name__)


def _b64(raw: bytes | None) -> str | None:
    return base64.b64encode(raw).decode("ascii") if raw is not None else None


def get_client(session: Session, federation_id: str, client_id: str) -> ClientRow:
    """A client of the federation, or :class:`NotFoundError`."""
    client = session.get(ClientRow, client_id)
    if client is None or client.federation_id != federation_id:
        raise NotFoundError(f"no client {client_id!r} in federation {federation_id!r}")
    return client


def register_client(
    session: Session,
    federation_id: str,
    enrollment_token: str | None,
    body: ClientRegistration,
) -> ClientRegistered:
    """Add a client to ``session`` (flushed; the caller commits, see
    :func:`~fedsparsify.api.services.idempotency.run_once`); the first one becomes the key
    dealer. The token is shown once. Names are unique in the federation by
    :func:`~fedsparsify.platform.names.name_key` (409)."""
    fed = session.get(FederationRow, federation_id, with_for_update=True)
    if fed is None:
        raise NotFoundError(f"no federation {federation_id!r}")
    if not enrollment_token:
        raise AuthenticationError(
            "missing enrolment token (X-Enrollment-Token or Authorization: Bearer)"
        )
    if not token_matches(enrollment_token, fed.enrollment_token_hash):
        raise AuthenticationError("wrong enrolment token for this federation")
    check_join_code(fed, at=now())
    spec = spec_of(fed)
    if fed.state in ("completed", "failed"):
        raise ConflictError(f"federation {fed.id} is {fed.state}: it takes no new clients")
    started = session.scalars(select(RoundRow.id).where(RoundRow.federation_id == fed.id)).first()
    if started is not None and not spec.enrollment.late_joiners:
        raise ConflictError(
            "registration closed when round 0 opened (the spec does not allow late joiners)"
        )
    cap = spec.max_samples_per_site
    if cap is not None and body.num_samples > cap:
        raise ConfigError(
            f"num_samples {body.num_samples} exceeds the federation's max_samples_per_site {cap}"
        )
    key = name_key(body.name)
    names = session.scalars(select(ClientRow.name).where(ClientRow.federation_id == fed.id))
    taken = next((n for n in names if name_key(n) == key), None)
    if taken is not None:
        raise ConflictError(f"a client named {taken!r} is already registered")
    signing, envelope, mask = body.key_bytes()
    identity = PublicIdentity(signing_key=signing, envelope_key=envelope, mask_key=mask)
    token = new_token(CLIENT_PREFIX)
    is_dealer = fed.dealer_id is None
    registered_at = now()
    client = ClientRow(
        id=new_id(),
        federation_id=fed.id,
        name=body.name,
        public_key=envelope,
        signing_key=signing,
        mask_key=mask,
        fingerprint=identity.fingerprint,
        num_samples=body.num_samples,
        token_hash=hash_token(token),
        is_dealer=is_dealer,
        created_at=registered_at,
        last_seen_at=registered_at,  # registering is being seen
    )
    session.add(client)
    fed.enrollment_uses = (fed.enrollment_uses or 0) + 1
    if is_dealer:
        fed.dealer_id = client.id
    try:
        session.flush()
    except IntegrityError as exc:
        raise ConflictError(f"a client named {body.name!r} is already registered") from exc
    log.info(
        "federation %s: client %s registered as %r, fingerprint %s, %d samples (dealer: %s)",
        fed.id,
        client.id,
        client.name,
        client.fingerprint,
        client.num_samples,
        is_dealer,
    )
    return ClientRegistered(
        client_id=client.id,
        token=token,
        is_dealer=is_dealer,
        federation_id=fed.id,
        name=client.name,
    )


def list_clients(session: Session, federation_id: str) -> list[ClientOut]:
    """Every member with its public keys and fingerprint (sites recompute the fingerprint)."""
    clients = session.scalars(
        select(ClientRow)
        .where(ClientRow.federation_id == federation_id)
        .order_by(ClientRow.created_at)
    ).all()
    return [
        ClientOut(
            id=c.id,
            name=c.name,
            public_key=base64.b64encode(c.public_key).decode("ascii"),
            signing_key=_b64(c.signing_key),
            mask_key=_b64(c.mask_key),
            fingerprint=c.fingerprint,
            num_samples=c.num_samples,
            is_dealer=c.is_dealer,
            has_envelope=c.envelope_bytes is not None,
            removed=c.removed_at is not None,
        )
        for c in clients
    ]


def remove_client(session: Session, federation_id: str, client_id: str) -> MemberRemoved:
    """Admin: remove a member. Its token stops working and it is in no new round (a round it is
    already in goes on; without its upload it closes or restarts at its deadline)."""
    client = get_client(session, federation_id, client_id)
    if client.removed_at is None:
        client.removed_at = now()
        session.commit()
        log.warning("federation %s: client %s (%r) removed", federation_id, client.id, client.name)
    return MemberRemoved(client_id=client.id, removed_at=iso(client.removed_at))
