"""Frames encrypted and decrypted in worker processes: the same streams, in order."""

from __future__ import annotations

import io
from collections.abc import Iterator

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
)
from fedsparsify.crypto.parallel import FramePool
from fedsparsify.errors import ConfigError
from tests.crypto._helpers import LEAN_BUDGET_PER_SQRT_CLIENT, values

IDS = ("a", "b", "c")


@pytest.fixture(scope="module")
def pool(lean: SecretContext) -> Iterator[FramePool]:
    with FramePool(lean, workers=2, batch=3) as p:
        yield p


def test_pooled_masked_uploads_sum_with_unpooled_ones(lean: SecretContext, pool: FramePool) -> None:
    """Each frame is masked in a worker with that frame's mask: the masks still cancel against
    uploads encrypted in this process, and the frames come back in order."""
    ids = {i: SiteIdentity.generate() for i in IDS}
    keys = {i: v.public().mask_key for i, v in ids.items()}
    binding = RoundBinding("f", 0, 0, participants_digest(keys))
    xs = {i: values(4096 * 7 + 5, seed=k) for k, i in enumerate(IDS)}
    streams = []
    for who in IDS:
        masker = PairwiseMasker(
            own_id=who,
            own_mask_private=ids[who].mask_private,
            mask_keys=keys,
            binding=binding,
            channel="values",
        )
        chunks = encrypt_update(
            lean,
            xs[who],
            weight=1 / 3,
            mask_digest="m",
            contributor=who,
            binding=binding,
            masker=masker,
            pool=pool if who != "b" else None,
        )
        streams.append(b"".join(chunks))
    out = io.BytesIO()
    add_updates(lean.public(), [io.BytesIO(s) for s in streams], out)
    want = sum(x.astype(np.float64) for x in xs.values()) / 3
    _, total = decrypt_sum(lean, io.BytesIO(out.getvalue()))
    assert np.abs(total - want).max() < 2 * LEAN_BUDGET_PER_SQRT_CLIENT
    _, pooled = decrypt_sum(lean, io.BytesIO(out.getvalue()), pool=pool)
    assert np.array_equal(pooled, total)


def test_a_pool_of_another_key_set_is_refused(lean_other: SecretContext, pool: FramePool) -> None:
    with pytest.raises(ConfigError, match="another key set"):
        encrypt_update(lean_other, values(10), weight=1.0, mask_digest="m", pool=pool)
    with pytest.raises(ConfigError):
        FramePool(lean_other, workers=0)
