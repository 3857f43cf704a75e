"""Client registration with a federation's enrolment token, and the member list."""

from __future__ import annotations

import base64
import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedsparsify.api.db import ClientRow, FederationRow, now
from fedsparsify.api.schemas import ClientOut, ClientRegistered, ClientRegistration
from fedsparsify.api.security import CLIENT_PREFIX, hash_token, new_id, new_token, token_matches
from fedsparsify.crypto import key_fingerprint
from fedsparsify.errors import AuthenticationError, ConflictError, CryptoError, NotFoundError

__all__ = ["get_client", "list_clients", "register_client"]

log = logging.getLogger(__name__)


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
    """Register a client; the first one becomes the key dealer. The token is shown once."""
    fed = session.get(FederationRow, federation_id, with_for_update=True)
    if fed is None:
        raise NotFoundError(f"no federation {federation_id!r}")
    if not enrollment_token:
        raise AuthenticationError(
            "missing enrolment token (X-Enrollment-Token or Authorization: Bearer)"
        )
    if not token_matches(enrollment_token, fed.enrollment_token_hash):
        raise AuthenticationError("wrong enrolment token for this federation")
    if fed.state in ("completed", "failed"):
        raise ConflictError(f"federation {fed.id} is {fed.state}: it takes no new clients")
    taken = session.scalars(
        select(ClientRow.id).where(ClientRow.federation_id == fed.id, ClientRow.name == body.name)
    ).first()
    if taken is not None:
        raise ConflictError(f"a client named {body.name!r} is already registered")
    public_key = body.public_key_bytes()
    try:
        fingerprint = key_fingerprint(public_key)
    except CryptoError as exc:
        raise CryptoError(f"public_key: {exc}") from exc
    token = new_token(CLIENT_PREFIX)
    is_dealer = fed.dealer_id is None
    registered_at = now()
    client = ClientRow(
        id=new_id(),
        federation_id=fed.id,
        name=body.name,
        public_key=public_key,
        fingerprint=fingerprint,
        num_samples=body.num_samples,
        token_hash=hash_token(token),
        is_dealer=is_dealer,
        created_at=registered_at,
        last_seen_at=registered_at,  # registering is being seen
    )
    session.add(client)
    if is_dealer:
        fed.dealer_id = client.id
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise ConflictError(f"a client named {body.name!r} is already registered") from exc
    log.info("federation %s: client %s registered (dealer: %s)", fed.id, client.id, is_dealer)
    return ClientRegistered(
        client_id=client.id,
        token=token,
        is_dealer=is_dealer,
        federation_id=fed.id,
        name=client.name,
    )


def list_clients(session: Session, federation_id: str) -> list[ClientOut]:
    """Every member with its X25519 public key and fingerprint (for sealing envelopes)."""
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
            fingerprint=c.fingerprint,
            num_samples=c.num_samples,
            is_dealer=c.is_dealer,
            has_envelope=c.envelope_bytes is not None,
        )
        for c in clients
    ]
