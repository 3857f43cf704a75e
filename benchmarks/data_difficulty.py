"""How hard is the synthetic brain-age data? Ridge on voxels against predicting the mean age.

The generator must be learnable (a linear model on voxels clearly beats the mean) but not
trivial (it leaves room for a CNN, down towards the ~4 y floor of the brain-age gap). This script
generates a four-site federation's subjects (non-IID and IID ages) in three variants that share
ages and anatomy:

- ``anatomy``: age effects only (no misregistration, ideal scanner),
- ``warps``:   plus residual misregistration and elastic warps,
- ``sites``:   plus every site's scanner (the default data),
- ``coarse``:  the default data generated directly at 24x28x24 (~7 mm, the demo's grid),

z-scores each volume as the loaders do, average-pools 48x56x48 to 24x28x24, and fits a ridge
(alpha by generalised cross-validation inside each training fold) with 5-fold CV. It reports
MAE in years for ridge, the training-fold mean, and each site's own training mean (how much the
non-IID age ranges alone give away), plus the per-volume generation time.

    .venv/bin/python benchmarks/data_difficulty.py            # 4 sites x 50, non-IID and IID
    .venv/bin/python benchmarks/data_difficulty.py --quick    # 4 sites x 30, non-IID, for CI
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from fedsparsify.bench.provenance import provenance
from fedsparsify.platform.data.brainage import (
    COARSE_SHAPE,
    DEFAULT_SHAPE,
    GENERATOR_VERSION,
    SiteProfile,
    default_site_profiles,
    generate_site_volumes,
    generate_subject,
)
from fedsparsify.platform.data.preprocess import zscore_batch
from fedsparsify.platform.data.template import output_grid, working_anatomy, working_factor_for

RESULTS = Path(__file__).resolve().parent / "results" / "data_difficulty.json"
VARIANTS = ("anatomy", "warps", "sites")


def variant_profiles(profiles: list[SiteProfile], variant: str) -> list[SiteProfile]:
    """The default profiles with scanner and/or registration effects switched off."""
    if variant == "anatomy":
        return [p.without_scanner().without_deformation() for p in profiles]
    if variant == "warps":
        return [p.without_scanner() for p in profiles]
    return list(profiles)


def pool2(x: np.ndarray) -> np.ndarray:
    """Average-pool the three spatial axes by 2 (48x56x48 -> 24x28x24)."""
    n, a, b, c = x.shape
    x = x[:, : a // 2 * 2, : b // 2 * 2, : c // 2 * 2]
    return x.reshape(n, a // 2, 2, b // 2, 2, c // 2, 2).mean(axis=(2, 4, 6))


def cross_validate(
    features: np.ndarray, ages: np.ndarray, sites: np.ndarray, *, folds: int, seed: int
) -> dict[str, list[float]]:
    """Per-fold MAE of ridge, the training mean, and the per-site training mean."""
    out: dict[str, list[float]] = {"ridge": [], "mean": [], "site_mean": [], "alpha": []}
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(features):
        model = RidgeCV(alphas=np.logspace(-3, 6, 19)).fit(features[train], ages[train])
        out["ridge"].append(float(np.abs(model.predict(features[test]) - ages[test]).mean()))
        out["alpha"].append(float(model.alpha_))
        out["mean"].append(float(np.abs(ages[train].mean() - ages[test]).mean()))
        site_means = {s: ages[train][sites[train] == s].mean() for s in np.unique(sites)}
        guess = np.array([site_means[s] for s in sites[test]])
        out["site_mean"].append(float(np.abs(guess - ages[test]).mean()))
    return out


def time_generation(profiles: list[SiteProfile], shape: tuple[int, int, int], n: int) -> float:
    """Median seconds per volume (template already loaded)."""
    working_anatomy(working_factor_for(output_grid(shape)))
    times = []
    for i in range(n):
        start = time.perf_counter()
        generate_subject(profiles[i % len(profiles)], 10_000 + i, seed=0, shape=shape)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def difficulty_rows(
    n_sites: int, per_site: int, *, iid: bool, folds: int, seed: int
) -> list[dict[str, object]]:
    """Cross-validated MAEs for every variant of one federation (IID or non-IID ages)."""
    profiles = default_site_profiles(n_sites, iid=iid, seed=seed)
    rows: list[dict[str, object]] = []
    for variant in (*VARIANTS, "coarse"):
        # "coarse": the default data generated directly at 24x28x24 (~7 mm), as the demo uses it.
        shape = COARSE_SHAPE if variant == "coarse" else DEFAULT_SHAPE
        blocks = [
            generate_site_volumes(p, range(per_site), seed=seed, shape=shape)
            for p in variant_profiles(profiles, variant)
        ]
        x = zscore_batch(np.concatenate([b[0] for b in blocks]))
        x = x if variant == "coarse" else pool2(x)
        ages = np.concatenate([b[1] for b in blocks]).astype(np.float64)
        sites = np.repeat(np.arange(n_sites), per_site)
        scores = cross_validate(x.reshape(len(x), -1), ages, sites, folds=folds, seed=seed)
        rows.append(
            {
                "ages": "iid" if iid else "non-iid",
                "variant": variant,
                "ridge_mae": float(np.mean(scores["ridge"])),
                "ridge_mae_sd": float(np.std(scores["ridge"])),
                "mean_mae": float(np.mean(scores["mean"])),
                "site_mean_mae": float(np.mean(scores["site_mean"])),
                "ridge_alpha_median": float(statistics.median(scores["alpha"])),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="non-IID only, 30 subjects per site")
    parser.add_argument("--sites", type=int, default=4)
    parser.add_argument("--subjects-per-site", type=int, default=None, help="default 50")
    parser.add_argument("--ages", choices=["non-iid", "iid", "both"], default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    per_site = args.subjects_per_site or (30 if args.quick else 50)
    ages = args.ages or ("non-iid" if args.quick else "both")
    settings = {"non-iid": [False], "iid": [True], "both": [False, True]}[ages]

    with threadpool_limits(1):
        start = time.perf_counter()
        working_anatomy(1)
        template_s = time.perf_counter() - start
        profiles = default_site_profiles(args.sites, seed=args.seed)
        n_timing = 10 if args.quick else 40
        timing = {
            "x".join(map(str, s)): time_generation(profiles, s, n_timing)
            for s in (DEFAULT_SHAPE, COARSE_SHAPE)
        }
        rows = [
            row
            for iid in settings
            for row in difficulty_rows(
                args.sites, per_site, iid=iid, folds=args.folds, seed=args.seed
            )
        ]

    print(
        f"\nSynthetic brain-age difficulty: {args.sites} sites x {per_site} subjects = "
        f"{args.sites * per_site}, {args.folds}-fold CV, ridge on 24x28x24 voxels; MAE in years"
    )
    print(f"{'ages':<8} {'variant':<8} {'ridge':>12} {'mean':>7} {'site mean':>10} {'alpha':>8}")
    for row in rows:
        print(
            f"{row['ages']:<8} {row['variant']:<8} "
            f"{row['ridge_mae']:>6.2f} ±{row['ridge_mae_sd']:4.2f} "
            f"{row['mean_mae']:>7.2f} {row['site_mean_mae']:>10.2f} "
            f"{row['ridge_alpha_median']:>8.3g}"
        )
    print(f"template load and derivation (once per process): {template_s:.2f} s")
    for shape, seconds in timing.items():
        print(f"generation, median per volume at {shape}: {seconds * 1000:.0f} ms")

    command = ["benchmarks/data_difficulty.py", *(argv if argv is not None else sys.argv[1:])]
    result = {
        "benchmark": "data_difficulty",
        "provenance": provenance(command),
        "command": " ".join(command),
        "sites": args.sites,
        "subjects_per_site": per_site,
        "folds": args.folds,
        "seed": args.seed,
        "generator_version": GENERATOR_VERSION,
        "features": "24x28x24 (2x average-pooled 48x56x48, per-volume z-score)",
        "rows": rows,
        "template_load_s": template_s,
        "seconds_per_volume": timing,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
