"""Key distribution: the dealer's public context and the envelopes it seals for each client.

The aggregator stores both and can open neither: the public context holds no secret key (checked
by :meth:`PublicContext.from_bytes`), and an envelope is AES-GCM under a key only its recipient
can derive. Each client may fetch its own envelope only.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from sqlalchemy.orm import Session

from fedsparsify.api.db import FederationRow
from fedsparsify.api.schemas import ContextStored, EnvelopeStored
from fedsparsify.api.services.auth import Caller
from fedsparsify.api.services.clients import get_client
from fedsparsify.api.services.federations import get_federation, spec_of
from fedsparsify.api.state import AppState
from fedsparsify.crypto import PublicContext
from fedsparsify.errors import (
    ConflictError,
    CryptoError,
    NotFoundError,
    ParameterMismatchError,
    PermissionDeniedError,
)

__all__ = [
    "context_key",
    "envelope_key",
    "envelope_path",
    "load_public_context",
    "own_envelope_path",
    "public_context_path",
    "put_envelope",
    "put_public_context",
]

log = logging.getLogger(__name__)


def context_key(federation_id: str) -> str:
    """Blob key of a federation's public context."""
    return f"federations/{federation_id}/keys/context.bin"


def envelope_key(federation_id: str, client_id: str) -> str:
    """Blob key of the envelope sealed for one client."""
    return f"federations/{federation_id}/keys/envelopes/{client_id}.bin"


def _require_dealer(fed: FederationRow, caller: Caller) -> None:
    if caller.client_id is None or caller.client_id != fed.dealer_id:
        raise PermissionDeniedError("only the federation's key dealer may do this")


def put_public_context(
    state: AppState, session: Session, federation_id: str, caller: Caller, data: bytes
) -> ContextStored:
    """Store the dealer's public context (once; the same bytes again is a no-op)."""
    fed = get_federation(session, federation_id)
    _require_dealer(fed, caller)
    digest = hashlib.sha256(data).hexdigest()
    if fed.context_digest is not None:
        if fed.context_digest != digest:
            raise ConflictError(
                "the federation already has another public context; a key set cannot change"
            )
        ctx = load_public_context(state, fed)
        return ContextStored(digest=digest, preset=ctx.preset.name, bytes=len(data), created=False)
    try:
        ctx = PublicContext.from_bytes(data)
    except CryptoError as exc:
        raise type(exc)(f"public context refused: {exc}") from exc
    wanted = spec_of(fed).crypto_preset
    if ctx.preset.name != wanted:
        raise ParameterMismatchError(
            f"the context uses preset {ctx.preset.name!r}, the federation's spec {wanted!r}"
        )
    state.blobs.put_bytes(context_key(fed.id), data)
    fed.context_digest = ctx.digest
    fed.context_bytes = len(data)
    session.commit()
    state.cache_context(fed.id, ctx)
    log.info("federation %s: public context %s stored", fed.id, ctx.digest[:16])
    return ContextStored(digest=ctx.digest, preset=ctx.preset.name, bytes=len(data), created=True)


def load_public_context(state: AppState, fed: FederationRow) -> PublicContext:
    """The federation's public context (cached after the first load)."""
    if fed.context_digest is None:
        raise ConflictError("the key dealer has not uploaded the public context yet")
    cached = state.cached_context(fed.id)
    if cached is not None:
        return cached
    ctx = PublicContext.from_bytes(state.blobs.get_bytes(context_key(fed.id)))
    state.cache_context(fed.id, ctx)
    return ctx


def public_context_path(state: AppState, session: Session, federation_id: str) -> tuple[Path, str]:
    """File and digest of the public context; :class:`NotFoundError` until uploaded."""
    fed = get_federation(session, federation_id)
    if fed.context_digest is None:
        raise NotFoundError("the key dealer has not uploaded the public context yet")
    return state.blobs.path(context_key(fed.id)), fed.context_digest


def put_envelope(
    state: AppState,
    session: Session,
    federation_id: str,
    caller: Caller,
    client_id: str,
    data: bytes,
) -> EnvelopeStored:
    """Store the envelope the dealer sealed for ``client_id`` (replacing an earlier one)."""
    fed = get_federation(session, federation_id)
    _require_dealer(fed, caller)
    target = get_client(session, fed.id, client_id)
    if target.is_dealer:
        raise ConflictError("the key dealer holds the secret key itself; it needs no envelope")
    if target.removed_at is not None:
        raise ConflictError(f"client {target.id} was removed from the federation")
    if not data:
        raise CryptoError("an envelope cannot be empty")
    replaced = target.envelope_bytes is not None
    state.blobs.put_bytes(envelope_key(fed.id, target.id), data)
    target.envelope_bytes = len(data)
    session.commit()
    log.info("federation %s: envelope for %s stored", fed.id, target.id)
    return EnvelopeStored(client_id=target.id, bytes=len(data), replaced=replaced)


def own_envelope_path(
    state: AppState, session: Session, federation_id: str, caller: Caller
) -> Path:
    """The caller's own envelope; :class:`NotFoundError` until the dealer has sealed it."""
    if caller.client_id is None:
        raise PermissionDeniedError("only clients have envelopes")
    client = get_client(session, federation_id, caller.client_id)
    if client.envelope_bytes is None:
        raise NotFoundError("no envelope sealed for you yet: the key dealer has not sealed it")
    return state.blobs.path(envelope_key(federation_id, client.id))


def envelope_path(state: AppState, federation_id: str, client_id: str) -> Path:
    """File of a client's envelope (for cleanups and tests)."""
    return state.blobs.path(envelope_key(federation_id, client_id))
