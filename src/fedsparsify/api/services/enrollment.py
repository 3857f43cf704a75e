"""Join codes: their lifetime and number of uses, rotation and revocation (admin).

A federation's join code is ``FEDERATION_ID:TOKEN``; the aggregator keeps only the token's hash
and, per federation, when it expires, how many registrations it allows, how many it allowed so
far, and whether it was revoked. Rows written by release 0.1 carry none of these: their codes
keep working without limits until the admin rotates them.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from fedsparsify.api.db import FederationRow, now
from fedsparsify.api.schemas import EnrollmentOut, EnrollmentRotation, iso
from fedsparsify.api.security import ENROLLMENT_PREFIX, hash_token, new_token
from fedsparsify.errors import AuthenticationError, ConflictError
from fedsparsify.platform.spec import FederationSpec

__all__ = ["check_join_code", "issue_join_code", "revoke_join_code", "rotate_join_code"]

log = logging.getLogger(__name__)


def check_join_code(fed: FederationRow, *, at: float) -> None:
    """:class:`AuthenticationError` if the (matching) join code is revoked, expired or used up."""
    if fed.enrollment_revoked_at is not None:
        raise AuthenticationError("the join code was revoked by the admin")
    if fed.enrollment_expires_at is not None and at >= fed.enrollment_expires_at:
        raise AuthenticationError(f"the join code expired at {iso(fed.enrollment_expires_at)}")
    limit = fed.enrollment_max_uses
    if limit is not None and (fed.enrollment_uses or 0) >= limit:
        raise AuthenticationError(
            f"the join code is used up ({limit} registration(s) allowed); ask the admin for a "
            "new one"
        )


def issue_join_code(
    fed: FederationRow, spec: FederationSpec, rotation: EnrollmentRotation | None = None
) -> str:
    """Give ``fed`` a fresh join code (replacing any other); returns its token (shown once)."""
    rotation = rotation or EnrollmentRotation()
    token = new_token(ENROLLMENT_PREFIX)
    lifetime = rotation.expires_after_s or spec.enrollment.expires_after_s
    fed.enrollment_token_hash = hash_token(token)
    fed.enrollment_expires_at = now() + lifetime
    fed.enrollment_max_uses = rotation.max_uses or spec.join_code_uses
    fed.enrollment_uses = 0
    fed.enrollment_revoked_at = None
    return token


def rotate_join_code(
    session: Session, fed: FederationRow, spec: FederationSpec, rotation: EnrollmentRotation
) -> EnrollmentOut:
    """Admin: replace the join code (the old one stops working at once)."""
    if fed.state in ("completed", "failed"):
        raise ConflictError(f"federation {fed.id} is {fed.state}: it takes no new clients")
    token = issue_join_code(fed, spec, rotation)
    session.commit()
    log.warning("federation %s: join code rotated", fed.id)
    return _out(fed, token)


def revoke_join_code(session: Session, fed: FederationRow) -> None:
    """Admin: the join code stops working; no one can register until a new one is issued."""
    if fed.enrollment_revoked_at is None:
        fed.enrollment_revoked_at = now()
        session.commit()
        log.warning("federation %s: join code revoked", fed.id)


def _out(fed: FederationRow, token: str) -> EnrollmentOut:
    return EnrollmentOut(
        federation_id=fed.id,
        enrollment_token=token,
        join_code=f"{fed.id}:{token}",
        expires_at=iso(fed.enrollment_expires_at),
        max_uses=int(fed.enrollment_max_uses or 0),
    )
