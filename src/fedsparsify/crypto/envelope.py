"""Identity keys and secret-key envelopes (X25519 + HKDF-SHA256 + AES-256-GCM).

Each client registers an X25519 public key; the key dealer wraps the secret context for each
client in an envelope the aggregator stores but cannot open::

    b"FSEV" | version u8 | ephemeral X25519 public key (32) | nonce (12) | AES-GCM ciphertext+tag

The AES key is HKDF-SHA256 of the X25519 shared secret, with the ephemeral and the recipient's
public keys in HKDF's ``info`` (so a key is bound to one exchange). The associated data binds the
envelope's prefix, the federation id and the recipient id (each length-prefixed), so an envelope
moved to another federation or another client fails to open even with the right private key.
"""

from __future__ import annotations

import hashlib
import logging
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsparsify.errors import CryptoError, EnvelopeError

__all__ = [
    "ENVELOPE_MAGIC",
    "generate_identity_keypair",
    "key_fingerprint",
    "open_envelope",
    "seal_envelope",
]

logger = logging.getLogger(__name__)

ENVELOPE_MAGIC = b"FSEV"
ENVELOPE_VERSION = 1
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_PREFIX_BYTES = len(ENVELOPE_MAGIC) + 1
_HKDF_INFO = b"fedsparsify/envelope/v1"
_U32 = struct.Struct(">I")
_RAW = serialization.Encoding.Raw


def generate_identity_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw bytes: ``(private_raw, public_raw)``, 32 bytes each."""
    private = X25519PrivateKey.generate()
    private_raw = private.private_bytes(
        _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public_raw = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    return private_raw, public_raw


def key_fingerprint(public_key: bytes) -> str:
    """Short hex fingerprint of a raw X25519 public key (128 bits of SHA-256), for allow-lists."""
    _public_key(public_key)
    return hashlib.sha256(b"fedsparsify-x25519:" + bytes(public_key)).hexdigest()[:32]


def _public_key(raw: bytes) -> X25519PublicKey:
    if not isinstance(raw, bytes | bytearray) or len(raw) != _KEY_BYTES:
        raise CryptoError("an X25519 public key is 32 raw bytes")
    return X25519PublicKey.from_public_bytes(bytes(raw))


def _private_key(raw: bytes) -> X25519PrivateKey:
    if not isinstance(raw, bytes | bytearray) or len(raw) != _KEY_BYTES:
        raise CryptoError("an X25519 private key is 32 raw bytes")
    return X25519PrivateKey.from_private_bytes(bytes(raw))


def _id(value: str, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise CryptoError(f"{what} must be a non-empty string")
    raw = value.encode("utf-8")
    return _U32.pack(len(raw)) + raw


def _aad(prefix: bytes, federation_id: str, recipient_id: str) -> bytes:
    return prefix + _id(federation_id, "federation_id") + _id(recipient_id, "recipient_id")


def _derive(shared: bytes, ephemeral_public: bytes, recipient_public: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_HKDF_INFO + ephemeral_public + recipient_public,
    ).derive(shared)


def seal_envelope(
    secret: bytes, *, recipient_public_key: bytes, federation_id: str, recipient_id: str
) -> bytes:
    """Encrypt ``secret`` for one recipient of one federation (ephemeral X25519 sender key)."""
    if not isinstance(secret, bytes | bytearray):
        raise CryptoError("the secret to seal must be bytes")
    recipient = _public_key(recipient_public_key)
    prefix = ENVELOPE_MAGIC + bytes([ENVELOPE_VERSION])
    aad = _aad(prefix, federation_id, recipient_id)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    try:
        shared = ephemeral.exchange(recipient)
    except ValueError as exc:
        raise CryptoError(f"unusable recipient public key: {exc}") from exc
    key = _derive(shared, ephemeral_public, bytes(recipient_public_key))
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, bytes(secret), aad)
    return prefix + ephemeral_public + nonce + sealed


def open_envelope(
    envelope: bytes, *, recipient_private_key: bytes, federation_id: str, recipient_id: str
) -> bytes:
    """The secret inside ``envelope``; :class:`EnvelopeError` if it was tampered with, is
    addressed to another recipient or federation, is opened with the wrong key, or is garbage."""
    private = _private_key(recipient_private_key)
    if not isinstance(envelope, bytes | bytearray):
        raise EnvelopeError("an envelope must be bytes")
    envelope = bytes(envelope)
    minimum = _PREFIX_BYTES + _KEY_BYTES + _NONCE_BYTES + _TAG_BYTES
    if len(envelope) < minimum or envelope[:4] != ENVELOPE_MAGIC:
        raise EnvelopeError("not a fedsparsify key envelope")
    if envelope[4] != ENVELOPE_VERSION:
        raise EnvelopeError(f"unsupported envelope version {envelope[4]}")
    prefix = envelope[:_PREFIX_BYTES]
    ephemeral_public = envelope[_PREFIX_BYTES : _PREFIX_BYTES + _KEY_BYTES]
    nonce_at = _PREFIX_BYTES + _KEY_BYTES
    nonce = envelope[nonce_at : nonce_at + _NONCE_BYTES]
    sealed = envelope[nonce_at + _NONCE_BYTES :]
    aad = _aad(prefix, federation_id, recipient_id)
    own_public = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        key = _derive(shared, ephemeral_public, own_public)
        return AESGCM(key).decrypt(nonce, sealed, aad)
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeError(
            "the envelope does not open: tampered with, or addressed to another recipient or "
            "federation, or the wrong private key"
        ) from exc
