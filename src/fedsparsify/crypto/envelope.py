"""Signed secret-key envelopes (X25519 + HKDF-SHA256 + AES-256-GCM, signed with Ed25519).

The key dealer seals the CKKS secret context for each confirmed member; the aggregator stores
the envelope but can neither open nor forge it::

    b"FSEV" | version u8 (2) | u32 len | dealer id | key-set digest (32) |
    ephemeral X25519 public key (32) | nonce (12) | AES-GCM ciphertext+tag | Ed25519 signature (64)

The AES key is HKDF-SHA256 of the X25519 shared secret, with the ephemeral and the recipient's
public keys in HKDF's ``info``. The associated data binds everything before the ephemeral key
plus the federation id and the recipient id. The dealer signs the whole envelope together with
the federation id, the recipient id and the recipient's envelope key: a recipient opens an
envelope only after verifying the signature of a dealer it confirmed, and then checks that the
key set inside, and the public context the aggregator serves, have the signed digest. Version 1
envelopes (release 0.1) were unsigned and are refused.
"""

from __future__ import annotations

import logging
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsparsify.crypto.identity import (
    KEY_BYTES,
    SIGNATURE_BYTES,
    SiteIdentity,
    check_x25519_public,
    verify_signature,
)
from fedsparsify.errors import CryptoError, EnvelopeError

__all__ = [
    "ENVELOPE_MAGIC",
    "ENVELOPE_VERSION",
    "envelope_dealer",
    "open_envelope",
    "seal_envelope",
]

logger = logging.getLogger(__name__)

ENVELOPE_MAGIC = b"FSEV"
ENVELOPE_VERSION = 2
_NONCE_BYTES = 12
_TAG_BYTES = 16
_DIGEST_BYTES = 32
_MAX_ID_BYTES = 256
_HKDF_INFO = b"fedsparsify/envelope/v2"
_SIGNATURE_DOMAIN = b"fedsparsify/envelope-signature/v2"
_U32 = struct.Struct(">I")
_RAW = serialization.Encoding.Raw


def _id(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise CryptoError(f"{what} must be a non-empty string")
    raw = value.encode("utf-8")
    if len(raw) > _MAX_ID_BYTES:
        raise CryptoError(f"{what} is longer than {_MAX_ID_BYTES} bytes")
    return _U32.pack(len(raw)) + raw


def _digest_bytes(key_set_digest: str) -> bytes:
    try:
        raw = bytes.fromhex(key_set_digest)
    except (ValueError, TypeError) as exc:
        raise CryptoError("key_set_digest must be 64 hex digits") from exc
    if len(raw) != _DIGEST_BYTES:
        raise CryptoError("key_set_digest must be 64 hex digits")
    return raw


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_HKDF_INFO + ephemeral_public + recipient_public,
    ).derive(shared)


def _signed_message(
    body: bytes, federation_id: str, recipient_id: str, recipient_key: bytes
) -> bytes:
    return (
        _SIGNATURE_DOMAIN
        + _id(federation_id, "federation_id")
        + _id(recipient_id, "recipient_id")
        + recipient_key
        + body
    )


def seal_envelope(
    secret: bytes,
    *,
    recipient_public_key: bytes,
    federation_id: str,
    recipient_id: str,
    dealer_id: str,
    key_set_digest: str,
    signer: SiteIdentity,
) -> bytes:
    """Encrypt ``secret`` for one recipient of one federation and sign it as ``dealer_id``."""
    if not isinstance(secret, bytes | bytearray):
        raise CryptoError("the secret to seal must be bytes")
    recipient = check_x25519_public(recipient_public_key, "recipient's envelope key")
    recipient_raw = bytes(recipient_public_key)
    head = (
        ENVELOPE_MAGIC
        + bytes([ENVELOPE_VERSION])
        + _id(dealer_id, "dealer_id")
        + _digest_bytes(key_set_digest)
    )
    aad = head + _id(federation_id, "federation_id") + _id(recipient_id, "recipient_id")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    key = _derive(ephemeral.exchange(recipient), ephemeral_public, recipient_raw)
    nonce = os.urandom(_NONCE_BYTES)
    body = head + ephemeral_public + nonce + AESGCM(key).encrypt(nonce, bytes(secret), aad)
    return body + signer.sign(_signed_message(body, federation_id, recipient_id, recipient_raw))


def _split(envelope: bytes) -> tuple[str, str, int]:
    """Dealer id, key-set digest and the offset of the ephemeral key, structure checked."""
    if not isinstance(envelope, bytes | bytearray):
        raise EnvelopeError("an envelope must be bytes")
    if len(envelope) < 9 or bytes(envelope[:4]) != ENVELOPE_MAGIC:
        raise EnvelopeError("not a fedsparsify key envelope")
    if envelope[4] != ENVELOPE_VERSION:
        raise EnvelopeError(
            f"envelope format {envelope[4]} is not accepted (this release reads {ENVELOPE_VERSION}:"
            " dealer-signed envelopes; format 1 of release 0.1 was unsigned)"
        )
    (id_len,) = _U32.unpack_from(envelope, 5)
    at = 9 + id_len
    minimum = at + _DIGEST_BYTES + KEY_BYTES + _NONCE_BYTES + _TAG_BYTES + SIGNATURE_BYTES
    if id_len == 0 or id_len > _MAX_ID_BYTES or len(envelope) < minimum:
        raise EnvelopeError("truncated or malformed key envelope")
    try:
        dealer_id = bytes(envelope[9:at]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("the envelope's dealer id is not UTF-8") from exc
    digest = bytes(envelope[at : at + _DIGEST_BYTES]).hex()
    return dealer_id, digest, at + _DIGEST_BYTES


def envelope_dealer(envelope: bytes) -> tuple[str, str]:
    """``(dealer id, key-set digest)`` an envelope *claims* (unverified: only to find whose
    signing key to verify it with)."""
    dealer_id, digest, _ = _split(envelope)
    return dealer_id, digest


def open_envelope(
    envelope: bytes,
    *,
    recipient_private_key: bytes,
    federation_id: str,
    recipient_id: str,
    dealer_signing_key: bytes,
) -> tuple[bytes, str]:
    """Verify the dealer's signature, then open: ``(secret, key-set digest)``.

    :class:`EnvelopeError` if the signature is not ``dealer_signing_key``'s, or the envelope was
    tampered with, is addressed to another recipient or federation, or is opened with the wrong
    key. The caller checks that the secret's key set has the returned digest.
    """
    _dealer, digest, at = _split(envelope)
    envelope = bytes(envelope)
    try:
        private = X25519PrivateKey.from_private_bytes(bytes(recipient_private_key))
    except (ValueError, TypeError) as exc:
        raise CryptoError("an X25519 private key is 32 raw bytes") from exc
    own_public = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    body, signature = envelope[:-SIGNATURE_BYTES], envelope[-SIGNATURE_BYTES:]
    try:
        verify_signature(
            dealer_signing_key,
            signature,
            _signed_message(body, federation_id, recipient_id, own_public),
            "key envelope",
        )
    except CryptoError as exc:
        raise EnvelopeError(
            f"{exc}: not signed by the confirmed dealer, or meant for another recipient or "
            "federation"
        ) from exc
    ephemeral_public = body[at : at + KEY_BYTES]
    nonce = body[at + KEY_BYTES : at + KEY_BYTES + _NONCE_BYTES]
    sealed = body[at + KEY_BYTES + _NONCE_BYTES :]
    aad = body[:at] + _id(federation_id, "federation_id") + _id(recipient_id, "recipient_id")
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _derive(shared, ephemeral_public, own_public)
        return AESGCM(key).decrypt(nonce, sealed, aad), digest
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeError(
            "the envelope does not open: tampered with, or addressed to another recipient or "
            "federation, or the wrong private key"
        ) from exc
