"""Split a pooled data set among simulated sites: IID, Dirichlet label skew, or size skew.

Every function returns one sorted index array per site; together they cover every sample
exactly once, every site gets at least ``min_size`` samples, and the result depends only on the
arguments (the seed included). These are pure functions over sizes and labels, so they serve
any data set (digits here; a user's own arrays just as well).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from fedsparsify.errors import ConfigError

__all__ = [
    "PartitionKind",
    "dirichlet_partition",
    "iid_partition",
    "partition_indices",
    "size_skew_partition",
    "skewed_sizes",
]

PartitionKind = Literal["iid", "dirichlet", "size"]
_DIRICHLET_RETRIES = 50


def _check(n_samples: int, n_sites: int, min_size: int) -> None:
    if n_sites < 1:
        raise ConfigError(f"need at least one site, got {n_sites}")
    if min_size < 1:
        raise ConfigError(f"min_size must be at least 1, got {min_size}")
    if n_samples < n_sites * min_size:
        raise ConfigError(
            f"{n_samples} samples cannot give {n_sites} sites at least {min_size} samples each"
        )


def skewed_sizes(total: int, n_parts: int, *, min_size: int = 1) -> list[int]:
    """Zipf-like sizes, largest first: ``min_size`` each plus the rest in proportion to 1/(k+1).

    With 4 parts and 400 in all this gives ``[191, 96, 64, 49]``.
    """
    _check(total, n_parts, min_size)
    weights = 1.0 / np.arange(1, n_parts + 1)
    spare = total - n_parts * min_size
    share = spare * weights / weights.sum()
    sizes = np.floor(share).astype(int)
    # Largest remainders get the leftover units, so the sizes add up exactly.
    for k in np.argsort(-(share - sizes), kind="stable")[: spare - int(sizes.sum())]:
        sizes[k] += 1
    return [int(s) + min_size for s in sizes]


def _split(order: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(part) for part in np.split(order, cuts)]


def iid_partition(
    n_samples: int, n_sites: int, *, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """Shuffle, then cut into ``n_sites`` parts whose sizes differ by at most one."""
    _check(n_samples, n_sites, min_size)
    order = np.random.default_rng(seed).permutation(n_samples)
    return [np.sort(part) for part in np.array_split(order, n_sites)]


def size_skew_partition(
    n_samples: int, n_sites: int, *, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """Shuffle, then cut into parts of :func:`skewed_sizes` (site 0 largest)."""
    sizes = skewed_sizes(n_samples, n_sites, min_size=min_size)
    order = np.random.default_rng(seed).permutation(n_samples)
    return _split(order, sizes)


def dirichlet_partition(
    labels: np.ndarray, n_sites: int, *, alpha: float = 0.5, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """Label skew: each class is split among sites in proportions drawn from Dirichlet(alpha).

    Small ``alpha`` (0.1) gives sites dominated by a few classes; large (100) approaches IID.
    Draws that leave a site below ``min_size`` are redrawn; after a few attempts the smallest
    sites are topped up with random samples from the largest, so the call always succeeds.
    """
    labels = np.asarray(labels)
    _check(len(labels), n_sites, min_size)
    if not alpha > 0:
        raise ConfigError(f"Dirichlet alpha must be positive, got {alpha}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    parts: list[list[int]] = []
    for _ in range(_DIRICHLET_RETRIES):
        parts = [[] for _ in range(n_sites)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            props = rng.dirichlet(np.full(n_sites, alpha))
            cuts = (np.cumsum(props)[:-1] * len(members)).astype(int)
            for site, chunk in enumerate(np.split(members, cuts)):
                parts[site].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    else:
        _top_up(parts, min_size, rng)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _top_up(parts: list[list[int]], min_size: int, rng: np.random.Generator) -> None:
    """Move random samples from the largest site to each site short of ``min_size``."""
    for site in range(len(parts)):
        while len(parts[site]) < min_size:
            donor = max(range(len(parts)), key=lambda k: len(parts[k]))
            take = int(rng.integers(len(parts[donor])))
            parts[site].append(parts[donor].pop(take))


def partition_indices(
    kind: PartitionKind,
    labels: np.ndarray,
    n_sites: int,
    *,
    alpha: float = 0.5,
    seed: int = 0,
    min_size: int = 1,
) -> list[np.ndarray]:
    """Dispatch on ``kind``: ``"iid"``, ``"dirichlet"`` (label skew) or ``"size"`` (size skew)."""
    n = len(labels)
    if kind == "iid":
        return iid_partition(n, n_sites, seed=seed, min_size=min_size)
    if kind == "dirichlet":
        return dirichlet_partition(labels, n_sites, alpha=alpha, seed=seed, min_size=min_size)
    if kind == "size":
        return size_skew_partition(n, n_sites, seed=seed, min_size=min_size)
    raise ConfigError(f"unknown partition {kind!r}; expected 'iid', 'dirichlet' or 'size'")
