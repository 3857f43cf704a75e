"""Key sets: the public context holds no secret key and cannot decrypt; digests; loading."""

from __future__ import annotations

import dataclasses
import hashlib
import io

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi

from fedsparsify.crypto import (
    PublicContext,
    SecretContext,
    create_secret_context,
    decrypt_sum,
)
from fedsparsify.crypto.context import MAGIC_PUBLIC, _pack
from fedsparsify.errors import CryptoError, InsecureParametersError, SecretKeyRequiredError
from tests.crypto._helpers import stream, values


def _tenseal_body(public_bytes: bytes) -> bytes:
    """The TenSEAL part of our public bytes (preset JSON first, then the TenSEAL context)."""
    preset_len = int.from_bytes(public_bytes[5:9], "big")
    start = 9 + preset_len + 4
    return public_bytes[start:]


def test_digest_is_sha256_of_the_public_bytes(lean: SecretContext) -> None:
    assert lean.digest == hashlib.sha256(lean.public_bytes()).hexdigest()
    assert lean.public().digest == lean.digest
    assert PublicContext.from_bytes(lean.public_bytes()).digest == lean.digest


def test_every_key_set_has_its_own_digest(lean: SecretContext, lean_other: SecretContext) -> None:
    assert lean.digest != lean_other.digest
    assert create_secret_context("plaintext").digest != create_secret_context("plaintext").digest


def test_secret_bytes_round_trip(lean: SecretContext) -> None:
    again = SecretContext.from_secret_bytes(lean.secret_bytes())
    assert again.digest == lean.digest
    assert again.public_bytes() == lean.public_bytes()
    x = values(5000)
    _, total = decrypt_sum(again, [stream(lean, x, weight=1.0)])
    np.testing.assert_allclose(total, x, atol=1e-6, rtol=0)


def test_public_context_cannot_decrypt(lean: SecretContext, lean_pub: PublicContext) -> None:
    with pytest.raises(SecretKeyRequiredError):
        lean_pub.decrypt(b"anything")
    with pytest.raises(SecretKeyRequiredError):
        decrypt_sum(lean_pub, [stream(lean, values(10))])  # type: ignore[arg-type]


def test_public_context_holds_no_secret_key_at_the_tenseal_level(
    lean: SecretContext, lean_pub: PublicContext
) -> None:
    body = _tenseal_body(lean.public_bytes())
    raw = ts.context_from(body)  # what the bytes hold, independently of our wrapper
    for ctx in (raw, lean_pub._tenseal, lean.public()._tenseal):
        assert ctx.is_public()
        assert not ctx.has_secret_key()
        assert not ctx.has_galois_keys()
        with pytest.raises(ValueError, match="Secret key"):
            ctx.secret_key()
    # and no secret key can be pulled out of the bytes: TenSEAL refuses to build a decryptor
    with pytest.raises(ValueError):
        raw.decryptor()
    # the secret bytes do carry a key that SEAL can use
    assert isinstance(lean._secret_key, sealapi.SecretKey)


def test_public_context_refuses_a_secret_key(lean: SecretContext) -> None:
    full = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20])
    full.global_scale = 2**32
    with_secret = _pack(
        MAGIC_PUBLIC,
        lean.preset.to_json(),
        full.serialize(save_secret_key=True, save_relin_keys=False, save_galois_keys=False),
    )
    with pytest.raises(CryptoError, match="secret key"):
        PublicContext.from_bytes(with_secret)
    with pytest.raises(CryptoError, match="secret context"):
        PublicContext.from_bytes(lean.secret_bytes())


def test_public_context_refuses_galois_keys(lean: SecretContext) -> None:
    full = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[40, 20])
    full.global_scale = 2**32
    full.generate_galois_keys()
    full.make_context_public()
    data = _pack(MAGIC_PUBLIC, lean.preset.to_json(), full.serialize(save_relin_keys=False))
    with pytest.raises(CryptoError, match="Galois"):
        PublicContext.from_bytes(data)


def test_public_context_refuses_parameters_other_than_its_preset(
    lean: SecretContext, small: SecretContext
) -> None:
    mixed = _pack(MAGIC_PUBLIC, lean.preset.to_json(), _tenseal_body(small.public_bytes()))
    with pytest.raises(CryptoError, match="do not match preset"):
        PublicContext.from_bytes(mixed)


def test_weak_preset_in_public_bytes_is_refused(small: SecretContext) -> None:
    weak = small.preset.to_json().replace(b'"scale_bits":32', b'"scale_bits":16')
    data = _pack(MAGIC_PUBLIC, weak, _tenseal_body(small.public_bytes()))
    with pytest.raises(InsecureParametersError):
        PublicContext.from_bytes(data)


def test_a_foreign_secret_key_is_refused(lean: SecretContext, lean_other: SecretContext) -> None:
    def split(data: bytes) -> tuple[bytes, bytes]:
        n = int.from_bytes(data[5:9], "big")
        return data[: 9 + n], data[9 + n :]

    own_public, _ = split(lean.secret_bytes())
    _, other_key = split(lean_other.secret_bytes())
    mixed = own_public + other_key
    with pytest.raises(CryptoError, match="does not belong"):
        SecretContext.from_secret_bytes(mixed)


def test_secret_bytes_without_a_key(lean: SecretContext) -> None:
    public_bytes = lean.public_bytes()
    data = b"FSSC\x01" + len(public_bytes).to_bytes(4, "big") + public_bytes + bytes(4)
    with pytest.raises(SecretKeyRequiredError):
        SecretContext.from_secret_bytes(data)


@pytest.mark.parametrize("garbage", [b"", b"FSPC", b"FSPC\x01\x00\x00\x00\x05{}", b"\x00" * 64])
def test_garbage_public_bytes(garbage: bytes) -> None:
    with pytest.raises(CryptoError):
        PublicContext.from_bytes(garbage)


def test_plaintext_key_set_is_a_tiny_descriptor(plain: SecretContext) -> None:
    assert len(plain.public_bytes()) < 300
    assert plain.public()._tenseal is None
    again = SecretContext.from_secret_bytes(plain.secret_bytes())
    assert again.digest == plain.digest
    assert PublicContext.from_bytes(plain.public_bytes()).preset.name == "plaintext"


def test_repr_leaks_no_key_material(lean: SecretContext) -> None:
    text = repr(lean) + repr(lean.public())
    assert "lean" in text
    assert len(text) < 200


def test_key_operations_print_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    ctx = create_secret_context("lean")
    out = io.BytesIO(stream(ctx, values(9000)))
    decrypt_sum(ctx, out)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_a_shipped_name_must_carry_the_shipped_parameters(small: SecretContext) -> None:
    impostor = dataclasses.replace(small.preset, name="lean")
    data = _pack(MAGIC_PUBLIC, impostor.to_json(), _tenseal_body(small.public_bytes()))
    with pytest.raises(CryptoError, match="differ from that preset"):
        PublicContext.from_bytes(data)


def test_the_seeded_choice_may_differ(lean_public_key: SecretContext) -> None:
    loaded = PublicContext.from_bytes(lean_public_key.public_bytes())
    assert loaded.preset.name == "lean" and not loaded.preset.seeded
