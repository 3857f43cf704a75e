"""Fixtures that write tiny NIfTI folders with nibabel in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from .helpers import NiftiWriter, ParticipantsWriter, head


@pytest.fixture
def write_nifti() -> NiftiWriter:
    """``write_nifti(path, data=None, seed=0, affine=None)`` saves a NIfTI and returns its path."""

    def write(
        path: Path,
        data: np.ndarray | None = None,
        *,
        seed: int = 0,
        affine: np.ndarray | None = None,
    ) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        volume = head(seed) if data is None else data
        nib.save(
            nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine),
            str(path),
        )
        return path

    return write


@pytest.fixture
def write_participants() -> ParticipantsWriter:
    def write(root: Path, text: str) -> Path:
        root.mkdir(parents=True, exist_ok=True)
        path = root / "participants.tsv"
        path.write_text(text)
        return path

    return write
