"""Masked local training and evaluation.

Pruned weights stay exactly zero through every step: the mask is applied to the weights before
training, to the gradients before each step, and to the weights and every optimizer state
tensor (momentum buffers, Adam moments) after each step. Masking the optimizer state goes beyond
the original code, which masked only the weights.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fedsparsify.errors import ConfigError, PlatformError
from fedsparsify.platform.data.sitedata import SiteData, Task
from fedsparsify.platform.masks import Mask, check_mask, prunable_shapes
from fedsparsify.platform.spec import TrainingSpec

__all__ = [
    "build_optimizer",
    "enforce_mask",
    "evaluate",
    "predict_outputs",
    "task_loss",
    "train_local",
]

logger = logging.getLogger(__name__)


def build_optimizer(params: Iterable[nn.Parameter], spec: TrainingSpec) -> torch.optim.Optimizer:
    """SGD (with momentum) or Adam, as the training spec says."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    raise ConfigError(f"unknown optimizer {spec.optimizer!r}")


def task_loss(output: torch.Tensor, target: torch.Tensor, task: Task) -> torch.Tensor:
    """Mean-squared error for regression (output ``(N, 1)`` or ``(N,)``), cross-entropy else."""
    if task == "regression":
        return F.mse_loss(output.reshape(-1), target.reshape(-1).to(output.dtype))
    return F.cross_entropy(output, target)


def enforce_mask(
    params: Mapping[str, nn.Parameter],
    fmask: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Zero pruned coordinates of the weights and of every same-shaped optimizer state tensor."""
    with torch.no_grad():
        for name, keep in fmask.items():
            param = params[name]
            param.mul_(keep)
            if optimizer is None:
                continue
            for value in optimizer.state.get(param, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == param.shape:
                    value.mul_(keep)


def train_local(
    model: nn.Module,
    mask: Mask,
    data: SiteData,
    spec: TrainingSpec,
    *,
    seed: int,
    global_state: Mapping[str, torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> dict[str, float]:
    """Train ``model`` in place on ``data.x_train`` under ``mask``; return training metrics.

    ``seed`` fixes the batch order. ``global_state`` (the round's starting weights) anchors the
    FedProx term ``mu/2 * ||w - w_global||^2`` when ``spec.proximal_mu > 0``. ``optimizer`` lets a
    caller supply (and afterwards inspect) the optimizer; by default a fresh one per call.
    Returns ``train_loss`` (mean task loss over the last epoch, without the proximal term) and
    ``steps``.
    """
    check_mask(mask, prunable_shapes(model))
    params = dict(model.named_parameters())
    device = next(iter(params.values())).device
    fmask = {n: m.to(device=device, dtype=params[n].dtype) for n, m in mask.items()}
    opt = optimizer if optimizer is not None else build_optimizer(params.values(), spec)
    anchor: dict[str, torch.Tensor] = {}
    if spec.proximal_mu > 0:
        if global_state is None:
            raise ConfigError("FedProx (proximal_mu > 0) needs the round's global_state")
        anchor = {
            n: global_state[n].detach().to(device=device, dtype=p.dtype).clone()
            for n, p in params.items()
            if p.requires_grad
        }
    enforce_mask(params, fmask, opt)
    n = data.num_samples
    if n == 0:
        raise PlatformError(f"site {data.name!r} has no training samples")
    generator = torch.Generator().manual_seed(seed)
    model.train()
    steps = 0
    epoch_loss = 0.0
    for _ in range(spec.local_epochs):
        order = torch.randperm(n, generator=generator)
        epoch_loss = 0.0
        for start in range(0, n, spec.batch_size):
            idx = order[start : start + spec.batch_size]
            x = data.x_train[idx].to(device)
            y = data.y_train[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = task_loss(model(x), y, data.task)
            if not torch.isfinite(loss):
                raise PlatformError(
                    f"training diverged on site {data.name!r} (loss {loss.item()}); "
                    "lower the learning rate"
                )
            total = loss
            if anchor:
                prox = sum(((params[k] - a) ** 2).sum() for k, a in anchor.items())
                total = loss + 0.5 * spec.proximal_mu * prox
            total.backward()
            with torch.no_grad():
                for name, keep in fmask.items():
                    grad = params[name].grad
                    if grad is not None:
                        grad.mul_(keep)
            opt.step()
            enforce_mask(params, fmask, opt)
            epoch_loss += float(loss.detach()) * int(idx.numel())
            steps += 1
    mean_loss = epoch_loss / n
    logger.debug("site %s trained %d steps, loss %.4f", data.name, steps, mean_loss)
    return {"train_loss": mean_loss, "steps": float(steps)}


@torch.no_grad()
def predict_outputs(model: nn.Module, x: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """The model's outputs for ``x`` in eval mode, batch by batch, on the CPU."""
    if x.shape[0] == 0:
        raise PlatformError("cannot evaluate on an empty set")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat(
            [
                model(x[i : i + batch_size].to(device)).cpu()
                for i in range(0, x.shape[0], batch_size)
            ]
        )
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    task: Task,
    *,
    batch_size: int = 32,
) -> dict[str, float]:
    """Regression: ``mae``, ``rmse``, ``mse``; classification: ``accuracy``, ``loss``."""
    outputs = predict_outputs(model, x, batch_size=batch_size)
    if task == "regression":
        err = outputs.reshape(-1).double() - y.reshape(-1).double()
        mse = float((err**2).mean())
        return {"mae": float(err.abs().mean()), "rmse": mse**0.5, "mse": mse}
    loss = float(F.cross_entropy(outputs.double(), y))
    accuracy = float((outputs.argmax(dim=1) == y).double().mean())
    return {"accuracy": accuracy, "loss": loss}
