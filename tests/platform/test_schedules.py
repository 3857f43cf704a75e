"""Pruning schedules against hand-computed values."""

from __future__ import annotations

import pytest

from fedsparsify.errors import ConfigError
from fedsparsify.platform.schedules import progressive_between, prune_events, target_sparsity
from fedsparsify.platform.spec import ScheduleSpec


def test_progressive_removes_a_fraction_of_the_rest_every_f_rounds() -> None:
    sched = ScheduleSpec(kind="progressive", fraction=0.2, target=0.5, frequency=2, start_round=1)
    got = [target_sparsity(sched, r, rounds=12) for r in range(10)]
    # events at rounds 1, 3, 5, 7, ...: 1 - 0.8^k = 0.2, 0.36, 0.488, 0.5904 -> capped at 0.5
    want = [0.0, 0.2, 0.2, 0.36, 0.36, 0.488, 0.488, 0.5, 0.5, 0.5]
    assert got == pytest.approx(want, abs=1e-12)
    assert [prune_events(sched, r) for r in range(6)] == [0, 1, 1, 2, 2, 3]


def test_progressive_from_round_zero() -> None:
    sched = ScheduleSpec(kind="progressive", fraction=0.5, target=0.9, frequency=1, start_round=0)
    assert [target_sparsity(sched, r, rounds=5) for r in range(5)] == [0.5, 0.75, 0.875, 0.9, 0.9]


def test_cubic_zhu_and_gupta() -> None:
    sched = ScheduleSpec(kind="cubic", target=0.9, frequency=1, start_round=1)
    rounds = 11  # T defaults to rounds - 1 = 10, t0 = 1
    assert target_sparsity(sched, 0, rounds) == 0.0
    assert target_sparsity(sched, 1, rounds) == 0.0  # s_i at t0
    assert target_sparsity(sched, 4, rounds) == pytest.approx(0.9 * (1 - (1 - 3 / 9) ** 3))
    assert target_sparsity(sched, 4, rounds) == pytest.approx(0.9 * 19 / 27)
    assert target_sparsity(sched, 10, rounds) == 0.9
    assert target_sparsity(sched, 25, rounds) == 0.9


def test_cubic_holds_between_events_and_honours_end_round() -> None:
    sched = ScheduleSpec(kind="cubic", target=0.8, frequency=3, start_round=2, end_round=14)
    # events at 2, 5, 8, 11, then s_f from T=14 on
    value_at_5 = 0.8 * (1 - (1 - 3 / 12) ** 3)
    assert target_sparsity(sched, 5, rounds=100) == pytest.approx(value_at_5)
    assert target_sparsity(sched, 7, rounds=100) == pytest.approx(value_at_5)
    assert target_sparsity(sched, 13, rounds=100) == pytest.approx(0.8 * (1 - (3 / 12) ** 3))
    assert target_sparsity(sched, 14, rounds=100) == 0.8


def test_one_shot_and_none() -> None:
    one = ScheduleSpec(kind="one-shot", target=0.95, start_round=3)
    assert [target_sparsity(one, r, 6) for r in range(6)] == [0, 0, 0, 0.95, 0.95, 0.95]
    none = ScheduleSpec(kind="none")
    assert {target_sparsity(none, r, 6) for r in range(6)} == {0.0}


@pytest.mark.parametrize(
    "sched",
    [
        ScheduleSpec(kind="progressive", fraction=0.3, target=0.95),
        ScheduleSpec(kind="cubic", target=0.99, frequency=2),
        ScheduleSpec(kind="one-shot", target=0.9, start_round=4),
    ],
)
def test_schedules_never_decrease_and_stay_below_target(sched: ScheduleSpec) -> None:
    values = [target_sparsity(sched, r, rounds=30) for r in range(40)]
    assert values == sorted(values)
    assert max(values) == pytest.approx(sched.target)
    assert all(0.0 <= v <= sched.target for v in values)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError):
        target_sparsity(ScheduleSpec(), -1, 10)
    with pytest.raises(ConfigError):
        target_sparsity(ScheduleSpec(), 0, 0)


@pytest.mark.parametrize(("target", "start", "end"), [(0.9, 10, 30), (0.95, 3, 3), (0.8, 0, 7)])
def test_progressive_between_reaches_target_exactly_at_end(
    target: float, start: int, end: int
) -> None:
    schedule = progressive_between(target, start, end)
    if start > 0:
        assert target_sparsity(schedule, start - 1, end + 1) == 0.0
    assert target_sparsity(schedule, start, end + 1) > 0.0
    assert target_sparsity(schedule, end, end + 1) == target
    if end > start:
        assert target_sparsity(schedule, end - 1, end + 1) < target


def test_progressive_between_refuses_a_backwards_window() -> None:
    with pytest.raises(ConfigError, match="start"):
        progressive_between(0.9, 5, 4)
