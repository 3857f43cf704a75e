"""Synthetic brain-age T1 MRI for simulated hospital sites, built from the MNI152 template.

A subject is an age (from the site's age distribution), a biological age (age + N(0, 5 y): the
"brain-age gap" no model can explain, an error floor of about 4 y MAE), an aged anatomy
(:mod:`.aging`), a residual misregistration and elastic warp, and the site's scanner
(:mod:`.acquisition`). Each subject depends only on ``(seed, profile, subject index, shape)``:
its random streams are keyed by ``(seed, profile.site_id, subject_index)``, so any subject can be
regenerated alone, in any order, in any process.

:func:`make_brainage_federation` builds sites (own scanner, own ages, optionally skewed sizes),
a test set drawn from every site, z-scores each volume (:func:`.preprocess.zscore`), and caches
the raw volumes on disk, keyed by every generator parameter and :data:`GENERATOR_VERSION`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.data._io import atomic_save_npz
from fedsparsify.platform.data.acquisition import (
    N_BIAS_TERMS,
    apply_scanner,
    bias_field,
    draw_pose,
    resample_to_grid,
)
from fedsparsify.platform.data.aging import AGE_MAX, AGE_MIN, draw_ageing, render_aged_t1
from fedsparsify.platform.data.partition import skewed_sizes
from fedsparsify.platform.data.preprocess import zscore_batch
from fedsparsify.platform.data.sitedata import FederatedData, SiteData
from fedsparsify.platform.data.template import output_grid, working_anatomy, working_factor_for

__all__ = [
    "BRAIN_AGE_GAP_SD",
    "COARSE_SHAPE",
    "DEFAULT_SHAPE",
    "GENERATOR_VERSION",
    "NON_IID_AGES",
    "AgeDistribution",
    "SiteProfile",
    "default_site_profiles",
    "generate_site_volumes",
    "generate_subject",
    "make_brainage_federation",
    "site_sizes",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump whenever a change alters any generated voxel
DEFAULT_SHAPE: tuple[int, int, int] = (48, 56, 48)  # about 3.4 mm voxels
COARSE_SHAPE: tuple[int, int, int] = (24, 28, 24)  # about 7 mm voxels, for fast demos
BRAIN_AGE_GAP_SD = 5.0
TEST_INDEX_OFFSET = 1_000_000  # test subjects' indices, far from any site's own subjects
_MIN_SITE_SUBJECTS = 4
_BIAS_JITTER = 0.06  # per-subject variation of the bias-field coefficients


@dataclass(frozen=True)
class AgeDistribution:
    """Ages of a site's subjects: uniform on [low, high], or normal(mean, sd) truncated to it."""

    kind: Literal["uniform", "normal"] = "uniform"
    low: float = AGE_MIN
    high: float = AGE_MAX
    mean: float = 55.0
    sd: float = 20.0

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "normal"):
            raise ConfigError(f"age distribution must be 'uniform' or 'normal', not {self.kind!r}")
        if not AGE_MIN <= self.low < self.high <= AGE_MAX:
            raise ConfigError(
                f"ages must satisfy {AGE_MIN:g} <= low < high <= {AGE_MAX:g}, "
                f"got [{self.low}, {self.high}]"
            )
        if self.kind == "normal" and not self.sd > 0:
            raise ConfigError(f"age sd must be positive, got {self.sd}")

    @classmethod
    def uniform(cls, low: float, high: float) -> AgeDistribution:
        """Ages spread evenly over [low, high]."""
        return cls("uniform", low=low, high=high)

    @classmethod
    def normal(cls, mean: float, sd: float) -> AgeDistribution:
        """Ages around ``mean``, truncated to the generator's 20-90 range."""
        return cls("normal", mean=mean, sd=sd)

    def sample(self, rng: np.random.Generator) -> float:
        """One age in years."""
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        for _ in range(1000):
            age = float(rng.normal(self.mean, self.sd))
            if self.low <= age <= self.high:
                return age
        return float(np.clip(self.mean, self.low, self.high))

    def describe(self) -> str:
        """Short human-readable form, e.g. ``U(20, 50)`` or ``N(70, 8)``."""
        if self.kind == "uniform":
            return f"U({self.low:g}, {self.high:g})"
        return f"N({self.mean:g}, {self.sd:g})"


NON_IID_AGES: tuple[AgeDistribution, ...] = (
    AgeDistribution.uniform(20, 50),
    AgeDistribution.normal(70, 8),
    AgeDistribution.uniform(20, 90),
    AgeDistribution.normal(45, 12),
    AgeDistribution.uniform(55, 90),
    AgeDistribution.normal(30, 6),
    AgeDistribution.normal(80, 5),
    AgeDistribution.uniform(35, 65),
)
"""Age distributions that non-IID sites cycle through, in site order."""


@dataclass(frozen=True)
class SiteProfile:
    """A site: who it scans (``ages``), its scanner, and its registration pipeline's accuracy.

    Scanner: ``gain`` and ``offset`` (intensity scale and shift), ``gamma`` (intensity transfer
    curve), ``contrast`` (tissue contrast around grey matter), ``blur_mm`` (extra Gaussian FWHM),
    ``bias`` (coefficients of a smooth multiplicative field, see
    :func:`.acquisition.bias_field`; empty for none) and ``noise`` (Rician sigma in template
    units, white matter being about 0.87, at the default grid's voxel size; coarser grids get
    proportionally less, as if averaged down). Registration residuals, as standard deviations
    per subject: ``rotation_deg``, ``scale`` (relative), ``shift_mm``, and ``warp_mm`` (RMS
    elastic displacement per axis). ``site_id`` keys the random streams: two profiles with one
    ``site_id`` share their subjects' ages and anatomy draws.
    """

    name: str
    site_id: int
    ages: AgeDistribution = AgeDistribution()
    gain: float = 1.0
    offset: float = 0.0
    gamma: float = 1.0
    contrast: float = 1.0
    blur_mm: float = 0.0
    bias: tuple[float, ...] = ()
    noise: float = 0.0
    rotation_deg: float = 2.0
    scale: float = 0.03
    shift_mm: float = 1.5
    warp_mm: float = 1.5

    def __post_init__(self) -> None:
        if self.site_id < 0:
            raise ConfigError(f"site_id must be non-negative, got {self.site_id}")
        positive = {"gain": self.gain, "gamma": self.gamma, "contrast": self.contrast}
        for field, value in positive.items():
            if not value > 0:
                raise ConfigError(f"site {self.name!r}: {field} must be positive, got {value}")
        non_negative = {
            "blur_mm": self.blur_mm,
            "noise": self.noise,
            "rotation_deg": self.rotation_deg,
            "scale": self.scale,
            "shift_mm": self.shift_mm,
            "warp_mm": self.warp_mm,
        }
        for field, value in non_negative.items():
            if not value >= 0:
                raise ConfigError(f"site {self.name!r}: {field} must be >= 0, got {value}")
        if self.bias and len(self.bias) != N_BIAS_TERMS:
            raise ConfigError(
                f"site {self.name!r}: bias needs {N_BIAS_TERMS} coefficients, got {len(self.bias)}"
            )

    def without_scanner(self) -> SiteProfile:
        """The same site with an ideal scanner: anatomy and registration residuals only."""
        return dataclasses.replace(
            self, gain=1.0, offset=0.0, gamma=1.0, contrast=1.0, blur_mm=0.0, bias=(), noise=0.0
        )

    def without_deformation(self) -> SiteProfile:
        """The same site with perfect registration (no misregistration, no warp)."""
        return dataclasses.replace(self, rotation_deg=0.0, scale=0.0, shift_mm=0.0, warp_mm=0.0)

    def key(self) -> dict[str, object]:
        """Every parameter as plain JSON-able values (for cache keys and reports)."""
        return dataclasses.asdict(self)


def default_site_profiles(n_sites: int, *, iid: bool = False, seed: int = 0) -> list[SiteProfile]:
    """``n_sites`` sites with random scanners; ages all 20-90 (IID) or cycling :data:`NON_IID_AGES`.

    Site ``k``'s scanner depends only on ``(seed, k)``, so the first four of eight sites are the
    four sites of a four-site federation.
    """
    if n_sites < 1:
        raise ConfigError(f"need at least one site, got {n_sites}")
    if seed < 0:
        raise ConfigError(f"seed must be non-negative, got {seed}")
    profiles = []
    for k in range(n_sites):
        rng = np.random.default_rng([seed, 0x517E, k])
        direction = rng.normal(size=N_BIAS_TERMS)
        bias = direction / np.linalg.norm(direction) * rng.uniform(0.15, 0.4)
        profiles.append(
            SiteProfile(
                name=f"site-{k}",
                site_id=k,
                ages=AgeDistribution.uniform(AGE_MIN, AGE_MAX)
                if iid
                else NON_IID_AGES[k % len(NON_IID_AGES)],
                gain=float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)))),
                offset=float(rng.uniform(0.0, 0.1)),
                gamma=float(np.exp(rng.uniform(np.log(0.7), np.log(1.4)))),
                contrast=float(rng.uniform(0.75, 1.25)),
                blur_mm=float(rng.uniform(0.0, 4.0)),
                bias=tuple(float(b) for b in bias),
                noise=float(rng.uniform(0.02, 0.06)),
            )
        )
    return profiles


def _streams(seed: int, site_id: int, subject_index: int) -> list[np.random.Generator]:
    if seed < 0 or subject_index < 0:
        raise ConfigError(f"seed and subject index must be >= 0, got {seed}, {subject_index}")
    children = np.random.SeedSequence([seed, site_id, subject_index]).spawn(5)
    return [np.random.default_rng(child) for child in children]


def generate_subject(
    profile: SiteProfile,
    subject_index: int,
    *,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
) -> tuple[np.ndarray, float]:
    """One subject's raw volume (float32, ``shape``, scanner units) and chronological age.

    Deterministic in ``(seed, profile, subject_index, shape)``. The same subject at another
    shape has the same age, ageing, pose and bias field; noise (and, on grids coarser than 5 mm,
    which render on a 4 mm working grid, the lesions' exact places) differ. About 20-30 ms at
    48x56x48 and 3-5 ms at 24x28x24 on one core, after a one-off template load of 2-4 s per
    process (benchmarks/data_difficulty.py measures it).
    """
    grid = output_grid(shape)
    anat = working_anatomy(working_factor_for(grid))
    age_rng, anatomy_rng, pose_rng, bias_rng, noise_rng = _streams(
        seed, profile.site_id, subject_index
    )
    age = profile.ages.sample(age_rng)
    biological_age = age + float(age_rng.normal(0.0, BRAIN_AGE_GAP_SD))

    image = render_aged_t1(anat, draw_ageing(biological_age, anatomy_rng))
    if profile.contrast != 1.0:
        image += (np.float32(profile.contrast - 1.0) * anat.brain) * (image - anat.intensity_gm)

    pose = draw_pose(
        pose_rng,
        rotation_deg=profile.rotation_deg,
        scale=profile.scale,
        shift_mm=profile.shift_mm,
        warp_mm=profile.warp_mm,
    )
    volume = resample_to_grid(image, anat, grid, pose, blur_mm=profile.blur_mm)
    if profile.bias:
        coefficients = np.asarray(profile.bias) + bias_rng.normal(0.0, _BIAS_JITTER, N_BIAS_TERMS)
        field = bias_field(grid, coefficients)
    else:
        field = np.ones(grid.shape, dtype=np.float32)
    volume = apply_scanner(
        volume,
        noise_rng,
        bias=field,
        gain=profile.gain,
        gamma=profile.gamma,
        noise=profile.noise * _noise_scale(grid.voxel_mm),
        offset=profile.offset,
    )
    return volume, float(age)


def _noise_scale(voxel_mm: float) -> float:
    """Noise falls as 1/sqrt(voxel volume): coarse grids average more of the acquired signal."""
    reference = output_grid(DEFAULT_SHAPE).voxel_mm
    return float((reference / voxel_mm) ** 1.5)


def _cache_path(
    cache_dir: Path, profile: SiteProfile, indices: range, seed: int, shape: tuple[int, ...]
) -> Path:
    try:
        nilearn_version = metadata.version("nilearn")
    except metadata.PackageNotFoundError:  # pragma: no cover - nilearn is a dependency
        nilearn_version = "unknown"
    key = {
        "generator_version": GENERATOR_VERSION,
        "nilearn": nilearn_version,
        "profile": profile.key(),
        "seed": seed,
        "shape": list(shape),
        "indices": [indices.start, indices.stop],
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in profile.name)
    return cache_dir / f"brainage-v{GENERATOR_VERSION}-{safe_name}-{digest}.npz"


def _read_cache(path: Path, n: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as archive:
            x, ages = archive["x"], archive["ages"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable cache file %s: %s", path, exc)
        return None
    if x.shape != (n, *shape) or ages.shape != (n,) or x.dtype != np.float32:
        logger.warning("ignoring cache file %s: unexpected contents %s", path, x.shape)
        return None
    return x, ages


def generate_site_volumes(
    profile: SiteProfile,
    indices: range,
    *,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw volumes ``(n, *shape)`` and ages ``(n,)`` of subjects ``indices`` of one site.

    With ``cache_dir``, a block is read from disk when a file with the same key exists, and
    written (atomically) after it is generated.
    """
    shape_t = output_grid(shape).shape
    n = len(indices)
    path = _cache_path(cache_dir, profile, indices, seed, shape_t) if cache_dir else None
    if path is not None:
        cached = _read_cache(path, n, shape_t)
        if cached is not None:
            logger.debug("%s: %d subjects from cache %s", profile.name, n, path.name)
            return cached
    start = time.perf_counter()
    x = np.empty((n, *shape_t), dtype=np.float32)
    ages = np.empty(n, dtype=np.float32)
    for row, index in enumerate(indices):
        x[row], ages[row] = generate_subject(profile, index, seed=seed, shape=shape_t)
    logger.info(
        "%s: generated %d subjects at %s in %.1f s",
        profile.name,
        n,
        "x".join(map(str, shape_t)),
        time.perf_counter() - start,
    )
    if path is not None:
        try:
            atomic_save_npz(path, {"x": x, "ages": ages})
        except OSError as exc:
            raise DataError(f"cannot write the brain-age cache {path}: {exc}") from exc
    return x, ages


def site_sizes(
    n_sites: int, subjects_per_site: int | Sequence[int], *, size_skew: bool = False
) -> list[int]:
    """Subjects per site: explicit, equal, or (``size_skew``) Zipf-like with the same total."""
    if isinstance(subjects_per_site, int):
        if size_skew:
            total = n_sites * subjects_per_site
            return skewed_sizes(total, n_sites, min_size=_MIN_SITE_SUBJECTS)
        sizes = [subjects_per_site] * n_sites
    else:
        sizes = [int(s) for s in subjects_per_site]
        if len(sizes) != n_sites:
            raise ConfigError(f"got {len(sizes)} site sizes for {n_sites} sites")
    if min(sizes) < _MIN_SITE_SUBJECTS:
        raise ConfigError(f"every site needs at least {_MIN_SITE_SUBJECTS} subjects, got {sizes}")
    return sizes


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    xs = torch.from_numpy(zscore_batch(x)).unsqueeze(1)
    return xs, torch.from_numpy(np.asarray(y, dtype=np.float32))


def make_brainage_federation(
    n_sites: int = 4,
    *,
    subjects_per_site: int | Sequence[int] = 100,
    size_skew: bool = False,
    iid: bool = False,
    shape: Sequence[int] = DEFAULT_SHAPE,
    val_fraction: float = 0.2,
    test_subjects: int = 200,
    seed: int = 0,
    cache_dir: Path | None = None,
    profiles: Sequence[SiteProfile] | None = None,
    subject_offset: int = 0,
) -> FederatedData:
    """A regression federation: x ``(N, 1, *shape)`` z-scored float32, y = age (years, float32).

    Sites come from :func:`default_site_profiles` (or ``profiles``). Each site's subjects
    ``subject_offset..subject_offset+n-1`` (other subjects of the same sites, e.g. an attacker's
    own sample in the privacy benchmark, for a non-zero offset) are split in order: the last
    ``round(n * val_fraction)`` (at least one) validate.
    The test set has ``test_subjects`` subjects drawn round-robin from every site's profile
    (indices from :data:`TEST_INDEX_OFFSET`), so it follows the whole population's ages and
    scanners.
    """
    if profiles is None:
        profiles = default_site_profiles(n_sites, iid=iid, seed=seed)
    elif len(profiles) != n_sites:
        raise ConfigError(f"got {len(profiles)} profiles for {n_sites} sites")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if test_subjects < 0:
        raise ConfigError(f"test_subjects must be >= 0, got {test_subjects}")
    if not 0 <= subject_offset <= TEST_INDEX_OFFSET // 2:
        raise ConfigError(f"subject_offset must be in [0, {TEST_INDEX_OFFSET // 2}]")
    sizes = site_sizes(n_sites, subjects_per_site, size_skew=size_skew)
    shape_t = output_grid(shape).shape

    sites = []
    for profile, n in zip(profiles, sizes, strict=True):
        x, ages = generate_site_volumes(
            profile,
            range(subject_offset, subject_offset + n),
            seed=seed,
            shape=shape_t,
            cache_dir=cache_dir,
        )
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
        x_train, y_train = _to_tensors(x[: n - n_val], ages[: n - n_val])
        x_val, y_val = _to_tensors(x[n - n_val :], ages[n - n_val :])
        sites.append(SiteData(profile.name, "regression", x_train, y_train, x_val, y_val))

    test_x, test_y = [], []
    for k, profile in enumerate(profiles):
        count = test_subjects // n_sites + (1 if k < test_subjects % n_sites else 0)
        indices = range(TEST_INDEX_OFFSET, TEST_INDEX_OFFSET + count)
        x, ages = generate_site_volumes(
            profile, indices, seed=seed, shape=shape_t, cache_dir=cache_dir
        )
        test_x.append(x)
        test_y.append(ages)
    x_test, y_test = _to_tensors(np.concatenate(test_x), np.concatenate(test_y))
    return FederatedData("regression", tuple(sites), x_test, y_test)
