"""Site identities: fingerprints over all three keys, and refusal of unusable public keys."""

from __future__ import annotations

import dataclasses

import pytest

from fedsparsify.crypto import (
    PublicIdentity,
    SiteIdentity,
    check_ed25519_public,
    check_x25519_public,
    is_fingerprint,
)
from fedsparsify.errors import CryptoError

#: Curve25519 points of small order (RFC 7748 section 7 and the usual list of weak encodings),
#: little endian: 0, 1, the two points of order 8, p - 1, p, p + 1.
_P = 2**255 - 19
LOW_ORDER = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    _P - 1,
    _P,
    _P + 1,
]


def test_keys_are_fresh_and_raw() -> None:
    a, b = SiteIdentity.generate(), SiteIdentity.generate()
    pa = a.public()
    assert {len(pa.signing_key), len(pa.envelope_key), len(pa.mask_key)} == {32}
    assert pa != b.public()
    assert len({pa.signing_key, pa.envelope_key, pa.mask_key}) == 3


def test_fingerprint_covers_every_key() -> None:
    """Swapping any one of the three keys changes the fingerprint: an aggregator that swaps a
    member's mask key (to learn its masks) or envelope key (to get its secret) is caught."""
    pub = SiteIdentity.generate().public()
    other = SiteIdentity.generate().public()
    fp = pub.fingerprint
    assert is_fingerprint(fp) and fp == pub.fingerprint
    for field in ("signing_key", "envelope_key", "mask_key"):
        swapped = dataclasses.replace(pub, **{field: getattr(other, field)})
        assert swapped.fingerprint != fp, field


@pytest.mark.parametrize("point", LOW_ORDER, ids=lambda p: f"{p % 10**6}")
def test_low_order_x25519_points_are_refused(point: int) -> None:
    raw = (point % 2**256).to_bytes(32, "little")
    with pytest.raises(CryptoError):
        check_x25519_public(raw)


def test_good_keys_pass_and_bad_shapes_fail() -> None:
    pub = SiteIdentity.generate().public()
    assert pub.check() is pub
    check_x25519_public(pub.mask_key)
    check_ed25519_public(pub.signing_key)
    for bad in (b"", b"x" * 31, b"x" * 33, "text", None, bytes(32)):
        with pytest.raises(CryptoError):
            check_x25519_public(bad)
        with pytest.raises(CryptoError):
            check_ed25519_public(bad)


def test_signing_round_trip() -> None:
    from fedsparsify.crypto.identity import verify_signature

    me = SiteIdentity.generate()
    sig = me.sign(b"message")
    verify_signature(me.public().signing_key, sig, b"message", "test")
    with pytest.raises(CryptoError):
        verify_signature(me.public().signing_key, sig, b"other", "test")
    with pytest.raises(CryptoError):
        verify_signature(SiteIdentity.generate().public().signing_key, sig, b"message", "test")


def test_public_identity_refuses_its_own_bad_keys() -> None:
    pub = SiteIdentity.generate().public()
    with pytest.raises(CryptoError, match="mask_key"):
        PublicIdentity(pub.signing_key, pub.envelope_key, bytes(32)).check()
