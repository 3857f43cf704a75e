"""Every error the package can raise maps to its status and the one JSON shape."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import IntegrityError, OperationalError

from fedsparsify import errors
from tests.api.conftest import ADMIN


class Raising:
    """The app plus a route that raises whatever the test puts in ``table``."""

    def __init__(self, app: FastAPI) -> None:
        self.table: dict[str, BaseException] = {}

        @app.get("/test-raise/{name}")
        def _raise(name: str) -> None:
            raise self.table[name]

        self.client = TestClient(app, raise_server_exceptions=False)

    def get(self, name: str) -> Any:
        """Call the raising route."""
        return self.client.get(f"/test-raise/{name}")


@pytest.fixture
def raising(app: FastAPI) -> Raising:
    """See :class:`Raising`."""
    return Raising(app)


@pytest.mark.parametrize("cls", errors.all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_maps_to_its_status(
    raising: Raising, cls: type[errors.FedsparsifyError]
) -> None:
    raising.table["e"] = cls("what went wrong")
    r = raising.get("e")
    assert r.status_code == cls.http_status
    assert r.json() == {"error": cls.code, "detail": "what went wrong"}


def test_database_errors_are_translated(raising: Raising) -> None:
    raising.table["integrity"] = IntegrityError("insert", {}, Exception("dup"))
    raising.table["locked"] = OperationalError("select", {}, Exception("database is locked"))
    raising.table["bug"] = RuntimeError("boom")
    assert raising.get("integrity").json()["error"] == "conflict"
    assert raising.get("integrity").status_code == 409
    assert raising.get("locked").status_code == 503
    r = raising.get("bug")
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "detail": "internal server error"}


def test_unknown_path_and_method(client: TestClient) -> None:
    r = client.get("/v2/nothing")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.delete("/v1/federations", headers=ADMIN)
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_round_index_must_be_an_integer(client: TestClient) -> None:
    for bad in ("abc", "-1", str(2**70)):
        r = client.get(f"/v1/federations/x/rounds/{bad}", headers=ADMIN)
        assert r.status_code == 422 and r.json()["error"] == "invalid_config"


def test_health_metrics_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    for name in (
        "fedsparsify_rounds_opened_total",
        "fedsparsify_rounds_closed_total",
        "fedsparsify_rounds_failed_total",
        "fedsparsify_aggregation_seconds",
    ):
        assert name in metrics.text
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/v1/federations",
        "/v1/federations/{fid}",
        "/v1/federations/{fid}/clients",
        "/v1/federations/{fid}/keys/context",
        "/v1/federations/{fid}/keys/envelopes/{client_id}",
        "/v1/federations/{fid}/keys/envelope",
        "/v1/federations/{fid}/rounds",
        "/v1/federations/{fid}/rounds/current",
        "/v1/federations/{fid}/rounds/{index}",
        "/v1/federations/{fid}/rounds/{index}/updates/{channel}",
        "/v1/federations/{fid}/rounds/{index}/aggregate/{channel}",
        "/v1/federations/{fid}/rounds/{index}/metrics",
        "/healthz",
        "/metrics",
    ):
        assert path in paths, path
    upload = schema["paths"]["/v1/federations/{fid}/rounds/{index}/updates/{channel}"]["put"]
    assert "application/octet-stream" in upload["requestBody"]["content"]
    assert "mask_mismatch" in upload["description"]
    assert client.get("/docs").status_code == 200
    # Response schemas never carry hashes or paths.
    text = str(schema["components"]["schemas"])
    assert "token_hash" not in text and "path" not in text.lower().replace("paths", "")
