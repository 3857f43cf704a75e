"""The dashboard in a real headless Chromium against a real ``fedsparsify serve`` on loopback.

Federations advance with real CKKS-encrypted uploads sent over HTTP by the test's sites
(:class:`tests.api.conftest.Harness` on the server's address) while the page is open: the page
must follow without a reload. Sign-in goes through the form, as a person would; what the page
may show is what the REST API shows the same caller.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import (
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError

from fedsparsify.clients.launcher import AggregatorProcess, start_aggregator
from fedsparsify.crypto import SecretContext
from tests.api.conftest import ADMIN, ADMIN_TOKEN, Fed, Harness, vectors
from tests.browser import chromium_context, missing_chromium, sign_in

pytestmark = pytest.mark.e2e

#: The page refreshes this often (seconds) in these tests.
POLL_S = 0.3
HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">&amp; "ward"'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AggregatorProcess]:
    """``fedsparsify serve`` with debug logging (so that the log can be searched for secrets)."""
    root = tmp_path_factory.mktemp("dashboard-server")
    with start_aggregator(
        root / "data",
        admin_token=ADMIN_TOKEN,
        log_level="debug",
        extra_env={
            "FEDSPARSIFY_DASHBOARD_POLL_S": str(POLL_S),
            "FEDSPARSIFY_DEADLINE_CHECK_INTERVAL_S": "0.1",
        },
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def harness(server: AggregatorProcess, key_set: SecretContext) -> Iterator[Harness]:
    """The REST harness, over HTTP to the real server."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield Harness(client, None, key_set)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver (shipped in the pinned Python package); fails if Chromium is missing."""
    if (why := missing_chromium()) is not None:
        pytest.fail(why)
    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[BrowserContext]:
    """A fresh Chromium profile per test: no cookie carries over."""
    with chromium_context(playwright, tmp_path / "profile") as context:
        yield context


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    """One tab that collects the page's script errors and console errors (a Content Security
    Policy violation among them), less Chromium's note on each 4xx answer a test asks for."""
    tab = browser.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))

    def console(message: ConsoleMessage) -> None:
        expected = re.match(r"Failed to load resource: .* status of 4\d\d", message.text)
        if message.type == "error" and not expected:
            errors.append(message.text)

    tab.on("console", console)
    tab.errors = errors  # type: ignore[attr-defined]
    yield tab
    assert errors == [], "the page reported errors"


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``$FEDSPARSIFY_TEST_ARTEFACTS`` or the session's temp dir."""
    configured = os.environ.get("FEDSPARSIFY_TEST_ARTEFACTS")
    path = Path(configured) if configured else tmp_path_factory.getbasetemp() / "artefacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def upload_all(h: Harness, fed: Fed, index: int, members: list, seed: int) -> None:
    """Encrypted uploads of ``members`` for round ``index`` (real CKKS, over HTTP)."""
    for member, values in zip(members, vectors(len(members), seed=seed), strict=True):
        body = h.encrypt(member, values, h.weight(fed, member, index))
        r = h.upload(fed, index, member, body)
        assert r.status_code == 201, r.text


def round_row(page: Page, index: int) -> str:
    """Selector of a round's row in the rounds table."""
    return f"table[data-table=rounds] tr[data-round='{index}']"


def chart(page: Page, name: str) -> Locator:
    """A chart's SVG (absent until something was reported)."""
    return page.locator(f".chart[data-chart={name}] svg")


def test_wrong_token_is_refused(
    page: Page, browser: BrowserContext, server: AggregatorProcess, harness: Harness
) -> None:
    fed = harness.create(name="refusals")
    for bad in ("fsa_not-the-admin-token", fed.enrollment_token):
        page.goto(f"{server.url}/")
        page.fill("#token", bad)
        with page.expect_response(re.compile(r"/dashboard/sign-in$")) as answer:
            page.click("button[type=submit]")
        assert answer.value.status == 401
        expect(page.locator("p.error")).to_contain_text("neither the admin token")
        assert browser.cookies() == []
        assert page.evaluate("fetch('/dashboard/session').then(r => r.status)") == 401
        assert bad not in page.url


def test_sign_in_and_watch_rounds_advance_live(
    page: Page,
    browser: BrowserContext,
    server: AggregatorProcess,
    harness: Harness,
    artefacts: Path,
) -> None:
    h = harness
    fed = h.federation((120, 80, 200), name="brain-age live", rounds=3)
    sites = fed.members
    sign_in(page, server.url, ADMIN_TOKEN)
    assert ADMIN_TOKEN not in page.url
    (cookie,) = browser.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert cookie["value"].startswith("fsd_") and ADMIN_TOKEN not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it

    page.click(f"table[data-table=federations] tr[data-federation='{fed.id}'] a")
    expect(page.locator("h1")).to_have_text("brain-age live")
    expect(page.locator(round_row(page, 0))).to_contain_text("0 / 3")
    expect(page.locator(round_row(page, 0))).to_contain_text("open")
    roster = page.locator("table[data-table=roster]")
    listed = h.client.get(fed.path("/clients"), headers=sites[0].auth).json()
    weights = h.round(fed, 0)["weights"]
    for member, share in zip(sites, ("30.0 %", "20.0 %", "50.0 %"), strict=True):
        row = roster.locator(f"tr[data-client='{member.id}']")
        expect(row).to_contain_text(next(c["fingerprint"] for c in listed if c["id"] == member.id))
        expect(row.locator("td").nth(3)).to_have_text(share)
        expect(row.locator("td").nth(4)).to_have_text(f"{100 * weights[member.id]:.1f} %")
        expect(row).to_contain_text("active")
    page.evaluate("window.__noReload = true")

    # One upload: the page shows it without a reload.
    upload_all(h, fed, 0, sites[:1], seed=1)
    expect(page.locator(round_row(page, 0))).to_contain_text("1 / 3")
    # The rest, with metrics: round 0 closes, round 1 opens by itself, charts fill in.
    upload_all(h, fed, 0, sites[1:], seed=2)
    for member, mae in zip(sites, (14.2, 15.1, 13.7), strict=True):
        assert h.report(fed, 0, member, {"val_mae": mae, "sparsity": 0.0}).status_code == 200
    expect(page.locator(round_row(page, 0))).to_contain_text("closed")
    expect(page.locator(round_row(page, 1))).to_contain_text("0 / 3")
    upload_all(h, fed, 1, sites, seed=3)
    for member, mae in zip(sites, (11.9, 12.8, 11.1), strict=True):
        assert h.report(fed, 1, member, {"val_mae": mae, "sparsity": 0.3}).status_code == 200
    expect(page.locator(round_row(page, 1))).to_contain_text("closed")
    expect(page.locator(round_row(page, 2))).to_contain_text("open")
    assert page.evaluate("window.__noReload") is True

    # Upload bytes in the table are the server's own numbers.
    history = h.client.get(fed.path(), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    round1 = history["history"][1]
    total = sum(sum(c.values()) for c in round1["upload_bytes"].values())
    assert total > 0 and round1["aggregation_s"] > 0
    expect(page.locator(f"{round_row(page, 1)} td[data-bytes]")).to_have_attribute(
        "data-bytes", str(total)
    )
    assert 10_000 <= total < 1_000_000  # shown in kB with the page's precision
    kb = total / 1000
    shown = f"{kb:.{1 if kb < 100 else 0}f} kB"
    expect(page.locator(round_row(page, 1))).to_contain_text(shown)
    expect(page.locator(round_row(page, 1))).to_contain_text(f"{round1['aggregation_s']:.3f} s")

    # sparsity: one mean point per round; bytes and MAE: one point per site and round
    expect(chart(page, "sparsity")).to_have_attribute("data-points", "2")
    expect(chart(page, "bytes")).to_have_attribute("data-points", "6")
    expect(chart(page, "mae")).to_have_attribute("data-points", "6")
    expect(chart(page, "mae")).to_have_attribute("data-series", "3")
    shot = artefacts / "dashboard-federation.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_a_removed_member_is_shown_removed(
    page: Page, server: AggregatorProcess, harness: Harness
) -> None:
    fed = harness.federation((10, 20, 30, 40), name="with a removal", open_round=False)
    gone = fed.members[3]
    sign_in(page, server.url, ADMIN_TOKEN)
    page.goto(f"{server.url}/#/federations/{fed.id}")
    row = page.locator(f"table[data-table=roster] tr[data-client='{gone.id}']")
    expect(row).to_contain_text("active")
    r = harness.client.delete(fed.path(f"/clients/{gone.id}"), headers=ADMIN)
    assert r.status_code == 200, r.text
    expect(row).to_contain_text("removed")
    expect(page.locator(".fact", has_text="Sites")).to_contain_text("1 removed")


def test_older_rounds_fold_away(page: Page, server: AggregatorProcess, harness: Harness) -> None:
    fed = harness.federation((10, 20, 30), name="long federation", rounds=14)
    for index in range(13):
        upload_all(harness, fed, index, fed.members, seed=10 + index)
    sign_in(page, server.url, ADMIN_TOKEN)
    page.goto(f"{server.url}/#/federations/{fed.id}")
    rows = page.locator("table[data-table=rounds] tbody tr")
    expect(rows).to_have_count(12)
    expect(rows.first).to_have_attribute("data-round", "13")
    page.click("button.fold")
    expect(rows).to_have_count(14)
    expect(rows.last).to_have_attribute("data-round", "0")
    page.wait_for_timeout(3 * POLL_S * 1000)  # refreshes keep the choice
    expect(rows).to_have_count(14)
    page.click("button.fold")
    expect(rows).to_have_count(12)


def test_a_member_sees_only_its_own_federation(
    page: Page, server: AggregatorProcess, harness: Harness
) -> None:
    ours = harness.federation((10, 20, 30), name="north federation")
    theirs = harness.federation((10, 20, 30), name="south federation")
    member = ours.members[1]
    sign_in(page, server.url, member.token)
    expect(page.locator("h1")).to_have_text("north federation")
    expect(page.locator("#who")).to_contain_text(member.name)
    assert "south federation" not in page.content()
    assert page.locator("a", has_text="Federations").count() == 0
    # The REST API behind the page refuses the rest to this session, as it does to the token.
    status = "url => fetch(url).then(r => r.status)"
    assert page.evaluate(status, "/v1/federations") == 403
    assert page.evaluate(status, f"/v1/federations/{theirs.id}") == 403
    assert page.evaluate(status, f"/v1/federations/{theirs.id}/clients") == 403
    assert page.evaluate(status, f"/v1/federations/{ours.id}/clients") == 200
    # Asking the page for the other federation shows nothing of it.
    page.goto(f"{server.url}/#/federations/{theirs.id}")
    expect(page.locator("p.error")).to_contain_text("not visible to you")
    assert "south federation" not in page.content()
    assert theirs.members[0].name not in page.locator("#view").inner_text()
    # Writes need the bearer token: the session cookie only reads.
    write = "url => fetch(url, {method: 'POST'}).then(r => r.status)"
    assert page.evaluate(write, f"/v1/federations/{ours.id}/rounds") == 401


def test_names_and_metrics_are_shown_as_text(
    page: Page, server: AggregatorProcess, harness: Harness
) -> None:
    fed = harness.federation((10, 20, 30), name=HOSTILE_NAME)
    member = fed.members[0]
    hostile_metric = {"<script>window.__pwned=2</script>": 1.0, "val_mae": 9.5}
    upload_all(harness, fed, 0, fed.members, seed=4)
    assert harness.report(fed, 0, member, hostile_metric).status_code == 200
    sign_in(page, server.url, ADMIN_TOKEN)
    page.goto(f"{server.url}/#/federations/{fed.id}")
    expect(page.locator("h1")).to_have_text(HOSTILE_NAME)
    expect(chart(page, "mae")).to_have_attribute("data-points", "1")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#view img, #view script").count() == 0
    assert page.title().startswith(HOSTILE_NAME)


def test_the_page_runs_only_its_own_scripts(page: Page, server: AggregatorProcess) -> None:
    """Defence in depth behind the escaping: the Content-Security-Policy refuses inline script."""
    page.goto(f"{server.url}/")
    with pytest.raises(PlaywrightError, match="Content Security Policy"):
        page.add_script_tag(content="window.__inline = 1")
    assert page.evaluate("window.__inline") is None
    errors: list[str] = page.errors  # type: ignore[attr-defined]
    assert len(errors) == 1 and "Content Security Policy" in errors[0]
    errors.clear()  # the one error this test caused on purpose


def test_sign_out_ends_the_session(
    page: Page, browser: BrowserContext, server: AggregatorProcess
) -> None:
    sign_in(page, server.url, ADMIN_TOKEN)
    (cookie,) = browser.cookies()
    expect(page.locator("h1")).to_have_text("Federations")  # the page is up and refreshing
    page.wait_for_timeout(2 * POLL_S * 1000)
    page.click("form.sign-out button")
    expect(page.locator("#token")).to_be_visible()
    assert browser.cookies() == []
    # The old session id is dead on the server too, not only forgotten by the browser.
    stale = httpx.get(f"{server.url}/dashboard/session", cookies={cookie["name"]: cookie["value"]})
    assert stale.status_code == 401


def test_no_token_or_session_id_is_stored_or_logged(
    page: Page, browser: BrowserContext, server: AggregatorProcess, harness: Harness
) -> None:
    fed = harness.federation((10, 20, 30), name="secrets")
    member = fed.members[0]
    session_ids = []
    for token in (ADMIN_TOKEN, member.token):
        sign_in(page, server.url, token)
        expect(page.locator("h1")).to_be_visible()
        session_ids.append(next(c["value"] for c in browser.cookies()))
        browser.clear_cookies()
    stored = b"".join(p.read_bytes() for p in server.data_dir.rglob("*") if p.is_file())
    log = server.log_path.read_bytes()
    assert b"/dashboard/sign-in" in log  # the access log is on: a search that can find things
    for secret in (ADMIN_TOKEN, member.token, *session_ids):
        assert secret.encode() not in stored, "a token or session id is stored in clear"
        assert secret.encode() not in log, "a token or session id is in the log"
    for session_id in session_ids:  # only its hash is kept
        assert hashlib.sha256(session_id.encode()).hexdigest().encode() in stored
