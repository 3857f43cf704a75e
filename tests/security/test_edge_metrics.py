"""The metrics cap holds across merged reports, against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Recorder
from tests.reliability.live import Federation, LiveServer
from tests.security.edge import live_server

CAP = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory, "edge-metrics") as srv:
        yield srv


def test_thirty_reports_store_at_most_64_metrics(server: LiveServer, record: Recorder) -> None:
    fed = Federation.create(server, [10, 20])
    site = fed.sites[0]
    answers = []
    with site.http(server.url) as c:
        for report in range(30):
            metrics = {f"m{report}_{i}": float(i) for i in range(CAP)}
            answers.append(c.post(fed.path("/rounds/0/metrics"), json={"metrics": metrics}))
        again = c.post(fed.path("/rounds/0/metrics"), json={"metrics": {"m0_1": 9.0}})
    assert answers[0].status_code == 200, answers[0].text
    assert len(answers[0].json()["metrics"]) == CAP
    for r in answers[1:]:
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_config"
        assert "128" in r.json()["detail"] and "64" in r.json()["detail"]
    assert again.status_code == 200  # updating a stored name adds nothing
    assert again.json()["metrics"]["m0_1"] == 9.0
    with server.admin() as admin:
        view = admin.get(fed.path()).json()
    stored = view["history"][0]["metrics"][site.client_id]
    assert len(stored) == CAP
    record("edge", item="metrics_cap", reports=30, stored=len(stored), refused_422=29)
