"""Reading federation specs stored by earlier releases, and a spec digest that survives upgrades.

A stored spec is a JSON dict plus the version of its format (:data:`SPEC_VERSION` when it was
written). :func:`load_stored_spec` brings an older dict up to date through :data:`UPGRADES`, one
step per version, then validates it as today's :class:`FederationSpec`. When to bump the version:
a field renamed, removed, or changed in meaning: add ``UPGRADES[n] = step`` (a pure function on
the dict) and raise :data:`SPEC_VERSION` to ``n + 1``. A new field with a default needs neither:
old dicts read it as its default.

:func:`spec_digest` ties a site's saved state to its federation's spec. It covers the fields
whose values differ from their defaults, so a release that adds a defaulted field leaves every
digest unchanged. :func:`matches_saved_digest` also accepts the digest release 0.1 saved
(SHA-256 of ``model_dump_json`` over 0.1's fields) for a spec that is what a 0.1 spec reads as
today.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import pydantic_core
from pydantic import ValidationError

from fedsparsify.errors import ConfigError
from fedsparsify.platform.spec import FederationSpec

__all__ = [
    "RELEASE_0_1_FIELDS",
    "SPEC_VERSION",
    "UPGRADES",
    "legacy_digest",
    "load_stored_spec",
    "matches_saved_digest",
    "spec_digest",
]

#: The format of specs this release writes: 1 was release 0.1's; 2 has the trust settings.
SPEC_VERSION = 2


def _from_release_0_1(data: dict[str, Any]) -> dict[str, Any]:
    """Version 1 → 2. A federation created by release 0.1 keeps what it was created with: no
    pairwise masks, no cap on a site's weight, registration open until it ends (the trust
    settings' defaults for new federations are stricter)."""
    enrollment = {"late_joiners": True, **dict(data.get("enrollment") or {})}
    return {"pairwise_masks": False, "max_weight_share": 1.0, **data, "enrollment": enrollment}


#: ``UPGRADES[n]`` turns a version-``n`` dict into a version-``n + 1`` dict.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_release_0_1}

#: Field names of release 0.1's spec, nested models as dicts (what its digest covered).
RELEASE_0_1_FIELDS: dict[str, Any] = {
    "name": None,
    "rounds": None,
    "min_clients": None,
    "quorum": None,
    "round_timeout_s": None,
    "auto_advance": None,
    "crypto_preset": None,
    "method": None,
    "schedule": {
        "kind": None,
        "target": None,
        "fraction": None,
        "frequency": None,
        "start_round": None,
        "end_round": None,
    },
    "model": {
        "kind": None,
        "input_shape": None,
        "width": None,
        "hidden": None,
        "num_classes": None,
        "output_bias": None,
        "age_scale": None,
    },
    "training": {
        "local_epochs": None,
        "batch_size": None,
        "lr": None,
        "momentum": None,
        "weight_decay": None,
        "optimizer": None,
        "proximal_mu": None,
    },
    "seed": None,
}


def load_stored_spec(data: Mapping[str, Any], version: int | None = SPEC_VERSION) -> FederationSpec:
    """A stored spec dict of format ``version`` (None: 1, as 0.1 wrote it) as today's model;
    :class:`ConfigError` naming what is wrong when it cannot be read."""
    version = 1 if version is None else int(version)
    if version > SPEC_VERSION:
        raise ConfigError(
            f"federation spec format {version} was written by a newer release (this one reads "
            f"up to {SPEC_VERSION})"
        )
    if version < 1:
        raise ConfigError(f"unknown federation spec format {version}")
    current = dict(data)
    for step in range(version, SPEC_VERSION):
        current = UPGRADES[step](current)
    try:
        return FederationSpec.model_validate(current)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"stored federation spec (format {version}) is invalid: {problems}"
        ) from exc


def spec_digest(spec: FederationSpec) -> str:
    """SHA-256 over the spec's non-default fields (canonical JSON): stable when a release adds
    a field with a default."""
    payload = json.dumps(
        spec.model_dump(mode="json", exclude_defaults=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(b"fedsparsify-spec-v2\x00" + payload.encode()).hexdigest()


def _restrict(data: Mapping[str, Any], shape: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sub in shape.items():
        if key not in data:
            continue
        value = data[key]
        out[key] = (
            _restrict(value, sub) if isinstance(sub, dict) and isinstance(value, dict) else value
        )
    return out


def legacy_digest(spec: FederationSpec) -> str | None:
    """The digest release 0.1 would have saved for ``spec``, or None when ``spec`` is not what
    a release-0.1 spec reads as today (it sets a newer field otherwise: no 0.1 site can have
    been in it)."""
    old = _restrict(spec.model_dump(mode="json"), RELEASE_0_1_FIELDS)
    try:
        as_read = load_stored_spec(old, 1)
    except ConfigError:
        return None
    if as_read.model_dump(mode="json", exclude_defaults=True) != spec.model_dump(
        mode="json", exclude_defaults=True
    ):
        return None
    return hashlib.sha256(pydantic_core.to_json(old)).hexdigest()


def matches_saved_digest(spec: FederationSpec, saved: object) -> bool:
    """Whether a digest saved with a site's state belongs to ``spec`` (today's or 0.1's form)."""
    if not isinstance(saved, str):
        return False
    return saved == spec_digest(spec) or saved == legacy_digest(spec)
