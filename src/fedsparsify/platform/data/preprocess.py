"""Intensity normalisation and field-of-view fitting shared by the synthetic and NIfTI loaders.

Both loaders hand the model the same kind of input: a volume whose grid just holds the brain
(its bounding box plus a 3 mm margin, isotropic voxels, centred), z-scored over the whole volume
(mean 0, standard deviation 1, background included). The z-score removes a scanner's global gain
and offset, as intensity normalisation does in real pipelines; the rest of a site's signature
(contrast, gamma, blur, bias field, noise) remains for the model to cope with.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.data.template import GRID_MARGIN_MM

__all__ = ["fit_to_shape", "zscore", "zscore_batch"]

_FOREGROUND_FRACTION = 0.1  # of the 99.5th percentile: what counts as head or brain


def zscore(volume: np.ndarray) -> np.ndarray:
    """One volume minus its mean, divided by its standard deviation (float32).

    A constant volume (standard deviation 0) comes back as zeros rather than NaNs.
    """
    vol = np.asarray(volume, dtype=np.float32)
    std = float(vol.std(dtype=np.float64))
    mean = float(vol.mean(dtype=np.float64))
    if std == 0.0 or not np.isfinite(std):
        return np.zeros_like(vol)
    return ((vol - mean) / std).astype(np.float32)


def zscore_batch(volumes: np.ndarray) -> np.ndarray:
    """:func:`zscore` applied to each item along the first axis."""
    out = np.empty(volumes.shape, dtype=np.float32)
    for i in range(volumes.shape[0]):
        out[i] = zscore(volumes[i])
    return out


def fit_to_shape(data: np.ndarray, voxel_mm: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Crop ``data`` to its foreground's box (plus margin), pad to ``shape``'s proportions, zoom.

    ``data`` must be in RAS+ orientation (``nibabel.as_closest_canonical``), like MNI space, so
    that the result's axes match the synthetic volumes'. The output voxel is isotropic: the
    largest of the three box extents (mm) divided by the matching output size, as for the
    synthetic grid. A Gaussian anti-aliasing filter precedes the linear interpolation.
    """
    if data.ndim != 3 or len(shape) != 3 or len(voxel_mm) != 3:
        raise ConfigError(f"need a 3-D volume and a 3-D shape, got {data.shape} and {shape}")
    vox = np.asarray(voxel_mm, dtype=np.float64)
    if np.any(vox <= 0) or not np.all(np.isfinite(vox)):
        raise DataError(f"voxel sizes must be positive, got {tuple(vox)}")
    out_shape = np.asarray(shape, dtype=np.int64)
    data = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(np.percentile(data, 99.5))
    foreground = data > _FOREGROUND_FRACTION * top if top > 0 else data != 0
    if not foreground.any():
        foreground = np.ones(data.shape, dtype=bool)
    idx = np.argwhere(foreground)
    lo_vox, hi_vox = idx.min(0), idx.max(0)
    extent_mm = (hi_vox - lo_vox) * vox + 2 * GRID_MARGIN_MM
    out_vox = float(np.max(extent_mm / (out_shape - 1)))
    centre = (lo_vox + hi_vox) / 2.0
    step = out_vox / vox  # input voxels per output voxel, per axis
    start = centre - step * (out_shape - 1) / 2.0
    sigma = np.maximum(0.35 * step, 0.0)
    smooth = ndi.gaussian_filter(data, sigma, truncate=3.0)
    out = ndi.affine_transform(
        smooth,
        np.diag(step),
        offset=start,
        output_shape=tuple(int(n) for n in out_shape),
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
    return np.asarray(out, dtype=np.float32)
