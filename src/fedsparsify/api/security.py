"""Tokens: generation, hashing and constant-time comparison.

Tokens are 32 random bytes (URL-safe base64) behind a short prefix that says what they are
(``fsa_`` admin, ``fse_`` enrolment, ``fsc_`` client). Only their SHA-256 is stored: a token has
256 bits of entropy, so a plain hash is as strong as a slow KDF and lets the server find a
client by its token's hash. Comparisons use :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["hash_token", "new_id", "new_token", "token_matches"]

ADMIN_PREFIX = "fsa_"
ENROLLMENT_PREFIX = "fse_"
CLIENT_PREFIX = "fsc_"


def new_token(prefix: str) -> str:
    """A fresh bearer token: ``prefix`` plus 32 random bytes."""
    return prefix + secrets.token_urlsafe(32)


def new_id() -> str:
    """A fresh resource id (32 hex digits)."""
    return secrets.token_hex(16)


def hash_token(token: str) -> str:
    """The stored form of a token: SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_matches(token: str, stored_hash: str | None) -> bool:
    """Whether ``token`` hashes to ``stored_hash``, in constant time."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_token(token), stored_hash)
