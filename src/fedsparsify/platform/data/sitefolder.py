"""A site's data folder: what a client process (``fedsparsify client --data DIR``) reads.

A folder holds either

- ``site.npz`` written by :func:`save_site` (arrays ``x_train``, ``y_train``, ``x_val``,
  ``y_val`` and a JSON ``meta`` string with the site's name, task and format version), or
- a NIfTI collection with ``participants.tsv`` (see :mod:`.nifti`), which :func:`load_site`
  loads, resamples to the model's input shape and splits.

The simulation launcher writes one folder per simulated site, so every client, simulated or real,
starts the same way.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch

from fedsparsify.errors import DataError
from fedsparsify.platform.data._io import atomic_save_npz
from fedsparsify.platform.data.nifti import PARTICIPANTS_FILE, load_nifti_site
from fedsparsify.platform.data.sitedata import SiteData, Task

__all__ = ["SITE_FILE", "load_site", "save_site"]

logger = logging.getLogger(__name__)

SITE_FILE = "site.npz"
FORMAT_VERSION = 1
_ARRAYS = ("x_train", "y_train", "x_val", "y_val")
_DEFAULT_NIFTI_SHAPE = (48, 56, 48)


def save_site(site: SiteData, path: Path) -> Path:
    """Write ``site`` into folder ``path`` (created if needed) atomically; return the file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{path} exists and is not a folder")
    meta = {"format_version": FORMAT_VERSION, "name": site.name, "task": site.task}
    arrays = {name: getattr(site, name).detach().cpu().numpy() for name in _ARRAYS}
    arrays["meta"] = np.asarray(json.dumps(meta))
    target = path / SITE_FILE
    try:
        atomic_save_npz(target, arrays)
    except OSError as exc:
        raise DataError(f"cannot write site data to {target}: {exc}") from exc
    return target


def _spatial_shape(input_shape: Sequence[int] | None) -> tuple[int, ...]:
    if input_shape is None:
        return _DEFAULT_NIFTI_SHAPE
    dims = tuple(int(s) for s in input_shape)
    return dims[1:] if len(dims) == 4 and dims[0] == 1 else dims


def load_site(
    path: Path,
    *,
    input_shape: Sequence[int] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> SiteData:
    """A client's data from folder ``path`` (or a ``site.npz`` file).

    ``input_shape`` is the model's input, with or without the channel axis (``(1, 48, 56, 48)``
    or ``(48, 56, 48)``). NIfTI folders are resampled to it (default 48x56x48) and split with
    ``val_fraction`` and ``seed``; saved sites must already have it, or a :class:`DataError`
    says which shape they hold.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"site data {path} does not exist")
    if path.is_dir() and (path / PARTICIPANTS_FILE).is_file():
        return load_nifti_site(
            path, shape=_spatial_shape(input_shape), val_fraction=val_fraction, seed=seed
        )
    if path.is_file() and path.name.endswith((".nii", ".nii.gz")):
        raise DataError(
            f"{path} is one NIfTI volume; a site's data is a folder: put the volumes in "
            f"sub-X/anat/sub-X_T1w.nii.gz and list them in {PARTICIPANTS_FILE} (participant_id, "
            "age), then pass the folder (`fedsparsify data synth` writes an example)"
        )
    file = path / SITE_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(
            f"{path} holds neither {PARTICIPANTS_FILE} with NIfTI volumes nor {SITE_FILE} "
            "(`fedsparsify data synth` writes examples of both)"
        )
    if file.suffix != ".npz":
        raise DataError(
            f"{path} is not a site folder: pass a folder with {PARTICIPANTS_FILE} and NIfTI "
            f"volumes, or one with {SITE_FILE}"
        )
    site = _read_npz(file)
    if input_shape is not None:
        want = tuple(int(s) for s in input_shape)
        if want not in (site.input_shape, site.input_shape[1:]):
            raise DataError(
                f"{file} holds inputs of shape {site.input_shape}; the model expects "
                f"{tuple(input_shape)}"
            )
    logger.info(
        "%s: %d train, %d val samples from %s", site.name, site.num_samples, len(site.y_val), file
    )
    return site


def _read_npz(file: Path) -> SiteData:
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = [k for k in (*_ARRAYS, "meta") if k not in archive.files]
            if missing:
                raise DataError(f"{file} lacks array(s) {', '.join(missing)}")
            arrays = {k: archive[k] for k in _ARRAYS}
            meta = json.loads(str(archive["meta"]))
    except DataError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read site file {file}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("task") not in ("classification", "regression"):
        raise DataError(f"{file}: meta must name a task 'classification' or 'regression'")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise DataError(f"{file} has format version {meta['format_version']}; upgrade fedsparsify")
    for split in ("train", "val"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[:1] != y.shape[:1]:
            raise DataError(f"{file}: x_{split} has {len(x)} rows but y_{split} has {len(y)}")
    if arrays["x_train"].shape[1:] != arrays["x_val"].shape[1:]:
        raise DataError(f"{file}: train and validation inputs differ in shape")
    return SiteData(
        name=str(meta.get("name", file.parent.name)),
        task=cast(Task, meta["task"]),
        x_train=torch.from_numpy(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"]),
        x_val=torch.from_numpy(arrays["x_val"]),
        y_val=torch.from_numpy(arrays["y_val"]),
    )
