"""``fedsparsify bench privacy``: what the aggregator's stored uploads give a key holder, and the
quick run's report against its own per-seed numbers."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedsparsify.bench.accuracy import SETUPS, load_data, make_spec
from fedsparsify.bench.privacy import ATTACKS, TARGETS, VIEWS, _model_from_upload, _uploads
from fedsparsify.cli import app
from fedsparsify.clients.codec import UpdateCodec
from fedsparsify.platform.runner import InProcessFederation


def test_stored_uploads_decrypt_to_noise_with_masks_and_to_the_update_without(
    tmp_path: Path,
) -> None:
    setup = SETUPS["digits"](True)
    data = load_data(setup, seed=0, cache_dir=tmp_path / "cache")
    spec = make_spec(setup, "fedavg", 0.0, seed=0)
    fed = InProcessFederation(spec, data)
    fed.run()
    updates = [site.train() for site in fed.sites]  # what _uploads encrypts (same training)
    ctx, blobs = _uploads(spec, fed.sites, tmp_path / "blobs")
    codec = UpdateCodec(ctx, contributor="site-0")
    for k, site in enumerate(fed.sites):
        plan = site.plan
        assert plan is not None
        truth = updates[k].values.astype(np.float64)
        seen = {
            kind: plan.layout.flatten(_model_from_upload(site, codec, blobs[kind][k]).state_dict())
            for kind in ("masked", "unmasked")
        }
        np.testing.assert_allclose(seen["unmasked"], truth, atol=1e-5, rtol=0)
        noise = np.abs(seen["masked"] - truth)
        assert np.median(noise) > 1.0  # uniform residues, not the update
        assert np.corrcoef(seen["masked"], truth)[0, 1] < 0.1


def test_quick_run_reports_mean_and_std_of_its_seeds(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["bench", "privacy", "--quick", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "privacy.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", report["commit"])
    assert report["command"].startswith("fedsparsify bench privacy --quick")
    assert report["seeds"] == [0, 1] and len(report["per_seed"]) == 2
    rows = report["summary"]
    assert len(rows) == len(TARGETS) * (1 + len(VIEWS)) * len(ATTACKS)
    for row in rows:
        for metric in ("auc", "tpr_at_1pct_fpr"):
            cells = [
                s["targets"][row["target"]][row["attack"]][metric]
                if row["view"] == "final model"
                else s["views"][row["target"]][row["view"]][row["attack"]][metric]
                for s in report["per_seed"]
            ]
            assert row[metric]["mean"] == pytest.approx(statistics.fmean(cells))
            assert row[metric]["std"] == pytest.approx(statistics.stdev(cells))
            assert 0.0 <= row[metric]["mean"] <= 1.0
    sparsity = {
        label: report["per_seed"][0]["targets"][label]["sparsity"] for label, _, _ in TARGETS
    }
    assert sparsity["fedavg"] == 0.0
    assert sparsity["fedsparsify-0.9"] == pytest.approx(0.9, abs=1e-3)
    assert sparsity["fedsparsify-0.95"] == pytest.approx(0.95, abs=1e-3)
    assert "| fedavg | aggregator + key, masked upload |" in report["table"]


torch.set_num_threads(1)
