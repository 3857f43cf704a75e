"""The networks a federation trains, built identically on every site from the federation seed.

- ``mlp``: two hidden ReLU layers (the paper's FashionMNIST MLP shape), for flattened images.
- ``cnn``: a small 2D CNN for 8x8 digits.
- ``brainage``: the BrainAge 3D CNN (an SFCN variant): five blocks of 3x3x3 conv (with bias),
  InstanceNorm3d without learned affine, 2x max-pool and ReLU, with ``width * [1, 2, 4, 8, 8]``
  filters; a 1x1x1 conv to ``2 * width`` + norm + ReLU; global average pooling; a 1x1x1 conv to
  one output, read as ``age_offset + age_scale * output`` (see :class:`BrainAgeCNN`). With
  width 32 on 1x91x109x91 this has 2,948,801 trainable parameters: conv weights
  2,931,552 + 16,384 + 64, conv biases 736 + 64 + 1. Normalisation without affine adds none.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedsparsify.errors import ConfigError
from fedsparsify.platform.model_size import (
    BRAINAGE_BLOCK_MULTIPLIERS,
    CNN_MIN_SIDE,
    MAX_BUILD_PARAMETERS,
    model_input_shape,
    parameter_count,
)
from fedsparsify.platform.spec import ModelSpec

__all__ = [
    "DEFAULT_AGE_SCALE",
    "DEFAULT_MEAN_AGE",
    "BrainAgeCNN",
    "build_model",
    "count_trainable",
    "model_input_shape",
    "state_digest",
]

DEFAULT_MEAN_AGE = 62.7
DEFAULT_AGE_SCALE = 50.0


def count_trainable(model: nn.Module) -> int:
    """Number of trainable scalar parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of a state dict (e.g. to compare sites)."""
    h = hashlib.sha256(b"fedsparsify-state-v1\x00")
    for name, tensor in state.items():
        arr = np.ascontiguousarray(tensor.detach().cpu().numpy())
        h.update(f"{name}|{tuple(arr.shape)}|{arr.dtype.str}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class _MLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _DigitsCNN(nn.Module):
    """Two conv stages (16, 32 filters, each followed by 2x pooling) and a 64-unit head."""

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        channels, height, width = shape
        if height < CNN_MIN_SIDE or width < CNN_MIN_SIDE:
            raise ConfigError(f"cnn needs images of at least 4x4, got {height}x{width}")
        self.shape = shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * (height // 4) * (width // 4), 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(x.shape[0], *self.shape)))


class BrainAgeCNN(nn.Module):
    """The BrainAge 3D CNN; output shape ``(N, 1)`` (predicted age in years).

    The prediction is ``age_offset + age_scale * output(head(features(x)))``, where
    ``age_offset`` (the mean age, ``ModelSpec.output_bias``) and ``age_scale`` (years per output
    unit, ``ModelSpec.age_scale``) are fixed buffers and the trainable output bias starts at 0.
    This is the paper's function class (a final affine layer whose bias starts at the mean age):
    only the parametrisation differs. Why:

    - CKKS range: every trainable coordinate is uploaded under encryption, whose safe range is
      about ``|x| <= 32``. A trainable bias at ~62.7 that drifts towards each site's mean age
      would be refused; here it stays within a few units.
    - Conditioning: with MSE on raw ages the output layer would have to move by tens of years
      while every other weight lives near unit scale. Measuring the output in units of
      ``age_scale`` years (default 50: ages 20-90 lie within about +-1 unit of the offset) puts
      the head on the same scale as the rest. With Adam (steps of about ``lr`` per weight,
      whatever the loss scale) this decides how fast the age range is learnt: on the synthetic
      coarse brain-age data a scale of 1 barely learnt in 12 epochs, 10 was slow, 30-100 learnt
      fastest. Plain SGD's gradients grow as ``age_scale**2``: scale its learning rate down
      (about ``1e-5`` at the default scale).

    The buffers are identical on every site (built from the spec), are saved in ``state_dict``
    so a stored model is self-contained, and are never trained, uploaded or pruned
    (:class:`~fedsparsify.platform.masks.ParameterLayout` covers trainable parameters only).

    A block max-pools only while every spatial side is at least 4, so that small volumes (e.g.
    24x28x24) never shrink below 2 voxels a side, where instance normalisation has nothing to
    normalise; at 91x109x91 all five blocks pool, as in the original.
    """

    age_offset: torch.Tensor
    age_scale: torch.Tensor

    def __init__(
        self,
        shape: tuple[int, ...],
        width: int,
        age_offset: float,
        age_scale: float = DEFAULT_AGE_SCALE,
    ) -> None:
        super().__init__()
        if not age_scale > 0:
            raise ConfigError(f"brainage: age_scale must be positive, got {age_scale}")
        channels, *spatial = shape
        blocks: list[nn.Module] = []
        in_ch = channels
        for mult in BRAINAGE_BLOCK_MULTIPLIERS:
            out_ch = width * mult
            layers: list[nn.Module] = [
                nn.Conv3d(in_ch, out_ch, 3, padding=1),
                nn.InstanceNorm3d(out_ch, affine=False),
            ]
            if min(spatial) >= 4:
                layers.append(nn.MaxPool3d(2))
                spatial = [s // 2 for s in spatial]
            layers.append(nn.ReLU())
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv3d(in_ch, 2 * width, 1),
            nn.InstanceNorm3d(2 * width, affine=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
        )
        self.output = nn.Conv3d(2 * width, 1, 1)
        with torch.no_grad():
            assert self.output.bias is not None
            self.output.bias.zero_()
        self.register_buffer("age_offset", torch.tensor(float(age_offset)))
        self.register_buffer("age_scale", torch.tensor(float(age_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.output(self.head(self.features(x))).reshape(x.shape[0], 1)
        return self.age_offset + self.age_scale * out


def build_model(spec: ModelSpec, *, seed: int) -> nn.Module:
    """Build the network ``spec`` names; the weights depend only on ``seed`` (and torch's RNG).

    The global torch RNG is left untouched. Anything that cannot be built (a shape the network
    cannot take, more than :data:`MAX_BUILD_PARAMETERS` weights, a seed torch refuses, memory
    the machine does not have) raises :class:`ConfigError`, before allocating where the size
    alone decides.
    """
    count = parameter_count(spec)
    if count > MAX_BUILD_PARAMETERS:
        raise ConfigError(
            f"{spec.kind}: {count:,} trainable parameters, more than the {MAX_BUILD_PARAMETERS:,} "
            "a site builds"
        )
    shape = model_input_shape(spec)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if spec.kind == "mlp":
                return _MLP(math.prod(shape), spec.hidden, spec.num_classes)
            if spec.kind == "cnn":
                return _DigitsCNN(shape, spec.num_classes)
            if spec.kind == "brainage":
                offset = DEFAULT_MEAN_AGE if spec.output_bias is None else spec.output_bias
                return BrainAgeCNN(shape, spec.width, offset, spec.age_scale)
    except ConfigError:
        raise
    except (RuntimeError, ValueError, OverflowError, TypeError, MemoryError) as exc:
        raise ConfigError(
            f"cannot build the {spec.kind} model: {type(exc).__name__}: {exc}"
        ) from exc
    raise ConfigError(f"unknown model kind {spec.kind!r}")
