"""Fixtures of the web page's browser tests: Debian's Chromium, headless, driven by Playwright.

`ui` gives a fresh browser context on pytest-django's live server, collects console errors and
uncaught page errors (a test fails on any it did not expect), signs in, and saves screenshots to
test-artifacts/screenshots/. Without Chromium the browser tests are skipped, except in CI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # a test dependency (the `test` extra); without it only CI must fail
    if os.environ.get("CI"):
        raise
    pytest.skip("the playwright package is not installed (pip install -e '.[test]')", allow_module_level=True)

__all__ = ["PHONE", "UI", "browser", "expect", "ui"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}
PASSWORD = "correct horse"  # the `user` fixture's


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, for the tests of one module.

    Playwright's sync API keeps its event loop registered as running in this thread for as long as
    it is started, and Django refuses ORM calls where a loop runs: so the browser lives for one module
    only, with DJANGO_ALLOW_ASYNC_UNSAFE set just as long (the ORM calls stay synchronous, in this
    thread), and the rest of the test session is not affected."""
    if not CHROMIUM.exists():
        _unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield launched
            launched.close()


@dataclass
class UI:
    """One browser context on the live server, and what its pages complained about."""

    page: Any
    base_url: str
    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def goto(self, path: str) -> Any:
        response = self.page.goto(self.base_url + path)
        assert response is not None and response.ok, f"{path}: HTTP {response.status if response else '?'}"
        return response

    def sign_in(self, email: str = "ada@example.com", password: str = PASSWORD) -> None:
        self.page.goto(self.base_url + "/login/")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(re.compile(r"/projects/\d+/$"))

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def allow(self, pattern: str) -> None:
        """Expect console errors matching `pattern` (a failed API call the test provokes)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]

    def horizontal_overflow(self) -> int:
        """How many CSS pixels the page is wider than the viewport (0 when nothing overflows)."""
        return int(self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


@pytest.fixture
def ui(browser: Any, live_server: Any) -> Iterator[UI]:
    context = browser.new_context(viewport=LAPTOP, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(10_000)
    page = context.new_page()
    session = UI(page=page, base_url=live_server.url)
    page.on(
        "console",
        lambda message: session.problems.append(f"console: {message.text}") if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: session.problems.append(f"pageerror: {error}"))
    yield session
    context.close()
    assert not session.unexpected(), f"errors in the browser console: {session.unexpected()}"
