"""Masked local training: pruned weights and optimizer state stay exactly zero; metrics."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from fedsparsify.errors import ConfigError, PlatformError
from fedsparsify.platform.data.sitedata import SiteData
from fedsparsify.platform.masks import Mask, prunable_shapes
from fedsparsify.platform.models import build_model
from fedsparsify.platform.spec import ModelSpec, TrainingSpec
from fedsparsify.platform.training import build_optimizer, evaluate, train_local

torch.set_num_threads(1)


def digits_site(n: int = 400) -> SiteData:
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x[:n] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    yt = torch.tensor(y[:n], dtype=torch.int64)
    return SiteData("d", "classification", xt[:300], yt[:300], xt[300:], yt[300:])


def random_mask_for(model: nn.Module, keep: float, seed: int) -> Mask:
    # offset: a mask drawn from the stream that initialised the weights would select their sign
    gen = torch.Generator().manual_seed(10_000 + seed)
    return {n: torch.rand(s, generator=gen) < keep for n, s in prunable_shapes(model).items()}


@pytest.mark.parametrize(
    "spec",
    [
        TrainingSpec(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, local_epochs=2),
        TrainingSpec(optimizer="adam", lr=0.01, weight_decay=1e-3, local_epochs=2),
    ],
    ids=["sgd-momentum", "adam"],
)
def test_pruned_weights_and_optimizer_state_stay_exactly_zero(spec: TrainingSpec) -> None:
    data = digits_site()
    model = build_model(ModelSpec(kind="cnn", input_shape=(1, 8, 8)), seed=0)
    mask = random_mask_for(model, keep=0.3, seed=1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    opt = build_optimizer(params.values(), spec)
    metrics = train_local(model, mask, data, spec, seed=3, optimizer=opt)
    assert metrics["steps"] == 2 * 19  # ceil(300 / 16) batches per epoch
    for name, keep in mask.items():
        weight = params[name].detach()
        assert torch.count_nonzero(weight[~keep]) == 0
        assert not torch.equal(weight[keep], before[name][keep])  # kept weights did train
        state = opt.state[params[name]]
        buffers = [k for k in ("momentum_buffer", "exp_avg", "exp_avg_sq") if k in state]
        assert buffers, f"no optimizer state for {name}"
        for key in buffers:
            assert torch.count_nonzero(state[key][~keep]) == 0, key
            assert torch.count_nonzero(state[key][keep]) > 0, key


def test_training_learns_digits() -> None:
    data = digits_site()
    model = build_model(ModelSpec(kind="mlp", input_shape=(1, 8, 8)), seed=0)
    mask = {n: torch.ones(s, dtype=torch.bool) for n, s in prunable_shapes(model).items()}
    before = evaluate(model, data.x_val, data.y_val, "classification")
    spec = TrainingSpec(lr=0.05, local_epochs=5, batch_size=16)
    metrics = train_local(model, mask, data, spec, seed=0)
    after = evaluate(model, data.x_val, data.y_val, "classification")
    assert after["accuracy"] > 0.8 > before["accuracy"]
    assert after["loss"] < before["loss"]
    assert metrics["train_loss"] < 1.0


def test_same_seed_same_result() -> None:
    data = digits_site()
    spec = TrainingSpec(lr=0.05)
    models = [build_model(ModelSpec(kind="mlp", input_shape=(64,)), seed=0) for _ in range(3)]
    mask = random_mask_for(models[0], keep=0.5, seed=0)
    for model, seed in zip(models, [5, 5, 6], strict=True):
        train_local(model, mask, data, spec, seed=seed)
    a, b, c = (dict(m.named_parameters())["net.1.weight"] for m in models)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_fedprox_pulls_towards_the_global_model() -> None:
    data = digits_site()
    start = build_model(ModelSpec(kind="mlp", input_shape=(64,)), seed=0)
    global_state = {k: v.clone() for k, v in start.state_dict().items()}
    mask = {n: torch.ones(s, dtype=torch.bool) for n, s in prunable_shapes(start).items()}
    drift = {}
    for mu in (0.0, 5.0):
        model = build_model(ModelSpec(kind="mlp", input_shape=(64,)), seed=0)
        spec = TrainingSpec(lr=0.05, local_epochs=2, proximal_mu=mu)
        train_local(model, mask, data, spec, seed=0, global_state=global_state)
        drift[mu] = sum(
            float(((p.detach() - global_state[n]) ** 2).sum()) for n, p in model.named_parameters()
        )
    assert drift[5.0] < 0.5 * drift[0.0]
    with pytest.raises(ConfigError, match="global_state"):
        train_local(start, mask, data, TrainingSpec(proximal_mu=1.0), seed=0)


def test_regression_training_on_a_small_brainage_model() -> None:
    """The reported train_loss is the epoch's mean squared error (checked against evaluate()
    with a step too small to move the weights), and real steps lower it under the mask."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 1, 8, 8, 8, generator=gen)
    y = 60 + 10 * torch.randn(12, generator=gen)
    data = SiteData("r", "regression", x[:8], y[:8], x[8:], y[8:])
    spec_model = ModelSpec(kind="brainage", input_shape=(8, 8, 8), width=2)
    model = build_model(spec_model, seed=0)
    mask = random_mask_for(model, keep=0.5, seed=0)
    still = train_local(model, mask, data, TrainingSpec(lr=1e-12, batch_size=4), seed=0)
    before = evaluate(model, data.x_train, data.y_train, "regression")["mse"]
    assert still["train_loss"] == pytest.approx(before, rel=1e-5)
    assert still["steps"] == 2.0
    spec = TrainingSpec(lr=1e-2, batch_size=4, local_epochs=20, optimizer="adam")
    metrics = train_local(model, mask, data, spec, seed=0)
    after = evaluate(model, data.x_train, data.y_train, "regression")["mse"]
    assert metrics["train_loss"] < 0.75 * before
    assert after < 0.75 * before
    for name, keep in mask.items():
        assert torch.count_nonzero(dict(model.named_parameters())[name].detach()[~keep]) == 0


def test_divergence_is_reported() -> None:
    data = digits_site()
    model = build_model(ModelSpec(kind="mlp", input_shape=(64,)), seed=0)
    mask = {n: torch.ones(s, dtype=torch.bool) for n, s in prunable_shapes(model).items()}
    with pytest.raises(PlatformError, match="diverged"):
        train_local(model, mask, data, TrainingSpec(lr=1e6, local_epochs=3), seed=0)


class _Constant(nn.Module):
    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out[: x.shape[0]]


def test_evaluate_regression_metrics_by_hand() -> None:
    pred = torch.tensor([[50.0], [60.0], [70.0], [80.0]])
    y = torch.tensor([52.0, 57.0, 70.0, 84.0])
    got = evaluate(_Constant(pred), torch.zeros(4, 1), y, "regression", batch_size=4)
    # errors -2, 3, 0, -4: mae 9/4, mse 29/4
    assert got == pytest.approx({"mae": 2.25, "mse": 7.25, "rmse": 7.25**0.5})


def test_evaluate_classification_metrics_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 0])
    got = evaluate(_Constant(logits), torch.zeros(3, 1), y, "classification")
    assert got["accuracy"] == pytest.approx(2 / 3)
    expected = torch.nn.functional.cross_entropy(logits.double(), y).item()
    assert got["loss"] == pytest.approx(expected)
