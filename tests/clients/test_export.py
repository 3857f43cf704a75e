"""``export``: a finished site's model folder round-trips the model exactly, owner-only."""

from __future__ import annotations

import functools
import json
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsparsify.clients.export import export_model, final_summary
from fedsparsify.clients.state import StateDir
from fedsparsify.errors import ConfigError, DataError
from fedsparsify.platform.data import FederatedData, make_brainage_federation
from fedsparsify.platform.data.synth import write_synthetic_federation
from fedsparsify.platform.modelfile import (
    CARD_JSON,
    MODEL_FILE,
    ROUNDING_GRID,
    read_model_dir,
    round_state,
)
from fedsparsify.platform.predict import ModelGrid, find_scans, predict, prepare_scan
from fedsparsify.platform.rounds import Site, aggregate, rounded
from fedsparsify.platform.spec import FederationSpec

SHAPE = (24, 28, 24)


def _spec() -> FederationSpec:
    return FederationSpec.model_validate(
        {
            "name": "export test",
            "rounds": 2,
            "min_clients": 1,
            "quorum": 1,
            "schedule": {"kind": "one-shot", "target": 0.6, "start_round": 1},
            "model": {"kind": "brainage", "input_shape": list(SHAPE), "width": 2},
            "training": {"batch_size": 4, "lr": 0.003, "optimizer": "adam"},
        }
    )


@functools.cache
def _data() -> FederatedData:
    return make_brainage_federation(1, subjects_per_site=20, shape=SHAPE, test_subjects=0)


def _finished_site(state_dir: Path, *, final: bool = True) -> Site:
    """Two rounds of a one-site federation in process, saved as the runtime saves them."""
    spec = _spec()
    site = Site(spec, _data().sites[0])
    site.begin_round(0, None)
    site.begin_round(1, rounded(aggregate([site.train()])))  # as a site decrypts it
    last = rounded(aggregate([site.train()]))
    fed = {
        "id": "f" * 32,
        "state": "completed",
        "participants": [{"name": site.name, "num_samples": site.data.num_samples}],
        "history": [{"state": "closed", "contributors": ["c1"]} for _ in range(2)],
    }
    summary = None
    if final:
        site.finish(last)
        summary = final_summary(site, fed, key_set_digest="ab" * 32, client_id="c1")
    StateDir(state_dir).save_checkpoint(
        {
            "site": site.state_dict(),
            "uploaded_round": 1,
            "final": final,
            "spec": spec.model_dump(mode="json"),
            "summary": summary,
        }
    )
    return site


def test_export_round_trips_the_rounded_model_exactly(tmp_path: Path) -> None:
    site = _finished_site(tmp_path / "state")
    card = export_model(tmp_path / "state", tmp_path / "model")
    out = tmp_path / "model"
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    loaded = read_model_dir(out, check_sparse=True)  # the sparse form rebuilds the same model
    want, worst = round_state(site.model.state_dict())
    got = loaded.model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(torch.equal(loaded.mask[k], site.mask[k]) for k in site.mask)
    assert worst <= ROUNDING_GRID / 2  # decrypted averages are on the grid already
    for tensor in got.values():
        if tensor.is_floating_point():
            steps = tensor.double() / ROUNDING_GRID
            assert torch.equal(steps, torch.round(steps))
    # the card says what the issue asks for
    saved = loaded.card
    extra = ("files", "format", "format_version")
    assert {k: v for k, v in saved.items() if k not in extra} == card
    assert saved["format_version"] == 1 and saved["spec"]["name"] == "export test"
    assert saved["federation"]["rounds_completed"] == 2
    assert saved["federation"]["sites"] == [{"name": site.name, "num_samples": 16}]
    assert saved["federation"]["key_set_digest"] == "ab" * 32
    assert saved["final_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert saved["final_validation"]["mae"] == pytest.approx(site.evaluate()["mae"], abs=1e-4)
    assert saved["rounding"]["grid"] == ROUNDING_GRID and saved["created_at"].endswith("Z")
    assert saved["input"]["shape"] == list(SHAPE) and saved["input"]["orientation"] == "RAS"
    # the age-bias line, fitted independently on the site's validation predictions
    with torch.no_grad():
        predicted = site.model.eval()(site.data.x_val).reshape(-1).double().numpy()
    slope, intercept = np.polyfit(site.data.y_val.double().numpy(), predicted, 1)
    bias = loaded.age_bias
    assert bias is not None and bias.n == 4
    assert bias.slope == pytest.approx(slope, abs=1e-5)
    assert bias.intercept == pytest.approx(intercept, abs=1e-4)
    assert "Model card: export test" in (out / "model-card.md").read_text()


def test_predict_reads_back_what_export_wrote(tmp_path: Path) -> None:
    site = _finished_site(tmp_path / "state")
    export_model(tmp_path / "state", tmp_path / "model")
    exported = read_model_dir(tmp_path / "model")
    write_synthetic_federation(tmp_path / "data", sites=1, subjects=4, heldout=3, shape=SHAPE)
    scans = find_scans(tmp_path / "data" / "heldout")
    rows = predict(exported, scans)
    rounded = Site(_spec(), site.data)
    rounded.model.load_state_dict(round_state(site.model.state_dict())[0])
    rounded.model.eval()
    grid = ModelGrid.from_json(exported.card["input"])
    for row in rows:
        x = prepare_scan(row.scan, grid).volume
        with torch.no_grad():
            want = float(rounded.model(torch.from_numpy(x)[None, None]).reshape(()))
        # the same weights and input; batching moves float32 outputs by an ulp or so
        assert row.predicted_age == pytest.approx(want, abs=1e-4)


def test_export_refuses_what_it_cannot_export(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a site's state directory"):
        export_model(tmp_path / "typo", tmp_path / "m0")
    assert not (tmp_path / "typo").exists()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="holds no checkpoint"):
        export_model(tmp_path / "nothing", tmp_path / "m0")
    _finished_site(tmp_path / "running", final=False)
    with pytest.raises(DataError, match="has not finished at this site"):
        export_model(tmp_path / "running", tmp_path / "m1")
    _finished_site(tmp_path / "state")
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        export_model(tmp_path / "state", tmp_path / "taken")
    other = _spec().model_dump(mode="json") | {"seed": 7}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="does not match"):
        export_model(tmp_path / "state", tmp_path / "m2", spec_file=tmp_path / "other.json")


def test_a_tampered_or_newer_model_folder_is_refused(tmp_path: Path) -> None:
    _finished_site(tmp_path / "state")
    export_model(tmp_path / "state", tmp_path / "model")
    altered = tmp_path / "altered"
    shutil.copytree(tmp_path / "model", altered)
    raw = bytearray((altered / MODEL_FILE).read_bytes())
    raw[-1] ^= 1
    (altered / MODEL_FILE).write_bytes(bytes(raw))
    with pytest.raises(DataError, match="does not match its SHA-256"):
        read_model_dir(altered)
    newer = tmp_path / "newer"
    shutil.copytree(tmp_path / "model", newer)
    card = json.loads((newer / CARD_JSON).read_text())
    (newer / CARD_JSON).write_text(json.dumps(card | {"format_version": 2}))
    with pytest.raises(DataError, match="model format version 2"):
        read_model_dir(newer)
    with pytest.raises(DataError, match="not an exported model"):
        read_model_dir(tmp_path / "state")
    assert np.isfinite(card["rounding"]["max_abs_change"])


def test_a_release_01_state_directory_exports_read_only(tmp_path: Path) -> None:
    """A site that finished under 0.1 can still export its model (given the spec)."""
    fixture = Path(__file__).parents[1] / "fixtures" / "release-0.1"
    state = tmp_path / "site"
    shutil.copytree(fixture / "site", state)
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(RELEASE_01_SPEC))
    with pytest.raises(DataError, match="does not record the spec: pass the federation's spec"):
        export_model(state, tmp_path / "m0")
    card = export_model(state, tmp_path / "model", spec_file=spec)
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before  # nothing written
    loaded = read_model_dir(tmp_path / "model", check_sparse=True)
    legacy = torch.load(state / "checkpoint.pt", weights_only=True)["site"]["model"]
    want, _ = round_state(legacy)
    assert all(torch.equal(loaded.model.state_dict()[k], want[k]) for k in want)
    assert (
        card["federation"]["id"]
        == json.loads((state / "credentials.json").read_text())["federation_id"]
    )
    assert card["final_validation"] is None and "input" not in card  # 0.1 recorded neither
    assert card["spec_verified"] is False
    assert (
        "a release-0.1 state records no spec" in (tmp_path / "model" / "model-card.md").read_text()
    )


RELEASE_01_SPEC = {
    "name": "release-0.1 fixture",
    "rounds": 2,
    "min_clients": 2,
    "quorum": 2,
    "round_timeout_s": 600,
    "crypto_preset": "lean",
    "method": "fedsparsify-global",
    "schedule": {"kind": "progressive", "target": 0.5, "fraction": 0.5, "start_round": 1},
    "model": {"kind": "mlp", "input_shape": [1, 8, 8], "hidden": 16},
    "seed": 3,
}
