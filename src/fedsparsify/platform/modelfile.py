"""An exported model on disk: what ``fedsparsify export`` writes and ``predict`` reads.

A model folder holds, all owner-only:

- ``model.safetensors``: the final global model's ``state_dict``, every floating value on the
  result grid of :mod:`.round_rules` (decrypted CKKS values carry noise that must not be
  published at full precision; pruned weights stay exactly zero),
- ``mask.safetensors``: the pruning mask, one bool tensor per prunable weight,
- ``sparse.safetensors``: the same model compactly: per prunable weight ``NAME.bitmask``
  (``np.packbits`` of the row-major mask, big bit order) and ``NAME.values`` (the kept values in
  row-major order), and every other tensor dense under its own name,
- ``model-card.json`` and ``model-card.md``: format and version, the federation spec, rounds,
  sites, final sparsity and validation MAE, key-set digest, creation time, the rounding applied,
  the age-bias correction, the input grid, and the SHA-256 of each tensor file.

No file holds a pickle. :func:`read_model_dir` checks the format version and every digest
before it builds the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.agebias import AgeBias
from fedsparsify.platform.masks import Mask, check_mask, prunable_shapes
from fedsparsify.platform.models import build_model
from fedsparsify.platform.round_rules import RESULT_GRID, round_to_grid
from fedsparsify.platform.spec import FederationSpec

__all__ = [
    "CARD_JSON",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "ROUNDING_GRID",
    "ExportedModel",
    "dense_from_sparse",
    "read_model_dir",
    "round_state",
    "sparse_form",
    "write_model_dir",
]

MODEL_FORMAT = "fedsparsify-model"
MODEL_FORMAT_VERSION = 1
#: The grid every site rounds decrypted averages to (2^-18): exported values stay on it.
ROUNDING_GRID = RESULT_GRID
MODEL_FILE = "model.safetensors"
MASK_FILE = "mask.safetensors"
SPARSE_FILE = "sparse.safetensors"
CARD_JSON = "model-card.json"
CARD_MD = "model-card.md"
TENSOR_FILES = (MODEL_FILE, MASK_FILE, SPARSE_FILE)


def round_state(
    state: Mapping[str, torch.Tensor], grid: float = ROUNDING_GRID
) -> tuple[dict[str, torch.Tensor], float]:
    """Every floating tensor on the result grid (:func:`.round_rules.round_to_grid`, the rule
    sites apply to every decrypted average); and the largest change made."""
    out: dict[str, torch.Tensor] = {}
    worst = 0.0
    for name, tensor in state.items():
        t = tensor.detach().cpu()
        if t.is_floating_point() and t.numel():
            values = np.asarray(round_to_grid(t.numpy(), grid)).reshape(t.shape)
            rounded = torch.from_numpy(values).to(t.dtype)
            worst = max(worst, float((rounded.double() - t.double()).abs().max()))
            t = rounded
        out[name] = t.clone().contiguous()
    return out, worst


def sparse_form(state: Mapping[str, torch.Tensor], mask: Mask) -> dict[str, torch.Tensor]:
    """Bitmask plus kept values for each masked tensor, the others dense."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name not in mask:
            out[name] = tensor.contiguous()
            continue
        keep = mask[name].reshape(-1).numpy()
        out[f"{name}.bitmask"] = torch.from_numpy(np.packbits(keep))
        out[f"{name}.values"] = tensor.reshape(-1)[torch.from_numpy(keep)].contiguous()
    return out


def dense_from_sparse(
    tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], Mask]:
    """Invert :func:`sparse_form` for the masked tensors named in ``shapes``."""
    state: dict[str, torch.Tensor] = {}
    mask: Mask = {}
    for name, shape in shapes.items():
        try:
            bits, values = tensors[f"{name}.bitmask"], tensors[f"{name}.values"]
        except KeyError as exc:
            raise DataError(f"sparse form lacks {exc.args[0]}") from exc
        count = int(np.prod(shape))
        keep = np.unpackbits(bits.numpy(), count=count).astype(bool)
        if int(keep.sum()) != values.numel() or bits.numel() != (count + 7) // 8:
            raise DataError(f"sparse form of {name}: bitmask and values disagree")
        dense = torch.zeros(count, dtype=values.dtype)
        dense[torch.from_numpy(keep)] = values
        state[name] = dense.reshape(shape)
        mask[name] = torch.from_numpy(keep).reshape(shape)
    for name, tensor in tensors.items():
        if not name.endswith((".bitmask", ".values")) or name.rsplit(".", 1)[0] not in shapes:
            state[name] = tensor
    return state, mask


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_model_dir(
    out: Path,
    *,
    state: Mapping[str, torch.Tensor],
    mask: Mask,
    card: dict[str, Any],
    markdown: str,
) -> Path:
    """Write the model folder ``out`` (which must not exist yet), owner-only.

    ``state`` must already be rounded (:func:`round_state`); ``card`` gains the format, version
    and file digests. The folder appears whole or not at all (written beside it, then renamed).
    """
    from safetensors.torch import save

    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} already exists: export into a new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise DataError(f"cannot write the model to {out}: {exc}") from exc
    try:
        meta = {"format": MODEL_FORMAT, "format_version": str(MODEL_FORMAT_VERSION)}
        dense = {k: v.contiguous() for k, v in state.items()}
        _write_private(tmp / MODEL_FILE, save(dense, metadata=meta))
        _write_private(tmp / MASK_FILE, save(dict(mask), metadata=meta))
        shapes = {name: list(m.shape) for name, m in mask.items()}
        sparse_meta = {**meta, "masked_shapes": json.dumps(shapes)}
        _write_private(tmp / SPARSE_FILE, save(sparse_form(dense, mask), metadata=sparse_meta))
        full = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            **card,
            "files": {name: {"sha256": _sha256(tmp / name)} for name in TENSOR_FILES},
        }
        _write_private(tmp / CARD_JSON, (json.dumps(full, indent=1) + "\n").encode())
        _write_private(tmp / CARD_MD, markdown.encode())
        tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot write the model to {out}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@dataclass(frozen=True)
class ExportedModel:
    """A model folder, read and checked: its spec, model (eval mode), mask and card."""

    path: Path
    spec: FederationSpec
    model: nn.Module
    mask: Mask
    card: dict[str, Any]

    @property
    def age_bias(self) -> AgeBias | None:
        """The card's age-bias correction, if the site could fit one."""
        record = self.card.get("age_bias")
        return None if record is None else AgeBias.from_json(record)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The spatial shape the model reads (no channel axis)."""
        return tuple(int(n) for n in self.card["input"]["shape"])


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            return {k: handle.get_tensor(k) for k in handle.keys()}, meta  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc


def read_model_dir(path: Path, *, check_sparse: bool = False) -> ExportedModel:
    """Read an exported model folder; :class:`DataError` names what is missing or altered.

    ``check_sparse`` also rebuilds the model from ``sparse.safetensors`` and requires it to be
    bit-identical to ``model.safetensors``.
    """
    path = Path(path)
    card_path = path / CARD_JSON
    if not card_path.is_file():
        raise DataError(f"{path} is not an exported model (no {CARD_JSON}; see fedsparsify export)")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"cannot read {card_path}: {exc}") from exc
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise DataError(f"{card_path} is not a fedsparsify model card")
    if card.get("format_version") != MODEL_FORMAT_VERSION:
        raise DataError(
            f"{path} has model format version {card.get('format_version')!r}; this fedsparsify "
            f"reads version {MODEL_FORMAT_VERSION} (upgrade it to read newer exports)"
        )
    for name in TENSOR_FILES:
        want = card.get("files", {}).get(name, {}).get("sha256")
        if not (path / name).is_file():
            raise DataError(f"{path} lacks {name}")
        if want != _sha256(path / name):
            raise DataError(f"{path / name} does not match its SHA-256 in {CARD_JSON}: altered")
    try:
        spec = FederationSpec.model_validate(card["spec"])
    except (KeyError, ValueError) as exc:
        raise DataError(f"{card_path}: the spec is missing or invalid: {exc}") from exc
    model = build_model(spec.model, seed=spec.seed)
    state, _ = _load_tensors(path / MODEL_FILE)
    mask, _ = _load_tensors(path / MASK_FILE)
    shapes = prunable_shapes(model)
    try:
        check_mask(mask, shapes)
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as exc:
        raise DataError(f"{path}: the tensors do not fit the spec's model: {exc}") from exc
    if any(bool((state[name][~mask[name]] != 0).any()) for name in mask):
        raise DataError(f"{path}: pruned weights are not zero in {MODEL_FILE}")
    if check_sparse:
        tensors, _ = _load_tensors(path / SPARSE_FILE)
        rebuilt, rebuilt_mask = dense_from_sparse(tensors, shapes)
        same = set(rebuilt) == set(state) and all(torch.equal(rebuilt[k], state[k]) for k in state)
        if not same or not all(torch.equal(rebuilt_mask[k], mask[k]) for k in mask):
            raise DataError(f"{path}: {SPARSE_FILE} and {MODEL_FILE} hold different models")
    model.eval()
    return ExportedModel(path=path, spec=spec, model=model, mask=mask, card=card)
