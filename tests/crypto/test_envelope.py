"""Signed secret-key envelopes: round trip, and refusal when tampered, misaddressed, mis-keyed
or signed by anyone but the confirmed dealer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedsparsify.crypto import (
    SecretContext,
    SiteIdentity,
    envelope_dealer,
    open_envelope,
    seal_envelope,
)
from fedsparsify.errors import CryptoError, EnvelopeError

SECRET = b"the CKKS secret context" * 100
DIGEST = "ab" * 32
FIXTURES = Path(__file__).parents[1] / "fixtures" / "release-0.1"


@pytest.fixture(scope="module")
def alice() -> SiteIdentity:
    return SiteIdentity.generate()


@pytest.fixture(scope="module")
def dealer() -> SiteIdentity:
    return SiteIdentity.generate()


def seal(secret: bytes, to: SiteIdentity, by: SiteIdentity, **over: Any) -> bytes:
    kwargs: dict[str, Any] = dict(
        recipient_public_key=to.public().envelope_key,
        federation_id="fed-1",
        recipient_id="alice",
        dealer_id="dealer",
        key_set_digest=DIGEST,
        signer=by,
    )
    kwargs.update(over)
    return seal_envelope(secret, **kwargs)


def open_as(envelope: bytes, me: SiteIdentity, signer: SiteIdentity, **over: Any) -> bytes:
    kwargs: dict[str, Any] = dict(
        recipient_private_key=me.envelope_private,
        federation_id="fed-1",
        recipient_id="alice",
        dealer_signing_key=signer.public().signing_key,
    )
    kwargs.update(over)
    secret, digest = open_envelope(envelope, **kwargs)
    assert digest == DIGEST
    return secret


@pytest.fixture(scope="module")
def envelope(alice: SiteIdentity, dealer: SiteIdentity) -> bytes:
    return seal(SECRET, alice, dealer)


def test_round_trip(alice: SiteIdentity, dealer: SiteIdentity, envelope: bytes) -> None:
    assert open_as(envelope, alice, dealer) == SECRET
    assert SECRET not in envelope
    assert envelope_dealer(envelope) == ("dealer", DIGEST)


def test_sealing_twice_gives_different_envelopes(alice: SiteIdentity, dealer: SiteIdentity) -> None:
    assert seal(b"x", alice, dealer) != seal(b"x", alice, dealer)


def test_a_secret_context_travels_in_an_envelope(
    lean: SecretContext, alice: SiteIdentity, dealer: SiteIdentity
) -> None:
    sealed = seal(lean.secret_bytes(), alice, dealer, key_set_digest=lean.digest)
    opened, digest = open_envelope(
        sealed,
        recipient_private_key=alice.envelope_private,
        federation_id="fed-1",
        recipient_id="alice",
        dealer_signing_key=dealer.public().signing_key,
    )
    assert SecretContext.from_secret_bytes(opened).digest == lean.digest == digest


def test_an_envelope_signed_by_anyone_else_is_refused(
    alice: SiteIdentity, dealer: SiteIdentity
) -> None:
    """The aggregator (or any other site) can seal a key set of its own for alice: it does not
    open unless the signature is that of the dealer alice confirmed."""
    impostor = SiteIdentity.generate()
    forged = seal(SECRET, alice, impostor)
    with pytest.raises(EnvelopeError, match="signature"):
        open_as(forged, alice, dealer)
    assert open_as(forged, alice, impostor) == SECRET  # it is well formed: only the signer differs


def _tampered(envelope: bytes, position: int) -> bytes:
    data = bytearray(envelope)
    data[position] ^= 0x01
    return bytes(data)


@pytest.mark.parametrize(
    "position", [0, 4, 5, 9, 15, 20, 50, 90, 120, -80, -17, -1], ids=lambda p: f"byte{p}"
)
def test_tampered_envelope_is_refused(
    alice: SiteIdentity, dealer: SiteIdentity, envelope: bytes, position: int
) -> None:
    with pytest.raises(EnvelopeError):
        open_as(_tampered(envelope, position), alice, dealer)


@pytest.mark.parametrize(
    ("federation_id", "recipient_id"),
    [("fed-2", "alice"), ("fed-1", "bob"), ("fed-1alice", "x"), ("fed-", "1alice")],
)
def test_misaddressed_envelope_is_refused(
    alice: SiteIdentity,
    dealer: SiteIdentity,
    envelope: bytes,
    federation_id: str,
    recipient_id: str,
) -> None:
    with pytest.raises(EnvelopeError):
        open_as(envelope, alice, dealer, federation_id=federation_id, recipient_id=recipient_id)


def test_wrong_private_key_is_refused(dealer: SiteIdentity, envelope: bytes) -> None:
    mallory = SiteIdentity.generate()
    with pytest.raises(EnvelopeError):
        open_as(envelope, mallory, dealer)


@pytest.mark.parametrize("garbage", [b"", b"FSEV", b"FSEV\x02" + bytes(80), bytes(200)])
def test_garbage_envelope_is_refused(
    alice: SiteIdentity, dealer: SiteIdentity, garbage: bytes
) -> None:
    with pytest.raises(EnvelopeError):
        open_as(garbage, alice, dealer)


def test_release_0_1_unsigned_envelope_is_refused_clearly(
    alice: SiteIdentity, dealer: SiteIdentity
) -> None:
    blobs = FIXTURES / "aggregator" / "blobs" / "federations"
    old = next(blobs.glob("*/keys/envelopes/*.bin")).read_bytes()
    assert old[:5] == b"FSEV\x01"
    with pytest.raises(EnvelopeError, match=r"format 1 .*unsigned"):
        open_as(old, alice, dealer)


@pytest.mark.parametrize("key", [bytes(32), (1).to_bytes(32, "little"), b"abc"])
def test_unusable_recipient_keys_are_refused(dealer: SiteIdentity, key: bytes) -> None:
    with pytest.raises(CryptoError):
        seal_envelope(
            b"x",
            recipient_public_key=key,
            federation_id="f",
            recipient_id="a",
            dealer_id="d",
            key_set_digest=DIGEST,
            signer=dealer,
        )


def test_bad_arguments_are_crypto_errors(
    alice: SiteIdentity, dealer: SiteIdentity, envelope: bytes
) -> None:
    with pytest.raises(CryptoError):
        seal(b"x", alice, dealer, key_set_digest="not hex")
    with pytest.raises(CryptoError):
        open_as(envelope, alice, dealer, recipient_private_key=b"abc")
