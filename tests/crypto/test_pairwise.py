"""Pairwise masks over the ciphertext ring: each upload alone is noise even to a holder of the
secret key, the masks cancel exactly in the sum, and uploads keep their size."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SecretContext,
    SiteIdentity,
    add_updates,
    decrypt_sum,
    encrypt_update,
    participants_digest,
    read_update,
)
from fedsparsify.crypto.context import FrameForm
from fedsparsify.crypto.frames import RingFrame
from fedsparsify.crypto.pairwise import expand_residues
from fedsparsify.errors import (
    ConfigError,
    CryptoError,
    MalformedStreamError,
    RoundMismatchError,
)
from tests.crypto._helpers import LEAN_BUDGET_PER_SQRT_CLIENT, values

IDS = ("site-a", "site-b", "site-c", "site-d")
N = 12_000
FIXTURES = Path(__file__).parents[1] / "fixtures" / "release-0.1" / "wire"


@pytest.fixture(scope="module")
def identities() -> dict[str, SiteIdentity]:
    return {i: SiteIdentity.generate() for i in IDS}


def mask_keys(identities: dict[str, SiteIdentity]) -> dict[str, bytes]:
    return {i: ident.public().mask_key for i, ident in identities.items()}


def binding_for(identities: dict[str, SiteIdentity], attempt: int = 0) -> RoundBinding:
    return RoundBinding("fed-1", 7, attempt, participants_digest(mask_keys(identities)))


def masked(
    ctx: SecretContext,
    x: np.ndarray,
    who: str,
    identities: dict[str, SiteIdentity],
    binding: RoundBinding,
    channel: str = "values",
) -> bytes:
    masker = PairwiseMasker(
        own_id=who,
        own_mask_private=identities[who].mask_private,
        mask_keys=mask_keys(identities),
        binding=binding,
        channel=channel,
    )
    return b"".join(
        encrypt_update(
            ctx,
            x,
            weight=1 / len(identities),
            mask_digest="m",
            contributor=who,
            binding=binding,
            channel=channel,
            masker=masker,
        )
    )


def total(ctx: SecretContext, streams: list[bytes]) -> np.ndarray:
    out = io.BytesIO()
    add_updates(ctx.public(), [io.BytesIO(s) for s in streams], out)
    return decrypt_sum(ctx, io.BytesIO(out.getvalue()))[1]


def test_masks_cancel_in_the_sum(lean: SecretContext, identities: dict[str, SiteIdentity]) -> None:
    binding = binding_for(identities)
    xs = {i: values(N, seed=k) for k, i in enumerate(IDS)}
    streams = [masked(lean, xs[i], i, identities, binding) for i in IDS]
    want = sum(x.astype(np.float64) for x in xs.values()) / len(IDS)
    err = np.abs(total(lean, streams) - want).max()
    assert err < LEAN_BUDGET_PER_SQRT_CLIENT * np.sqrt(len(IDS))


def test_one_upload_is_independent_of_its_values_even_with_the_key(
    lean: SecretContext, identities: dict[str, SiteIdentity]
) -> None:
    """Decrypting one stored upload with the shared secret key gives residues that tell
    nothing about the update: |correlation| within 5 std of zero (std 1/sqrt(n) under
    independence), magnitudes ~1e4."""
    binding = binding_for(identities)
    x = values(N, seed=1)
    alone = decrypt_sum(lean, io.BytesIO(masked(lean, x, "site-a", identities, binding)))[1]
    assert abs(np.corrcoef(alone, x)[0, 1]) < 5 / np.sqrt(N)
    assert np.abs(alone).mean() > 100 * np.abs(x).mean()


def test_a_partial_sum_is_masked_too(
    lean: SecretContext, identities: dict[str, SiteIdentity]
) -> None:
    """Three of four uploads: the missing site's masks do not cancel, so the aggregator (and a
    colluding key holder) learns nothing from what it has until everyone uploaded."""
    binding = binding_for(identities)
    xs = {i: values(N, seed=k) for k, i in enumerate(IDS)}
    partial = total(lean, [masked(lean, xs[i], i, identities, binding) for i in IDS[:3]])
    want = sum(xs[i].astype(np.float64) for i in IDS[:3]) / len(IDS)
    assert abs(np.corrcoef(partial, want)[0, 1]) < 5 / np.sqrt(N)


def test_masked_uploads_keep_their_size(
    lean: SecretContext, identities: dict[str, SiteIdentity]
) -> None:
    binding = binding_for(identities)
    x = values(N)
    plain = b"".join(
        encrypt_update(lean, x, weight=0.25, mask_digest="m", contributor="site-a", binding=binding)
    )
    with_masks = masked(lean, x, "site-a", identities, binding)
    assert abs(len(with_masks) - len(plain)) < 0.01 * len(plain)


def test_masks_depend_on_attempt_and_channel(
    lean: SecretContext, identities: dict[str, SiteIdentity]
) -> None:
    """Masks of another attempt or channel do not cancel with this one's."""
    first, second = binding_for(identities, 0), binding_for(identities, 1)
    xs = {i: values(N, seed=k) for k, i in enumerate(IDS)}
    mixed = [masked(lean, xs[i], i, identities, first) for i in IDS[:3]]
    mixed.append(masked(lean, xs[IDS[3]], IDS[3], identities, second))
    want = sum(x.astype(np.float64) for x in xs.values()) / len(IDS)
    out = io.BytesIO()
    with pytest.raises(RoundMismatchError):  # the aggregator refuses to add them
        add_updates(lean.public(), [io.BytesIO(s) for s in mixed], out)
    # and even summed by hand (same header), the values would be garbage:
    keys = mask_keys(identities)
    m1 = PairwiseMasker(
        own_id="site-a",
        own_mask_private=identities["site-a"].mask_private,
        mask_keys=keys,
        binding=first,
        channel="values",
    )
    m2 = PairwiseMasker(
        own_id="site-a",
        own_mask_private=identities["site-a"].mask_private,
        mask_keys=keys,
        binding=first,
        channel="votes",
    )
    q = lean.public().moduli
    assert not np.array_equal(m1.frame_mask(0, q, 4096), m2.frame_mask(0, q, 4096))
    assert want.size == N


def test_pairs_mirror_each_other(identities: dict[str, SiteIdentity]) -> None:
    """Two sites alone: their masks are exact negatives modulo q."""
    pair = {i: identities[i] for i in IDS[:2]}
    keys = mask_keys(pair)
    binding = RoundBinding("f", 0, 0, participants_digest(keys))
    q = (1099511922689,)
    a, b = (
        PairwiseMasker(
            own_id=i,
            own_mask_private=pair[i].mask_private,
            mask_keys=keys,
            binding=binding,
            channel="values",
        ).frame_mask(3, q, 4096)
        for i in IDS[:2]
    )
    assert np.all((a + b) % np.uint64(q[0]) == 0)
    assert np.any(a != 0)


def test_residues_are_uniform_below_the_modulus() -> None:
    q = 1099511922689  # a 40-bit prime
    r = expand_residues(b"k" * 32, 0, 0, q, 200_000)
    assert r.dtype == np.uint64 and int(r.max()) < q
    # mean of U[0, q) is q/2 with std q/sqrt(12 n); 5 sigma
    assert abs(float(r.mean()) - q / 2) < 5 * q / np.sqrt(12 * r.size)
    assert np.array_equal(r, expand_residues(b"k" * 32, 0, 0, q, 200_000))
    assert not np.array_equal(r[:100], expand_residues(b"k" * 32, 1, 0, q, 100))


def test_expansion_matches_an_independent_reading_of_the_chacha20_stream() -> None:
    """Every site must derive the same residues from a seed, whatever its version: words of
    bits(q) bits, little endian, from ChaCha20 with nonce (0, frame, prime, "mask"), those >= q
    skipped."""
    import struct

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    q = (1 << 40) - (1 << 14) * 3 + 1  # a 40-bit modulus (primality does not matter here)
    nonce = bytes(4) + struct.pack(">III", 3, 0, 0x6D61736B)
    stream = Cipher(algorithms.ChaCha20(b"s" * 32, nonce), mode=None).encryptor()
    raw = stream.update(bytes(5 * 2000))
    words = [int.from_bytes(raw[5 * i : 5 * i + 5], "little") for i in range(2000)]
    want = [w for w in words if w < q][:1500]
    assert expand_residues(b"s" * 32, 3, 0, q, 1500).tolist() == want


def test_masker_refuses_what_it_cannot_do(identities: dict[str, SiteIdentity]) -> None:
    keys = mask_keys(identities)
    good = binding_for(identities)
    me = identities["site-a"].mask_private
    with pytest.raises(ConfigError):
        PairwiseMasker(own_id="x", own_mask_private=me, mask_keys=keys, binding=good, channel="v")
    with pytest.raises(CryptoError, match="digest"):
        PairwiseMasker(
            own_id="site-a",
            own_mask_private=me,
            mask_keys=keys,
            binding=RoundBinding("fed-1", 7, 0, "0" * 64),
            channel="values",
        )
    bad = {**keys, "site-b": bytes(32)}
    with pytest.raises(CryptoError, match="site-b"):
        PairwiseMasker(
            own_id="site-a",
            own_mask_private=me,
            mask_keys=bad,
            binding=RoundBinding("fed-1", 7, 0, participants_digest(bad)),
            channel="values",
        )


def test_update_header_names_its_round(
    lean: SecretContext, identities: dict[str, SiteIdentity]
) -> None:
    binding = binding_for(identities, attempt=2)
    data = masked(lean, values(10), "site-b", identities, binding, channel="votes")
    header, _ = read_update(io.BytesIO(data), lean.public())
    assert header.binding == binding and header.channel == "votes" and header.version == 3
    other = RoundBinding("fed-1", 8, 2, binding.participants_digest)
    with pytest.raises(RoundMismatchError, match="round 8"):
        list(read_update(io.BytesIO(data), lean.public(), expect_binding=other)[1])


def test_release_0_1_streams_are_read_but_not_accepted_as_uploads() -> None:
    """Aggregates and updates written by release 0.1 (wire format 1) still parse; an upload
    path that expects a round binding refuses them, naming the version."""
    for name, kind in (("update-v1.bin", "update"), ("aggregate-v1.bin", "aggregate")):
        data = (FIXTURES / name).read_bytes()
        header, frames = read_update(io.BytesIO(data), expect_kind=kind)
        assert header.version == 1 and header.federation_id == "" and len(list(frames)) == 1
        with pytest.raises(MalformedStreamError, match="version 1"):
            read_update(io.BytesIO(data), expect_binding=RoundBinding("f", 0, 0, ""))


def test_transparent_ciphertexts_are_refused(lean: SecretContext) -> None:
    """A ciphertext whose c1 is zero carries its plaintext in the clear (and SEAL loads it):
    refused, in packed full-form frames (whole and tail: a sum written unseeded) and as SEAL
    bytes."""
    pub = lean.public()
    ring = pub.ring
    assert ring is not None
    update = b"".join(encrypt_update(lean, values(4096 + 10), weight=0.5, mask_digest="m"))
    _header, frames = read_update(io.BytesIO(update), pub)
    for payload, count, tail in zip(frames, (4096, 10), (0, 10), strict=True):
        full = pub._expand(ring.unpack(payload, 1, tail))
        assert full.c1 is not None
        pub._load_frame(ring.pack(full), count, FrameForm("packed", 0))  # as written: accepted
        zero_c1 = RingFrame(full.c0, np.zeros_like(full.c1), (), tail)
        with pytest.raises(MalformedStreamError, match="transparent"):
            pub._load_frame(ring.pack(zero_c1), count, FrameForm("packed", 0))
        if not tail:
            with pytest.raises(MalformedStreamError, match="transparent"):
                seal = ring.to_seal(full.c0, c1=zero_c1.c1)
                pub._load_frame(seal, count, FrameForm("seal"))
