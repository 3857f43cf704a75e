"""Models: the BrainAge parameter count, shapes, output bias and seed determinism."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from fedsparsify.errors import ConfigError
from fedsparsify.platform.models import (
    DEFAULT_AGE_SCALE,
    DEFAULT_MEAN_AGE,
    build_model,
    count_trainable,
    state_digest,
)
from fedsparsify.platform.spec import ModelSpec

torch.set_num_threads(1)


def brainage_params(width: int, in_channels: int = 1) -> int:
    """Independent count: five 3x3x3 conv blocks with bias, 1x1x1 to 2*width, 1x1x1 to 1."""
    chans = [in_channels] + [width * m for m in (1, 2, 4, 8, 8)]
    convs = sum(chans[i] * chans[i + 1] * 27 + chans[i + 1] for i in range(5))
    head = chans[-1] * 2 * width + 2 * width
    return convs + head + 2 * width + 1


def test_full_size_brainage_has_the_papers_parameter_count() -> None:
    spec = ModelSpec(kind="brainage", input_shape=(1, 91, 109, 91), width=32)
    with torch.device("meta"):
        model = build_model(spec, seed=0)
    assert count_trainable(model) == 2_948_801
    assert brainage_params(32) == 2_948_801


@pytest.mark.parametrize(("width", "shape"), [(4, (24, 28, 24)), (8, (2, 48, 56, 48))])
def test_brainage_count_follows_width_and_channels(width: int, shape: tuple[int, ...]) -> None:
    with torch.device("meta"):
        model = build_model(ModelSpec(kind="brainage", input_shape=shape, width=width), seed=1)
    channels = shape[0] if len(shape) == 4 else 1
    assert count_trainable(model) == brainage_params(width, channels)


def test_brainage_has_no_normalisation_parameters_or_buffers() -> None:
    model = build_model(ModelSpec(kind="brainage", input_shape=(16, 16, 16), width=2), seed=0)
    names = [n for n, _ in model.named_parameters()]
    # the only buffers are the fixed age offset and scale of the output
    assert sorted(model.state_dict()) == sorted([*names, "age_offset", "age_scale"])
    assert [n for n, _ in model.named_buffers()] == ["age_offset", "age_scale"]
    assert all(n.endswith(("weight", "bias")) for n in names)
    assert len(names) == 2 * 7  # seven convolutions, each with weight and bias


def test_reduced_brainage_runs_on_small_volumes_and_starts_near_the_mean_age() -> None:
    model = build_model(ModelSpec(kind="brainage", input_shape=(24, 28, 24), width=2), seed=0)
    out = model(torch.randn(3, 1, 24, 28, 24))
    assert out.shape == (3, 1)
    state = model.state_dict()
    assert state["output.bias"].item() == 0.0
    assert state["age_offset"].item() == pytest.approx(DEFAULT_MEAN_AGE)
    assert state["age_scale"].item() == ModelSpec().age_scale == DEFAULT_AGE_SCALE
    # the output is offset + scale * (head . w + b): check it against that formula
    with torch.no_grad():
        x = torch.randn(2, 1, 24, 28, 24)
        feats = model.head(model.features(x)).reshape(2, -1)
        w = state["output.weight"].reshape(-1)
        expected = DEFAULT_MEAN_AGE + DEFAULT_AGE_SCALE * (feats @ w + state["output.bias"])
        assert torch.allclose(model(x).reshape(-1), expected, atol=1e-4)
    custom = build_model(
        ModelSpec(
            kind="brainage", input_shape=(24, 28, 24), width=2, output_bias=50.0, age_scale=5.0
        ),
        seed=0,
    )
    assert custom.state_dict()["age_offset"].item() == 50.0
    assert custom.state_dict()["age_scale"].item() == 5.0
    assert not any(b.requires_grad for b in custom.buffers())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("input_shape", [(64,), (1, 8, 8)])
def test_digit_models_accept_flat_and_image_inputs(kind: str, input_shape: tuple[int, ...]) -> None:
    spec = ModelSpec(kind=kind, input_shape=input_shape, num_classes=10)
    model = build_model(spec, seed=0)
    assert model(torch.rand(5, *input_shape)).shape == (5, 10)
    assert model(torch.rand(5, 64)).shape == (5, 10)


def test_mlp_has_two_hidden_layers() -> None:
    model = build_model(ModelSpec(kind="mlp", input_shape=(64,), hidden=128), seed=0)
    assert count_trainable(model) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10


def test_same_seed_same_model_other_seed_other_model_global_rng_untouched() -> None:
    spec = ModelSpec(kind="cnn", input_shape=(1, 8, 8))
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_model(spec, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = build_model(spec, seed=7)
    c = build_model(spec, seed=8)
    assert state_digest(a.state_dict()) == state_digest(b.state_dict())
    assert state_digest(a.state_dict()) != state_digest(c.state_dict())


BAD_SHAPES = [
    {"kind": "cnn", "input_shape": (63,)},
    {"kind": "cnn", "input_shape": (1, 2, 2)},
    {"kind": "brainage", "input_shape": (32, 32)},
]


@pytest.mark.parametrize("fields", BAD_SHAPES)
def test_bad_input_shapes_are_refused_by_the_spec(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ModelSpec.model_validate(fields)


@pytest.mark.parametrize("fields", BAD_SHAPES)
def test_bad_input_shapes_raise_config_error(fields: dict[str, object]) -> None:
    # A spec that skipped validation (built by hand, or by a hostile aggregator's client code).
    with pytest.raises(ConfigError):
        build_model(ModelSpec.model_construct(**fields), seed=0)
