"""Where a simulated site's data comes from: made on demand from its index, never held by all.

A :class:`SiteSource` is small and picklable (it travels to every worker) and answers, for a
site index ``k``, the site's name, its training-sample count (its weight) and its data. The
driver asks only for names and counts; a worker builds the data of the one site it is running.

- ``synthetic`` (:class:`~fedsparsify.platform.data.SyntheticClassification`): each site made
  from ``(seed, k)``, so a thousand sites cost nothing until they train.
- ``digits`` and ``brainage``: the existing federations, built whole once per process (they are
  small: 1,797 digits; a few brain-age sites, read back from ``cache_dir`` after the first
  build).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch

from fedsparsify.errors import ConfigError
from fedsparsify.platform.data import (
    FederatedData,
    SiteData,
    SyntheticClassification,
    make_brainage_federation,
    make_digits_federation,
)
from fedsparsify.platform.data.sitedata import Task
from fedsparsify.platform.models import model_input_shape
from fedsparsify.platform.spec import FederationSpec

__all__ = ["DataKind", "FederationSource", "SiteSource", "SyntheticSource", "make_source"]

DataKind = Literal["synthetic", "digits", "brainage"]


class SiteSource(Protocol):
    """Per-site data by index (see the module docstring)."""

    @property
    def task(self) -> Task:
        """``classification`` or ``regression``."""
        ...

    @property
    def n_sites(self) -> int:
        """How many sites there are."""
        ...

    def site_name(self, k: int) -> str:
        """Site ``k``'s name."""
        ...

    def num_train(self, k: int) -> int:
        """Site ``k``'s training samples."""
        ...

    def site(self, k: int) -> SiteData:
        """Site ``k``'s data."""
        ...

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The held-out test set."""
        ...


@dataclass(frozen=True)
class SyntheticSource:
    """The generated task, every site on demand."""

    data: SyntheticClassification

    @property
    def task(self) -> Task:
        return "classification"

    @property
    def n_sites(self) -> int:
        return self.data.n_sites

    def site_name(self, k: int) -> str:
        return self.data.site_name(k)

    def num_train(self, k: int) -> int:
        return self.data.num_train(k)

    def site(self, k: int) -> SiteData:
        return self.data.site(k)

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.test_set()


_BUILT: dict[str, FederatedData] = {}
_BUILT_LOCK = threading.Lock()


@dataclass(frozen=True)
class FederationSource:
    """A federation built whole by ``builder`` (a picklable ``functools.partial``), once per
    process and kept under ``key``."""

    key: str
    builder: Callable[[], FederatedData] = field(compare=False)
    n_sites: int = 0

    def _data(self) -> FederatedData:
        with _BUILT_LOCK:
            data = _BUILT.get(self.key)
            if data is None:
                data = self.builder()
                if len(data.sites) != self.n_sites:
                    raise ConfigError(
                        f"{self.key}: built {len(data.sites)} sites, expected {self.n_sites}"
                    )
                _BUILT.clear()
                _BUILT[self.key] = data
        return data

    @property
    def task(self) -> Task:
        return self._data().task

    def _site(self, k: int) -> SiteData:
        if not isinstance(k, int) or not 0 <= k < self.n_sites:
            raise ConfigError(f"site index {k!r} is outside 0..{self.n_sites - 1}")
        return self._data().sites[k]

    def site_name(self, k: int) -> str:
        return self._site(k).name

    def num_train(self, k: int) -> int:
        return self._site(k).num_samples

    def site(self, k: int) -> SiteData:
        return self._site(k)

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        data = self._data()
        return data.x_test, data.y_test


def make_source(
    kind: DataKind,
    n_sites: int,
    spec: FederationSpec,
    *,
    alpha: float = 0.5,
    samples_per_site: int = 100,
    seed: int = 0,
    cache_dir: Path | None = None,
) -> SiteSource:
    """The data of ``n_sites`` sites of ``kind``, shaped for ``spec``'s model.

    ``alpha``: Dirichlet label skew (synthetic, digits); ``samples_per_site``: mean site size
    (synthetic) or subjects per site (brainage).
    """
    model = spec.model
    if n_sites < 1:
        raise ConfigError(f"a simulation needs at least one site, got {n_sites}")
    if kind == "synthetic":
        if model.kind != "mlp":
            raise ConfigError("synthetic data is a feature vector: use a model of kind 'mlp'")
        features = int(np.prod(model_input_shape(model)))
        generated = SyntheticClassification(
            n_sites=n_sites,
            samples_per_site=samples_per_site,
            n_features=features,
            n_classes=model.num_classes,
            alpha=alpha,
            seed=seed,
        )
        return SyntheticSource(generated)
    if kind == "digits":
        if model.kind not in ("mlp", "cnn"):
            raise ConfigError("digits are 8x8 images: use a model of kind 'mlp' or 'cnn'")
        key = f"digits:{n_sites}:{alpha}:{seed}"
        build = functools.partial(
            make_digits_federation, n_sites, partition="dirichlet", alpha=alpha, seed=seed
        )
        return FederationSource(key, build, n_sites)
    if kind == "brainage":
        if model.kind != "brainage":
            raise ConfigError("brain-age volumes need a model of kind 'brainage'")
        shape = tuple(model.input_shape[-3:])
        key = f"brainage:{n_sites}:{samples_per_site}:{shape}:{seed}:{cache_dir}"
        build = functools.partial(
            make_brainage_federation,
            n_sites,
            subjects_per_site=samples_per_site,
            shape=shape,
            seed=seed,
            cache_dir=cache_dir,
        )
        return FederationSource(key, build, n_sites)
    raise ConfigError(f"unknown data {kind!r}; expected synthetic, digits or brainage")
