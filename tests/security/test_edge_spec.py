"""Spec bounds at creation, against a real server: every unbounded field of the issue is 422
naming what is wrong, and a model over the aggregator's parameter limit is 422 naming its count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fedsparsify.platform.model_size import parameter_count
from fedsparsify.platform.spec import ModelSpec
from tests.conftest import Recorder
from tests.reliability.live import LiveServer
from tests.security.edge import live_server

#: The aggregator's limit in this test: exactly the default BrainAge's size.
LIMIT = parameter_count(ModelSpec())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory, "edge-spec", max_model_parameters=str(LIMIT)) as srv:
        yield srv


def _create(server: LiveServer, name: str, **fields: Any) -> httpx.Response:
    body = {"name": name, "min_clients": 2, "quorum": 2, **fields}
    with server.admin() as admin:
        return admin.post("/v1/federations", json=body)


BAD = [
    ("seed", {"seed": 2**100}),
    ("seed", {"seed": -1}),
    ("input_shape", {"model": {"kind": "brainage", "input_shape": [100000, 100000, 100000]}}),
    ("input_shape", {"model": {"kind": "mlp", "input_shape": [-7]}}),
    ("input_shape", {"model": {"kind": "mlp", "input_shape": [0]}}),
    ("input_shape", {"model": {"kind": "mlp", "input_shape": []}}),
    ("input_shape", {"model": {"kind": "mlp", "input_shape": [2, 2, 2, 2, 2]}}),
    ("width", {"model": {"kind": "brainage", "width": 10**9}}),
    ("hidden", {"model": {"kind": "mlp", "input_shape": [8], "hidden": 10**12}}),
    ("num_classes", {"model": {"kind": "mlp", "input_shape": [8], "num_classes": 10**9}}),
    ("not a volume", {"model": {"kind": "brainage", "input_shape": [8]}}),
    ("at least 4x4", {"model": {"kind": "cnn", "input_shape": [2, 2]}}),
    ("local_epochs", {"training": {"local_epochs": 10**9}}),
    ("batch_size", {"training": {"batch_size": 10**12}}),
    ("min_clients", {"min_clients": 10**9, "quorum": 2}),
    ("age_scale", {"model": {"kind": "brainage", "age_scale": 1e300}}),
]


@pytest.mark.parametrize(("field", "fields"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_unbounded_fields_are_422(server: LiveServer, field: str, fields: dict[str, Any]) -> None:
    r = _create(server, f"bad-{field}", **fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_config"
    assert field in r.json()["detail"]


def test_parameter_count_over_the_limit_is_422_naming_it(
    server: LiveServer, record: Recorder
) -> None:
    wider = ModelSpec(width=9)
    count = parameter_count(wider)
    assert count > LIMIT
    r = _create(server, "too-wide", model=wider.model_dump(mode="json"))
    assert r.status_code == 422, r.text
    assert f"{count:,}" in r.json()["detail"] and f"{LIMIT:,}" in r.json()["detail"]
    at_limit = _create(server, "just-fits", model=ModelSpec().model_dump(mode="json"))
    assert at_limit.status_code == 201, at_limit.text
    record("edge", item="spec_bounds", bad_specs=len(BAD) + 1, limit=LIMIT, refused_count=count)


def test_a_huge_mlp_is_refused_without_allocating(server: LiveServer) -> None:
    """The issue's MLP: 10^5 inputs, and hidden sizes that fit the field bound but not memory."""
    r = _create(server, "huge-mlp", model={"kind": "mlp", "input_shape": [100000], "hidden": 65536})
    assert r.status_code == 422
    assert "trainable parameters" in r.json()["detail"]
