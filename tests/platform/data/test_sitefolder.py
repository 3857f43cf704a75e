"""Site folders: save/load round trip, the NIfTI branch, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsparsify.errors import DataError
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.data.sitefolder import SITE_FILE, load_site, save_site

from .helpers import NiftiWriter, ParticipantsWriter


def regression_site() -> SiteData:
    g = torch.Generator().manual_seed(0)
    return SiteData(
        "hospital-a",
        "regression",
        torch.randn(5, 1, 6, 7, 6, generator=g),
        torch.rand(5, generator=g) * 70 + 20,
        torch.randn(2, 1, 6, 7, 6, generator=g),
        torch.rand(2, generator=g) * 70 + 20,
    )


def test_round_trip_is_exact(tmp_path: Path) -> None:
    site = regression_site()
    written = save_site(site, tmp_path / "a")
    assert written == tmp_path / "a" / SITE_FILE
    assert [p.name for p in (tmp_path / "a").iterdir()] == [SITE_FILE]  # no temp files left
    loaded = load_site(tmp_path / "a", input_shape=(1, 6, 7, 6))
    assert (loaded.name, loaded.task) == (site.name, site.task)
    for field in ("x_train", "y_train", "x_val", "y_val"):
        assert torch.equal(getattr(loaded, field), getattr(site, field))
        assert getattr(loaded, field).dtype == getattr(site, field).dtype
    assert load_site(written, input_shape=(6, 7, 6)).num_samples == 5


def test_classification_round_trip_and_overwrite(tmp_path: Path) -> None:
    site = SiteData(
        "s",
        "classification",
        torch.rand(4, 1, 8, 8),
        torch.tensor([0, 1, 2, 3]),
        torch.rand(1, 1, 8, 8),
        torch.tensor([9]),
    )
    save_site(regression_site(), tmp_path)
    save_site(site, tmp_path)
    loaded = load_site(tmp_path)
    assert loaded.task == "classification" and loaded.y_train.dtype == torch.int64
    assert torch.equal(loaded.y_val, torch.tensor([9]))


def test_folder_with_participants_uses_the_nifti_loader(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    for i in range(3):
        write_nifti(tmp_path / f"sub-{i}" / "anat" / f"sub-{i}_T1w.nii.gz", seed=i)
    write_participants(tmp_path, "participant_id\tage\nsub-0\t30\nsub-1\t40\nsub-2\t50\n")
    site = load_site(tmp_path, input_shape=(1, 10, 12, 10), val_fraction=0.34)
    assert site.input_shape == (1, 10, 12, 10) and site.name == tmp_path.name
    assert len(site.y_train) == 2 and len(site.y_val) == 1


def test_shape_mismatch_and_missing_data_are_explained(tmp_path: Path) -> None:
    save_site(regression_site(), tmp_path / "a")
    with pytest.raises(DataError, match=r"holds inputs of shape \(1, 6, 7, 6\).*\(1, 48, 56, 48\)"):
        load_site(tmp_path / "a", input_shape=(1, 48, 56, 48))
    with pytest.raises(DataError, match="does not exist"):
        load_site(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"neither participants\.tsv .* nor site\.npz"):
        load_site(tmp_path / "empty")


def test_data_pointing_at_one_file_is_explained(tmp_path: Path, write_nifti: NiftiWriter) -> None:
    volume = write_nifti(tmp_path / "sub-0_T1w.nii.gz", seed=0)
    with pytest.raises(DataError, match=r"one NIfTI volume; a site's data is a folder"):
        load_site(volume)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="is not a site folder"):
        load_site(tmp_path / "notes.txt")


def test_corrupt_or_incomplete_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / SITE_FILE).write_bytes(b"PK\x03\x04 nonsense")
    with pytest.raises(DataError, match=r"cannot read site file .*bad.*site\.npz"):
        load_site(tmp_path / "bad")
    (tmp_path / "partial").mkdir()
    np.savez(tmp_path / "partial" / SITE_FILE, x_train=np.zeros((1, 2)))
    with pytest.raises(DataError, match="lacks array"):
        load_site(tmp_path / "partial")
