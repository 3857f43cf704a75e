"""The parameter count from the spec alone, against the networks torch builds; build refusals."""

from __future__ import annotations

import pytest
import torch

from fedsparsify.errors import ConfigError
from fedsparsify.platform.model_size import MAX_BUILD_PARAMETERS, parameter_count
from fedsparsify.platform.models import build_model, count_trainable
from fedsparsify.platform.spec import ModelSpec

torch.set_num_threads(1)

SPECS = [
    {"kind": "mlp", "input_shape": (8,), "hidden": 16, "num_classes": 3},
    {"kind": "mlp", "input_shape": (3, 4, 5), "hidden": 7, "num_classes": 10},
    {"kind": "mlp", "input_shape": (64,), "hidden": 1, "num_classes": 1},
    {"kind": "cnn", "input_shape": (64,)},
    {"kind": "cnn", "input_shape": (8, 8), "num_classes": 4},
    {"kind": "cnn", "input_shape": (3, 12, 10)},
    {"kind": "cnn", "input_shape": (1, 4, 7)},
    {"kind": "brainage", "input_shape": (12, 14, 12), "width": 1},
    {"kind": "brainage", "input_shape": (2, 6, 6, 6), "width": 3},
    {"kind": "brainage", "input_shape": (1, 1, 1), "width": 2},
]


@pytest.mark.parametrize("fields", SPECS)
def test_count_equals_the_built_network(fields: dict[str, object]) -> None:
    spec = ModelSpec.model_validate(fields)
    assert parameter_count(spec) == count_trainable(build_model(spec, seed=0))


def test_full_size_brainage_count_without_building() -> None:
    spec = ModelSpec(kind="brainage", input_shape=(91, 109, 91), width=32)
    assert parameter_count(spec) == 2_948_801  # the documented size


def test_build_refuses_too_many_parameters_before_allocating() -> None:
    # Bypasses the spec's own check, as a hand-built or hostile spec would.
    spec = ModelSpec.model_construct(
        kind="mlp", input_shape=(1 << 20,), hidden=1 << 16, num_classes=10
    )
    assert parameter_count(spec) > MAX_BUILD_PARAMETERS
    with pytest.raises(ConfigError, match="trainable parameters"):
        build_model(spec, seed=0)


def test_build_translates_what_torch_refuses() -> None:
    spec = ModelSpec(kind="mlp", input_shape=(8,))
    with pytest.raises(ConfigError, match="cannot build"):
        build_model(spec, seed=2**70)  # torch takes 64-bit seeds only
