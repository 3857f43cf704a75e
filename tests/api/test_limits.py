"""The edge knows which routes stream their body: the OpenAPI and its table agree."""

from __future__ import annotations

import re

from fastapi import FastAPI

from fedsparsify.api.limits import streamed_kind


def _example(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def test_every_raw_body_route_is_streamed_and_no_other(app: FastAPI) -> None:
    raw, other = [], []
    for path, operations in app.openapi()["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            target = raw if "application/octet-stream" in content else other
            target.append((method.upper(), _example(path)))
    assert len(raw) == 3, raw  # updates, context, envelopes
    for method, path in raw:
        assert streamed_kind(method, path) is not None, (method, path)
    for method, path in other:
        assert streamed_kind(method, path) is None, (method, path)
