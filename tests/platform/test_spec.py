"""Federation spec validation."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fedsparsify.platform.spec import FederationSpec, ScheduleSpec


def test_defaults_are_valid_and_frozen() -> None:
    spec = FederationSpec(name="demo")
    assert spec.method == "fedsparsify-global"
    assert spec.crypto_preset == "lean"
    with pytest.raises(ValidationError):
        spec.rounds = 3  # type: ignore[misc]


def test_round_trips_through_json() -> None:
    spec = FederationSpec(name="x", rounds=3, schedule=ScheduleSpec(kind="cubic", target=0.95))
    assert FederationSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"quorum": 3, "min_clients": 2}, "quorum"),
        ({"method": "fedavg"}, "fedavg"),
        ({"schedule": ScheduleSpec(kind="none")}, "schedule"),
        ({"rounds": 0}, "rounds"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_specs_name_the_problem(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        FederationSpec(name="x", **kwargs)  # type: ignore[arg-type]
