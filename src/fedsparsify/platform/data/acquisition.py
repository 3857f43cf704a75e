"""From an aged brain on the working grid to what a scanner and a registration pipeline deliver.

Registration to MNI space is never perfect, so every subject gets a residual affine
(rotation, anisotropic scale, shift) and a smooth elastic warp; the site's scanner adds blur,
a multiplicative bias field, a gain and gamma, Rician noise and an offset. The geometry is
applied in a single resampling (working grid to output grid), after one Gaussian filter that
both anti-aliases and models the scanner's blur, so the cost is one pass over each grid.

Random draws are made in world coordinates (mm), independent of the output shape: the same
subject rendered at 3.4 mm and at 7 mm has the same pose, warp and bias field.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from fedsparsify.platform.data.template import Anatomy, OutputGrid, brain_bbox_mm

__all__ = [
    "N_BIAS_TERMS",
    "Pose",
    "apply_scanner",
    "bias_field",
    "draw_pose",
    "resample_to_grid",
]

N_BIAS_TERMS = 9  # x, y, z, x², y², z², xy, xz, yz over the brain's box scaled to [-1, 1]
_WARP_SPACING_MM = 20.0
_ANTIALIAS = 0.35  # Gaussian sigma as a fraction of the output voxel


@dataclass(frozen=True)
class Pose:
    """A subject's residual misregistration: ``q = c + R·diag(scale)·(p - c) + shift + warp(p)``."""

    rotation_rad: tuple[float, float, float]
    scale: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    warp: np.ndarray  # (3, lx, ly, lz) lattice coefficients, in mm of displacement


def draw_pose(
    rng: np.random.Generator,
    *,
    rotation_deg: float,
    scale: float,
    shift_mm: float,
    warp_mm: float,
) -> Pose:
    """Draw a misregistration with the given standard deviations (warp: RMS displacement)."""
    lattice = _warp_lattice()
    rot = np.deg2rad(rng.normal(0.0, 1.0, 3) * rotation_deg)
    global_scale = rng.normal(0.0, 1.0) * scale
    scales = np.exp(global_scale + rng.normal(0.0, 1.0, 3) * scale / 3.0)
    shift = rng.normal(0.0, 1.0, 3) * shift_mm
    shape = (3, len(lattice[0]), len(lattice[1]), len(lattice[2]))
    warp = rng.normal(0.0, 1.0, shape) * (warp_mm * _warp_norm())
    return Pose(
        rotation_rad=(float(rot[0]), float(rot[1]), float(rot[2])),
        scale=(float(scales[0]), float(scales[1]), float(scales[2])),
        shift_mm=(float(shift[0]), float(shift[1]), float(shift[2])),
        warp=warp,
    )


@functools.lru_cache(maxsize=1)
def _warp_lattice() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control points of the elastic warp: a regular world-space lattice around the brain."""
    lo, hi = brain_bbox_mm()
    axes = [
        np.arange(lo[d] - 2 * _WARP_SPACING_MM, hi[d] + 2 * _WARP_SPACING_MM, _WARP_SPACING_MM)
        for d in range(3)
    ]
    return axes[0], axes[1], axes[2]


def _rbf(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    sigma = 0.7 * _WARP_SPACING_MM
    return np.exp(-0.5 * ((points[:, None] - centres[None, :]) / sigma) ** 2)


@functools.lru_cache(maxsize=1)
def _warp_norm() -> float:
    """Scale that makes unit lattice coefficients give a unit RMS displacement per axis."""
    lo, hi = brain_bbox_mm()
    var = 1.0
    for d, centres in enumerate(_warp_lattice()):
        w = _rbf(np.linspace(lo[d], hi[d], 64), centres)
        var *= float((w**2).sum(axis=1).mean())
    return 1.0 / np.sqrt(var)


def _rotation(angles: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _sampling_coordinates(grid: OutputGrid, anat: Anatomy, pose: Pose) -> np.ndarray:
    """Working-grid voxel coordinates (3, *grid.shape) of every output voxel, pose applied."""
    lo, hi = brain_bbox_mm()
    centre = (lo + hi) / 2
    matrix = _rotation(pose.rotation_rad) @ np.diag(pose.scale)
    axes = [w - centre[d] for d, w in enumerate(grid.world_axes())]
    lattice = _warp_lattice()
    weights = [_rbf(grid.world_axes()[d], lattice[d]) for d in range(3)]
    coords = np.empty((3, *grid.shape), dtype=np.float32)
    for d in range(3):
        disp = np.tensordot(weights[0], pose.warp[d], axes=(1, 0))
        disp = np.tensordot(disp, weights[1], axes=(1, 1))
        disp = np.tensordot(disp, weights[2], axes=(1, 1))
        world = (
            centre[d]
            + pose.shift_mm[d]
            + matrix[d, 0] * axes[0][:, None, None]
            + matrix[d, 1] * axes[1][None, :, None]
            + matrix[d, 2] * axes[2][None, None, :]
            + disp
        )
        coords[d] = (world - anat.affine[d, 3]) / anat.voxel_mm
    return coords


def resample_to_grid(
    image: np.ndarray, anat: Anatomy, grid: OutputGrid, pose: Pose, *, blur_mm: float
) -> np.ndarray:
    """Blur (anti-aliasing plus the site's extra FWHM ``blur_mm``) and resample once."""
    sigma_mm = np.hypot(_ANTIALIAS * grid.voxel_mm, blur_mm / 2.3548)
    smooth = ndi.gaussian_filter(image, sigma_mm / anat.voxel_mm, truncate=3.0)
    coords = _sampling_coordinates(grid, anat, pose)
    return np.asarray(
        ndi.map_coordinates(
            smooth, coords, order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32
        )
    )


def bias_field(grid: OutputGrid, coefficients: np.ndarray) -> np.ndarray:
    """``exp(sum_k c_k * term_k)`` over the brain's box scaled to [-1, 1]: a smooth gain map."""
    lo, hi = brain_bbox_mm()
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    x, y, z = ((w - centre[d]) / half[d] for d, w in enumerate(grid.world_axes()))
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    c = np.asarray(coefficients, dtype=np.float64)
    log_field = (
        c[0] * x
        + c[1] * y
        + c[2] * z
        + c[3] * x**2
        + c[4] * y**2
        + c[5] * z**2
        + c[6] * x * y
        + c[7] * x * z
        + c[8] * y * z
    )
    return np.exp(log_field).astype(np.float32)


def apply_scanner(
    volume: np.ndarray,
    rng: np.random.Generator,
    *,
    bias: np.ndarray,
    gain: float,
    gamma: float,
    noise: float,
    offset: float,
) -> np.ndarray:
    """Bias field, gamma, gain, Rician noise (sigma ``noise * gain``) and offset, in that order."""
    vol = np.maximum(volume * bias, 0.0)
    if gamma != 1.0:
        vol = np.power(vol, np.float32(gamma))
    vol *= np.float32(gain)
    if noise > 0.0:
        sigma = np.float32(noise * gain)
        real = vol + sigma * rng.standard_normal(vol.shape, dtype=np.float32)
        imag = sigma * rng.standard_normal(vol.shape, dtype=np.float32)
        vol = np.sqrt(real * real + imag * imag)
    if offset != 0.0:
        vol += np.float32(offset * gain)
    return vol.astype(np.float32, copy=False)
