"""Brain age from T1 scans with an exported model (what ``fedsparsify predict`` runs).

Each scan is checked against the model's input grid (:class:`ModelGrid`, from the model card):
it must be one 3-D volume with a usable voxel-to-world affine. A scan in another orientation is
reoriented to RAS+ (nibabel) and one on another grid is resampled to the model's (the brain's
box fitted to the model's shape): the same preparation a site applies to its NIfTI training
data (:func:`.data.nifti.conform_volume`), so the model reads what it was trained on. Every
row of the output says what was done to its scan. Where the chronological age is known, the
row has the brain-age gap, raw and with the model card's age-bias correction (:mod:`.agebias`).
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsparsify.errors import DataError
from fedsparsify.platform.agebias import AgeBias
from fedsparsify.platform.data.nifti import (
    canonical_id,
    conform_volume,
    find_volumes,
    read_nifti,
    read_participants_table,
)
from fedsparsify.platform.data.template import output_grid
from fedsparsify.platform.modelfile import ExportedModel
from fedsparsify.platform.training import predict_outputs

__all__ = [
    "CSV_COLUMNS",
    "ModelGrid",
    "Prediction",
    "PreparedScan",
    "Scan",
    "find_scans",
    "predict",
    "prepare_scan",
    "read_ages",
    "write_predictions_csv",
]

logger = logging.getLogger(__name__)

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_VOXEL_RTOL = 0.02
_BATCH = 8  # scans prepared and predicted at a time: memory stays flat in the folder's size
CSV_COLUMNS = (
    "scan",
    "participant_id",
    "predicted_age",
    "age",
    "brain_age_gap_raw",
    "brain_age_gap_corrected",
    "predicted_age_corrected",
    "notes",
)


@dataclass(frozen=True)
class ModelGrid:
    """The voxel grid a model reads: shape, isotropic voxel size, orientation, affine."""

    shape: tuple[int, int, int]
    voxel_mm: float
    orientation: str = "RAS"
    affine: tuple[tuple[float, ...], ...] = ()

    @classmethod
    def for_shape(cls, shape: Sequence[int]) -> ModelGrid:
        """The MNI-space grid of ``shape`` that the synthetic data and ``data synth`` use."""
        dims = tuple(int(n) for n in shape)
        grid = output_grid(dims[1:] if len(dims) == 4 else dims)
        affine = tuple(tuple(round(float(v), 6) for v in row) for row in grid.affine)
        return cls(shape=grid.shape, voxel_mm=round(grid.voxel_mm, 6), affine=affine)

    def to_json(self) -> dict[str, Any]:
        """For the model card."""
        return {
            "shape": list(self.shape),
            "voxel_mm": self.voxel_mm,
            "orientation": self.orientation,
            "affine": [list(row) for row in self.affine],
        }

    @classmethod
    def from_json(cls, data: Any) -> ModelGrid:
        """Read :meth:`to_json`'s output; :class:`DataError` if malformed."""
        try:
            shape = tuple(int(n) for n in data["shape"])
            grid = cls(
                shape=(shape[0], shape[1], shape[2]),
                voxel_mm=float(data["voxel_mm"]),
                orientation=str(data.get("orientation", "RAS")),
                affine=tuple(tuple(float(v) for v in row) for row in data.get("affine", ())),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(f"the model card's input grid is malformed: {exc}") from exc
        if len(shape) != 3 or not grid.voxel_mm > 0:
            raise DataError(f"the model card's input grid is malformed: {data!r}")
        return grid

    def describe(self) -> str:
        """e.g. ``24x28x24 at 6.96 mm, RAS``."""
        return f"{_dims(self.shape)} at {self.voxel_mm:.2f} mm, {self.orientation}"


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(int(n)) for n in shape)


@dataclass(frozen=True)
class Scan:
    """One input file and the participant it belongs to."""

    scan_id: str
    participant_id: str
    path: Path


@dataclass(frozen=True)
class PreparedScan:
    """A scan as the model reads it, and what was done to get there."""

    scan: Scan
    volume: np.ndarray
    notes: tuple[str, ...]


@dataclass
class Prediction:
    """One output row."""

    scan: Scan
    predicted_age: float | None = None
    age: float | None = None
    gap_raw: float | None = None
    gap_corrected: float | None = None
    age_corrected: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The scan could be used."""
        return self.predicted_age is not None


def _strip(name: str) -> str:
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _participant_of(path: Path) -> str:
    for part in reversed(path.parts[:-1]):
        if part.startswith("sub-"):
            return part
    return canonical_id(_strip(path.name).split("_", 1)[0])


def find_scans(source: Path) -> list[Scan]:
    """One NIfTI file, or every scan of a folder (BIDS ``sub-X/[ses-Y/]anat/*T1w.nii[.gz]`` or
    flat ``sub-X[_*].nii[.gz]``)."""
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source} does not exist")
    if source.is_file():
        if not source.name.endswith(_NIFTI_SUFFIXES):
            raise DataError(f"{source} is not a NIfTI file (.nii or .nii.gz) nor a folder")
        return [Scan(_strip(source.name), _participant_of(source), source)]
    found = find_volumes(source)
    scans = [
        Scan(_strip(path.name), pid, path) for pid in sorted(found) for path in sorted(found[pid])
    ]
    if not scans:
        raise DataError(
            f"{source} holds no T1 scans (expected sub-X/anat/*T1w.nii.gz or sub-X.nii.gz)"
        )
    return scans


def read_ages(table: Path) -> dict[str, float]:
    """Chronological ages by participant id from a participants table (non-numeric: left out)."""
    ages: dict[str, float] = {}
    for row in read_participants_table(Path(table)):
        try:
            age = float(row["age"])
        except ValueError:
            continue
        if math.isfinite(age) and row["participant_id"]:
            ages[canonical_id(row["participant_id"])] = age
    return ages


def _check(image: Any, grid: ModelGrid, source: Path) -> list[str]:
    import nibabel as nib

    notes: list[str] = []
    shape = tuple(int(n) for n in image.shape)
    if len(shape) == 4 and shape[3] == 1:
        notes.append("4-D file with a single volume, read as 3-D")
        shape = shape[:3]
    elif len(shape) == 4:
        raise DataError(
            f"{source} is a 4-D series of {shape[3]} volumes ({_dims(shape)}); predict reads "
            "one 3-D T1 volume per file: split the series and pass the volume to use"
        )
    elif len(shape) != 3:
        raise DataError(f"{source} is a {len(shape)}-D image ({_dims(shape)}); need one 3-D T1")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(f"{source} has no usable voxel-to-world affine (check its sform/qform)")
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    if min(shape) < 2 or not all(z > 0 and math.isfinite(z) for z in zooms):
        raise DataError(f"{source}: shape {_dims(shape)} with voxels {zooms} mm is not a volume")
    orientation = "".join(nib.aff2axcodes(affine))
    if orientation != grid.orientation:
        notes.append(f"reoriented from {orientation} to {grid.orientation}")
    # shape and voxel sizes once reoriented: input axis i becomes RAS axis ornt[i, 0]
    ras_shape, ras_zooms = [0, 0, 0], [0.0, 0.0, 0.0]
    for axis, (target, _flip) in enumerate(nib.orientations.io_orientation(affine)):
        ras_shape[int(target)], ras_zooms[int(target)] = shape[axis], zooms[axis]
    same_size = all(abs(z - grid.voxel_mm) <= _VOXEL_RTOL * grid.voxel_mm for z in ras_zooms)
    if tuple(ras_shape) != grid.shape or not same_size:
        voxels = "x".join(f"{z:.2f}" for z in ras_zooms)
        notes.append(f"resampled from {_dims(ras_shape)} at {voxels} mm to {grid.describe()}")
    elif orientation == grid.orientation:
        notes.append("on the model's grid")
    if max(zooms) > 2.0 * grid.voxel_mm:
        notes.append("coarser than the model's grid: detail it was trained on is missing")
    return notes


def prepare_scan(scan: Scan, grid: ModelGrid) -> PreparedScan:
    """Check one scan against ``grid`` and prepare it; :class:`DataError` if it cannot be used."""
    image = read_nifti(scan.path)
    notes = _check(image, grid, scan.path)
    volume = conform_volume(image, grid.shape, source=scan.path)
    if not np.any(volume):
        raise DataError(f"{scan.path} holds no image (constant intensity)")
    return PreparedScan(scan, volume, tuple(notes))


def _forward(model: torch.nn.Module, volumes: list[np.ndarray]) -> list[float]:
    if not volumes:
        return []
    x = torch.from_numpy(np.stack(volumes)).unsqueeze(1)
    return [float(v) for v in predict_outputs(model, x, batch_size=_BATCH).reshape(-1)]


def predict(
    exported: ExportedModel, scans: Sequence[Scan], ages: dict[str, float] | None = None
) -> list[Prediction]:
    """One :class:`Prediction` per scan; a scan that cannot be used gets its reason as a note."""
    if exported.spec.model.kind != "brainage":
        raise DataError(f"{exported.path} is a {exported.spec.model.kind} model, not brain age")
    grid = ModelGrid.from_json(exported.card["input"])
    bias = exported.age_bias
    rows = [Prediction(scan) for scan in scans]
    for start in range(0, len(rows), _BATCH):
        ready: list[tuple[Prediction, PreparedScan]] = []
        for row in rows[start : start + _BATCH]:
            try:
                prepared = prepare_scan(row.scan, grid)
            except DataError as exc:
                row.notes.append(f"error: {exc}")
                continue
            row.notes += prepared.notes
            ready.append((row, prepared))
        predicted = _forward(exported.model, [p.volume for _, p in ready])
        for (row, _), value in zip(ready, predicted, strict=True):
            _fill(row, value, ages, bias)
    return rows


def _fill(
    row: Prediction, value: float, ages: dict[str, float] | None, bias: AgeBias | None
) -> None:
    row.predicted_age = value
    age = (ages or {}).get(row.scan.participant_id)
    if age is None:
        if ages:
            row.notes.append("no age in the participants table")
        return
    row.age = age
    row.gap_raw = value - age
    if bias is not None:
        row.gap_corrected = bias.corrected_gap(value, age)
        row.age_corrected = age + row.gap_corrected


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def write_predictions_csv(rows: Sequence[Prediction], out: Path) -> Path:
    """Write ``rows`` as CSV (owner-only: predictions are patient data)."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                writer.writerow(
                    [
                        row.scan.scan_id,
                        row.scan.participant_id,
                        _cell(row.predicted_age),
                        _cell(row.age),
                        _cell(row.gap_raw),
                        _cell(row.gap_corrected),
                        _cell(row.age_corrected),
                        "; ".join(row.notes),
                    ]
                )
        tmp.replace(out)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc}") from exc
    return out
