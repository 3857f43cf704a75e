"""Sparse packing: from the kept coordinates of a model to ciphertext-sized chunks and back.

A client's update is the flat float32 vector of its kept (unpruned) coordinates in the mask's
canonical order; only those coordinates are encrypted, so cost and bytes shrink with the mask.
The vector is multiplied by the client's weight and cut into chunks of
``preset.values_per_ciphertext`` values (with complex packing, values 2j and 2j+1 share complex
slot j as its real and imaginary parts). Only the last chunk may be partly filled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from numbers import Real

import numpy as np

from fedsparsify.crypto.context import resolve_preset
from fedsparsify.crypto.presets import CkksPreset
from fedsparsify.errors import ConfigError, ValueRangeError

__all__ = ["check_values", "check_weight", "iter_chunks", "layout_for"]

logger = logging.getLogger(__name__)


def layout_for(preset: CkksPreset | str, n_values: int) -> tuple[int, int]:
    """``(values_per_ciphertext, n_ciphertexts)`` for ``n_values`` kept values under ``preset``."""
    chosen = resolve_preset(preset)
    if not isinstance(n_values, int | np.integer) or isinstance(n_values, bool) or n_values < 0:
        raise ConfigError(f"n_values must be a non-negative integer, got {n_values!r}")
    vpc = chosen.values_per_ciphertext
    return vpc, -(-int(n_values) // vpc)


def check_weight(weight: float) -> float:
    """The weight as a float; :class:`ValueRangeError` unless it is in (0, 1]."""
    if not isinstance(weight, Real) or isinstance(weight, bool):
        raise ValueRangeError(f"weight must be a real number in (0, 1], got {weight!r}")
    value = float(weight)
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueRangeError(
            f"weight {value!r} is outside (0, 1]: scale sample counts so that the weights of a "
            "round sum to at most 1"
        )
    return value


def check_values(preset: CkksPreset, values: np.ndarray) -> np.ndarray:
    """Refuse what could overflow a CKKS sum, before anything is encrypted.

    ``values`` must be a 1-D floating array with every |x| <= ``preset.max_abs_value`` and no NaN
    or infinity; :class:`ValueRangeError` names the offending maximum and the limit.
    """
    if not isinstance(values, np.ndarray):
        raise ConfigError(f"values must be a numpy array, got {type(values).__name__}")
    if values.ndim != 1:
        raise ConfigError(f"values must be 1-D (the kept coordinates), got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.floating):
        raise ConfigError(f"values must be floating point, got {values.dtype}")
    if values.size == 0:
        return values
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        first = int(np.argmin(finite))
        raise ValueRangeError(
            f"{bad} value(s) are NaN or infinite (first at index {first}); refusing to encrypt"
        )
    worst = float(np.max(np.abs(values)))
    limit = preset.max_abs_value
    if worst > limit:
        raise ValueRangeError(
            f"max |x| = {worst:.6g} exceeds the limit {limit:g} of preset {preset.name!r}: "
            "the encrypted sum could overflow and decrypt to garbage; scale the update down"
        )
    return values


def iter_chunks(values: np.ndarray, weight: float, chunk_size: int) -> Iterator[np.ndarray]:
    """Weighted float64 chunks of ``values``, computed one at a time (bounded memory)."""
    for start in range(0, values.size, chunk_size):
        chunk = np.asarray(values[start : start + chunk_size], dtype=np.float64)
        yield chunk * weight
