"""The MNI152 anatomy the synthetic brain-age subjects are built from, and the output grids.

nilearn ships the ICBM152 2009 symmetric template inside its package (skull-stripped T1 plus
grey- and white-matter probability maps), so everything here works offline. From it we derive,
once per process, the maps the ageing model needs on a *working grid* (the template's 2 mm grid,
cropped to the brain; or that grid averaged to 4 mm when the output is coarse):

- tissue probabilities (GM, WM, and CSF = brain mask - GM - WM) and their T1 intensities,
- the ventricles (deep CSF) and a signed distance to them, for ventricular enlargement,
- a signed distance to the outer CSF (sulci and the brain's surface), for sulcal widening,
- a frontal/temporal weight, because cortical thinning is strongest there,
- periventricular white-matter voxels, where lesions are placed.

An output grid is isotropic, fitted around the brain's bounding box: ``(48, 56, 48)`` gets about
3.4 mm voxels, ``(24, 28, 24)`` about 6.8 mm.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from fedsparsify.errors import ConfigError, DataError

__all__ = [
    "GRID_MARGIN_MM",
    "Anatomy",
    "OutputGrid",
    "brain_bbox_mm",
    "output_grid",
    "template_maps_on_grid",
    "working_anatomy",
    "working_factor_for",
]

logger = logging.getLogger(__name__)

_TEMPLATE_VOXEL_MM = 2.0
_BRAIN_THRESHOLD = 0.02  # template T1 above this is brain (below are denormal zeros)
_CROP_MARGIN_VOX = 3
GRID_MARGIN_MM = 3.0
_VENTRICLE_DEPTH_MM = 15.0  # CSF this far inside the brain is ventricular, not sulcal
_VENTRICLE_MIN_ML = 2.0  # ignore smaller deep-CSF blobs
_SULCAL_BAND_MM = 8.0  # cortex within this distance of outer CSF can be eaten by sulcal widening
_LESION_BAND_MM = (2.0, 12.0)  # periventricular distance band for white-matter lesions
MAX_VENTRICLE_GROWTH_MM = 15.0  # the ventricle box leaves room for growth up to this far


@dataclass(frozen=True)
class OutputGrid:
    """An isotropic voxel grid in MNI space: ``shape`` and the voxel-to-world ``affine``."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_mm(self) -> float:
        """Edge length of one (isotropic) voxel in millimetres."""
        return float(self.affine[0, 0])

    def world_axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World coordinates (mm) of the voxel centres along x, y and z."""
        axes = [
            self.affine[d, 3] + self.affine[d, d] * np.arange(n, dtype=np.float64)
            for d, n in enumerate(self.shape)
        ]
        return axes[0], axes[1], axes[2]


@dataclass(frozen=True)
class Anatomy:
    """Template-derived maps on the working grid, all float32 and read-only.

    Sparse maps (the sulcal band, the ventricle box, lesion sites) are stored as flat indices or
    slices into the working grid so that per-subject rendering only touches the voxels it changes.
    """

    voxel_mm: float
    affine: np.ndarray  # working voxel -> world (mm)
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray  # 0/1 float mask of the template brain
    lobe_weight: np.ndarray  # cortical-thinning weight, mean 1 over grey matter
    intensity_gm: float
    intensity_wm: float
    intensity_csf: float
    ventricle_box: tuple[slice, slice, slice]
    ventricle_sdf: np.ndarray  # signed distance (mm) to the ventricles, inside the box only
    band_index: np.ndarray  # flat indices of cortex near outer CSF
    band_sdf: np.ndarray  # signed distance (mm) to outer CSF at those indices
    band_lobe: np.ndarray  # lobe weight at those indices
    lesion_sites: np.ndarray  # (K, 3) working-grid voxel indices of periventricular WM

    @property
    def edge_mm(self) -> float:
        """Width of the soft edges that make sub-voxel growth visible as partial volume."""
        return 0.5 * self.voxel_mm

    @property
    def shape(self) -> tuple[int, int, int]:
        """Working-grid shape."""
        s = self.t1.shape
        return int(s[0]), int(s[1]), int(s[2])


@dataclass(frozen=True)
class _Template:
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


@functools.lru_cache(maxsize=1)
def _load_template() -> _Template:
    """The 2 mm MNI152 maps from nilearn's package data (no download)."""
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise DataError("nilearn is needed for the synthetic brain-age data") from exc
    try:
        t1_img = datasets.load_mni152_template(resolution=2)
        arrays = [
            np.asarray(img.get_fdata(dtype=np.float32))
            for img in (
                t1_img,
                datasets.load_mni152_gm_template(resolution=2),
                datasets.load_mni152_wm_template(resolution=2),
                datasets.load_mni152_brain_mask(resolution=2),
            )
        ]
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot load the MNI152 template shipped with nilearn: {exc}") from exc
    t1, gm, wm, mask = arrays
    t1 = np.where(t1 > _BRAIN_THRESHOLD, t1, 0.0).astype(np.float32)
    return _Template(t1=t1, gm=gm, wm=wm, mask=mask, affine=np.asarray(t1_img.affine))


@functools.lru_cache(maxsize=1)
def brain_bbox_mm() -> tuple[np.ndarray, np.ndarray]:
    """World-space bounding box (low, high corner, mm) of the template brain's voxel centres."""
    tpl = _load_template()
    idx = np.argwhere(tpl.t1 > 0)
    lo = tpl.affine[:3, :3] @ idx.min(0) + tpl.affine[:3, 3]
    hi = tpl.affine[:3, :3] @ idx.max(0) + tpl.affine[:3, 3]
    lo.setflags(write=False)
    hi.setflags(write=False)
    return lo, hi


def output_grid(shape: Sequence[int]) -> OutputGrid:
    """The isotropic grid of ``shape`` voxels that just holds the brain (plus a 3 mm margin)."""
    dims = tuple(int(n) for n in shape)
    if len(dims) != 3 or min(dims) < 4:
        raise ConfigError(f"output shape must be three sizes of at least 4, got {tuple(shape)!r}")
    return _output_grid((dims[0], dims[1], dims[2]))


@functools.lru_cache(maxsize=16)
def _output_grid(shape: tuple[int, int, int]) -> OutputGrid:
    lo, hi = brain_bbox_mm()
    extent = hi - lo + 2 * GRID_MARGIN_MM
    voxel = float(np.max(extent / (np.asarray(shape) - 1)))
    centre = (lo + hi) / 2
    affine = np.eye(4)
    affine[:3, :3] *= voxel
    affine[:3, 3] = centre - voxel * (np.asarray(shape) - 1) / 2
    affine.setflags(write=False)
    return OutputGrid(shape=shape, affine=affine)


def working_factor_for(grid: OutputGrid) -> int:
    """Working-grid coarsening (1 = 2 mm, 2 = 4 mm): coarse outputs need no 2 mm detail."""
    return 2 if grid.voxel_mm >= 5.0 else 1


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return a
    shape = [(n // f) * f for n in a.shape]
    a = a[: shape[0], : shape[1], : shape[2]]
    return a.reshape(shape[0] // f, f, shape[1] // f, f, shape[2] // f, f).mean(axis=(1, 3, 5))


def _signed_distance(mask: np.ndarray, voxel_mm: float) -> np.ndarray:
    """Distance (mm) to the mask's boundary: negative inside, positive outside."""
    outside = ndi.distance_transform_edt(~mask, sampling=voxel_mm)
    inside = ndi.distance_transform_edt(mask, sampling=voxel_mm)
    half = voxel_mm / 2
    return np.where(mask, half - inside, outside - half).astype(np.float32)


def _lobe_weight(affine: np.ndarray, shape: tuple[int, ...], gm: np.ndarray) -> np.ndarray:
    """Smooth frontal + temporal emphasis for cortical thinning, normalised to mean 1 on GM."""
    x, y, z = (affine[d, 3] + affine[d, d] * np.arange(shape[d]) for d in range(3))
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]

    def sig(t: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-t)))

    frontal = sig((y + 5.0) / 8.0)
    temporal = sig((np.abs(x) - 28.0) / 6.0) * sig(-(z + 2.0) / 6.0) * sig((y + 55.0) / 8.0)
    weight = np.broadcast_to(0.4 + frontal + temporal, shape)
    mean = float((weight * gm).sum() / max(float(gm.sum()), 1e-6))
    return (weight / mean).astype(np.float32)


def _lateral_ventricles(tpl: _Template) -> np.ndarray:
    """The lateral ventricles on the 2 mm grid: big blobs of CSF deep inside, off the midline.

    The midline blob (interhemispheric fissure, cisterns, third and fourth ventricles) is left out:
    it is mostly not ventricle, and lateral-ventricle growth carries most of the age signal.
    """
    brain = tpl.t1 > 0
    csf = np.clip(np.where(brain, tpl.mask, 0.0) - tpl.gm - tpl.wm, 0.0, 1.0)
    depth = ndi.distance_transform_edt(brain, sampling=_TEMPLATE_VOXEL_MM)
    deep = (csf > 0.6) & (depth > _VENTRICLE_DEPTH_MM)
    labels, n = ndi.label(deep)
    index = np.arange(1, n + 1)
    sizes_ml = np.asarray(ndi.sum(deep, labels, index)) * _TEMPLATE_VOXEL_MM**3 / 1000.0
    centre_x = np.asarray(ndi.mean(np.indices(deep.shape)[0], labels, index))
    centre_x = tpl.affine[0, 3] + tpl.affine[0, 0] * centre_x
    keep = index[(sizes_ml >= _VENTRICLE_MIN_ML) & (np.abs(centre_x) > 5.0)]
    ventricles = ndi.binary_dilation(np.isin(labels, keep)) & (csf > 0.4)
    if not ventricles.any():  # pragma: no cover - the template has ventricles
        raise DataError("no ventricles found in the MNI152 template")
    return np.asarray(ventricles)


@functools.lru_cache(maxsize=2)
def working_anatomy(factor: int = 1) -> Anatomy:
    """Template maps on the 2 mm (factor 1) or 4 mm (factor 2) working grid, cached per process."""
    if factor not in (1, 2):
        raise ConfigError(f"working-grid factor must be 1 or 2, got {factor}")
    tpl = _load_template()
    voxel = _TEMPLATE_VOXEL_MM * factor
    t1, gm, wm, mask = (_block_mean(a, factor) for a in (tpl.t1, tpl.gm, tpl.wm, tpl.mask))
    brain = t1 > _BRAIN_THRESHOLD * 0.5

    # Crop to the brain plus a margin: every later array is this size.
    idx = np.argwhere(brain)
    lo = np.maximum(idx.min(0) - _CROP_MARGIN_VOX, 0)
    hi = np.minimum(idx.max(0) + _CROP_MARGIN_VOX + 1, brain.shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    t1, gm, wm, mask, brain = (a[crop] for a in (t1, gm, wm, mask, brain))
    affine = np.eye(4)
    affine[:3, :3] *= voxel
    affine[:3, 3] = tpl.affine[:3, 3] + (lo * factor + (factor - 1) / 2) * _TEMPLATE_VOXEL_MM
    shape = t1.shape

    depth = ndi.distance_transform_edt(brain, sampling=voxel)
    gm = np.where(brain, gm, 0.0)
    wm = np.where(brain, wm, 0.0)
    csf = np.clip(np.where(brain, mask, 0.0) - gm - wm, 0.0, 1.0)

    def mean_where(prob: np.ndarray) -> float:
        sel = prob > 0.85
        return float(t1[sel].mean())

    i_gm, i_wm, i_csf = mean_where(gm), mean_where(wm), mean_where(csf)

    ventricles = _block_mean(_lateral_ventricles(tpl).astype(np.float32), factor)[crop] > 0.5
    vent_sdf = _signed_distance(ventricles, voxel)
    vidx = np.argwhere(vent_sdf < MAX_VENTRICLE_GROWTH_MM + 2 * voxel)
    vbox = tuple(slice(int(a), int(b) + 1) for a, b in zip(vidx.min(0), vidx.max(0), strict=True))

    # Outer CSF (sulci, surface): CSF away from the ventricles, or outside the brain.
    outer = ((csf > 0.5) & (vent_sdf > 4.0) & (depth < 25.0)) | ~brain
    outer_sdf = _signed_distance(outer, voxel)
    band = brain & (gm > 0.05) & (outer_sdf > -voxel) & (outer_sdf < _SULCAL_BAND_MM)
    band_index = np.flatnonzero(band.ravel())

    lobe = _lobe_weight(affine, shape, gm)
    band_sdf = outer_sdf.ravel()[band_index].astype(np.float32)
    vent_sdf_box = np.ascontiguousarray(vent_sdf[vbox])
    lesion = (wm > 0.7) & (vent_sdf > _LESION_BAND_MM[0]) & (vent_sdf < _LESION_BAND_MM[1])

    anatomy = Anatomy(
        voxel_mm=voxel,
        affine=affine,
        t1=np.ascontiguousarray(t1, dtype=np.float32),
        gm=np.ascontiguousarray(gm, dtype=np.float32),
        wm=np.ascontiguousarray(wm, dtype=np.float32),
        brain=brain.astype(np.float32),
        lobe_weight=lobe,
        intensity_gm=i_gm,
        intensity_wm=i_wm,
        intensity_csf=i_csf,
        ventricle_box=(vbox[0], vbox[1], vbox[2]),
        ventricle_sdf=vent_sdf_box,
        band_index=band_index,
        band_sdf=band_sdf,
        band_lobe=lobe.ravel()[band_index],
        lesion_sites=np.argwhere(lesion),
    )
    for value in vars(anatomy).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    logger.debug(
        "working anatomy at %.0f mm: shape %s, GM %.2f WM %.2f CSF %.2f, %d lesion sites",
        voxel,
        shape,
        i_gm,
        i_wm,
        i_csf,
        len(anatomy.lesion_sites),
    )
    return anatomy


def template_maps_on_grid(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Template maps (no subject effects) resampled to an output grid, for checks and ROIs.

    Keys: ``t1``, ``gm``, ``wm``, ``brain`` and ``ventricles`` (probability that a voxel of the
    output grid lies in the template's ventricles).
    """
    grid = output_grid(shape)
    anat = working_anatomy(working_factor_for(grid))
    vent = np.zeros(anat.shape, dtype=np.float32)
    vent[anat.ventricle_box] = (anat.ventricle_sdf < 0).astype(np.float32)
    ax = [(w - anat.affine[d, 3]) / anat.voxel_mm for d, w in enumerate(grid.world_axes())]
    coords = np.stack(np.meshgrid(*ax, indexing="ij"))
    sigma = 0.35 * grid.voxel_mm / anat.voxel_mm
    out: dict[str, np.ndarray] = {}
    for name, arr in (
        ("t1", anat.t1),
        ("gm", anat.gm),
        ("wm", anat.wm),
        ("brain", anat.brain),
        ("ventricles", vent),
    ):
        smooth = ndi.gaussian_filter(arr, sigma)
        out[name] = ndi.map_coordinates(smooth, coords, order=1, cval=0.0).astype(np.float32)
    return out
