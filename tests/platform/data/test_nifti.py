"""NIfTI folders: layouts, resampling, splits, and one clear error per kind of mistake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsparsify.errors import DataError
from fedsparsify.platform.data.nifti import (
    load_nifti_federation,
    load_nifti_site,
    load_nifti_volume,
    read_participants,
)

from .helpers import NiftiWriter, ParticipantsWriter, head

SHAPE = (12, 14, 12)


def bids(root: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter) -> Path:
    rows = ["participant_id\tage\tsite\tsex"]
    for i, (age, site) in enumerate([(23, "A"), (35.5, "A"), (61, "A"), (70, "B"), (82, "B")]):
        write_nifti(root / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz", seed=i)
        rows.append(f"sub-{i:02d}\t{age}\t{site}\tF")
    write_participants(root, "\n".join(rows) + "\n")
    return root


def test_bids_folder_as_one_site(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    root = bids(tmp_path / "study", write_nifti, write_participants)
    site = load_nifti_site(root, shape=SHAPE, val_fraction=0.2, seed=0, name="hospital")
    assert site.name == "hospital" and site.task == "regression"
    assert site.x_train.shape == (4, 1, *SHAPE) and site.x_val.shape == (1, 1, *SHAPE)
    ages = sorted(torch.cat([site.y_train, site.y_val]).tolist())
    assert ages == [23.0, 35.5, 61.0, 70.0, 82.0]
    flat = site.x_train.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    again = load_nifti_site(root, shape=SHAPE, val_fraction=0.2, seed=0)
    assert torch.equal(site.y_val, again.y_val) and again.name == "study"


def test_federation_by_site_column(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    root = bids(tmp_path, write_nifti, write_participants)
    fed = load_nifti_federation(root, shape=SHAPE, val_fraction=0.0, test_fraction=0.3)
    assert [s.name for s in fed.sites] == ["A", "B"]
    assert [len(s.y_train) for s in fed.sites] == [2, 1] and len(fed.y_test) == 2
    assert fed.x_test.shape == (2, 1, *SHAPE)


def test_flat_and_session_layouts_and_ids_without_prefix(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    write_nifti(tmp_path / "sub-01.nii", seed=1)
    write_nifti(tmp_path / "sub-02_T1w.nii.gz", seed=2)
    write_nifti(tmp_path / "sub-03" / "ses-1" / "anat" / "sub-03_ses-1_T1w.nii.gz", seed=3)
    write_participants(tmp_path, "participant_id\tage\n01\t40\nsub-02\t50\n03\t60\n")
    found = read_participants(tmp_path)
    assert [(p.participant_id, p.age, p.path.name) for p in found] == [
        ("sub-01", 40.0, "sub-01.nii"),
        ("sub-02", 50.0, "sub-02_T1w.nii.gz"),
        ("sub-03", 60.0, "sub-03_ses-1_T1w.nii.gz"),
    ]


def test_orientation_is_canonicalised(tmp_path: Path, write_nifti: NiftiWriter) -> None:
    data = head(0)
    data[:6] += 50.0  # a bright slab on the left (low x): orientation must survive
    ras = write_nifti(tmp_path / "ras.nii.gz", data)
    flipped_affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    flipped_affine[0, 3] = 2.0 * (data.shape[0] - 1)
    las = write_nifti(tmp_path / "las.nii.gz", data[::-1].copy(), affine=flipped_affine)
    a, b = load_nifti_volume(ras, SHAPE), load_nifti_volume(las, SHAPE)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a[: SHAPE[0] // 2].mean() > a[SHAPE[0] // 2 :].mean()


def test_missing_folder_and_table(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_participants(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"no participants\.tsv"):
        read_participants(tmp_path)


def test_missing_columns_are_named(tmp_path: Path, write_participants: ParticipantsWriter) -> None:
    write_participants(tmp_path, "participant_id\tsex\nsub-01\tF\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) age; it has participant_id, sex"):
        read_participants(tmp_path)
    write_participants(tmp_path, "subject\tyears\nsub-01\t3\n")
    with pytest.raises(DataError, match="participant_id, age"):
        read_participants(tmp_path)


def test_non_numeric_age_names_the_participant(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    write_nifti(tmp_path / "sub-01.nii.gz")
    write_nifti(tmp_path / "sub-02.nii.gz")
    write_participants(tmp_path, "participant_id\tage\nsub-01\t44\nsub-02\tn/a\n")
    with pytest.raises(DataError, match=r"non-numeric age for sub-02 \('n/a'\)"):
        read_participants(tmp_path)


def test_ids_and_volumes_that_do_not_match_are_named(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    write_nifti(tmp_path / "sub-01.nii.gz")
    write_nifti(tmp_path / "sub-09_T1w.nii.gz")
    write_participants(tmp_path, "participant_id\tage\nsub-01\t44\nsub-02\t50\nsub-03\t51\n")
    with pytest.raises(DataError) as info:
        read_participants(tmp_path)
    message = str(info.value)
    assert "2 participant(s) without a volume: sub-02, sub-03" in message
    assert "1 volume(s) without a participants.tsv row: sub-09 (sub-09_T1w.nii.gz)" in message


def test_duplicate_ids_are_named(tmp_path: Path, write_participants: ParticipantsWriter) -> None:
    write_participants(tmp_path, "participant_id\tage\nsub-01\t44\n01\t45\n")
    with pytest.raises(DataError, match="repeats participant_id sub-01"):
        read_participants(tmp_path)


def test_unreadable_file_is_named(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    write_nifti(tmp_path / "sub-01.nii.gz")
    (tmp_path / "sub-02.nii.gz").write_bytes(b"\x1f\x8b\x08 definitely not a nifti")
    write_participants(tmp_path, "participant_id\tage\nsub-01\t44\nsub-02\t50\n")
    with pytest.raises(DataError, match=r"cannot read NIfTI file .*sub-02\.nii\.gz"):
        load_nifti_site(tmp_path, shape=SHAPE)


def test_four_d_volume_is_refused(tmp_path: Path, write_nifti: NiftiWriter) -> None:
    path = write_nifti(tmp_path / "sub-01.nii.gz", np.zeros((6, 6, 6, 3), dtype=np.float32))
    with pytest.raises(DataError, match=r"4-D image .*need 3-D"):
        load_nifti_volume(path, SHAPE)


def test_federation_needs_a_site_for_everyone(
    tmp_path: Path, write_nifti: NiftiWriter, write_participants: ParticipantsWriter
) -> None:
    write_nifti(tmp_path / "sub-01.nii.gz")
    write_nifti(tmp_path / "sub-02.nii.gz")
    write_participants(tmp_path, "participant_id\tage\tsite\nsub-01\t44\tA\nsub-02\t50\t\n")
    with pytest.raises(DataError, match=r"site column .* missing for sub-02"):
        load_nifti_federation(tmp_path, shape=SHAPE)
