"""The API docs work offline, against a real server: every asset comes from the installed
package, and no page names another host."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import fastapi_offline
import httpx
import pytest

from tests.conftest import Recorder
from tests.reliability.live import LiveServer
from tests.security.edge import live_server

ASSETS = Path(fastapi_offline.__file__).parent / "static"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory, "docs") as srv:
        yield srv


def _references(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_load_everything_from_the_server(
    server: LiveServer, page: str, record: Recorder
) -> None:
    r = httpx.get(f"{server.url}{page}")
    assert r.status_code == 200
    html = r.text
    assert "http://" not in html and "https://" not in html  # no CDN, no fonts, no favicon host
    refs = _references(html)
    assert refs, html
    for ref in refs:
        assert ref.startswith("/"), ref
        asset = httpx.get(f"{server.url}{ref}")
        assert asset.status_code == 200, ref
        assert asset.content == (ASSETS / ref.rsplit("/", 1)[1]).read_bytes(), ref
    record("edge", item=f"docs_assets{page.replace('/', '_')}", assets=len(refs), outside_refs=0)


def test_swagger_ui_calls_no_online_validator(server: LiveServer) -> None:
    html = httpx.get(f"{server.url}/docs").text
    assert '"validatorUrl": null' in html
    assert "/openapi.json" in html
    assert httpx.get(f"{server.url}/openapi.json").status_code == 200


@pytest.mark.slow
def test_a_browser_without_network_renders_the_docs(
    server: LiveServer, tmp_path: Path, record: Recorder
) -> None:
    """Headless Chromium, every host but loopback unresolvable: Swagger UI still renders."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium on this machine")
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=10000",
            "--dump-dom",
            f"{server.url}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "fedsparsify aggregator" in result.stdout
    assert 'class="opblock-tag' in result.stdout, result.stdout[-2000:]  # rendered operations
    operations = result.stdout.count('class="opblock opblock-')
    assert operations >= 15
    record("edge", item="docs_offline", browser="chromium", operations_rendered=operations)
