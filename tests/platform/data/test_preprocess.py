"""Normalisation and field-of-view fitting shared by both volume loaders."""

from __future__ import annotations

import numpy as np
import pytest

from fedsparsify.errors import DataError
from fedsparsify.platform.data.preprocess import fit_to_shape, zscore, zscore_batch


def test_zscore_matches_numpy_and_handles_constants() -> None:
    vol = np.random.default_rng(0).gamma(2.0, 3.0, (5, 6, 7)).astype(np.float32)
    np.testing.assert_allclose(zscore(vol), (vol - vol.mean()) / vol.std(), rtol=1e-5, atol=1e-5)
    assert not zscore(np.full((3, 3, 3), 7.0)).any()
    batch = zscore_batch(np.stack([vol, 2 * vol + 5]))
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-5)


def test_fit_centres_the_foreground_and_keeps_proportions() -> None:
    data = np.zeros((60, 40, 30), dtype=np.float32)
    data[5:25, 10:30, 5:15] = 1.0  # a 20x20x10-voxel box off centre, 1x1x2 mm voxels
    out = fit_to_shape(data, (1.0, 1.0, 2.0), (16, 16, 16))
    assert out.shape == (16, 16, 16)
    mass = np.argwhere(out > 0.5)
    # The box is 20x20x20 mm: isotropic output makes it a cube, centred in the grid.
    np.testing.assert_allclose(mass.mean(0), [7.5, 7.5, 7.5], atol=0.6)
    extent = mass.max(0) - mass.min(0)
    assert extent.max() - extent.min() <= 1


def test_fit_refuses_bad_voxel_sizes() -> None:
    with pytest.raises(DataError, match="voxel sizes"):
        fit_to_shape(np.ones((4, 4, 4)), (1.0, 0.0, 1.0), (4, 4, 4))
