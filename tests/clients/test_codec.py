"""Secure aggregation as middleware: encode local updates, sum them, decode the global one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

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
from fedsparsify.platform.masks import ParameterLayout
from fedsparsify.platform.pruning import majority_mask
from fedsparsify.platform.round_rules import RESULT_GRID, round_weights, vote_weight
from fedsparsify.platform.rounds import GlobalUpdate, LocalUpdate, aggregate


def encrypted_round(tmp_path: Path, preset: str, updates: list[LocalUpdate]) -> GlobalUpdate:
    """Encode every site's update (pairwise-masked under an encrypted preset), add each
    channel with the public context only, and decode the sums as a site does."""
    ctx = create_secret_context(preset)
    public = PublicContext.from_bytes(ctx.public_bytes())
    ids = [f"c{k}" for k in range(len(updates))]
    identities = {i: SiteIdentity.generate() for i in ids}
    keys = {i: identities[i].public().mask_key for i in ids}
    binding = RoundBinding("f", 0, 0, participants_digest(keys))
    weights = round_weights(
        {i: u.num_samples for i, u in zip(ids, updates, strict=True)},
        weighting="samples",
        max_weight_share=0.5,
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
            weights={"values": weights[ids[k]], "votes": vote_weight(len(updates))},
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
    return decoded


@pytest.mark.parametrize("preset", ["lean", "plaintext"])
def test_encrypted_round_equals_plaintext_aggregate(tmp_path: Path, preset: str) -> None:
    """Three sites (masked under lean), each channel summed: the decoded global update is the
    plaintext reference aggregate, rounded to the result grid."""
    rng = np.random.default_rng(0)
    updates = [
        LocalUpdate(
            values=rng.normal(0, 0.1, 3000).astype(np.float32),
            num_samples=n,
            votes=(rng.random(3000) < 0.6).astype(np.float32),
            mask_digest="d" * 64,
        )
        for n in (30, 50, 20)
    ]
    decoded = encrypted_round(tmp_path, preset, updates)
    expected = aggregate(updates, max_weight_share=0.5)
    tol = RESULT_GRID / 2 + 1e-6  # rounding to the grid, plus CKKS noise
    np.testing.assert_allclose(decoded.mean, expected.mean, atol=tol, rtol=0)
    grid_steps = decoded.mean.astype(np.float64) / RESULT_GRID
    np.testing.assert_allclose(grid_steps, np.round(grid_steps), atol=1e-3)  # on the grid
    assert decoded.vote_fraction is not None and expected.vote_fraction is not None
    np.testing.assert_allclose(decoded.vote_fraction, expected.vote_fraction, atol=tol, rtol=0)
    assert decoded.mask_digest == "d" * 64
    assert decoded.contributors == 3


@pytest.mark.parametrize("preset", ["lean", "plaintext"])
def test_majority_rules_on_encrypted_votes_of_three_sites(tmp_path: Path, preset: str) -> None:
    """Votes arrive as decrypted fractions count/3 on the result grid; both majority rules
    recover the counts from them: one vote of three survives under floor-half, not under half."""
    n = 12
    # coordinate j is kept by (j % 4) sites at most 3: counts 0, 1, 2, 3, 0, 1, ...
    counts = np.array([min(j % 4, 3) for j in range(n)])
    votes = [(counts > k).astype(np.float32) for k in range(3)]
    updates = [
        LocalUpdate(values=np.zeros(n, np.float32), num_samples=10, votes=v, mask_digest="")
        for v in votes
    ]
    decoded = encrypted_round(tmp_path, preset, updates)
    assert decoded.contributors == 3 and decoded.vote_fraction is not None
    state = {"w": torch.zeros(n)}
    prev = {"w": torch.ones(n, dtype=torch.bool)}
    layout = ParameterLayout(state, prev)
    got = {
        rule: majority_mask(decoded.vote_fraction, layout, prev, contributors=3, rule=rule)
        for rule in ("floor-half", "half")
    }
    np.testing.assert_array_equal(got["floor-half"]["w"].numpy(), counts >= 1)
    np.testing.assert_array_equal(got["half"]["w"].numpy(), counts >= 2)
    assert got["floor-half"]["w"][1] and not got["half"]["w"][1]  # one vote of three
