"""Real data: a folder of T1 NIfTI volumes described by a BIDS-style ``participants.tsv``.

``participants.tsv`` is tab-separated with a header; required columns ``participant_id`` and
``age`` (years, numeric), optional ``site``; other columns are ignored. Ids are matched with or
without BIDS's ``sub-`` prefix. Each participant's volume is looked for, in this order:

1. ``<root>/sub-XXX/anat/*T1w.nii[.gz]``          (BIDS)
2. ``<root>/sub-XXX/ses-*/anat/*T1w.nii[.gz]``    (BIDS with sessions; the first session)
3. ``<root>/sub-XXX.nii[.gz]`` or ``<root>/sub-XXX_<anything>.nii[.gz]``  (flat folder)

Where a participant has several, the first in sorted order is used and a warning is logged.
Every NIfTI of those layouts must belong to a row and every row must have a NIfTI; otherwise a
:class:`DataError` names the strays. Volumes are reoriented to RAS+, cropped to the foreground
box, zoomed to the model's input shape and z-scored (:mod:`.preprocess`), exactly as the synthetic
volumes are prepared, so a model trained on one can be evaluated on the other.
"""

from __future__ import annotations

import csv
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.data.preprocess import fit_to_shape, zscore
from fedsparsify.platform.data.sitedata import FederatedData, SiteData

__all__ = [
    "PARTICIPANTS_FILE",
    "Participant",
    "canonical_id",
    "conform_volume",
    "find_volumes",
    "load_nifti_federation",
    "load_nifti_site",
    "load_nifti_volume",
    "read_nifti",
    "read_participants",
    "read_participants_table",
]

logger = logging.getLogger(__name__)

PARTICIPANTS_FILE = "participants.tsv"
REQUIRED_COLUMNS = ("participant_id", "age")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_MAX_NAMED = 5


@dataclass(frozen=True)
class Participant:
    """One row of ``participants.tsv`` joined with the volume found for it."""

    participant_id: str
    age: float
    site: str | None
    path: Path


def canonical_id(raw: str) -> str:
    """A participant id with BIDS's ``sub-`` prefix (added when missing)."""
    raw = raw.strip()
    return raw if raw.startswith("sub-") else f"sub-{raw}"


def _name_some(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    return shown + (f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else "")


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith(_NIFTI_SUFFIXES)


def _strip_suffix(name: str) -> str:
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_table(root: Path) -> list[dict[str, str]]:
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder")
    table = root / PARTICIPANTS_FILE
    if not table.is_file():
        raise DataError(f"{root} has no {PARTICIPANTS_FILE} (columns participant_id, age[, site])")
    return read_participants_table(table)


def read_participants_table(table: Path) -> list[dict[str, str]]:
    """The rows of a tab-separated participants table with ``participant_id`` and ``age``."""
    try:
        with table.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            fields = [f.strip() for f in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in fields]
            if missing:
                raise DataError(
                    f"{table} lacks column(s) {', '.join(missing)}; it has "
                    f"{', '.join(fields) or 'no header'} (tab-separated, header first)"
                )
            rows = [
                {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                for row in reader
                if any((v or "").strip() for v in row.values() if isinstance(v, str))
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {table}: {exc}") from exc
    if not rows:
        raise DataError(f"{table} lists no participants")
    return rows


def find_volumes(root: Path) -> dict[str, list[Path]]:
    """Every NIfTI of the accepted layouts, by canonical subject id."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.startswith("sub-"):
            candidates = sorted(entry.glob("anat/*T1w.nii*")) + sorted(
                entry.glob("ses-*/anat/*T1w.nii*")
            )
            for path in candidates:
                if _is_nifti(path):
                    found.setdefault(canonical_id(entry.name), []).append(path)
        elif _is_nifti(entry):
            subject = _strip_suffix(entry.name).split("_", 1)[0]
            found.setdefault(canonical_id(subject), []).append(entry)
    return found


def read_participants(root: Path) -> list[Participant]:
    """Parse ``participants.tsv`` and pair each row with its volume, checking both ways."""
    root = Path(root)
    rows = _read_table(root)
    has_site = "site" in rows[0]
    ages: dict[str, float] = {}
    sites: dict[str, str | None] = {}
    bad_ages, duplicates = [], []
    for row in rows:
        if not row["participant_id"]:
            raise DataError(f"{root / PARTICIPANTS_FILE} has a row with an empty participant_id")
        pid = canonical_id(row["participant_id"])
        if pid in ages or pid in bad_ages:
            duplicates.append(pid)
            continue
        try:
            age = float(row["age"])
        except ValueError:
            age = math.nan
        if not math.isfinite(age):
            bad_ages.append(f"{pid} ({row['age']!r})")
            continue
        ages[pid] = age
        sites[pid] = (row.get("site") or None) if has_site else None
    if duplicates:
        raise DataError(f"{PARTICIPANTS_FILE} repeats participant_id {_name_some(duplicates)}")
    if bad_ages:
        raise DataError(f"{PARTICIPANTS_FILE}: non-numeric age for {_name_some(bad_ages)}")

    volumes = find_volumes(root)
    no_volume = sorted(pid for pid in ages if pid not in volumes)
    no_row = sorted(f"{pid} ({volumes[pid][0].name})" for pid in volumes if pid not in ages)
    problems = []
    if no_volume:
        problems.append(
            f"{len(no_volume)} participant(s) without a volume: {_name_some(no_volume)} "
            "(expected sub-XXX/anat/*T1w.nii[.gz] or sub-XXX[_*].nii[.gz])"
        )
    if no_row:
        problems.append(
            f"{len(no_row)} volume(s) without a {PARTICIPANTS_FILE} row: {_name_some(no_row)}"
        )
    if problems:
        raise DataError(f"{root}: " + "; ".join(problems))

    participants = []
    for pid in sorted(ages):
        paths = volumes[pid]
        if len(paths) > 1:
            logger.warning("%s has %d volumes; using %s", pid, len(paths), paths[0])
        participants.append(Participant(pid, ages[pid], sites[pid], paths[0]))
    return participants


def load_nifti_volume(path: Path, shape: Sequence[int]) -> np.ndarray:
    """Read one NIfTI, reorient to RAS+, fit to ``shape`` and z-score (float32)."""
    return conform_volume(read_nifti(path), shape, source=path)


def read_nifti(path: Path) -> Any:
    """A NIfTI image (``nibabel``), its header read; :class:`DataError` if it cannot be."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        return nib.load(str(path))
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot read NIfTI file {path}: {exc}") from exc


def conform_volume(image: Any, shape: Sequence[int], *, source: Path) -> np.ndarray:
    """What a model reads from ``image``: RAS+, the brain's box fitted to ``shape``, z-scored."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    try:
        image = nib.as_closest_canonical(image)
        data = np.asarray(image.get_fdata(dtype=np.float32))
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot read NIfTI file {source}: {exc}") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{source} holds a {data.ndim}-D image of shape {data.shape}; need 3-D")
    if min(data.shape) < 2:
        raise DataError(f"{source} is too small to be a volume: shape {data.shape}")
    return zscore(fit_to_shape(data, zooms, shape))


def _spatial(shape: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(int(s) for s in shape)
    if len(dims) == 4 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) != 3 or min(dims) < 4:
        raise ConfigError(f"input shape must be (D, H, W) or (1, D, H, W), got {tuple(shape)}")
    return dims[0], dims[1], dims[2]


def _load(participants: Sequence[Participant], shape: tuple[int, int, int]) -> np.ndarray:
    x = np.empty((len(participants), 1, *shape), dtype=np.float32)
    for row, participant in enumerate(participants):
        x[row, 0] = load_nifti_volume(participant.path, shape)
    return x


def _split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled (rest, held-out) index arrays; held-out gets round(n * fraction), at least one
    when ``fraction`` > 0, and never everything."""
    order = rng.permutation(n)
    held = min(max(1, round(n * fraction)), n - 1) if fraction > 0 and n > 1 else 0
    return np.sort(order[held:]), np.sort(order[:held])


def _site_data(
    name: str,
    participants: Sequence[Participant],
    shape: tuple[int, int, int],
    val_fraction: float,
    rng: np.random.Generator,
) -> SiteData:
    train, val = _split(len(participants), val_fraction, rng)
    x = torch.from_numpy(_load(participants, shape))
    y = torch.tensor([p.age for p in participants], dtype=torch.float32)
    logger.info("%s: %d NIfTI subjects (%d train, %d val)", name, len(y), len(train), len(val))
    tr, va = torch.from_numpy(train), torch.from_numpy(val)
    return SiteData(name, "regression", x[tr], y[tr], x[va], y[va])


def load_nifti_site(
    root: Path,
    *,
    shape: Sequence[int] = (48, 56, 48),
    val_fraction: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> SiteData:
    """All participants of a folder as one site (the ``site`` column, if any, is ignored).

    The train/validation split is a seeded shuffle of the participants sorted by id. The site's
    name is ``name``, else the ``site`` column's value when there is exactly one, else the
    folder's name.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    root = Path(root)
    participants = read_participants(root)
    if name is None:
        site_names = {p.site for p in participants if p.site}
        name = site_names.pop() if len(site_names) == 1 else root.resolve().name
    return _site_data(
        name, participants, _spatial(shape), val_fraction, np.random.default_rng(seed)
    )


def load_nifti_federation(
    root: Path,
    *,
    shape: Sequence[int] = (48, 56, 48),
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> FederatedData:
    """One site per value of the ``site`` column; the test set takes ``test_fraction`` of each.

    Splits are seeded shuffles within each site (sites in sorted order), so the result depends
    only on the folder and the arguments.
    """
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{label} must be in [0, 1), got {value}")
    root = Path(root)
    participants = read_participants(root)
    unlabelled = [p.participant_id for p in participants if p.site is None]
    if unlabelled:
        raise DataError(
            f"{root / PARTICIPANTS_FILE} needs a site column with a value for every participant "
            f"to form a federation; missing for {_name_some(unlabelled)}"
        )
    dims = _spatial(shape)
    rng = np.random.default_rng(seed)
    sites: list[SiteData] = []
    test_parts: list[Participant] = []
    for site in sorted({str(p.site) for p in participants}):
        members = [p for p in participants if p.site == site]
        keep, test = _split(len(members), test_fraction, rng)
        test_parts.extend(members[i] for i in test)
        sites.append(_site_data(site, [members[i] for i in keep], dims, val_fraction, rng))
    x_test = torch.from_numpy(_load(test_parts, dims))
    y_test = torch.tensor([p.age for p in test_parts], dtype=torch.float32)
    return FederatedData("regression", tuple(sites), x_test, y_test)
