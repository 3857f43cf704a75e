"""The in-process runner on a tiny digits federation."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from fedsparsify.errors import ConfigError
from fedsparsify.platform.data.sitedata import FederatedData, SiteData
from fedsparsify.platform.masks import prunable_shapes
from fedsparsify.platform.pruning import keep_count
from fedsparsify.platform.runner import InProcessFederation, RoundRow, run_federation
from fedsparsify.platform.spec import (
    FederationSpec,
    Method,
    ModelSpec,
    ScheduleSpec,
    TrainingSpec,
)

torch.set_num_threads(1)


def digits_federation(n_sites: int = 3) -> FederatedData:
    """IID shards of sklearn's digits, a held-out test set of 400 images."""
    x, y = load_digits(return_X_y=True)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    xt = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)[perm]
    yt = torch.tensor(y, dtype=torch.int64)[perm]
    x_test, y_test, xt, yt = xt[:400], yt[:400], xt[400:], yt[400:]
    shard = len(yt) // n_sites
    sites = []
    for i in range(n_sites):
        xs, ys = xt[i * shard : (i + 1) * shard], yt[i * shard : (i + 1) * shard]
        cut = int(0.85 * shard)
        sites.append(SiteData(f"s{i}", "classification", xs[:cut], ys[:cut], xs[cut:], ys[cut:]))
    return FederatedData("classification", tuple(sites), x_test, y_test)


def spec_for(method: Method, rounds: int = 8) -> FederationSpec:
    schedule = (
        ScheduleSpec(kind="none")
        if method == "fedavg"
        else ScheduleSpec(kind="progressive", fraction=0.35, target=0.8)
    )
    return FederationSpec(
        name="digits",
        rounds=rounds,
        min_clients=3,
        quorum=3,
        method=method,
        schedule=schedule,
        model=ModelSpec(kind="mlp", input_shape=(1, 8, 8), hidden=64),
        training=TrainingSpec(lr=0.05, batch_size=16, local_epochs=1),
        seed=1,
    )


def test_fedsparsify_global_learns_and_reaches_the_target_sparsity() -> None:
    seen: list[RoundRow] = []
    spec = spec_for("fedsparsify-global")
    data = digits_federation()
    rows = run_federation(spec, data, on_round=seen.append)
    assert seen == rows
    assert [r["round"] for r in rows] == list(range(8))
    assert set(rows[0]) >= {"round", "sparsity", "n_values", "n_total", "accuracy", "train_loss"}
    fed = InProcessFederation(spec, data)  # only to count the prunable coordinates
    n_prunable = sum(torch.Size(s).numel() for s in prunable_shapes(fed.global_model).values())
    final = rows[-1]
    assert final["sparsity"] == pytest.approx(1 - keep_count(n_prunable, 0.8) / n_prunable)
    assert rows[0]["sparsity"] == 0.0
    assert [r["n_values"] for r in rows] == sorted((r["n_values"] for r in rows), reverse=True)
    assert final["n_values"] < 0.3 * final["n_total"]
    assert final["accuracy"] > 0.85  # chance is 0.1
    assert final["train_loss"] < rows[0]["train_loss"]


def test_fedsparsify_local_reaches_roughly_the_target() -> None:
    fed = InProcessFederation(spec_for("fedsparsify-local", rounds=6), digits_federation())
    rows = fed.run()
    assert rows[-1]["sparsity"] == pytest.approx(0.8, abs=0.05)
    assert rows[-1]["accuracy"] > 0.6
    # the global model kept by the runner carries the majority mask
    for name, keep in fed.global_mask.items():
        param = dict(fed.global_model.named_parameters())[name].detach()
        assert torch.count_nonzero(param[~keep]) == 0


def test_runner_refuses_too_few_sites() -> None:
    data = digits_federation(n_sites=2)
    with pytest.raises(ConfigError, match="sites"):
        run_federation(spec_for("fedavg"), data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runner_places_models_on_a_device() -> None:
    spec = spec_for("fedsparsify-global", rounds=5)
    fed = InProcessFederation(spec, digits_federation(), device="cuda")
    rows = fed.run()
    assert next(fed.global_model.parameters()).is_cuda
    assert all(next(site.model.parameters()).is_cuda for site in fed.sites)
    assert rows[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert rows[-1]["accuracy"] > 0.7
