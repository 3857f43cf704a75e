"""The federation spec ``fedsparsify simulate`` and its benchmark use when given none.

A small MLP (32 features, two hidden layers of 64, 10 classes: 6,922 values) on the synthetic
task, FedSparsify-Global pruned progressively to 0.9, lean CKKS with pairwise masks, weights by
samples capped at a share of 0.5, one local epoch of Adam per round.
"""

from __future__ import annotations

from fedsparsify.platform.schedules import progressive_between
from fedsparsify.platform.spec import FederationSpec, ModelSpec, ScheduleSpec, TrainingSpec

__all__ = ["default_spec"]


def default_spec(
    *,
    rounds: int = 20,
    target: float = 0.9,
    one_shot: bool = False,
    pairwise_masks: bool = True,
    seed: int = 0,
) -> FederationSpec:
    """The default simulation spec; ``one_shot`` prunes to ``target`` before round 0 (for
    benchmarks that measure every round at the final sparsity)."""
    if one_shot:
        schedule = ScheduleSpec(kind="one-shot", target=target, start_round=0)
    else:
        schedule = progressive_between(target, max(1, rounds // 4), max(1, (3 * rounds) // 4))
    return FederationSpec(
        name="simulation",
        rounds=rounds,
        min_clients=2,
        quorum=2,
        crypto_preset="lean",
        method="fedsparsify-global",
        schedule=schedule,
        model=ModelSpec(kind="mlp", input_shape=(32,), hidden=64, num_classes=10),
        training=TrainingSpec(local_epochs=1, batch_size=16, lr=0.01, optimizer="adam"),
        seed=seed,
        pairwise_masks=pairwise_masks,
    )
