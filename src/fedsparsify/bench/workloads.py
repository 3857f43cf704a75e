"""What the latency benchmark encrypts: a model's trainable state and a pruning mask.

``brainage`` is the full-size BrainAge 3D CNN (2,948,801 trainable parameters, input
1x91x109x91, width 32); ``brainage-small`` a small one for quick runs; ``vec<N>`` (``vec1m``,
``vec10m``, ``vec100k``) a vector of about N values: the parameters of the platform's MLP
(two hidden layers, 10 classes) sized to hold N +- 0.1 %, so that the sites of the benchmark
run the real client on it. Masks come from the platform's global magnitude pruning, so every
client that builds the same workload from the same seed gets the same mask (and mask digest),
as in a real round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fedsparsify.errors import ConfigError
from fedsparsify.platform.masks import Mask, ParameterLayout, full_mask
from fedsparsify.platform.models import build_model
from fedsparsify.platform.pruning import global_magnitude_mask
from fedsparsify.platform.spec import ModelSpec

__all__ = [
    "BRAINAGE_FULL",
    "Workload",
    "brainage_spec",
    "build_workload",
    "model_spec",
    "vector_size",
]

#: The full-size BrainAge network of the paper.
BRAINAGE_FULL = ModelSpec(kind="brainage", input_shape=(1, 91, 109, 91), width=32)
_BRAINAGE_SMALL = ModelSpec(kind="brainage", input_shape=(1, 24, 28, 24), width=4)
_SUFFIX = {"k": 1_000, "m": 1_000_000}


def brainage_spec(name: str) -> ModelSpec:
    """The ModelSpec of ``brainage`` or ``brainage-small``."""
    if name == "brainage":
        return BRAINAGE_FULL
    if name == "brainage-small":
        return _BRAINAGE_SMALL
    raise ConfigError(f"not a brainage workload: {name!r}")


def vector_size(name: str) -> int | None:
    """N for ``vec<N>`` names (``vec1m`` -> 1,000,000), None for other names."""
    if not name.startswith("vec"):
        return None
    digits, suffix = name[3:-1], name[-1:].lower()
    if suffix not in _SUFFIX or not digits.isdigit():
        raise ConfigError(f"vector workloads are named like vec100k or vec10m, not {name!r}")
    return int(digits) * _SUFFIX[suffix]


def _mlp_for(size: int) -> ModelSpec:
    """The MLP (10 classes) whose parameter count is closest to ``size`` for a hidden width of
    about sqrt(size) / 2 (a power of two)."""
    classes = 10
    hidden = 2 ** round(math.log2(math.sqrt(size) / 2))
    rest = hidden * hidden + 2 * hidden + hidden * classes + classes
    inputs = max(1, round((size - rest) / hidden))
    return ModelSpec(kind="mlp", input_shape=(inputs,), hidden=hidden, num_classes=classes)


def model_spec(name: str) -> ModelSpec:
    """The ModelSpec a workload's federation trains."""
    size = vector_size(name)
    return brainage_spec(name) if size is None else _mlp_for(size)


@dataclass
class Workload:
    """A state (trainable tensors only) and its prunable-tensor mask."""

    name: str
    state: dict[str, torch.Tensor]
    prunable: Mask

    def layout(self, sparsity: float) -> ParameterLayout:
        """The upload layout at ``sparsity`` (0: dense, every coordinate)."""
        mask = self.prunable if sparsity <= 0.0 else self.mask(sparsity)
        return ParameterLayout(self.state, mask)

    def mask(self, sparsity: float) -> Mask:
        """Global magnitude mask pruning ``sparsity`` of the prunable coordinates."""
        return global_magnitude_mask(self.state, self.prunable, sparsity)

    @property
    def n_params(self) -> int:
        """Trainable coordinates."""
        return int(sum(t.numel() for t in self.state.values()))


def build_workload(name: str, *, seed: int = 0) -> Workload:
    """Build the named workload deterministically from ``seed`` (the model a federation with
    that seed starts from)."""
    model = build_model(model_spec(name), seed=seed)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    state = {n: t.detach().clone() for n, t in model.state_dict().items() if n in trainable}
    return Workload(name, state, full_mask(model))
