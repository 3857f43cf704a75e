"""Secure aggregation as middleware: encode local updates, sum them, decode the global one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.crypto import PublicContext, add_updates, create_secret_context
from fedsparsify.platform.rounds import LocalUpdate, aggregate


@pytest.mark.parametrize("preset", ["lean", "plaintext"])
def test_encrypted_round_equals_plaintext_aggregate(tmp_path: Path, preset: str) -> None:
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
    per_channel: dict[str, list[Path]] = {"values": [], "votes": []}
    for k, update in enumerate(updates):
        scratch = tmp_path / f"site{k}"
        scratch.mkdir()
        files, stats = UpdateCodec(ctx, contributor=f"c{k}").encode(
            update, total_samples=sum(samples), n_participants=3, scratch=scratch
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
    expected = aggregate(updates)
    tol = 1e-5 if preset == "lean" else 1e-6
    np.testing.assert_allclose(decoded.mean, expected.mean, atol=tol)
    assert decoded.vote_fraction is not None and expected.vote_fraction is not None
    np.testing.assert_allclose(decoded.vote_fraction, expected.vote_fraction, atol=tol)
    assert decoded.mask_digest == "d" * 64
