"""Pruning schedules: the target sparsity of a round, as a pure function of the round index.

Round ``r``'s target is the sparsity of the mask that round trains under (FedSparsify-Global
prunes the aggregate of round ``r - 1`` to it when round ``r`` begins; FedSparsify-Local clients
prune their round-``r`` models to it). Prune events fall on rounds ``start_round``,
``start_round + frequency``, ...; with the default ``start_round=1`` round 0 trains dense.

Powers are computed by repeated multiplication (IEEE-exact on every machine) rather than
``pow``, whose last bit may differ between math libraries: every site must agree on the target.
"""

from __future__ import annotations

from fedsparsify.errors import ConfigError
from fedsparsify.platform.spec import ScheduleSpec

__all__ = ["progressive_between", "prune_events", "target_sparsity"]


def _ipow(base: float, exponent: int) -> float:
    out = 1.0
    for _ in range(exponent):
        out *= base
    return out


def prune_events(schedule: ScheduleSpec, round_index: int) -> int:
    """How many prune events have happened up to and including ``round_index``."""
    if round_index < schedule.start_round:
        return 0
    return (round_index - schedule.start_round) // schedule.frequency + 1


def target_sparsity(schedule: ScheduleSpec, round_index: int, rounds: int) -> float:
    """Target sparsity (fraction of prunable weights pruned) for round ``round_index``.

    - ``none``: 0.
    - ``progressive``: ``1 - (1 - fraction)^k`` after ``k`` prune events, capped at ``target``.
    - ``cubic`` (Zhu & Gupta 2017): ``s_f + (0 - s_f)(1 - (t - t0)/(T - t0))^3`` at the last
      event round ``t <= round_index`` (events every ``frequency`` rounds from ``t0``), and
      ``s_f`` from ``T`` on (``T = end_round``, default ``rounds - 1``; ``T <= t0`` jumps to
      ``s_f`` at ``t0``).
    - ``one-shot``: ``target`` from ``start_round`` on, 0 before.
    """
    if round_index < 0:
        raise ConfigError(f"round index must be >= 0, got {round_index}")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    kind = schedule.kind
    if kind == "none":
        return 0.0
    if kind == "one-shot":
        return schedule.target if round_index >= schedule.start_round else 0.0
    if kind == "progressive":
        events = prune_events(schedule, round_index)
        return min(schedule.target, 1.0 - _ipow(1.0 - schedule.fraction, events))
    if kind == "cubic":
        t0 = schedule.start_round
        end = schedule.end_round if schedule.end_round is not None else rounds - 1
        if round_index < t0:
            return 0.0
        if round_index >= end or end <= t0:
            return schedule.target
        t = t0 + ((round_index - t0) // schedule.frequency) * schedule.frequency
        remaining = 1.0 - (t - t0) / (end - t0)
        return schedule.target - schedule.target * (remaining * remaining * remaining)
    raise ConfigError(f"unknown schedule kind {kind!r}")


def progressive_between(target: float, start: int, end: int) -> ScheduleSpec:
    """A progressive schedule pruning every round from ``start`` that first reaches ``target``
    at round ``end``.

    The fraction is ``1 - (1 - target)^(1 / events)``, nudged up until the schedule's own
    arithmetic lands exactly on the target at ``end`` (and not before).
    """
    if not 0 <= start <= end:
        raise ConfigError(f"need 0 <= start <= end, got start={start}, end={end}")
    if not 0.0 < target < 1.0:
        raise ConfigError(f"target sparsity must be in (0, 1), got {target}")
    events = end - start + 1
    fraction = 1.0 - (1.0 - target) ** (1.0 / events)
    while True:
        schedule = ScheduleSpec(
            kind="progressive", target=target, fraction=fraction, start_round=start
        )
        if target_sparsity(schedule, end, end + 1) >= target:
            break
        fraction += 1e-12
    if end > start and target_sparsity(schedule, end - 1, end + 1) >= target:
        raise ConfigError(f"the schedule reaches {target} before round {end}")
    return schedule
