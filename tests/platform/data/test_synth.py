"""``data synth``: BIDS-style hospitals from the demo's generator, read back by the loaders."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.data import load_site
from fedsparsify.platform.data.brainage import (
    TEST_INDEX_OFFSET,
    default_site_profiles,
    generate_subject,
)
from fedsparsify.platform.data.nifti import load_nifti_site
from fedsparsify.platform.data.synth import synth_shape, write_synthetic_federation
from fedsparsify.platform.data.template import output_grid

SHAPE = (24, 28, 24)


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "participants.tsv").open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def test_sites_and_heldout_are_bids_folders_the_loaders_read(tmp_path: Path) -> None:
    folders = write_synthetic_federation(tmp_path, sites=2, subjects=5, heldout=3, shape=SHAPE)
    assert [f.path.name for f in folders] == ["site-0", "site-1", "heldout"]
    assert [f.subjects for f in folders] == [5, 5, 3]
    profiles = default_site_profiles(2)
    rows = _rows(tmp_path / "site-1")
    assert list(rows[0]) == ["participant_id", "age", "site"]
    assert [r["participant_id"] for r in rows] == [f"sub-s1n{i:03d}" for i in range(5)]
    # independent: the generator's subject 2 of site 1, voxel for voxel, and its age
    volume, age = generate_subject(profiles[1], 2, shape=SHAPE)
    image = nib.load(str(tmp_path / "site-1" / "sub-s1n002" / "anat" / "sub-s1n002_T1w.nii.gz"))
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume)
    np.testing.assert_allclose(image.affine, output_grid(SHAPE).affine)
    assert "".join(nib.aff2axcodes(image.affine)) == "RAS"
    assert float(rows[2]["age"]) == pytest.approx(age, abs=0.005)
    assert {r["site"] for r in rows} == {"site-1"}
    # the held-out subjects come round-robin from every site's population, never trained on
    held = _rows(tmp_path / "heldout")
    assert [r["site"] for r in held] == ["site-0", "site-0", "site-1"]
    _, held_age = generate_subject(profiles[1], TEST_INDEX_OFFSET, shape=SHAPE)
    assert float(held[2]["age"]) == pytest.approx(held_age, abs=0.005)
    site = load_site(tmp_path / "site-0", input_shape=(1, *SHAPE))
    assert site.name == "site-0" and site.num_samples == 4 and site.input_shape == (1, *SHAPE)
    heldout = load_nifti_site(tmp_path / "heldout", shape=SHAPE, val_fraction=0.0)
    assert heldout.num_samples == 3


def test_an_occupied_folder_and_bad_arguments_are_refused(tmp_path: Path) -> None:
    write_synthetic_federation(tmp_path, sites=1, subjects=4, heldout=0, shape=SHAPE)
    with pytest.raises(DataError, match="already holds site folders"):
        write_synthetic_federation(tmp_path, sites=1, subjects=4, heldout=0, shape=SHAPE)
    with pytest.raises(ConfigError, match="at least 1 site and 4 subjects"):
        write_synthetic_federation(tmp_path / "b", sites=1, subjects=2, heldout=0)
    assert synth_shape("demo") == SHAPE and synth_shape("full") == (91, 109, 91)
    assert synth_shape("32x40x32") == (32, 40, 32)
    with pytest.raises(ConfigError, match="full, demo or DxHxW"):
        synth_shape("big")
