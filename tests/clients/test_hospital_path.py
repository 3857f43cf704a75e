"""A hospital's whole path through the CLI, each step its own process, as the README shows it.

``data synth`` → ``serve`` → ``federation create --spec examples/specs/brainage-demo.json`` →
the sites' fingerprints in one peers file (what they exchange out of band) → three
``client --peers`` processes → ``federation start-round`` → ``export`` → ``predict`` on
the held-out scans. The fast test runs three rounds and checks every artefact; the slow one runs the
spec's 40 rounds and requires the predicted ages to follow the true ones (Pearson r > 0.5).
"""

from __future__ import annotations

import csv
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from fedsparsify.clients.checkpoint import CHECKPOINT_FILE
from fedsparsify.clients.launcher import (
    SiteProcess,
    confirm_peers,
    start_aggregator,
    start_site,
)
from tests.cli import run_cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]
SPEC = ROOT / "examples" / "specs" / "brainage-demo.json"
SITES = ("site-0", "site-1", "site-2")


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return run_cli(*args, env=environment, timeout=timeout).stdout


def _wait_for(what: str, predicate, timeout_s: float, sites: list[SiteProcess]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate():
        for proc in sites:
            if not proc.alive() and proc.popen.returncode != 0:
                pytest.fail(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail(40)}"
                )
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in sites)
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")
        time.sleep(0.5)


@dataclass
class Run:
    """What one hospital federation left behind."""

    root: Path
    rounds: int
    site_logs: dict[str, str]
    server: str
    admin_env: dict[str, str]


def _federation(tmp_path: Path, *, rounds: int | None, subjects: int, heldout: int) -> Run:
    data = tmp_path / "hospitals"
    _cli("data", "synth", "--sites", "3", "--subjects", str(subjects), "--heldout", str(heldout),
         "--shape", "demo", "--out", str(data))  # fmt: skip
    token = secrets.token_urlsafe(16)
    env = {"FEDSPARSIFY_ADMIN_TOKEN": token}
    sites: list[SiteProcess] = []
    with start_aggregator(tmp_path / "aggregator", admin_token=token) as server:
        create = ["federation", "create", "--server", server.url, "--spec", str(SPEC)]
        out = _cli(*create, *(["--rounds", str(rounds)] if rounds else []), env=env)
        fid = re.search(r"federation: (\w+)", out).group(1)  # type: ignore[union-attr]
        code = re.search(r"join code \(shown once\): (\S+)", out).group(1)  # type: ignore[union-attr]
        # the hospitals' exchange of fingerprints (`fedsparsify identity` lines), played here
        states = {name: tmp_path / "state" / name for name in SITES}
        peers = confirm_peers(states, tmp_path / "peers.txt")
        try:
            for name in SITES:
                sites.append(
                    start_site(
                        server=server.url,
                        enrollment_token=code,
                        data_dir=data / name,
                        state_dir=tmp_path / "state" / name,
                        name=name,
                        log_dir=tmp_path / "logs",
                        peers=peers,
                    )
                )

            def all_waiting() -> bool:
                return all("waiting for round 0" in p.log_path.read_text() for p in sites)

            _wait_for("every site to hold the key", all_waiting, 300, sites)
            _cli("federation", "start-round", fid, "--server", server.url, env=env)
            _wait_for("the federation to finish", lambda: all(not p.alive() for p in sites),
                      1200, sites)  # fmt: skip
            for proc in sites:
                assert proc.popen.returncode == 0, proc.log_tail(40)
            fed = json.loads(_cli("federation", "show", fid, "--server", server.url, env=env))
            # a finished site started again says what it did, not "0 rounds"
            state = tmp_path / "state" / "site-1"
            again = _cli(
                "client", "--server", server.url, "--data", str(data / "site-1"),
                "--state", str(state), "--peers", str(peers),
            )  # fmt: skip
        finally:
            for proc in sites:
                proc.stop()
    n = int(json.loads(SPEC.read_text())["rounds"]) if rounds is None else rounds
    assert fed["state"] == "completed" and len(fed["history"]) == n
    assert (
        f"site-1: federation completed after {n} of {n} rounds (this site took part in {n})"
        in again
    )
    logs = {p.name: p.log_path.read_text() for p in sites}
    _cli("export", "--state", str(tmp_path / "state" / "site-0"), "--out", str(tmp_path / "model"))
    _cli("predict", "--model", str(tmp_path / "model"), str(data / "heldout"),
         "--out", str(tmp_path / "predictions.csv"))  # fmt: skip
    return Run(tmp_path, n, logs, server.url, env)


def _predictions(run: Run) -> list[dict[str, str]]:
    with (run.root / "predictions.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_three_hospitals_by_hand_export_and_predict(tmp_path: Path) -> None:
    run = _federation(tmp_path, rounds=3, subjects=8, heldout=6)
    for name, log in run.site_logs.items():
        per_round = re.findall(rf"{name} round (\d) \((\d)/3\): val MAE [\d.]+ y, sparsity", log)
        assert per_round == [("0", "1"), ("1", "2"), ("2", "3")], log
        assert f"{name}: federation completed after 3 of 3 rounds (this site took part in 3)" in log
        assert "HTTP Request" not in log  # httpx's request lines only at debug level
        state = tmp_path / "state" / name
        assert (state / CHECKPOINT_FILE).stat().st_mode & 0o777 == 0o600
        assert not (state / "checkpoint.pt").exists()
    card = json.loads((tmp_path / "model" / "model-card.json").read_text())
    assert card["federation"]["rounds_completed"] == 3
    assert sorted(s["name"] for s in card["federation"]["sites"]) == list(SITES)
    assert card["spec"]["name"] == json.loads(SPEC.read_text())["name"]
    rows = _predictions(run)
    held = (tmp_path / "hospitals" / "heldout" / "participants.tsv").read_text().splitlines()
    assert len(rows) == len(held) - 1 == 6
    for row in rows:
        assert float(row["predicted_age"]) > 0 and row["notes"] == "on the model's grid"
        gap = float(row["predicted_age"]) - float(row["age"])
        assert float(row["brain_age_gap_raw"]) == pytest.approx(gap, abs=0.011)


@pytest.mark.slow
def test_the_demo_spec_predicts_held_out_brain_age(tmp_path: Path) -> None:
    """The spec's 40 rounds over three sites of 60: predictions follow the true ages."""
    run = _federation(tmp_path, rounds=None, subjects=60, heldout=60)
    rows = _predictions(run)
    assert len(rows) == 60
    predicted = np.array([float(r["predicted_age"]) for r in rows])
    age = np.array([float(r["age"]) for r in rows])
    r = float(np.corrcoef(predicted, age)[0, 1])
    mae = float(np.abs(predicted - age).mean())
    print(f"held-out Pearson r {r:.3f}, MAE {mae:.2f} y over {len(rows)} scans")
    assert r > 0.5, f"held-out Pearson r {r:.3f} (MAE {mae:.2f} y)"
