"""What every party computes the same way about a round: its channels and its weights.

The aggregator publishes a round's weights and every site recomputes them from the roster's
declared sample counts with :func:`round_weights` before it encrypts; both sides import this one
module, so there is one rule.

Weights: ``samples`` gives each participant ``num_samples / total``; ``equal`` gives ``1 / K``.
No participant gets more than ``max_weight_share``: shares above the cap are set to the cap and
the rest is spread over the others in proportion to their samples, repeatedly, until none
exceeds it (water-filling). When even equal shares exceed the cap (``K * cap < 1``), every
participant gets ``1 / K``. Weights always sum to 1.

Results: a round's averages are rounded to :data:`RESULT_GRID` before they enter a model,
metrics or any file, by the sites (after decryption) and by the in-process reference alike, so
the two differ only where CKKS noise crosses a grid boundary. The grid is coarser than the
noise of a decrypted sum (max |error| 3e-7·sqrt(K), about 1.6e-6 at 100 sites), so what a site
keeps or publishes does not carry the exact decryption noise, which next to the ciphertext the
aggregator holds could expose the key (Li and Micciancio, 2021).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedsparsify.errors import ConfigError

__all__ = [
    "CHANNELS",
    "RESULT_GRID",
    "VALUES",
    "VOTES",
    "channels_for",
    "round_to_grid",
    "round_weights",
    "vote_weight",
]

VALUES = "values"
VOTES = "votes"
CHANNELS = (VALUES, VOTES)

#: Averages are rounded to multiples of this (2^-18, about 3.8e-6).
RESULT_GRID = 2.0**-18

#: Relative tolerance when a site compares the aggregator's weights with its own.
WEIGHT_TOLERANCE = 1e-9


def round_to_grid(values: np.ndarray, grid: float = RESULT_GRID) -> np.ndarray:
    """``values`` rounded to the nearest multiple of ``grid`` (float32)."""
    return (np.round(np.asarray(values, dtype=np.float64) / grid) * grid).astype(np.float32)


def channels_for(method: str) -> list[str]:
    """The channels a round uploads: FedSparsify-Local also sums encrypted 0/1 mask votes."""
    return [VALUES, VOTES] if method == "fedsparsify-local" else [VALUES]


def vote_weight(n_participants: int) -> float:
    """Weight of one site's votes: the decrypted sum is the fraction of sites keeping each."""
    if n_participants < 1:
        raise ConfigError("a round needs at least one participant")
    return 1.0 / n_participants


def round_weights(
    samples: Mapping[str, int], *, weighting: str, max_weight_share: float
) -> dict[str, float]:
    """Each participant's weight (see the module docstring); keys in sorted order."""
    if not samples:
        raise ConfigError("a round needs at least one participant")
    if any(not isinstance(n, int) or n < 1 for n in samples.values()):
        raise ConfigError("every participant needs a positive sample count")
    if weighting not in ("samples", "equal"):
        raise ConfigError(f"unknown weighting {weighting!r}")
    if not 0.0 < max_weight_share <= 1.0:
        raise ConfigError("max_weight_share must be in (0, 1]")
    ids = sorted(samples)
    k = len(ids)
    if weighting == "equal" or k * max_weight_share <= 1.0:
        return {c: 1.0 / k for c in ids}
    capped: set[str] = set()
    while True:
        rest = [c for c in ids if c not in capped]
        mass = 1.0 - max_weight_share * len(capped)
        total = sum(samples[c] for c in rest)
        over = {c for c in rest if samples[c] * mass / total > max_weight_share}
        if not over:
            break
        capped |= over
    weights = {c: max_weight_share for c in capped}
    weights.update({c: samples[c] * mass / total for c in rest})
    return {c: weights[c] for c in ids}
