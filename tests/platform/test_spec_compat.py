"""Stored specs of older formats, and site state that outlives a spec gaining a field.

Reads what release 0.1 wrote (``tests/fixtures/release-0.1``): the specs in its database and
site-1's checkpoint, whose ``spec_digest`` is 0.1's digest (SHA-256 of ``model_dump_json``).
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch

from fedsparsify.clients.state import StateDir
from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform import spec_compat
from fedsparsify.platform.data import make_digits_federation
from fedsparsify.platform.rounds import Site
from fedsparsify.platform.spec import FederationSpec
from fedsparsify.platform.spec_compat import (
    legacy_digest,
    load_stored_spec,
    matches_saved_digest,
    spec_digest,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-0.1"


def stored_specs() -> dict[str, dict[str, Any]]:
    """The spec dicts release 0.1 stored, by federation id."""
    with sqlite3.connect(FIXTURE / "aggregator" / "fedsparsify.db") as conn:
        return {
            fid: json.loads(raw) for fid, raw in conn.execute("SELECT id, spec FROM federations")
        }


class WithNewField(FederationSpec):
    """Today's spec plus a field with a default, as the next release may add."""

    secure_shuffle: bool = False


def fixture_site(spec: FederationSpec) -> Site:
    data = make_digits_federation(2, seed=0).sites[1]  # site-1 of the fixture's capture
    return Site(spec, data, name="site-1")


def test_release_0_1_specs_read_through_the_compatibility_step() -> None:
    """Every 0.1 field as stored; the trust settings as 0.1 ran: no pairwise masks, no weight
    cap, registration open until the federation ends (new federations default stricter)."""
    for raw in stored_specs().values():
        for version in (None, 1):
            spec = load_stored_spec(raw, version)
            dumped = spec.model_dump(mode="json")
            assert {k: dumped[k] for k in raw} == raw
            assert (spec.pairwise_masks, spec.max_weight_share) == (False, 1.0)
            assert spec.enrollment.late_joiners is True
        today = load_stored_spec(raw, spec_compat.SPEC_VERSION)  # a new federation's defaults
        assert (today.pairwise_masks, today.max_weight_share) == (True, 0.5)


def test_a_newer_or_broken_format_is_refused_clearly() -> None:
    raw = next(iter(stored_specs().values()))
    with pytest.raises(ConfigError, match="written by a newer release"):
        load_stored_spec(raw, spec_compat.SPEC_VERSION + 1)
    with pytest.raises(ConfigError, match=r"quorum.*exceeds|rounds: Input should"):
        load_stored_spec({**raw, "rounds": "many"})
    with pytest.raises(ConfigError, match="unknown_field"):
        load_stored_spec({**raw, "unknown_field": 1})


def test_a_renamed_field_is_carried_over_by_its_upgrade_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = next(iter(stored_specs().values()))
    old = {k: v for k, v in raw.items() if k != "round_timeout_s"} | {"timeout": 99.0}

    def rename(data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        data["round_timeout_s"] = data.pop("timeout")
        return data

    current = spec_compat.SPEC_VERSION
    monkeypatch.setattr(spec_compat, "SPEC_VERSION", current + 1)
    monkeypatch.setitem(spec_compat.UPGRADES, current, rename)
    assert load_stored_spec(old, current).round_timeout_s == 99.0
    assert load_stored_spec(old, 1).round_timeout_s == 99.0  # through every step
    assert load_stored_spec(raw, current + 1) == FederationSpec.model_validate(raw)  # as is


def test_digest_is_stable_when_a_defaulted_field_appears() -> None:
    raw = next(iter(stored_specs().values()))
    today = FederationSpec.model_validate(raw)
    later = WithNewField.model_validate(raw)
    assert spec_digest(later) == spec_digest(today)
    assert spec_digest(later.model_copy(update={"secure_shuffle": True})) != spec_digest(today)
    assert spec_digest(today.model_copy(update={"seed": 4})) != spec_digest(today)


def test_release_0_1_checkpoint_resumes_today_and_after_a_new_field() -> None:
    fid = json.loads((FIXTURE / "ids.json").read_text())["federation"]
    raw = stored_specs()[fid]
    # The directory as a whole is refused (it has no signing or mask key: issue 11's trust
    # model); its round state is read with weights_only and stays tied to its federation.
    with pytest.raises(ConfigError, match=r"written by fedsparsify 0\.1"):
        StateDir(FIXTURE / "site")
    checkpoint = torch.load(FIXTURE / "site" / "checkpoint.pt", weights_only=True)
    saved = checkpoint["site"]
    assert saved["version"] == 1
    today = load_stored_spec(raw, 1)  # what the aggregator serves for this federation
    assert saved["spec_digest"] == legacy_digest(today) != spec_digest(today)
    later = WithNewField.model_validate(today.model_dump(mode="json"))
    for spec in (today, later):
        site = fixture_site(spec)
        site.load_state_dict(saved)
        assert site.finished and site.plan is not None and site.plan.round_index == 1
        for name, tensor in saved["model"].items():
            torch.testing.assert_close(site.model.state_dict()[name], tensor)
    moved = later.model_copy(update={"secure_shuffle": True})
    assert not matches_saved_digest(moved, saved["spec_digest"])
    assert legacy_digest(FederationSpec.model_validate(raw)) is None  # masks on: not 0.1's
    with pytest.raises(ConfigError, match="another federation spec"):
        fixture_site(moved).load_state_dict(saved)


def test_state_saved_today_resumes_after_a_new_field() -> None:
    fid = json.loads((FIXTURE / "ids.json").read_text())["federation"]
    raw = stored_specs()[fid]
    site = fixture_site(FederationSpec.model_validate(raw))
    site.begin_round(0, None)
    saved = site.state_dict()
    assert saved["version"] == 2
    resumed = fixture_site(WithNewField.model_validate(raw))
    resumed.load_state_dict(saved)
    assert resumed.plan is not None and resumed.plan.round_index == 0


class NotPlainData:
    """Anything pickle can carry that is not a tensor or plain data."""


def test_a_checkpoint_holding_code_is_refused(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "site")
    torch.save(
        {"site": OrderedDict(), "extra": NotPlainData()}, tmp_path / "site" / "checkpoint.pt"
    )
    with pytest.raises(DataError, match=r"it is not loaded .*NotPlainData") as refused:
        state.load_checkpoint()
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)
    (tmp_path / "site" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="checkpoint"):
        state.load_checkpoint()
