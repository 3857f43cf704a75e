"""Secure aggregation as middleware: encode local updates, sum them, decode the global one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.crypto import (
    PairwiseMasker,
    PublicContext,
    RoundBinding,
    SiteIdentity,
    add_updates,
    create_secret_context,
    participants_digest,
)
from fedsparsify.platform.round_rules import RESULT_GRID, round_weights
from fedsparsify.platform.rounds import LocalUpdate, aggregate


@pytest.mark.parametrize("preset", ["lean", "plaintext"])
def test_encrypted_round_equals_plaintext_aggregate(tmp_path: Path, preset: str) -> None:
    """Three sites (masked under lean), each channel summed: the decoded global update is the
    plaintext reference aggregate, rounded to the result grid."""
    rng = np.random.default_rng(0)
    ctx = create_secret_context(preset)
    public = PublicContext.from_bytes(ctx.public_bytes())
    samples = [30, 50, 20]
    updates = [
        LocalUpdate(
            values=rng.normal(0, 0.1, 3000).astype(np.float32),
            num_samples=n,
            votes=(rng.random(3000) < 0.6).astype(np.float32),
            mask_digest="d" * 64,
        )
        for n in samples
    ]
    ids = [f"c{k}" for k in range(len(samples))]
    identities = {i: SiteIdentity.generate() for i in ids}
    keys = {i: identities[i].public().mask_key for i in ids}
    binding = RoundBinding("f", 0, 0, participants_digest(keys))
    weights = round_weights(
        dict(zip(ids, samples, strict=True)), weighting="samples", max_weight_share=0.5
    )
    per_channel: dict[str, list[Path]] = {"values": [], "votes": []}
    for k, update in enumerate(updates):
        scratch = tmp_path / f"site{k}"
        scratch.mkdir()
        maskers = None
        if preset == "lean":
            maskers = {
                ch: PairwiseMasker(
                    own_id=ids[k],
                    own_mask_private=identities[ids[k]].mask_private,
                    mask_keys=keys,
                    binding=binding,
                    channel=ch,
                )
                for ch in ("values", "votes")
            }
        files, stats = UpdateCodec(ctx, contributor=ids[k]).encode(
            update,
            weights={"values": weights[ids[k]], "votes": 1 / 3},
            binding=binding,
            maskers=maskers,
            scratch=scratch,
        )
        assert stats.bytes == sum(p.stat().st_size for p in files.values())
        for channel, path in files.items():
            per_channel[channel].append(path)
    sums: dict[str, Path] = {}
    for channel, paths in per_channel.items():
        out = tmp_path / f"sum-{channel}.bin"
        handles = [p.open("rb") for p in paths]
        with out.open("wb") as fh:
            add_updates(public, handles, fh)
        for h in handles:
            h.close()
        sums[channel] = out
    decoded, _ = UpdateCodec(ctx, contributor="c0").decode(sums)
    expected = aggregate(updates, max_weight_share=0.5)
    tol = RESULT_GRID / 2 + 1e-6  # rounding to the grid, plus CKKS noise
    np.testing.assert_allclose(decoded.mean, expected.mean, atol=tol, rtol=0)
    grid_steps = decoded.mean.astype(np.float64) / RESULT_GRID
    np.testing.assert_allclose(grid_steps, np.round(grid_steps), atol=1e-3)  # on the grid
    assert decoded.vote_fraction is not None and expected.vote_fraction is not None
    np.testing.assert_allclose(decoded.vote_fraction, expected.vote_fraction, atol=tol, rtol=0)
    assert decoded.mask_digest == "d" * 64
