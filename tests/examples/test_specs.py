"""``examples/specs/``: every spec validates, builds its model and fits the data it names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsparsify.platform.data import make_digits_federation
from fedsparsify.platform.data.synth import SHAPES
from fedsparsify.platform.models import build_model, count_trainable, model_input_shape
from fedsparsify.platform.spec import FederationSpec

ROOT = Path(__file__).parents[2]
SPECS = ROOT / "examples" / "specs"


def _load(name: str) -> FederationSpec:
    return FederationSpec.model_validate(json.loads((SPECS / name).read_text()))


@pytest.mark.parametrize("name", sorted(p.name for p in SPECS.glob("*.json")))
def test_each_spec_validates_builds_and_is_in_the_readme(name: str) -> None:
    spec = _load(name)
    model = build_model(spec.model, seed=spec.seed)
    assert count_trainable(model) > 0
    assert spec.quorum <= spec.min_clients == 3
    assert f"examples/specs/{name}" in (ROOT / "README.md").read_text()


def test_the_brain_age_specs_read_what_data_synth_writes() -> None:
    demo, full = _load("brainage-demo.json"), _load("brainage-full.json")
    assert model_input_shape(demo.model)[-3:] == SHAPES["demo"]
    assert model_input_shape(full.model)[-3:] == SHAPES["full"]
    # the full-size BrainAge CNN of the paper and of the README's benchmarks
    assert count_trainable(build_model(full.model, seed=0)) == 2_948_801


def test_the_digits_spec_reads_the_digits_sites() -> None:
    spec = _load("digits.json")
    site = make_digits_federation(3, seed=0).sites[0]
    assert tuple(spec.model.input_shape) == site.input_shape
