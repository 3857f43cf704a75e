"""Pruning masks, their digest and wire form, and the canonical flat layout of an upload.

A :data:`Mask` is a ``dict`` of bool tensors keyed by ``state_dict`` name, holding entries only
for *prunable* tensors (``True`` = kept). :class:`ParameterLayout` fixes the order in which a
client flattens its trainable parameters for upload: every party that holds the same model and
mask derives the same order, so a decrypted sum can be written back coordinate for coordinate.

Bias decision: only the weights of ``Linear`` and ``Conv*`` layers are prunable; biases (and any
normalisation parameters or buffers) stay dense. The original FedSparsify code prunes every
trainable variable, but biases are a negligible share of the model (801 of 2,948,801 in BrainAge,
266 of 26,122 in the digits MLP), their magnitudes live on another scale than weights (BrainAge's
output bias carries a site's offset from the mean age), and a pruned bias removes a unit's offset
rather than one connection. Keeping them dense costs <0.03% of the BrainAge upload and keeps one
global threshold meaningful. Sparsity is reported over the prunable coordinates.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, MutableMapping

import numpy as np
import torch
from torch import nn

from fedsparsify.errors import MaskError

__all__ = [
    "Mask",
    "ParameterLayout",
    "apply_mask",
    "check_mask",
    "full_mask",
    "kept_count",
    "mask_digest",
    "pack_mask",
    "prunable_names",
    "prunable_shapes",
    "sparsity",
    "unpack_mask",
]

Mask = dict[str, torch.Tensor]

_PRUNABLE_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PACK_MAGIC = b"FSMK"
_PACK_VERSION = 1
_DIGEST_TAG = b"fedsparsify-mask-v1\x00"


def prunable_names(model: nn.Module) -> list[str]:
    """Names of the prunable tensors, in ``state_dict`` order: weights of Linear/Conv layers.

    Biases and normalisation parameters/buffers are never pruned (see the module docstring).
    """
    wanted = {
        f"{prefix}.weight" if prefix else "weight"
        for prefix, module in model.named_modules()
        if isinstance(module, _PRUNABLE_MODULES) and module.weight.requires_grad
    }
    return [name for name in model.state_dict() if name in wanted]


def full_mask(model: nn.Module) -> Mask:
    """The mask that keeps every prunable coordinate."""
    state = model.state_dict()
    return {name: torch.ones(state[name].shape, dtype=torch.bool) for name in prunable_names(model)}


def kept_count(mask: Mask) -> int:
    """Number of kept prunable coordinates."""
    return int(sum(int(m.sum()) for m in mask.values()))


def sparsity(mask: Mask) -> float:
    """Fraction of prunable coordinates that are pruned (0.0 for an empty mask)."""
    total = sum(m.numel() for m in mask.values())
    return 0.0 if total == 0 else 1.0 - kept_count(mask) / total


def check_mask(mask: Mask, shapes: Mapping[str, tuple[int, ...]]) -> None:
    """Raise :class:`MaskError` unless ``mask`` is bool and matches ``shapes`` name for name."""
    if set(mask) != set(shapes):
        missing = sorted(set(shapes) - set(mask))
        extra = sorted(set(mask) - set(shapes))
        raise MaskError(f"mask names differ from the model's: missing {missing}, extra {extra}")
    for name, m in mask.items():
        if m.dtype != torch.bool:
            raise MaskError(f"mask {name!r} has dtype {m.dtype}, expected torch.bool")
        if tuple(m.shape) != tuple(shapes[name]):
            raise MaskError(f"mask {name!r} has shape {tuple(m.shape)}, expected {shapes[name]}")


def prunable_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of the prunable tensors, keyed by name (what :func:`unpack_mask` expects)."""
    state = model.state_dict()
    return {name: tuple(state[name].shape) for name in prunable_names(model)}


def apply_mask(state: Mapping[str, torch.Tensor], mask: Mask) -> None:
    """Set pruned coordinates of ``state``'s tensors to exactly zero, in place."""
    with torch.no_grad():
        for name, m in mask.items():
            tensor = state[name]
            if tuple(tensor.shape) != tuple(m.shape):
                raise MaskError(f"mask {name!r} shape {tuple(m.shape)} != {tuple(tensor.shape)}")
            tensor.masked_fill_(~m.to(tensor.device), 0)


def _bits(m: torch.Tensor) -> bytes:
    return np.packbits(m.detach().cpu().numpy().reshape(-1).astype(np.bool_)).tobytes()


def mask_digest(mask: Mask) -> str:
    """SHA-256 hex over names, shapes and bits; independent of dict order and machine.

    Format hashed: a tag, then per tensor in sorted name order: ``<u32 len><utf-8 name>
    <u32 ndim><u64 dim>*`` and ``np.packbits`` (big bit order) of the row-major flattened mask.
    All integers are little-endian.
    """
    h = hashlib.sha256(_DIGEST_TAG)
    for name in sorted(mask):
        m = mask[name]
        raw = name.encode()
        h.update(struct.pack("<I", len(raw)) + raw)
        h.update(struct.pack(f"<I{m.dim()}Q", m.dim(), *m.shape))
        h.update(_bits(m))
    return h.hexdigest()


def pack_mask(mask: Mask) -> bytes:
    """Serialise a mask: a small header per tensor (name, shape) and its bit-packed values."""
    out = [_PACK_MAGIC, struct.pack("<BI", _PACK_VERSION, len(mask))]
    for name, m in mask.items():
        if m.dtype != torch.bool:
            raise MaskError(f"mask {name!r} has dtype {m.dtype}, expected torch.bool")
        raw = name.encode()
        out.append(struct.pack("<H", len(raw)) + raw)
        out.append(struct.pack(f"<B{m.dim()}Q", m.dim(), *m.shape))
        out.append(_bits(m))
    return b"".join(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise MaskError("packed mask is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))


def unpack_mask(data: bytes, shapes: Mapping[str, tuple[int, ...]]) -> Mask:
    """Inverse of :func:`pack_mask`, checked against the expected ``shapes`` (in their order).

    Raises :class:`MaskError` on a bad header, other names or shapes, truncation, trailing bytes
    or non-zero padding bits.
    """
    reader = _Reader(bytes(data))
    if reader.take(len(_PACK_MAGIC)) != _PACK_MAGIC:
        raise MaskError("not a packed mask (bad magic)")
    version, count = reader.unpack("<BI")
    if version != _PACK_VERSION:
        raise MaskError(f"unsupported packed-mask version {version}")
    found: dict[str, torch.Tensor] = {}
    for _ in range(count):
        (name_len,) = reader.unpack("<H")
        try:
            name = reader.take(name_len).decode()
        except UnicodeDecodeError as exc:
            raise MaskError("packed mask holds an undecodable name") from exc
        (ndim,) = reader.unpack("<B")
        shape = reader.unpack(f"<{ndim}Q")
        if name not in shapes:
            raise MaskError(f"packed mask names unexpected tensor {name!r}")
        if name in found:
            raise MaskError(f"packed mask names {name!r} twice")
        if tuple(shape) != tuple(shapes[name]):
            raise MaskError(f"packed mask {name!r} has shape {shape}, expected {shapes[name]}")
        numel = int(np.prod(shape, dtype=np.int64))
        packed = np.frombuffer(reader.take((numel + 7) // 8), dtype=np.uint8)
        bits = np.unpackbits(packed)
        if bits[numel:].any():
            raise MaskError(f"packed mask {name!r} has non-zero padding bits")
        found[name] = torch.from_numpy(bits[:numel].astype(np.bool_).reshape(shape))
    if reader.pos != len(reader.data):
        raise MaskError(f"packed mask has {len(reader.data) - reader.pos} trailing bytes")
    missing = [name for name in shapes if name not in found]
    if missing:
        raise MaskError(f"packed mask lacks tensors {missing}")
    return {name: found[name] for name in shapes}


class ParameterLayout:
    """The canonical flat order of the coordinates a client uploads.

    Tensors come in ``state_dict`` order over all trainable parameters (for a mapping: every
    floating-point tensor it holds, in its order). A masked tensor contributes its kept
    coordinates in row-major order; an unmasked one (e.g. a bias) all of its coordinates.
    Identical on every client that holds the same architecture and mask.
    """

    def __init__(self, model_or_state: nn.Module | Mapping[str, torch.Tensor], mask: Mask) -> None:
        if isinstance(model_or_state, nn.Module):
            trainable = {n for n, p in model_or_state.named_parameters() if p.requires_grad}
            state = model_or_state.state_dict()
            shapes = {n: tuple(t.shape) for n, t in state.items() if n in trainable}
            check_mask(mask, {n: shapes[n] for n in prunable_names(model_or_state)})
        else:
            shapes = {n: tuple(t.shape) for n, t in model_or_state.items() if t.is_floating_point()}
            unknown = sorted(set(mask) - set(shapes))
            if unknown:
                raise MaskError(f"mask names tensors the state lacks: {unknown}")
            check_mask(mask, {n: shapes[n] for n in mask})
        self.names: tuple[str, ...] = tuple(shapes)
        self.shapes: dict[str, tuple[int, ...]] = shapes
        self._index: dict[str, np.ndarray | None] = {}
        self._offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for name in self.names:
            if name in mask:
                idx = np.flatnonzero(mask[name].detach().cpu().numpy().reshape(-1))
                size = int(idx.size)
                self._index[name] = idx
            else:
                size = int(np.prod(shapes[name], dtype=np.int64))
                self._index[name] = None
            self._offsets[name] = (offset, offset + size)
            offset += size
        self.n_values: int = offset
        self.n_total: int = int(sum(int(np.prod(s, dtype=np.int64)) for s in shapes.values()))
        self.mask_digest: str = mask_digest(mask)
        self.masked_names: tuple[str, ...] = tuple(n for n in self.names if n in mask)

    @property
    def digest(self) -> str:
        """SHA-256 over every tensor's name and shape plus the mask digest."""
        h = hashlib.sha256(b"fedsparsify-layout-v1\x00" + self.mask_digest.encode())
        for name in self.names:
            raw = name.encode()
            shape = self.shapes[name]
            h.update(struct.pack(f"<I{len(raw)}sI{len(shape)}Q", len(raw), raw, len(shape), *shape))
        return h.hexdigest()

    def _check_state(self, state: Mapping[str, torch.Tensor]) -> None:
        for name in self.names:
            if name not in state:
                raise MaskError(f"state lacks tensor {name!r} of the layout")
            if tuple(state[name].shape) != self.shapes[name]:
                raise MaskError(
                    f"tensor {name!r} has shape {tuple(state[name].shape)}, "
                    f"layout expects {self.shapes[name]}"
                )

    def flatten(self, state: Mapping[str, torch.Tensor]) -> np.ndarray:
        """The upload vector: float32, ``n_values`` long, in layout order."""
        self._check_state(state)
        out = np.empty(self.n_values, dtype=np.float32)
        for name in self.names:
            start, stop = self._offsets[name]
            flat = state[name].detach().to(torch.float32).cpu().numpy().reshape(-1)
            idx = self._index[name]
            out[start:stop] = flat if idx is None else flat[idx]
        return out

    def scatter(self, values: np.ndarray, state: MutableMapping[str, torch.Tensor]) -> None:
        """Write ``values`` back into ``state`` (in place); pruned coordinates become exactly 0."""
        vec = np.asarray(values)
        if vec.ndim != 1 or vec.shape[0] != self.n_values:
            raise MaskError(f"expected {self.n_values} values, got shape {vec.shape}")
        if not np.issubdtype(vec.dtype, np.floating):
            raise MaskError(f"values must be floating point, got {vec.dtype}")
        self._check_state(state)
        for name in self.names:
            start, stop = self._offsets[name]
            idx = self._index[name]
            flat = np.zeros(int(np.prod(self.shapes[name], dtype=np.int64)), dtype=np.float32)
            if idx is None:
                flat[:] = vec[start:stop]
            else:
                flat[idx] = vec[start:stop]
            target = state[name]
            new = torch.from_numpy(flat.reshape(self.shapes[name]))
            with torch.no_grad():
                target.copy_(new.to(dtype=target.dtype, device=target.device))

    def indicator(self, mask: Mask) -> np.ndarray:
        """A 0/1 float32 vector over the layout: 1 where ``mask`` keeps (unmasked tensors: 1).

        ``mask`` must be a sub-mask of the layout's mask (same names and shapes); it is how a
        FedSparsify-Local client lays out its votes.
        """
        check_mask(mask, {n: self.shapes[n] for n in self.masked_names})
        out = np.ones(self.n_values, dtype=np.float32)
        for name in self.masked_names:
            start, stop = self._offsets[name]
            idx = self._index[name]
            assert idx is not None
            out[start:stop] = mask[name].detach().cpu().numpy().reshape(-1)[idx]
        return out

    def to_mask(self, keep: np.ndarray) -> Mask:
        """A mask over the layout's masked tensors that keeps where ``keep`` (bool, layout order)
        is true; coordinates outside the layout are pruned. Entries of unmasked tensors are
        ignored."""
        vec = np.asarray(keep, dtype=np.bool_)
        if vec.shape != (self.n_values,):
            raise MaskError(f"expected {self.n_values} flags, got shape {vec.shape}")
        out: Mask = {}
        for name in self.masked_names:
            start, stop = self._offsets[name]
            idx = self._index[name]
            assert idx is not None
            flat = np.zeros(int(np.prod(self.shapes[name], dtype=np.int64)), dtype=np.bool_)
            flat[idx] = vec[start:stop]
            out[name] = torch.from_numpy(flat.reshape(self.shapes[name]))
        return out
