"""Mask builders: global magnitude pruning, random pruning and FedSparsify-Local's majority vote.

Every builder only shrinks the mask it is given (a pruned coordinate never comes back) and is
deterministic: the candidates are the kept coordinates in a canonical order (tensors by sorted
name, then row-major flat index), and ties are broken by that order. Only comparisons of float32
magnitudes are involved, never sums, so sites holding bitwise-identical weights reach
bitwise-identical masks on any machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from fedsparsify.errors import ConfigError, MaskError, PlatformError
from fedsparsify.platform.masks import Mask, ParameterLayout, check_mask

__all__ = [
    "MAJORITY_RULES",
    "derive_seed",
    "global_magnitude_mask",
    "keep_count",
    "majority_mask",
    "majority_threshold",
    "random_mask",
    "vote_counts",
]


def keep_count(n_prunable: int, target_sparsity: float) -> int:
    """Coordinates to keep at ``target_sparsity``: ``round(n_prunable * (1 - target))``."""
    if not 0.0 <= target_sparsity < 1.0:
        raise ConfigError(f"target sparsity must be in [0, 1), got {target_sparsity}")
    return round(n_prunable * (1.0 - target_sparsity))


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, identical on every machine (SHA-256 based)."""
    raw = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(raw).digest()[:8], "little") >> 1


def _flat_kept(mask: Mask) -> tuple[list[str], list[np.ndarray]]:
    names = sorted(mask)
    return names, [np.flatnonzero(mask[n].detach().cpu().numpy().reshape(-1)) for n in names]


def _prune_lowest(mask: Mask, names: list[str], kept: list[np.ndarray], order: np.ndarray) -> Mask:
    """Drop the candidates ``order`` lists (positions in the concatenated kept coordinates)."""
    sizes = np.array([k.size for k in kept], dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out: Mask = {}
    for i, name in enumerate(names):
        sel = order[(order >= bounds[i]) & (order < bounds[i + 1])] - bounds[i]
        flat = mask[name].detach().cpu().numpy().reshape(-1).copy()
        flat[kept[i][sel]] = False
        out[name] = torch.from_numpy(flat.reshape(tuple(mask[name].shape)))
    return {name: out[name] for name in mask}


def global_magnitude_mask(
    state: Mapping[str, torch.Tensor], mask: Mask, target_sparsity: float
) -> Mask:
    """Prune the smallest-|w| kept coordinates over all masked tensors with one threshold.

    Keeps exactly ``keep_count(n_prunable, target)`` coordinates, or the mask unchanged when it
    is already that sparse. Ties are broken by the canonical order (lower position pruned first).
    """
    missing = [n for n in mask if n not in state]
    if missing:
        raise MaskError(f"mask names tensors the state lacks: {missing}")
    check_mask(mask, {n: tuple(state[n].shape) for n in mask})
    total = sum(m.numel() for m in mask.values())
    keep = keep_count(total, target_sparsity)
    names, kept = _flat_kept(mask)
    n_kept = sum(k.size for k in kept)
    if n_kept <= keep:
        return {name: m.clone() for name, m in mask.items()}
    mags = np.concatenate(
        [
            np.abs(state[n].detach().to(torch.float32).cpu().numpy().reshape(-1)[k])
            for n, k in zip(names, kept, strict=True)
        ]
    )
    if not np.isfinite(mags).all():
        raise PlatformError("cannot prune by magnitude: the model holds non-finite weights")
    order = np.argsort(mags, kind="stable")[: n_kept - keep]
    return _prune_lowest(mask, names, kept, order)


def random_mask(mask: Mask, target_sparsity: float, *, seed: int) -> Mask:
    """Prune kept coordinates uniformly at random down to the target: the random baseline.

    Scores come from the raw PCG64 stream (whose output numpy keeps stable across versions),
    so the same seed gives the same mask everywhere; shrinks only, exact count.
    """
    check_mask(mask, {n: tuple(m.shape) for n, m in mask.items()})
    total = sum(m.numel() for m in mask.values())
    keep = keep_count(total, target_sparsity)
    names, kept = _flat_kept(mask)
    n_kept = sum(k.size for k in kept)
    if n_kept <= keep:
        return {name: m.clone() for name, m in mask.items()}
    bitgen = np.random.PCG64(np.random.SeedSequence(seed))
    scores = np.asarray(bitgen.random_raw(n_kept), dtype=np.uint64)
    order = np.argsort(scores, kind="stable")[: n_kept - keep]
    return _prune_lowest(mask, names, kept, order)


#: FedSparsify-Local's majority rules (``FederationSpec.majority_rule``), by name.
MAJORITY_RULES = ("floor-half", "half")


def majority_threshold(contributors: int, rule: str = "floor-half") -> int:
    """Votes a coordinate needs to survive among ``contributors`` sites.

    ``floor-half`` (the published rule, the default): ``floor(K / 2)``; ``half``: ``ceil(K / 2)``,
    at least half of the sites. They differ only for odd K: with 3 contributors a coordinate
    that one site kept survives under ``floor-half`` and needs two under ``half``; with one
    contributor ``floor-half`` keeps every coordinate.
    """
    if contributors < 1:
        raise PlatformError(f"a majority needs at least one contributor, got {contributors}")
    if rule == "floor-half":
        return contributors // 2
    if rule == "half":
        return (contributors + 1) // 2
    raise ConfigError(f"unknown majority rule {rule!r}; expected one of {MAJORITY_RULES}")


def vote_counts(vote_fraction: np.ndarray, contributors: int) -> np.ndarray:
    """The integer vote counts behind fractions ``count / contributors``.

    Fractions arrive decrypted and rounded to the result grid, so ``fraction * K`` is within a
    small distance of an integer; a fraction further than 0.25 votes from one (or outside
    [0, 1]) cannot come from 0/1 votes of ``contributors`` sites and is refused.
    """
    votes = np.asarray(vote_fraction, dtype=np.float64)
    if not np.isfinite(votes).all():
        raise PlatformError("vote fractions hold non-finite values")
    scaled = votes * contributors
    counts = np.rint(scaled)
    off = np.abs(scaled - counts)
    if votes.size and (off.max() > 0.25 or counts.min() < 0 or counts.max() > contributors):
        raise PlatformError(
            f"vote fractions are not counts out of {contributors} contributors "
            f"(worst {float(scaled.flat[int(np.argmax(off))]):.4f} votes)"
        )
    return counts.astype(np.int64)


def majority_mask(
    vote_fraction: np.ndarray,
    layout: ParameterLayout,
    mask: Mask,
    *,
    contributors: int,
    rule: str = "floor-half",
) -> Mask:
    """FedSparsify-Local: keep a coordinate of ``mask`` when enough of the sites kept it.

    ``vote_fraction`` (in ``layout`` order, the round the votes were cast in) is the fraction of
    the ``contributors`` sites that kept each coordinate; the counts are recovered from it
    (:func:`vote_counts`) and compared with :func:`majority_threshold` under ``rule``.
    """
    votes = np.asarray(vote_fraction, dtype=np.float64)
    if votes.shape != (layout.n_values,):
        raise MaskError(f"expected {layout.n_values} vote fractions, got shape {votes.shape}")
    counts = vote_counts(votes, contributors)
    voted = layout.to_mask(counts >= majority_threshold(contributors, rule))
    check_mask(mask, {n: tuple(t.shape) for n, t in voted.items()})
    return {name: mask[name] & voted[name] for name in mask}
