"""What a site says: waiting for the operator, one line per round, correct round counts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedsparsify.clients.site_log import SiteLog, describe_round

FID = "f" * 32


def _fed(rounds: int, closed: int, me: str = "c1", state: str = "completed") -> dict:  # type: ignore[type-arg]
    return {
        "id": FID,
        "state": state,
        "current_round": closed - 1 if closed else None,
        "history": [{"state": "closed", "contributors": [me, "c2"]} for _ in range(closed)],
        "spec": {"rounds": rounds},
    }


def _view() -> SiteLog:
    return SiteLog(
        "site-0", server="http://agg:8000", federation_id=FID, rounds=5, state_dir=Path("st")
    )


def test_the_final_line_counts_rounds_right_also_after_a_restart() -> None:
    summary = {"validation": {"n": 12, "mae": 7.891}, "final_sparsity": 0.9}
    line = _view().summary_line(_fed(5, 5), "c1", summary)
    assert line.startswith(
        "site-0: federation completed after 5 of 5 rounds (this site took part in 5)"
    )
    assert "final validation MAE 7.89 y (n=12), sparsity 0.900" in line
    assert "fedsparsify export --state st --out MODEL_DIR" in line
    # a site that missed two rounds, and a failed federation
    assert "(this site took part in 3)" in _view().summary_line(
        {**_fed(5, 5), "history": _fed(5, 3)["history"] + _fed(5, 2, me="c9")["history"]},
        "c1",
        summary,
    )
    failed = _view().summary_line(
        {**_fed(5, 2, state="failed"), "reason": "quorum lost"}, "c1", None
    )
    assert (
        failed
        == "site-0: federation failed after 2 of 5 rounds (this site took part in 2): quorum lost"
    )


def test_waiting_for_round_zero_names_the_operators_command_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = _view()
    with caplog.at_level(logging.INFO, logger="fedsparsify.clients.site_log"):
        for _ in range(3):
            view.waiting(_fed(5, 0, state="enrolling"), "c1")
        view.round_done(
            3, 0, {"val_mae": 9.123, "sparsity": 0.5, "upload_bytes": 12345.0, "round_s": 2.04}
        )
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert f"fedsparsify federation start-round {FID} --server http://agg:8000" in lines[0]
    assert lines[1] == "site-0 round 3 (4/5): val MAE 9.12 y, sparsity 0.500, 12,345 B up, 2.0 s"
    assert describe_round(0, 60) == "round 0 (1/60)"
