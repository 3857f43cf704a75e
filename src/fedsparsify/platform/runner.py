"""A plaintext in-process federation (no HTTP, no encryption) on the shared round logic.

Every site runs :class:`~fedsparsify.platform.rounds.Site` exactly as a networked client does;
the runner plays the aggregator with :func:`~fedsparsify.platform.rounds.aggregate` and keeps a
copy of the global model to evaluate on the held-out test set after each round.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from fedsparsify.errors import ConfigError, MaskError
from fedsparsify.platform.data.sitedata import FederatedData
from fedsparsify.platform.masks import Mask, full_mask, sparsity
from fedsparsify.platform.models import build_model
from fedsparsify.platform.rounds import (
    GlobalUpdate,
    Site,
    aggregate,
    apply_global_update,
    rounded,
)
from fedsparsify.platform.spec import FederationSpec
from fedsparsify.platform.training import evaluate

__all__ = ["InProcessFederation", "RoundRow", "run_federation"]

logger = logging.getLogger(__name__)

RoundRow = dict[str, float | int]


class InProcessFederation:
    """Sites plus a plaintext aggregator in one process; :meth:`run` plays all rounds.

    After a run, :attr:`global_model` holds the final global model (for FedSparsify-Local
    with the majority mask applied) and :attr:`global_mask` its mask.
    """

    def __init__(
        self,
        spec: FederationSpec,
        data: FederatedData,
        *,
        device: str | torch.device | None = None,
    ) -> None:
        if not data.sites:
            raise ConfigError("a federation needs at least one site")
        if len(data.sites) < spec.min_clients:
            raise ConfigError(f"spec needs {spec.min_clients} sites, data has {len(data.sites)}")
        self.spec = spec
        self.data = data
        self.sites = [Site(spec, site, device=device) for site in data.sites]
        self.global_model: nn.Module = build_model(spec.model, seed=spec.seed)
        if device is not None:
            self.global_model.to(device)
        self.global_mask: Mask = full_mask(self.global_model)
        self.rows: list[RoundRow] = []

    def run_round(self, round_index: int, previous: GlobalUpdate | None) -> GlobalUpdate:
        """One round on every site; updates :attr:`global_model` and appends a row."""
        plans = [site.begin_round(round_index, previous) for site in self.sites]
        digests = {plan.mask_digest for plan in plans}
        if len(digests) != 1:
            raise MaskError(f"sites disagree on the round-{round_index} mask: {sorted(digests)}")
        updates = [site.train() for site in self.sites]
        update = rounded(
            aggregate(
                updates,
                weighting=self.spec.weighting,
                max_weight_share=self.spec.max_weight_share,
            )
        )
        self.global_mask = apply_global_update(
            self.global_model,
            plans[0],
            update,
            self.spec.method,
            majority_rule=self.spec.majority_rule,
        )
        metrics = evaluate(self.global_model, self.data.x_test, self.data.y_test, self.data.task)
        weights = np.array([u.num_samples for u in updates], dtype=np.float64)
        losses = np.array([u.metrics["train_loss"] for u in updates], dtype=np.float64)
        row: RoundRow = {
            "round": round_index,
            "sparsity": sparsity(self.global_mask),
            "n_values": plans[0].n_values,
            "n_total": plans[0].layout.n_total,
            **metrics,
            "train_loss": float(np.average(losses, weights=weights)),
        }
        self.rows.append(row)
        logger.info(
            "round %d: sparsity %.3f, %d values, %s",
            round_index,
            row["sparsity"],
            row["n_values"],
            ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()),
        )
        return update

    def run(self, *, on_round: Callable[[RoundRow], None] | None = None) -> list[RoundRow]:
        """Play ``spec.rounds`` rounds; call ``on_round`` with each row as it is made."""
        previous: GlobalUpdate | None = None
        for round_index in range(self.spec.rounds):
            previous = self.run_round(round_index, previous)
            if on_round is not None:
                on_round(self.rows[-1])
        return self.rows


def run_federation(
    spec: FederationSpec,
    data: FederatedData,
    *,
    on_round: Callable[[RoundRow], None] | None = None,
    device: str | torch.device | None = None,
) -> list[RoundRow]:
    """Run a whole federation in process (models on ``device``); return per-round rows.

    Row keys: ``round``, ``sparsity`` (of the evaluated global model's mask), ``n_values`` (values
    each site uploaded that round), ``n_total`` (dense count), the test metrics (``accuracy`` and
    ``loss``, or ``mae``, ``rmse`` and ``mse``) and ``train_loss`` (sample-weighted mean).
    """
    return InProcessFederation(spec, data, device=device).run(on_round=on_round)
