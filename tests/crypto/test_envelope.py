"""Secret-key envelopes: round trip, and refusal when tampered, misaddressed or mis-keyed."""

from __future__ import annotations

import hashlib

import pytest

from fedsparsify.crypto import (
    SecretContext,
    generate_identity_keypair,
    key_fingerprint,
    open_envelope,
    seal_envelope,
)
from fedsparsify.errors import CryptoError, EnvelopeError

SECRET = b"the CKKS secret context" * 100


@pytest.fixture(scope="module")
def alice() -> tuple[bytes, bytes]:
    return generate_identity_keypair()


@pytest.fixture(scope="module")
def envelope(alice: tuple[bytes, bytes]) -> bytes:
    return seal_envelope(
        SECRET, recipient_public_key=alice[1], federation_id="fed-1", recipient_id="alice"
    )


def test_identity_keys_are_raw_x25519() -> None:
    private, public = generate_identity_keypair()
    assert len(private) == len(public) == 32
    assert generate_identity_keypair()[1] != public


def test_fingerprint_is_short_stable_hex(alice: tuple[bytes, bytes]) -> None:
    fp = key_fingerprint(alice[1])
    assert fp == key_fingerprint(alice[1])
    assert len(fp) == 32 and int(fp, 16) >= 0
    assert fp != key_fingerprint(generate_identity_keypair()[1])
    assert fp != hashlib.sha256(alice[1]).hexdigest()[:32]  # domain-separated
    with pytest.raises(CryptoError):
        key_fingerprint(b"short")


def test_round_trip(alice: tuple[bytes, bytes], envelope: bytes) -> None:
    opened = open_envelope(
        envelope, recipient_private_key=alice[0], federation_id="fed-1", recipient_id="alice"
    )
    assert opened == SECRET
    assert SECRET not in envelope


def test_sealing_twice_gives_different_envelopes(alice: tuple[bytes, bytes]) -> None:
    kwargs = dict(recipient_public_key=alice[1], federation_id="f", recipient_id="a")
    assert seal_envelope(b"x", **kwargs) != seal_envelope(b"x", **kwargs)  # type: ignore[arg-type]


def test_a_secret_context_travels_in_an_envelope(
    lean: SecretContext, alice: tuple[bytes, bytes]
) -> None:
    sealed = seal_envelope(
        lean.secret_bytes(), recipient_public_key=alice[1], federation_id="f", recipient_id="a"
    )
    opened = open_envelope(
        sealed, recipient_private_key=alice[0], federation_id="f", recipient_id="a"
    )
    assert SecretContext.from_secret_bytes(opened).digest == lean.digest


def _tampered(envelope: bytes, position: int) -> bytes:
    data = bytearray(envelope)
    data[position] ^= 0x01
    return bytes(data)


@pytest.mark.parametrize("position", [0, 4, 5, 20, 37, 40, 50, -17, -1], ids=lambda p: f"byte{p}")
def test_tampered_envelope_is_refused(
    alice: tuple[bytes, bytes], envelope: bytes, position: int
) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(
            _tampered(envelope, position),
            recipient_private_key=alice[0],
            federation_id="fed-1",
            recipient_id="alice",
        )


@pytest.mark.parametrize(
    ("federation_id", "recipient_id"),
    [("fed-2", "alice"), ("fed-1", "bob"), ("fed-1alice", ""), ("fed-", "1alice")],
)
def test_misaddressed_envelope_is_refused(
    alice: tuple[bytes, bytes], envelope: bytes, federation_id: str, recipient_id: str
) -> None:
    with pytest.raises(CryptoError):  # EnvelopeError; CryptoError for an empty id
        open_envelope(
            envelope,
            recipient_private_key=alice[0],
            federation_id=federation_id,
            recipient_id=recipient_id,
        )
    if recipient_id:
        with pytest.raises(EnvelopeError):
            open_envelope(
                envelope,
                recipient_private_key=alice[0],
                federation_id=federation_id,
                recipient_id=recipient_id,
            )


def test_wrong_private_key_is_refused(envelope: bytes) -> None:
    mallory, _ = generate_identity_keypair()
    with pytest.raises(EnvelopeError):
        open_envelope(
            envelope, recipient_private_key=mallory, federation_id="fed-1", recipient_id="alice"
        )


@pytest.mark.parametrize("garbage", [b"", b"FSEV", b"FSEV\x02" + bytes(80), bytes(200)])
def test_garbage_envelope_is_refused(alice: tuple[bytes, bytes], garbage: bytes) -> None:
    with pytest.raises(EnvelopeError):
        open_envelope(garbage, recipient_private_key=alice[0], federation_id="f", recipient_id="a")


def test_low_order_recipient_key_is_refused() -> None:
    with pytest.raises(CryptoError):
        seal_envelope(b"x", recipient_public_key=bytes(32), federation_id="f", recipient_id="a")


def test_bad_key_lengths_are_crypto_errors(envelope: bytes) -> None:
    with pytest.raises(CryptoError):
        seal_envelope(b"x", recipient_public_key=b"abc", federation_id="f", recipient_id="a")
    with pytest.raises(CryptoError):
        open_envelope(envelope, recipient_private_key=b"abc", federation_id="f", recipient_id="a")
