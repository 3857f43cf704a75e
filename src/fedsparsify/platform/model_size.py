"""Shapes and sizes of the federation's networks, computed from the spec alone (no torch).

The aggregator never imports torch, yet it must refuse a spec whose model no site could build
or whose updates would be unreasonably large; sites must refuse one before allocating. Both use
:func:`parameter_count`, which follows the layer formulas of :mod:`fedsparsify.platform.models`
exactly (a test compares it with the built networks).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fedsparsify.errors import ConfigError

if TYPE_CHECKING:
    from fedsparsify.platform.spec import ModelSpec

__all__ = [
    "BRAINAGE_BLOCK_MULTIPLIERS",
    "CNN_MIN_SIDE",
    "MAX_BUILD_PARAMETERS",
    "model_input_shape",
    "parameter_count",
]

#: BrainAge: filters of the five blocks, in multiples of ``width``.
BRAINAGE_BLOCK_MULTIPLIERS = (1, 2, 4, 8, 8)
#: The digits CNN pools twice: an image side must be at least this.
CNN_MIN_SIDE = 4
#: No spec may describe a network larger than this (1 GiB of float32 weights), whatever the
#: aggregator allows: a site refuses to build it instead of exhausting its memory.
MAX_BUILD_PARAMETERS = 1 << 28


def model_input_shape(spec: ModelSpec) -> tuple[int, ...]:
    """The channel-first input shape (without batch axis) the model expects."""
    shape = tuple(spec.input_shape)
    if spec.kind == "mlp":
        return shape
    if spec.kind == "cnn":
        if len(shape) == 1:
            side = math.isqrt(shape[0])
            if side * side != shape[0]:
                raise ConfigError(f"cnn: flat input {shape} is not a square image")
            return (1, side, side)
        if len(shape) == 2:
            return (1, *shape)
        if len(shape) == 3:
            return shape
        raise ConfigError(f"cnn: input shape {shape} is not an image (H, W) or (C, H, W)")
    if len(shape) == 3:
        return (1, *shape)
    if len(shape) == 4:
        return shape
    raise ConfigError(f"brainage: input shape {shape} is not a volume (D, H, W) or (C, D, H, W)")


def _dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(n_in: int, n_out: int, kernel_elements: int) -> int:
    return n_in * n_out * kernel_elements + n_out


def parameter_count(spec: ModelSpec) -> int:
    """Trainable scalars of the network ``spec`` describes; :class:`ConfigError` for a shape
    the network cannot take. Exact integer arithmetic, nothing allocated."""
    shape = model_input_shape(spec)
    if spec.kind == "mlp":
        hidden = spec.hidden
        return (
            _dense(math.prod(shape), hidden)
            + _dense(hidden, hidden)
            + _dense(hidden, spec.num_classes)
        )
    if spec.kind == "cnn":
        channels, height, width = shape
        if height < CNN_MIN_SIDE or width < CNN_MIN_SIDE:
            raise ConfigError(
                f"cnn needs images of at least {CNN_MIN_SIDE}x{CNN_MIN_SIDE}, got {height}x{width}"
            )
        flat = 32 * (height // 4) * (width // 4)
        return (
            _conv(channels, 16, 9)
            + _conv(16, 32, 9)
            + _dense(flat, 64)
            + _dense(64, spec.num_classes)
        )
    if spec.kind == "brainage":
        total, in_ch = 0, shape[0]
        for mult in BRAINAGE_BLOCK_MULTIPLIERS:
            total += _conv(in_ch, spec.width * mult, 27)
            in_ch = spec.width * mult
        return total + _conv(in_ch, 2 * spec.width, 1) + _conv(2 * spec.width, 1, 1)
    raise ConfigError(f"unknown model kind {spec.kind!r}")
