"""A site's checkpoint on disk: safetensors for the tensors, JSON for the rest, no pickle.

One file, ``checkpoint.safetensors``: its tensors are the state's tensors, keyed by their path
in the state (``site/model/net.1.weight``), and its safetensors metadata holds one JSON document,
``{"format": "fedsparsify-checkpoint", "version": 2, "state": ...}``, in which each tensor is
``{"$tensor": key}`` and each ``bytes`` value ``{"$bytes": base64}``. Loading never runs code
from the file: safetensors reads raw arrays, and the JSON is checked against the version.

Version 1 was release 0.1's ``checkpoint.pt``, a torch pickle. It held only tensors and plain
values, so it is read with ``torch.load(weights_only=True)``, whose restricted unpickler refuses
every other object; one that holds anything else is refused with a message saying what to do.
"""

from __future__ import annotations

import base64
import json
import pickle
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsparsify.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_VERSION",
    "LEGACY_CHECKPOINT_FILE",
    "decode_checkpoint",
    "encode_checkpoint",
    "read_checkpoint",
    "read_legacy_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.safetensors"
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_VERSION = 2
_FORMAT = "fedsparsify-checkpoint"
_META_KEY = "fedsparsify"
_MAX_HEADER = 100 << 20  # safetensors' own limit on the header


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    import torch  # only sites that train need it (see StateDir)

    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"$tensor": path}
    if isinstance(value, bytes | bytearray):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or "/" in key:
                raise TypeError(f"checkpoint key {key!r} under {path!r} cannot be stored")
            out[key] = _flatten(item, f"{path}/{key}" if path else key, tensors)
        return out
    if isinstance(value, list | tuple):
        return [_flatten(item, f"{path}/{i}", tensors) for i, item in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"checkpoint value at {path!r} has type {type(value).__name__}")


def _restore(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$tensor"}:
            key = value["$tensor"]
            if key not in tensors:
                raise DataError(f"checkpoint names tensor {key!r} but does not hold it")
            return tensors[key]
        if set(value) == {"$bytes"}:
            return base64.b64decode(value["$bytes"], validate=True)
        return {k: _restore(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v, tensors) for v in value]
    return value


def encode_checkpoint(state: dict[str, Any]) -> bytes:
    """The checkpoint file's bytes for ``state`` (nested dicts of tensors, bytes and JSON
    values)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(state, "", tensors)
    document = {"format": _FORMAT, "version": CHECKPOINT_VERSION, "state": flat}
    return save(tensors, metadata={_META_KEY: json.dumps(document)})


def _header_metadata(data: bytes, source: str) -> dict[str, str]:
    if len(data) < 8:
        raise DataError(f"{source} is truncated ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, len(data) - 8):
        raise DataError(f"{source} is not a safetensors file (header of {size} bytes)")
    try:
        header = json.loads(data[8 : 8 + size])
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{source} has an unreadable header: {exc}") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def decode_checkpoint(data: bytes, *, source: str = "checkpoint") -> dict[str, Any]:
    """Parse :func:`encode_checkpoint`'s output; :class:`DataError` names what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    meta = _header_metadata(data, source)
    try:
        document = json.loads(meta[_META_KEY])
    except (KeyError, ValueError) as exc:
        raise DataError(f"{source} is not a fedsparsify checkpoint (no state record)") from exc
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise DataError(f"{source} is not a fedsparsify checkpoint")
    version = document.get("version")
    if version != CHECKPOINT_VERSION:
        raise DataError(
            f"{source} has checkpoint version {version!r}; this fedsparsify reads version "
            f"{CHECKPOINT_VERSION} (upgrade fedsparsify to read a newer one)"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError) as exc:
        raise DataError(f"{source}: unreadable tensors: {exc}") from exc
    state = _restore(document.get("state"), tensors)
    if not isinstance(state, dict):
        raise DataError(f"{source} holds no state")
    return state


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    return decode_checkpoint(data, source=str(path))


def read_legacy_checkpoint(path: Path) -> dict[str, Any]:
    """Release 0.1's ``checkpoint.pt``, read without running any code from it."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        # torch's message runs to a dozen lines with terminal escapes: keep what names the cause.
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unsupported global" in ln]
        cause = lines[0] if lines else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        cause = cause.replace("\x1b[1m", "").replace("\x1b[0m", "")
        raise DataError(
            f"{path} is a release-0.1 checkpoint that holds more than tensors and plain values, "
            f"so it is not loaded (loading it could run code from the file): {cause}. Move it "
            "away to let this site start its model over; its credentials and keys stay valid"
        ) from exc
    if not isinstance(state, dict) or not isinstance(state.get("site"), dict):
        raise DataError(f"{path} is not a fedsparsify 0.1 checkpoint (no site state)")
    return state
