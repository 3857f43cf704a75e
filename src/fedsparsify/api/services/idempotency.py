"""Safe retries: a POST sent again with the same ``Idempotency-Key`` gets the first answer.

A client that loses the answer to a registration (a timeout, a cut connection) retries with the
same key and gets the same client id and the same one-time token; a retried federation create
returns the same federation. Keys are scoped to the caller: the record is found by SHA-256 over
the credential the request presented (admin, enrolment or client token) and the key, so one
caller's key never meets another's. Only successful answers are kept; a failed request is simply
executed again. The same key with another body or path is refused (422).

Storing an answer that holds a one-time token means storing a secret. The trade-off chosen:

- the answer is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the presented
  credential and the idempotency key, neither of which the server stores (tokens are kept as
  SHA-256 only). Whoever reads the database, its backups or its logs learns nothing from a
  record; whoever can replay must present both the credential and the key, i.e. is the caller
  that made the request, and could have read the answer the first time;
- records expire after ``idempotency_ttl_s`` (24 h by default) and are then deleted: a retry
  later than that is executed as a new request (a registration then gets 409, name taken).

Where the work and the record commit in one transaction (create a federation, register a
client), a crash between the two cannot happen. Rounds and metrics run their own transactions,
so there the record follows in a second one: a crash in between leaves the request to be
executed again on retry, which is harmless (opening a round twice is refused with 409, metrics
merge to the same values).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fedsparsify.api.db import IdempotentAnswerRow, now
from fedsparsify.errors import ConfigError, FedsparsifyError

__all__ = ["MAX_KEY_LENGTH", "IdempotentRequest", "idempotent_request", "run_once"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

MAX_KEY_LENGTH = 255
_DOMAIN = b"fedsparsify idempotent answer v1"
_NONCE = 12


@dataclass(frozen=True)
class IdempotentRequest:
    """One POST with an ``Idempotency-Key``: where its record lives and how it is sealed."""

    record_id: str
    fingerprint: str
    seal_key: bytes

    def aad(self, status_code: int) -> bytes:
        """What the sealed answer is bound to."""
        return f"{self.record_id}|{self.fingerprint}|{status_code}".encode()


def idempotent_request(
    *, key: str | None, credential: str, method: str, path: str, body: BaseModel | None
) -> IdempotentRequest | None:
    """The request's identity for replay; None without a key or a credential (an anonymous
    request is refused by authentication anyway). :class:`ConfigError` for a malformed key."""
    if key is None or not credential:
        return None
    if not 0 < len(key) <= MAX_KEY_LENGTH or not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise ConfigError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters "
            "(e.g. a random UUID)"
        )
    secret = credential.encode() + b"\x00" + key.encode()
    canonical = json.dumps(
        body.model_dump(mode="json") if body is not None else None, sort_keys=True
    )
    return IdempotentRequest(
        record_id=hashlib.sha256(_DOMAIN + b"\x00" + secret).hexdigest(),
        fingerprint=hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest(),
        seal_key=HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DOMAIN).derive(secret),
    )


def _replay(session: Session, request: IdempotentRequest, answer_type: type[M]) -> M | None:
    row = session.get(IdempotentAnswerRow, request.record_id)
    if row is None or row.expires_at <= now():
        return None
    if row.request_sha256 != request.fingerprint:
        raise ConfigError(
            "this Idempotency-Key was used for another request (other path or body): use a "
            "fresh key for every new request, and the same key only to retry one"
        )
    sealed = bytes(row.sealed)
    try:
        plain = AESGCM(request.seal_key).decrypt(
            sealed[:_NONCE], sealed[_NONCE:], request.aad(row.status_code)
        )
    except (InvalidTag, ValueError):
        log.warning("idempotent answer %s does not open; executing the request again", row.id)
        return None
    return answer_type.model_validate_json(plain)


def _remember(
    session: Session, request: IdempotentRequest, answer: BaseModel, status_code: int, ttl_s: float
) -> None:
    at = now()
    session.execute(delete(IdempotentAnswerRow).where(IdempotentAnswerRow.expires_at <= at))
    nonce = os.urandom(_NONCE)
    sealed = nonce + AESGCM(request.seal_key).encrypt(
        nonce, answer.model_dump_json().encode(), request.aad(status_code)
    )
    session.add(
        IdempotentAnswerRow(
            id=request.record_id,
            request_sha256=request.fingerprint,
            status_code=status_code,
            sealed=sealed,
            created_at=at,
            expires_at=at + ttl_s,
        )
    )


def run_once(
    session: Session,
    request: IdempotentRequest | None,
    answer_type: type[M],
    produce: Callable[[], M],
    *,
    ttl_s: float,
    status_code: int,
    produce_commits: bool = False,
) -> tuple[M, bool]:
    """``(answer, replayed)``: the stored answer of an earlier attempt, or ``produce()``'s.

    ``produce`` leaves its changes in ``session`` uncommitted: they commit together with the
    record. With ``produce_commits`` it runs its own transactions (rounds, metrics) and the
    record follows in ``session``'s. If the work or the commit fails and another attempt with
    the same key has stored its answer meanwhile (a concurrent retry), that answer is returned.
    """
    if request is None:
        answer = produce()
        session.commit()
        return answer, False
    stored = _replay(session, request, answer_type)
    if stored is not None:
        session.rollback()
        return stored, True
    if produce_commits:
        session.rollback()  # release this session's lock while produce() uses its own
    try:
        answer = produce()
        _remember(session, request, answer, status_code, ttl_s)
        session.commit()
    except (FedsparsifyError, IntegrityError):
        session.rollback()
        stored = _replay(session, request, answer_type)
        if stored is None:
            raise
        session.rollback()
        return stored, True
    return answer, False
