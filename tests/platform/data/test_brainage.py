"""Synthetic brain-age generator: determinism, caching, age and site effects, federation shape."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsparsify.errors import ConfigError
from fedsparsify.platform.data import brainage
from fedsparsify.platform.data.brainage import (
    COARSE_SHAPE,
    AgeDistribution,
    SiteProfile,
    default_site_profiles,
    generate_site_volumes,
    generate_subject,
    make_brainage_federation,
    site_sizes,
)
from fedsparsify.platform.data.preprocess import zscore
from fedsparsify.platform.data.template import (
    GRID_MARGIN_MM,
    brain_bbox_mm,
    output_grid,
    template_maps_on_grid,
)

SMALL = COARSE_SHAPE  # (24, 28, 24): every test here runs on the fast grid


@pytest.fixture(scope="module")
def profiles() -> list[SiteProfile]:
    return default_site_profiles(4, iid=False, seed=0)


def test_same_seed_same_volume_and_age(profiles: list[SiteProfile]) -> None:
    a, age_a = generate_subject(profiles[1], 3, seed=7, shape=SMALL)
    b, age_b = generate_subject(profiles[1], 3, seed=7, shape=SMALL)
    assert a.shape == SMALL and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert age_a == age_b


def test_other_subject_seed_or_site_differs(profiles: list[SiteProfile]) -> None:
    ref, _ = generate_subject(profiles[0], 0, seed=0, shape=SMALL)
    for other in (
        generate_subject(profiles[0], 1, seed=0, shape=SMALL)[0],
        generate_subject(profiles[0], 0, seed=1, shape=SMALL)[0],
        generate_subject(profiles[1], 0, seed=0, shape=SMALL)[0],
    ):
        assert np.abs(other - ref).mean() > 0.01


def test_subject_depends_only_on_its_index(profiles: list[SiteProfile]) -> None:
    block, ages = generate_site_volumes(profiles[2], range(2, 5), seed=0, shape=SMALL)
    alone, age = generate_subject(profiles[2], 3, seed=0, shape=SMALL)
    np.testing.assert_array_equal(block[1], alone)
    assert ages[1] == np.float32(age)


def test_default_grid_is_about_3mm_and_covers_the_brain() -> None:
    fine, coarse = output_grid((48, 56, 48)), output_grid(SMALL)
    assert 3.0 < fine.voxel_mm < 3.6
    assert 6.0 < coarse.voxel_mm < 7.2
    lo, hi = brain_bbox_mm()
    for grid in (fine, coarse):
        for d, axis in enumerate(grid.world_axes()):
            # The brain's box plus the margin fits, and one axis is filled (isotropic voxels).
            assert axis[0] <= lo[d] - GRID_MARGIN_MM + 1e-6
            assert axis[-1] >= hi[d] + GRID_MARGIN_MM - 1e-6


def test_cache_hit_is_identical_and_does_not_regenerate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = dict(subjects_per_site=5, shape=SMALL, test_subjects=3, seed=3, cache_dir=tmp_path)
    first = make_brainage_federation(2, **kwargs)  # type: ignore[arg-type]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 4 and all(f.endswith(".npz") for f in files)  # 2 sites + 2 test blocks

    def fail(*args: object, **kw: object) -> None:
        raise AssertionError("regenerated despite a cache hit")

    monkeypatch.setattr(brainage, "generate_subject", fail)
    second = make_brainage_federation(2, **kwargs)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    for s1, s2 in zip(first.sites, second.sites, strict=True):
        assert torch.equal(s1.x_train, s2.x_train) and torch.equal(s1.y_val, s2.y_val)
    assert torch.equal(first.x_test, second.x_test)

    # Another seed is another key: the cache must miss, and generation is attempted.
    with pytest.raises(AssertionError, match="regenerated"):
        make_brainage_federation(2, **{**kwargs, "seed": 4})  # type: ignore[arg-type]


def test_corrupt_cache_file_is_regenerated(tmp_path: Path, profiles: list[SiteProfile]) -> None:
    x, _ = generate_site_volumes(profiles[0], range(3), shape=SMALL, cache_dir=tmp_path)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not an npz")
    again, _ = generate_site_volumes(profiles[0], range(3), shape=SMALL, cache_dir=tmp_path)
    np.testing.assert_array_equal(x, again)
    assert np.load(path)["x"].shape == (3, *SMALL)


def _ventricle_roi_means(profile: SiteProfile, ages: tuple[float, ...]) -> list[float]:
    roi = template_maps_on_grid(SMALL)["ventricles"] > 0.3
    means = []
    for low in ages:
        group = dataclasses.replace(profile, ages=AgeDistribution.uniform(low, low + 5))
        vols = [generate_subject(group, i, seed=0, shape=SMALL)[0] for i in range(8)]
        means.append(float(np.mean([zscore(v)[roi].mean() for v in vols])))
    return means


def test_ventricles_darken_with_age_without_nuisance() -> None:
    ideal = SiteProfile("ideal", 0).without_scanner().without_deformation()
    young, middle, old = _ventricle_roi_means(ideal, (20, 50, 80))
    assert young > middle > old
    assert young - old > 0.1


def test_ventricles_darken_with_age_with_every_effect(profiles: list[SiteProfile]) -> None:
    young, middle, old = _ventricle_roi_means(profiles[2], (20, 50, 80))
    assert young > middle > old


def test_scanner_background_matches_rician_noise_model(profiles: list[SiteProfile]) -> None:
    # Far from the head the signal is 0, so a voxel is offset + Rayleigh(sigma) noise:
    # mean = offset * gain + sigma * sqrt(pi / 2), sigma = noise * gain * (voxel scale).
    background = template_maps_on_grid(SMALL)["brain"] < 1e-4
    scale = (output_grid((48, 56, 48)).voxel_mm / output_grid(SMALL).voxel_mm) ** 1.5
    for profile in profiles:
        vol, _ = generate_subject(profile, 0, shape=SMALL)
        sigma = profile.noise * profile.gain * scale
        expected = profile.offset * profile.gain + sigma * np.sqrt(np.pi / 2)
        assert vol[background].mean() == pytest.approx(expected, rel=0.1)


def test_sites_differ_on_the_same_anatomy(profiles: list[SiteProfile]) -> None:
    # Same site_id: same subjects and poses, so only the scanner differs.
    same_subject = [dataclasses.replace(p, site_id=0) for p in profiles]
    vols = [zscore(generate_subject(p, 5, shape=SMALL)[0]) for p in same_subject]
    gains = {round(p.gain, 3) for p in profiles}
    assert len(gains) == len(profiles)
    for i in range(len(vols)):
        for j in range(i + 1, len(vols)):
            assert np.abs(vols[i] - vols[j]).mean() > 0.05


def test_non_iid_sites_have_different_ages() -> None:
    def site_ages(profile: SiteProfile) -> np.ndarray:
        return np.array([generate_subject(profile, i, shape=SMALL)[1] for i in range(25)])

    non_iid = [site_ages(p) for p in default_site_profiles(4, iid=False, seed=0)]
    assert non_iid[0].max() <= 50 and non_iid[1].mean() > 60
    assert non_iid[1].mean() - non_iid[0].mean() > 25
    iid = [site_ages(p) for p in default_site_profiles(4, iid=True, seed=0)]
    assert max(a.mean() for a in iid) - min(a.mean() for a in iid) < 15
    assert all(a.min() >= 20 and a.max() <= 90 for a in non_iid + iid)


def test_site_sizes_skew_keeps_the_total() -> None:
    sizes = site_sizes(4, 50, size_skew=True)
    assert sum(sizes) == 200 and sizes == sorted(sizes, reverse=True) and sizes[0] > 2 * sizes[3]
    assert site_sizes(3, [10, 20, 30]) == [10, 20, 30]
    with pytest.raises(ConfigError):
        site_sizes(3, [10, 20])


def test_federation_layout_and_normalisation() -> None:
    fed = make_brainage_federation(
        3, subjects_per_site=[6, 5, 4], shape=SMALL, val_fraction=0.25, test_subjects=5
    )
    assert fed.task == "regression" and [s.name for s in fed.sites] == [
        "site-0",
        "site-1",
        "site-2",
    ]
    assert [len(s.y_train) for s in fed.sites] == [4, 4, 3]
    assert [len(s.y_val) for s in fed.sites] == [2, 1, 1]
    assert fed.x_test.shape == (5, 1, *SMALL) and fed.y_test.dtype == torch.float32
    for site in fed.sites:
        assert site.x_train.dtype == torch.float32 and site.input_shape == (1, *SMALL)
        flat = site.x_train.flatten(1)
        torch.testing.assert_close(flat.mean(1), torch.zeros(len(flat)), atol=1e-4, rtol=0)
        torch.testing.assert_close(
            flat.std(1, correction=0), torch.ones(len(flat)), atol=1e-3, rtol=0
        )


def test_invalid_profiles_and_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="gain"):
        SiteProfile("bad", 0, gain=0.0)
    with pytest.raises(ConfigError, match="low < high"):
        AgeDistribution.uniform(50, 40)
    with pytest.raises(ConfigError, match="shape"):
        generate_subject(SiteProfile("ok", 0), 0, shape=(2, 2, 2))
    with pytest.raises(ConfigError, match="val_fraction"):
        make_brainage_federation(2, val_fraction=1.0, shape=SMALL)
