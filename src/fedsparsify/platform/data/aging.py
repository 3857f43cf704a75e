"""The ageing model: how a subject's brain differs from the young-adult MNI152 template.

Effects grow with the normalised biological age ``a = (age - 20) / 70`` (0 at 20, 1 at 90):

- ventricular enlargement by ``VENTRICLE_MM * a**1.7`` mm (accelerating, as in life),
- sulcal widening (outer CSF growing into cortex) and grey-matter density loss, both
  proportional to ``a`` and weighted to the frontal and temporal lobes,
- grey/white contrast loss (white matter darkens towards grey matter),
- periventricular white-matter lesions, dark on T1, with a Poisson count rising as ``a**2``.

Each effect has a per-subject factor (people of one age differ), so age explains part of the
anatomy, not all of it. Rendering follows one rule: the template T1 plus, for every change of a
tissue's probability, that change times the tissue's T1 intensity. Everything happens on the
working grid (see :mod:`.template`); the scanner and the resampling come after
(:mod:`.acquisition`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from fedsparsify.platform.data.template import MAX_VENTRICLE_GROWTH_MM, Anatomy

__all__ = [
    "AGE_MAX",
    "AGE_MIN",
    "AgeingDraw",
    "draw_ageing",
    "normalised_age",
    "render_aged_t1",
]

AGE_MIN = 20.0
AGE_MAX = 90.0
VENTRICLE_MM = 3.5  # ventricular wall moves out this far by age 90
SULCAL_MM = 1.0  # outer CSF grows this far into (frontal/temporal-weighted) cortex by 90
GM_LOSS = 0.08  # fraction of grey-matter probability lost to CSF by 90
CONTRAST_LOSS = 0.15  # white matter darkens by this fraction of the GM/WM gap by 90
LESION_RATE = 8.0  # expected periventricular lesions at 90 (plus a small baseline)
LESION_BASE = 0.3
# Log-sd of each effect's per-subject factor (ventricles, sulci, GM loss, contrast). Ventricle
# size varies a lot between people of one age; the rest little, so that biological age explains
# most of the anatomy: without misregistration or scanners a ridge reaches ~4.5 y MAE, just above
# the 4 y floor that the brain-age gap sets (benchmarks/data_difficulty.py).
SUBJECT_VARIATION = (0.35, 0.1, 0.1, 0.1)


@dataclass(frozen=True)
class Lesion:
    """One white-matter lesion: where (a fraction that picks a periventricular site), how big."""

    site: float  # in [0, 1): position in the anatomy's list of lesion sites
    jitter: tuple[float, float, float]  # sub-voxel offset
    sigma_mm: float
    depth: float  # 1 = the lesion core reaches the lesion intensity


@dataclass(frozen=True)
class AgeingDraw:
    """One subject's ageing, independent of the working grid it is rendered on."""

    ventricle_mm: float
    sulcal_mm: float
    gm_loss: float
    contrast_loss: float
    lesions: tuple[Lesion, ...]


def normalised_age(age: float) -> float:
    """``(age - 20) / 70``, clipped to [0, 1.25]: the scale every effect grows on."""
    return float(np.clip((age - AGE_MIN) / (AGE_MAX - AGE_MIN), 0.0, 1.25))


def draw_ageing(biological_age: float, rng: np.random.Generator) -> AgeingDraw:
    """Draw a subject's age effects; each has a log-normal per-subject factor."""
    a = normalised_age(biological_age)
    factors = np.exp(rng.normal(0.0, SUBJECT_VARIATION))
    n_lesions = int(rng.poisson(LESION_BASE + LESION_RATE * a**2))
    lesions = tuple(
        Lesion(
            site=float(rng.random()),
            jitter=(
                float(rng.random() - 0.5),
                float(rng.random() - 0.5),
                float(rng.random() - 0.5),
            ),
            sigma_mm=float(rng.uniform(1.2, 2.8) * (1.0 + 0.5 * a)),
            depth=float(rng.uniform(0.5, 1.0)),
        )
        for _ in range(n_lesions)
    )
    return AgeingDraw(
        ventricle_mm=min(VENTRICLE_MM * a**1.7 * float(factors[0]), MAX_VENTRICLE_GROWTH_MM),
        sulcal_mm=SULCAL_MM * a * float(factors[1]),
        gm_loss=min(GM_LOSS * a * float(factors[2]), 0.5),
        contrast_loss=min(CONTRAST_LOSS * a * float(factors[3]), 0.8),
        lesions=lesions,
    )


def render_aged_t1(anat: Anatomy, draw: AgeingDraw) -> np.ndarray:
    """The subject's T1 on the working grid (float32, template intensity units)."""
    i_gm, i_wm, i_csf = anat.intensity_gm, anat.intensity_wm, anat.intensity_csf
    img = anat.t1.copy()
    gm = anat.gm.copy()
    wm = anat.wm.copy()
    edge = anat.edge_mm

    # Ventricles grow into the surrounding tissue, which turns into CSF: the target CSF
    # fraction of a voxel is a soft indicator of "within ventricle_mm of the old ventricles".
    box = anat.ventricle_box
    target = special.expit((draw.ventricle_mm - anat.ventricle_sdf) / edge)
    g, w = gm[box], wm[box]
    tissue = g + w
    take = np.clip(target - (1.0 - tissue), 0.0, tissue)
    share = g / np.maximum(tissue, 1e-6)
    img[box] += take * (i_csf - share * i_gm - (1.0 - share) * i_wm)
    gm[box] = g - take * share
    wm[box] = w - take * (1.0 - share)

    # Sulci widen: outer CSF grows into the cortex, more in frontal and temporal lobes.
    idx = anat.band_index
    target_b = special.expit((draw.sulcal_mm * anat.band_lobe - anat.band_sdf) / edge)
    gm_flat, wm_flat, img_flat = gm.reshape(-1), wm.reshape(-1), img.reshape(-1)
    g_b = gm_flat[idx]
    take_b = np.clip(target_b - (1.0 - g_b - wm_flat[idx]), 0.0, g_b)
    img_flat[idx] += take_b * (i_csf - i_gm)
    gm_flat[idx] = g_b - take_b

    # Diffuse grey-matter loss to CSF, and grey/white contrast loss.
    loss = (draw.gm_loss * anat.lobe_weight) * gm
    d_wm = -draw.contrast_loss * (i_wm - i_gm)
    img += loss * (i_csf - i_gm + 0.25 * d_wm) + gm * (-0.25 * d_wm) + wm * d_wm
    _add_lesions(img, wm, anat, draw.lesions, i_wm + d_wm)
    return img


def _add_lesions(
    img: np.ndarray,
    wm: np.ndarray,
    anat: Anatomy,
    lesions: tuple[Lesion, ...],
    wm_intensity: float,
) -> None:
    """Darken Gaussian blobs of white matter towards the lesion intensity, in place."""
    sites = anat.lesion_sites
    if not lesions or len(sites) == 0:
        return
    lesion_intensity = 0.5 * (anat.intensity_gm + anat.intensity_csf)
    contrast = max(wm_intensity - lesion_intensity, 0.0)
    for lesion in lesions:
        centre = sites[int(lesion.site * len(sites))] + np.asarray(lesion.jitter)
        sigma = lesion.sigma_mm / anat.voxel_mm
        radius = int(np.ceil(2.5 * sigma))
        lo = np.maximum(np.floor(centre).astype(int) - radius, 0)
        hi = np.minimum(np.floor(centre).astype(int) + radius + 1, img.shape)
        axes = [
            np.exp(-0.5 * ((np.arange(lo[d], hi[d]) - centre[d]) / sigma) ** 2).astype(np.float32)
            for d in range(3)
        ]
        blob = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
        patch = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        img[patch] -= (lesion.depth * contrast) * blob * wm[patch]
