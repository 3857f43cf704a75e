"""The linear age-bias correction against an independent least-squares fit."""

from __future__ import annotations

import numpy as np
import pytest

from fedsparsify.platform.agebias import AgeBias, fit_age_bias


def test_the_fit_removes_the_age_dependence_of_the_gap() -> None:
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 90, 200)
    predicted = 0.6 * age + 22 + rng.normal(0, 3, 200)  # regression towards the mean
    bias = fit_age_bias(predicted, age)
    assert bias is not None and bias.n == 200 and bias.weakness() is None
    design = np.stack([age, np.ones_like(age)], 1)
    (slope, intercept), *_ = np.linalg.lstsq(design, predicted, rcond=None)
    assert bias.slope == pytest.approx(slope) and bias.intercept == pytest.approx(intercept)
    raw = predicted - age
    corrected = np.array([bias.corrected_gap(p, a) for p, a in zip(predicted, age, strict=True)])
    assert np.corrcoef(raw, age)[0, 1] < -0.8
    assert abs(np.corrcoef(corrected, age)[0, 1]) < 1e-9
    assert AgeBias.from_json(bias.to_json()).slope == pytest.approx(bias.slope, abs=1e-6)


def test_no_fit_without_enough_spread_and_a_caution_for_a_weak_one() -> None:
    assert fit_age_bias(np.array([50.0, 51.0]), np.array([30.0, 40.0])) is None
    assert fit_age_bias(np.array([50.0, 51.0, 52.0]), np.array([30.0, 30.0, 30.0])) is None
    weak = fit_age_bias(np.array([40.0, 41.0, 39.0, 40.5]), np.array([22.0, 30.0, 41.0, 44.0]))
    assert weak is not None
    assert "only 4 subjects, ages 22-44 only" in (weak.weakness() or "")
