"""Browser tests: the app served by pytest-django's live server, driven through Playwright
in Debian's Chromium (/usr/bin/chromium; never a browser downloaded by Playwright).

Without Chromium the tests are skipped with the reason, except in CI (CI=true), where a
missing browser is a failure. Tests need `@pytest.mark.django_db(transaction=True)`: the
live server runs in another thread and must see the rows the test writes.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Playwright's sync API runs an event loop in this thread; Django would then refuse the
# test's own (synchronous) database queries as "called from an async context".
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PASSWORD = "pw-for-tests"  # tests/factories.py UserFactory
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield browser
        browser.close()


class PageProblems:
    """Uncaught script errors and CSP violations seen by a page: both mean a broken UI."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def on_console(self, message) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.errors.append(f"CSP: {message.text}")

    def on_page_error(self, error) -> None:
        self.errors.append(f"page error: {error}")


def _new_page(chromium, live_server, problems: PageProblems, **context_args):
    context = chromium.new_context(base_url=live_server.url, **context_args)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    return context, page


@pytest.fixture
def page(chromium, live_server) -> Iterator[object]:
    """A desktop-sized page; fails the test if a script error or CSP violation happened."""
    problems = PageProblems()
    context, page = _new_page(chromium, live_server, problems, viewport=DESKTOP)
    yield page
    context.close()
    assert not problems.errors, problems.errors


@pytest.fixture
def phone_page(chromium, live_server) -> Iterator[object]:
    """A phone-sized touch page (tap, no mouse drag)."""
    problems = PageProblems()
    context, page = _new_page(
        chromium,
        live_server,
        problems,
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    yield page
    context.close()
    assert not problems.errors, problems.errors


def log_in(page, username: str, password: str = PASSWORD) -> None:
    """Log in through Django's login form, as a person would."""
    page.goto("/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/projects/")
