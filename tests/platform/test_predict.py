"""Checks on the scans ``predict`` is given: 3-D only, the model's grid and orientation."""

from __future__ import annotations

import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from fedsparsify.errors import DataError
from fedsparsify.platform.agebias import AgeBias
from fedsparsify.platform.data.brainage import default_site_profiles, generate_subject
from fedsparsify.platform.data.nifti import conform_volume
from fedsparsify.platform.data.template import output_grid
from fedsparsify.platform.masks import full_mask
from fedsparsify.platform.modelfile import read_model_dir, round_state, write_model_dir
from fedsparsify.platform.models import build_model
from fedsparsify.platform.predict import (
    ModelGrid,
    Scan,
    find_scans,
    predict,
    prepare_scan,
    read_ages,
    write_predictions_csv,
)
from fedsparsify.platform.spec import FederationSpec

SHAPE = (24, 28, 24)
BIAS = AgeBias(slope=0.6, intercept=20.0, n=10, r=0.8, age_min=20.0, age_max=80.0)


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), str(path))
    return path


def _subject(index: int, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    volume, _age = generate_subject(default_site_profiles(1)[0], index, shape=shape)
    return volume, output_grid(shape).affine


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    spec = FederationSpec.model_validate(
        {
            "name": "predict test",
            "min_clients": 1,
            "quorum": 1,
            "method": "fedavg",
            "schedule": {"kind": "none"},
            "model": {"kind": "brainage", "input_shape": list(SHAPE), "width": 2},
        }
    )
    model = build_model(spec.model, seed=0)
    state, _ = round_state(model.state_dict())
    card = {
        "spec": spec.model_dump(mode="json"),
        "input": ModelGrid.for_shape(SHAPE).to_json(),
        "age_bias": BIAS.to_json(),
    }
    out = tmp_path_factory.mktemp("model") / "model"
    write_model_dir(out, state=state, mask=full_mask(model), card=card, markdown="# test\n")
    return read_model_dir(out, check_sparse=True)


def test_a_scan_on_the_models_grid_is_used_as_is(tmp_path: Path) -> None:
    path = _save(tmp_path / "sub-01_T1w.nii.gz", *_subject(1))
    prepared = prepare_scan(Scan("sub-01_T1w", "sub-01", path), ModelGrid.for_shape(SHAPE))
    assert prepared.notes == ("on the model's grid",)
    assert prepared.volume.shape == SHAPE
    assert abs(float(prepared.volume.mean())) < 1e-4
    assert abs(float(prepared.volume.std()) - 1) < 1e-3


def test_a_4d_series_is_refused_and_a_single_volume_4d_file_is_read(tmp_path: Path) -> None:
    volume, affine = _subject(1)
    series = _save(tmp_path / "sub-01_bold.nii.gz", np.stack([volume] * 3, axis=-1), affine)
    with pytest.raises(DataError, match="4-D series of 3 volumes"):
        prepare_scan(Scan("s", "sub-01", series), ModelGrid.for_shape(SHAPE))
    single = _save(tmp_path / "sub-02_T1w.nii.gz", volume[..., None], affine)
    prepared = prepare_scan(Scan("s", "sub-02", single), ModelGrid.for_shape(SHAPE))
    assert "4-D file with a single volume, read as 3-D" in prepared.notes
    flat = _save(tmp_path / "sub-03_T1w.nii.gz", volume[:, :, 0], affine)
    with pytest.raises(DataError, match="2-D image"):
        prepare_scan(Scan("s", "sub-03", flat), ModelGrid.for_shape(SHAPE))


def test_another_orientation_is_reoriented_to_exactly_the_same_input(tmp_path: Path) -> None:
    volume, affine = _subject(2)
    ras = _save(tmp_path / "ras.nii.gz", volume, affine)
    # the same voxels stored left-to-right and front-to-back flipped: LPS
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = SHAPE[0] - 1, SHAPE[1] - 1
    lps = _save(tmp_path / "lps.nii.gz", volume[::-1, ::-1, :], affine @ flip)
    assert "".join(nib.aff2axcodes(nib.load(str(lps)).affine)) == "LPS"
    grid = ModelGrid.for_shape(SHAPE)
    a = prepare_scan(Scan("ras", "sub-01", ras), grid)
    b = prepare_scan(Scan("lps", "sub-01", lps), grid)
    assert b.notes == ("reoriented from LPS to RAS",)
    np.testing.assert_array_equal(a.volume, b.volume)


def test_another_grid_is_resampled_and_said_so(tmp_path: Path) -> None:
    coarse = _save(tmp_path / "coarse.nii.gz", *_subject(3))
    fine = _save(tmp_path / "fine.nii.gz", *_subject(3, (48, 56, 48)))
    grid = ModelGrid.for_shape(SHAPE)
    a = prepare_scan(Scan("coarse", "sub-03", coarse), grid)
    b = prepare_scan(Scan("fine", "sub-03", fine), grid)
    (note,) = b.notes
    assert note == "resampled from 48x56x48 at 3.40x3.40x3.40 mm to 24x28x24 at 6.96 mm, RAS"
    assert b.volume.shape == SHAPE
    # the same subject, rendered on two grids: nearly the same model input
    assert np.corrcoef(a.volume.ravel(), b.volume.ravel())[0, 1] > 0.95


def test_unusable_scans_get_a_clear_reason(tmp_path: Path) -> None:
    volume, affine = _subject(4)
    grid = ModelGrid.for_shape(SHAPE)
    # nibabel writes only sane affines: patch the header of an uncompressed file instead
    bad = _save(tmp_path / "a.nii", volume, affine)
    header = bytearray(bad.read_bytes())
    header[252:256] = struct.pack("<hh", 0, 1)  # qform_code 0, sform_code 1 (use srow_*)
    header[280:284] = struct.pack("<f", float("nan"))  # srow_x[0]
    bad.write_bytes(bytes(header))
    with pytest.raises(DataError, match="no usable voxel-to-world affine"):
        prepare_scan(Scan("a", "sub-a", bad), grid)
    blank = _save(tmp_path / "b.nii.gz", np.zeros(SHAPE), affine)
    with pytest.raises(DataError, match="holds no image"):
        prepare_scan(Scan("b", "sub-b", blank), grid)
    (tmp_path / "c.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(DataError, match="cannot read NIfTI"):
        prepare_scan(Scan("c", "sub-c", tmp_path / "c.nii.gz"), grid)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a NIfTI file"):
        find_scans(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no T1 scans"):
        find_scans(tmp_path / "empty")


def test_predictions_gaps_and_the_csv(tmp_path: Path, exported) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "scans"
    for i in range(3):
        _save(root / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz", *_subject(10 + i))
    volume, affine = _subject(20)
    _save(root / "sub-09" / "anat" / "sub-09_T1w.nii.gz", np.stack([volume] * 2, -1), affine)
    table = tmp_path / "participants.tsv"
    table.write_text("participant_id\tage\nsub-00\t30\n01\t50.5\nsub-09\t40\n")
    scans = find_scans(root)
    assert [s.participant_id for s in scans] == ["sub-00", "sub-01", "sub-02", "sub-09"]
    rows = predict(exported, scans, read_ages(table))
    # independent: the model's output on each conformed volume
    for row in rows[:3]:
        x = conform_volume(nib.load(str(row.scan.path)), SHAPE, source=row.scan.path)
        with torch.no_grad():
            want = float(exported.model(torch.from_numpy(x)[None, None]).reshape(()))
        assert row.predicted_age == pytest.approx(want, abs=1e-4)  # float32 at ~60 y, batched
    first, second, third, broken = rows
    assert first.age == 30 and first.gap_raw == pytest.approx(first.predicted_age - 30)
    assert first.gap_corrected == pytest.approx(first.predicted_age - (0.6 * 30 + 20))
    assert first.age_corrected == pytest.approx(30 + first.gap_corrected)
    assert second.age == 50.5
    assert third.age is None and "no age in the participants table" in third.notes
    assert not broken.ok and broken.notes[0].startswith("error: ") and "4-D" in broken.notes[0]
    out = write_predictions_csv(rows, tmp_path / "out" / "predictions.csv")
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + len(scans)
    assert lines[0].startswith("scan,participant_id,predicted_age,age,brain_age_gap_raw")
    assert lines[1].split(",")[2] == f"{first.predicted_age:.2f}"
    assert (out.stat().st_mode & 0o777) == 0o600
