"""Synthetic hospitals on disk: BIDS-style NIfTI site folders from the brain-age generator.

``fedsparsify data synth`` writes, under one folder,

- ``site-K/``: one hospital each, ``participants.tsv`` (``participant_id``, ``age``, ``site``)
  and ``sub-X/anat/sub-X_T1w.nii.gz``, the subjects of :func:`.brainage.default_site_profiles`'s
  site K (its own scanner and ages, as in the demo),
- ``heldout/``: the same layout for subjects drawn round-robin from every site's population,
  never trained on, for ``fedsparsify predict``,

each with a ``dataset_description.json``. Volumes are the generator's raw scanner intensities
(float32) on its MNI-space output grid (:func:`.template.output_grid`), RAS+ with the grid's
affine as sform and qform. A client reads a site folder through :func:`.nifti.load_nifti_site`
like any hospital's data; nothing here is needed to read it back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.data.brainage import (
    COARSE_SHAPE,
    TEST_INDEX_OFFSET,
    SiteProfile,
    default_site_profiles,
    generate_site_volumes,
)
from fedsparsify.platform.data.nifti import PARTICIPANTS_FILE
from fedsparsify.platform.data.template import output_grid

__all__ = ["FULL_SHAPE", "SHAPES", "SynthFolder", "synth_shape", "write_synthetic_federation"]

logger = logging.getLogger(__name__)

#: The full-size BrainAge input (2 mm MNI-sized grid) and the demo's reduced one.
FULL_SHAPE: tuple[int, int, int] = (91, 109, 91)
SHAPES: dict[str, tuple[int, int, int]] = {"full": FULL_SHAPE, "demo": COARSE_SHAPE}
HELDOUT_FOLDER = "heldout"
_MNI_XFORM_CODE = 4  # NIfTI "mni_152": the grid is in MNI space


@dataclass(frozen=True)
class SynthFolder:
    """One written folder: where, how many subjects, and their age range."""

    path: Path
    subjects: int
    age_min: float
    age_max: float


def synth_shape(name: str) -> tuple[int, int, int]:
    """``full``, ``demo`` or ``DxHxW`` → a volume shape."""
    if name in SHAPES:
        return SHAPES[name]
    try:
        dims = tuple(int(n) for n in name.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 8:
        raise ConfigError(f"shape must be full, demo or DxHxW (each at least 8), not {name!r}")
    return dims[0], dims[1], dims[2]


def _write_volume(path: Path, volume: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(volume.astype(np.float32), affine)
    image.header.set_xyzt_units("mm")
    image.set_sform(affine, code=_MNI_XFORM_CODE)
    image.set_qform(affine, code=_MNI_XFORM_CODE)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def _write_folder(
    root: Path,
    rows: Sequence[tuple[str, float, str, np.ndarray]],
    affine: np.ndarray,
    description: str,
) -> SynthFolder:
    root.mkdir(parents=True, exist_ok=True)
    lines = ["participant_id\tage\tsite"]
    ages = []
    for pid, age, site, volume in rows:
        _write_volume(root / pid / "anat" / f"{pid}_T1w.nii.gz", volume, affine)
        lines.append(f"{pid}\t{age:.2f}\t{site}")
        ages.append(round(age, 2))
    (root / PARTICIPANTS_FILE).write_text("\n".join(lines) + "\n")
    meta = {
        "Name": description,
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "GeneratedBy": [{"Name": "fedsparsify data synth"}],
    }
    (root / "dataset_description.json").write_text(json.dumps(meta, indent=1) + "\n")
    return SynthFolder(root, len(rows), min(ages), max(ages))


def _site_rows(
    profile: SiteProfile,
    indices: range,
    prefix: str,
    *,
    seed: int,
    shape: tuple[int, int, int],
) -> list[tuple[str, float, str, np.ndarray]]:
    x, ages = generate_site_volumes(profile, indices, seed=seed, shape=shape)
    return [
        (f"sub-{prefix}{row:03d}", float(age), profile.name, x[row]) for row, age in enumerate(ages)
    ]


def write_synthetic_federation(
    out: Path,
    *,
    sites: int,
    subjects: int,
    heldout: int,
    shape: Sequence[int] = COARSE_SHAPE,
    seed: int = 0,
) -> list[SynthFolder]:
    """Write ``sites`` site folders of ``subjects`` subjects each and a ``heldout`` folder.

    Refuses to write into a folder that already holds site folders, so nothing is mixed or
    overwritten. Deterministic in the arguments: the same call writes the same volumes.
    """
    if sites < 1 or subjects < 4:
        raise ConfigError(f"need at least 1 site and 4 subjects per site, got {sites}, {subjects}")
    if heldout < 0:
        raise ConfigError(f"held-out subjects must be >= 0, got {heldout}")
    grid = output_grid(shape)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    taken = [p.name for p in (out.iterdir() if out.is_dir() else ()) if p.is_dir()]
    if any(name.startswith("site-") or name == HELDOUT_FOLDER for name in taken):
        raise DataError(f"{out} already holds site folders: choose an empty or new folder")
    try:
        return _write_all(out, sites=sites, subjects=subjects, heldout=heldout, shape=grid.shape,
                          affine=grid.affine, seed=seed)  # fmt: skip
    except OSError as exc:
        raise DataError(f"cannot write the synthetic sites to {out}: {exc}") from exc


def _write_all(
    out: Path,
    *,
    sites: int,
    subjects: int,
    heldout: int,
    shape: tuple[int, int, int],
    affine: np.ndarray,
    seed: int,
) -> list[SynthFolder]:
    profiles = default_site_profiles(sites, seed=seed)
    written = []
    for k, profile in enumerate(profiles):
        rows = _site_rows(profile, range(subjects), f"s{k}n", seed=seed, shape=shape)
        written.append(_write_folder(out / profile.name, rows, affine, f"synthetic {profile.name}"))
        logger.info("wrote %s: %d subjects", out / profile.name, subjects)
    if heldout:
        rows = []
        for k, profile in enumerate(profiles):
            count = heldout // sites + (1 if k < heldout % sites else 0)
            indices = range(TEST_INDEX_OFFSET, TEST_INDEX_OFFSET + count)
            rows += _site_rows(profile, indices, f"h{k}n", seed=seed, shape=shape)
        written.append(
            _write_folder(out / HELDOUT_FOLDER, rows, affine, "synthetic held-out subjects")
        )
    return written
