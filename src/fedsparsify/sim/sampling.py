"""Client sampling: which sites take part in each round, and with what weights.

Large federations train each round on a sample of their sites (Flower's ``fraction_fit``). A
:class:`ClientSampler` takes a fraction (``0 < f <= 1``: ``round(f * N)`` sites, at least one)
or a count (an integer ``>= 1``), and draws that many sites without replacement, independently
per round, from a generator seeded by the seed and the round index, so a run repeats exactly.
The round's weights are the federation's rule over the sampled participants only
(:func:`~fedsparsify.platform.round_rules.round_weights`: capped shares that sum to 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedsparsify.errors import ConfigError
from fedsparsify.platform.pruning import derive_seed
from fedsparsify.platform.round_rules import round_weights
from fedsparsify.platform.spec import FederationSpec

__all__ = ["ClientSampler", "parse_sample", "sampled_weights"]


def parse_sample(text: str | None) -> float | int | None:
    """``--sample`` as given: ``0.1`` is a fraction, ``50`` a count, empty or ``all`` none."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"--sample must be a fraction in (0, 1] or a count, got {raw!r}") from exc
    is_count = raw.isdigit() and value >= 1
    return int(value) if is_count else value


@dataclass(frozen=True)
class ClientSampler:
    """Per-round participants among ``n_sites`` sites (see the module docstring)."""

    n_sites: int
    sample: float | int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_sites < 1:
            raise ConfigError("a simulation needs at least one site")
        s = self.sample
        if s is None:
            return
        if isinstance(s, bool):
            raise ConfigError("sample must be a fraction or a count")
        if isinstance(s, int):
            if not 1 <= s <= self.n_sites:
                raise ConfigError(f"a sample of {s} sites needs 1..{self.n_sites}")
        elif not (math.isfinite(s) and 0.0 < s <= 1.0):
            raise ConfigError(f"a sample fraction must be in (0, 1], got {s}")

    @property
    def per_round(self) -> int:
        """Sites in every round."""
        s = self.sample
        if s is None:
            return self.n_sites
        if isinstance(s, int):
            return s
        return max(1, min(self.n_sites, round(s * self.n_sites)))

    def participants(self, round_index: int) -> list[int]:
        """The sorted site indices of round ``round_index``."""
        k = self.per_round
        if k == self.n_sites:
            return list(range(self.n_sites))
        rng = np.random.default_rng(derive_seed(self.seed, "client-sample", round_index))
        return sorted(int(i) for i in rng.choice(self.n_sites, size=k, replace=False))

    def check(self, spec: FederationSpec) -> None:
        """Refuse a sample smaller than the spec's quorum or a federation below min_clients."""
        if self.n_sites < spec.min_clients:
            raise ConfigError(
                f"the spec needs {spec.min_clients} sites (min_clients), the simulation has "
                f"{self.n_sites}"
            )
        if self.per_round < spec.quorum:
            raise ConfigError(
                f"{self.per_round} sites per round is below the spec's quorum of {spec.quorum}"
            )


def sampled_weights(spec: FederationSpec, samples: Mapping[str, int]) -> dict[str, float]:
    """The values-channel weight of each sampled participant under ``spec``'s rule."""
    return round_weights(samples, weighting=spec.weighting, max_weight_share=spec.max_weight_share)
