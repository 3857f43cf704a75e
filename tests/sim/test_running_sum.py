"""The driver's running sum: real CKKS, real pairwise masks, the round's checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.crypto import (
    PairwiseMasker,
    RoundBinding,
    SecretContext,
    SiteIdentity,
    create_secret_context,
    participants_digest,
)
from fedsparsify.errors import CountMismatchError, RoundMismatchError
from fedsparsify.platform.round_rules import RESULT_GRID, round_weights
from fedsparsify.platform.rounds import LocalUpdate, aggregate
from fedsparsify.sim.running_sum import RunningSum

MASK = "m" * 64
N_VALUES = 9000  # two ciphertexts under lean


@pytest.fixture(scope="module")
def ctx() -> SecretContext:
    return create_secret_context("lean")


def _sites(k: int) -> dict[str, SiteIdentity]:
    return {f"site-{i}": SiteIdentity.generate() for i in range(k)}


def _encode(
    ctx: SecretContext,
    tmp: Path,
    name: str,
    ids: dict[str, SiteIdentity],
    update: LocalUpdate,
    weight: float,
    binding: RoundBinding,
) -> bytes:
    keys = {n: i.public().mask_key for n, i in ids.items()}
    masker = PairwiseMasker(
        own_id=name,
        own_mask_private=ids[name].mask_private,
        mask_keys=keys,
        binding=binding,
        channel="values",
    )
    scratch = tmp / name
    scratch.mkdir(exist_ok=True)
    files, _ = UpdateCodec(ctx, contributor=name).encode(
        update,
        weights={"values": weight},
        binding=binding,
        maskers={"values": masker},
        scratch=scratch,
    )
    return files["values"].read_bytes()


def _round(k: int) -> tuple[dict[str, SiteIdentity], RoundBinding, list[LocalUpdate], dict]:
    ids = _sites(k)
    keys = {n: i.public().mask_key for n, i in ids.items()}
    binding = RoundBinding("fed", 3, 0, participants_digest(keys))
    rng = np.random.default_rng(1)
    samples = [int(s) for s in rng.integers(20, 400, size=k)]
    updates = [
        LocalUpdate(rng.normal(0, 0.2, N_VALUES).astype(np.float32), n, mask_digest=MASK)
        for n in samples
    ]
    weights = round_weights(
        dict(zip(ids, samples, strict=True)), weighting="samples", max_weight_share=0.3
    )
    return ids, binding, updates, weights


def _sum(
    ctx: SecretContext, tmp: Path, binding: RoundBinding, weights: dict, *, batch: int
) -> RunningSum:
    return RunningSum(
        ctx.public(),
        tmp,
        channel="values",
        binding=binding,
        mask_digest=MASK,
        weights=weights,
        batch=batch,
    )


def test_masked_updates_sum_to_the_weighted_average(ctx: SecretContext, tmp_path: Path) -> None:
    ids, binding, updates, weights = _round(6)
    total = _sum(ctx, tmp_path, binding, weights, batch=4)
    for name, update in zip(ids, updates, strict=True):
        total.add(name, _encode(ctx, tmp_path, name, ids, update, weights[name], binding))
        assert total.held < 4  # never more than a batch in memory
    path = total.finish()
    decoded, _ = UpdateCodec(ctx, contributor="x").decode({"values": path})
    expected = aggregate(updates, weighting="samples", max_weight_share=0.3)
    np.testing.assert_allclose(decoded.mean, expected.mean, atol=RESULT_GRID / 2 + 2e-6, rtol=0)
    assert total.header is not None and list(total.header.contributors) == list(ids)
    assert total.header.weight == pytest.approx(1.0, abs=1e-12)
    # one upload alone decrypts to noise: the masks are really on
    one, _ = UpdateCodec(ctx, contributor="x").decode(
        {
            "values": _write(
                tmp_path,
                "one",
                _encode(ctx, tmp_path, "site-0", ids, updates[0], weights["site-0"], binding),
            )
        }
    )
    assert np.abs(one.mean).max() > 100


def _write(tmp: Path, name: str, blob: bytes) -> Path:
    path = tmp / f"{name}.bin"
    path.write_bytes(blob)
    return path


def test_an_update_for_another_round_is_refused(ctx: SecretContext, tmp_path: Path) -> None:
    ids, binding, updates, weights = _round(3)
    other = RoundBinding("fed", 4, 0, binding.participants_digest)
    names = list(ids)
    for first_bad in (True, False):
        total = _sum(ctx, tmp_path, binding, weights, batch=1)
        if not first_bad:
            total.add(
                names[0],
                _encode(ctx, tmp_path, names[0], ids, updates[0], weights[names[0]], binding),
            )
        before = total.path.read_bytes() if total.path.exists() else b""
        with pytest.raises(RoundMismatchError, match=names[1]):
            total.add(
                names[1],
                _encode(ctx, tmp_path, names[1], ids, updates[1], weights[names[1]], other),
            )
        assert (total.path.read_bytes() if total.path.exists() else b"") == before


def test_wrong_weight_stranger_duplicate_and_missing(ctx: SecretContext, tmp_path: Path) -> None:
    ids, binding, updates, weights = _round(3)
    names = list(ids)

    def fresh() -> RunningSum:
        return _sum(ctx, tmp_path, binding, weights, batch=1)

    blob = _encode(ctx, tmp_path, names[0], ids, updates[0], weights[names[0]], binding)
    with pytest.raises(RoundMismatchError, match="not a participant"):
        fresh().add("intruder", blob)
    heavy = _encode(ctx, tmp_path, names[1], ids, updates[1], weights[names[1]] / 2, binding)
    with pytest.raises(RoundMismatchError, match="weight"):
        fresh().add(names[1], heavy)
    total = fresh()
    total.add(names[0], blob)
    with pytest.raises(CountMismatchError, match="twice"):
        total.add(names[0], blob)
    with pytest.raises(CountMismatchError, match="never uploaded"):
        total.finish()
