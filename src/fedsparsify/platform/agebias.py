"""The usual linear age-bias correction of brain-age predictions.

Brain-age models regress towards the mean: they overestimate the young and underestimate the
old, so the raw gap (predicted minus chronological age) correlates with age. The correction
(Smith et al. 2019; de Lange & Cole 2020) fits ``predicted = slope * age + intercept`` on data
the model did not train on (here: a site's validation set) and reports the gap against that
line, ``predicted - (slope * age + intercept)``, which no longer depends on age in the fitting
population. The corrected predicted age is that gap plus the chronological age. Both need the
chronological age, so they exist only where it is known.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fedsparsify.errors import DataError

__all__ = ["MIN_FIT_SUBJECTS", "AgeBias", "fit_age_bias"]

MIN_FIT_SUBJECTS = 3
WEAK_FIT_SUBJECTS = 20
WEAK_FIT_RANGE_Y = 30.0
WEAK_FIT_R = 0.3


@dataclass(frozen=True)
class AgeBias:
    """``predicted ≈ slope * age + intercept`` on ``n`` subjects (``r``: their Pearson r)."""

    slope: float
    intercept: float
    n: int
    r: float
    age_min: float
    age_max: float

    def weakness(self) -> str | None:
        """Why the correction deserves caution, if it does: few subjects, a narrow age range,
        or predictions that barely follow age on the data it was fitted on."""
        reasons = []
        if self.n < WEAK_FIT_SUBJECTS:
            reasons.append(f"only {self.n} subjects")
        if self.age_max - self.age_min < WEAK_FIT_RANGE_Y:
            reasons.append(f"ages {self.age_min:.0f}-{self.age_max:.0f} only")
        if self.r < WEAK_FIT_R:
            reasons.append(f"r={self.r:.2f} between prediction and age")
        if not reasons:
            return None
        return (
            "the age-bias correction was fitted on " + ", ".join(reasons) + ": treat the "
            "corrected gap with caution (a validation set spanning the ages to be predicted fits "
            "a better line)"
        )

    def expected(self, age: float) -> float:
        """The prediction the fit expects at chronological ``age``."""
        return self.slope * age + self.intercept

    def corrected_gap(self, predicted: float, age: float) -> float:
        """Brain-age gap with the bias removed."""
        return predicted - self.expected(age)

    def to_json(self) -> dict[str, Any]:
        """Plain values, rounded for a model card."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Any) -> AgeBias:
        """Read :meth:`to_json`'s output back; :class:`DataError` if it is not one."""
        try:
            bias = cls(
                slope=float(data["slope"]),
                intercept=float(data["intercept"]),
                n=int(data["n"]),
                r=float(data["r"]),
                age_min=float(data["age_min"]),
                age_max=float(data["age_max"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"age-bias record is malformed: {exc}") from exc
        if not all(math.isfinite(v) for v in (bias.slope, bias.intercept)):
            raise DataError("age-bias record holds non-finite numbers")
        return bias


def fit_age_bias(predicted: np.ndarray, age: np.ndarray) -> AgeBias | None:
    """Least-squares line of ``predicted`` on ``age``; None with fewer than
    :data:`MIN_FIT_SUBJECTS` subjects or no spread in age or prediction."""
    pred = np.asarray(predicted, dtype=np.float64).reshape(-1)
    ages = np.asarray(age, dtype=np.float64).reshape(-1)
    if pred.shape != ages.shape:
        raise DataError(f"{pred.size} predictions for {ages.size} ages")
    keep = np.isfinite(pred) & np.isfinite(ages)
    pred, ages = pred[keep], ages[keep]
    if pred.size < MIN_FIT_SUBJECTS or np.ptp(ages) == 0 or np.ptp(pred) == 0:
        return None
    slope, intercept = np.polyfit(ages, pred, 1)
    r = float(np.corrcoef(ages, pred)[0, 1])
    return AgeBias(
        slope=float(slope),
        intercept=float(intercept),
        n=int(pred.size),
        r=r,
        age_min=float(ages.min()),
        age_max=float(ages.max()),
    )
