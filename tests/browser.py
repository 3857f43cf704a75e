"""A real headless Chromium for the dashboard's tests, driven by Playwright.

The browser is Debian's ``chromium`` package (``make test`` installs it when
``/usr/bin/chromium`` is missing; ``FEDSPARSIFY_CHROMIUM`` names another binary), never a
browser build that Playwright would download. Each context starts from a fresh profile and makes
no request of its own (no component updates, no background networking).

Also a tool: ``python -m tests.browser URL TOKEN_FILE OUT.png [--federation ID]`` signs in to a
running dashboard and saves a screenshot (how ``docs/dashboard.png`` was taken).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

CHROMIUM = Path(os.environ.get("FEDSPARSIFY_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
VIEWPORT = {"width": 1400, "height": 1000}


def missing_chromium() -> str | None:
    """Why the browser cannot start, or None."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return None
    return (
        f"no Chromium at {CHROMIUM}: `make test` installs Debian's package "
        "(apt-get install -y --no-install-recommends chromium), or set FEDSPARSIFY_CHROMIUM"
    )


@contextmanager
def chromium_context(pw: Playwright, profile: Path) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh user-data dir at ``profile``."""
    context = pw.chromium.launch_persistent_context(
        str(profile),
        executable_path=str(CHROMIUM),
        headless=True,
        args=list(CHROMIUM_ARGS),
        viewport=VIEWPORT,  # type: ignore[arg-type]
    )
    try:
        yield context
    finally:
        context.close()


def sign_in(page: Page, base_url: str, token: str) -> None:
    """Fill and submit the sign-in form, as a person would (leaving any dashboard page first,
    so that its refresh loop cannot navigate in between)."""
    page.goto("about:blank")
    page.goto(f"{base_url}/")
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("button[type=submit]")


def screenshot(base_url: str, token: str, out: Path, federation: str | None = None) -> None:
    """Sign in and save a full-page screenshot of a federation (the first one by default)."""
    with (
        sync_playwright() as pw,
        tempfile.TemporaryDirectory() as profile,
        chromium_context(pw, Path(profile)) as context,
    ):
        page = context.new_page()
        sign_in(page, base_url, token)
        if federation is None:
            page.wait_for_selector("table[data-table=federations] a")
            page.click("table[data-table=federations] a")
        else:
            page.goto(f"{base_url}/#/federations/{federation}")
        page.wait_for_selector("table[data-table=rounds]")
        page.wait_for_timeout(500)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)


def main() -> None:
    """Command line: screenshot a running dashboard."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="the dashboard's address, e.g. http://127.0.0.1:8000")
    parser.add_argument("token_file", type=Path, help="a file holding the token to sign in with")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--federation", help="federation id (default: the first listed)")
    args = parser.parse_args()
    if (why := missing_chromium()) is not None:
        raise SystemExit(why)
    token = args.token_file.read_text().strip()
    screenshot(args.url.rstrip("/"), token, args.out, args.federation)


if __name__ == "__main__":
    main()
