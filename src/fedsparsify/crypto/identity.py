"""A site's long-term identity: a signing key and two X25519 keys, and its fingerprint.

Every site holds three key pairs:

- ``signing`` (Ed25519): signs what only it may vouch for (the dealer's key envelopes);
- ``envelope`` (X25519): the dealer seals the CKKS secret key for it;
- ``mask`` (X25519): pairwise masks with every other participant of a round.

The *fingerprint* is 128 bits of SHA-256 over all three public keys, printed as 32 hex digits:
hospitals compare fingerprints out of band, the way people compare safety numbers in a
messenger, and a site uses another member's keys only when their fingerprint is confirmed. So an
aggregator that swaps any one key of a member changes its fingerprint, and is caught.

Keys arriving from another party are validated before use (:func:`check_x25519_public`,
:func:`check_ed25519_public`): an all-zero or low-order X25519 point would make every shared
secret known, and is refused with :class:`~fedsparsify.errors.CryptoError`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fedsparsify.errors import CryptoError

__all__ = [
    "FINGERPRINT_HEX",
    "KEY_BYTES",
    "PublicIdentity",
    "SiteIdentity",
    "check_ed25519_public",
    "check_x25519_public",
    "is_fingerprint",
    "verify_signature",
    "x25519_shared",
]

log = logging.getLogger(__name__)

KEY_BYTES = 32
SIGNATURE_BYTES = 64
#: Hex digits of a fingerprint (128 bits).
FINGERPRINT_HEX = 32
_FINGERPRINT_DOMAIN = b"fedsparsify/identity/v2:"
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw
_NONE = serialization.NoEncryption()


def _raw(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray) or len(value) != KEY_BYTES:
        raise CryptoError(f"{what} must be {KEY_BYTES} raw bytes")
    return bytes(value)


def check_x25519_public(raw: object, what: str = "X25519 public key") -> X25519PublicKey:
    """The key, or :class:`CryptoError` for a wrong length, the all-zero or a low-order point.

    A point of small order makes X25519 output all zeros whatever the other side's secret, so
    the check is an exchange with a throw-away key: OpenSSL refuses an all-zero result.
    """
    data = _raw(raw, what)
    if not any(data):
        raise CryptoError(f"{what} is all zeros")
    try:
        key = X25519PublicKey.from_public_bytes(data)
        X25519PrivateKey.generate().exchange(key)
    except ValueError as exc:
        raise CryptoError(f"{what} is a low-order point (every shared secret would be 0)") from exc
    return key


def check_ed25519_public(raw: object, what: str = "Ed25519 public key") -> Ed25519PublicKey:
    """The key, or :class:`CryptoError` for a wrong length, all zeros or an unusable encoding."""
    data = _raw(raw, what)
    if not any(data):
        raise CryptoError(f"{what} is all zeros")
    try:
        return Ed25519PublicKey.from_public_bytes(data)
    except ValueError as exc:
        raise CryptoError(f"{what} is not a valid Ed25519 point: {exc}") from exc


def x25519_shared(private_raw: bytes, peer_public_raw: bytes, what: str) -> bytes:
    """The X25519 shared secret with a (validated) peer key; :class:`CryptoError` otherwise."""
    peer = check_x25519_public(peer_public_raw, what)
    try:
        return X25519PrivateKey.from_private_bytes(_raw(private_raw, "private key")).exchange(peer)
    except ValueError as exc:  # pragma: no cover - excluded by the check above
        raise CryptoError(f"{what}: no shared secret: {exc}") from exc


def verify_signature(signing_public: bytes, signature: bytes, message: bytes, what: str) -> None:
    """:class:`CryptoError` unless ``signature`` is ``signing_public``'s over ``message``."""
    key = check_ed25519_public(signing_public, f"{what}: signing key")
    if not isinstance(signature, bytes | bytearray) or len(signature) != SIGNATURE_BYTES:
        raise CryptoError(f"{what}: a signature is {SIGNATURE_BYTES} bytes")
    try:
        key.verify(bytes(signature), message)
    except InvalidSignature as exc:
        raise CryptoError(f"{what}: the signature does not verify") from exc


def is_fingerprint(text: str) -> bool:
    """Whether ``text`` looks like a fingerprint (32 lowercase hex digits)."""
    return len(text) == FINGERPRINT_HEX and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class PublicIdentity:
    """The public half of a site's identity, as the aggregator relays it."""

    signing_key: bytes
    envelope_key: bytes
    mask_key: bytes

    @property
    def fingerprint(self) -> str:
        """128 bits of SHA-256 over the three public keys, as 32 hex digits."""
        digest = hashlib.sha256(
            _FINGERPRINT_DOMAIN + self.signing_key + self.envelope_key + self.mask_key
        )
        return digest.hexdigest()[:FINGERPRINT_HEX]

    def check(self) -> PublicIdentity:
        """Validate all three keys (:class:`CryptoError` naming the bad one); returns self."""
        check_ed25519_public(self.signing_key, "signing_key")
        check_x25519_public(self.envelope_key, "public_key (envelope)")
        check_x25519_public(self.mask_key, "mask_key")
        return self


@dataclass(frozen=True)
class SiteIdentity:
    """A site's three private keys (raw 32 bytes each); kept in its state directory only."""

    signing_private: bytes
    envelope_private: bytes
    mask_private: bytes

    @classmethod
    def generate(cls) -> SiteIdentity:
        """Three fresh key pairs."""
        return cls(
            signing_private=Ed25519PrivateKey.generate().private_bytes(_RAW, _RAW_PRIVATE, _NONE),
            envelope_private=X25519PrivateKey.generate().private_bytes(_RAW, _RAW_PRIVATE, _NONE),
            mask_private=X25519PrivateKey.generate().private_bytes(_RAW, _RAW_PRIVATE, _NONE),
        )

    def public(self) -> PublicIdentity:
        """The public keys."""
        try:
            signing = Ed25519PrivateKey.from_private_bytes(_raw(self.signing_private, "signing"))
            envelope = X25519PrivateKey.from_private_bytes(_raw(self.envelope_private, "envelope"))
            mask = X25519PrivateKey.from_private_bytes(_raw(self.mask_private, "mask"))
        except ValueError as exc:
            raise CryptoError(f"unusable private key: {exc}") from exc
        return PublicIdentity(
            signing_key=signing.public_key().public_bytes(_RAW, _RAW_PUBLIC),
            envelope_key=envelope.public_key().public_bytes(_RAW, _RAW_PUBLIC),
            mask_key=mask.public_key().public_bytes(_RAW, _RAW_PUBLIC),
        )

    def sign(self, message: bytes) -> bytes:
        """An Ed25519 signature over ``message``."""
        key = Ed25519PrivateKey.from_private_bytes(_raw(self.signing_private, "signing"))
        return key.sign(message)
