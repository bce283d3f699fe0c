"""Browser tests: the portal served by pytest-django's live_server, driven by Debian's headless Chromium.

Every page runs in a context that lets only the live server's host:port through; any other request
(a CDN font, an analytics script, a map tile) is recorded, aborted and fails the test at teardown.
A screenshot of each test's last page goes to test-artifacts/screenshots/<test name>.png.
"""

import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"


def find_chromium() -> str | None:
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium")


CHROMIUM = find_chromium()


def pytest_collection_modifyitems(config, items):
    if CHROMIUM:
        return
    skip = pytest.mark.skip(reason="browser tests skipped: no Chromium (apt-get install chromium)")
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(skip)


@pytest.fixture(scope="package")
def browser():
    """One Chromium for all the browser tests, stopped after them (package scope): Playwright's sync API
    keeps an asyncio loop running in this thread, which the rest of the suite must not see."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    # The ORM refuses to run while an event loop runs in its thread; the tests' ORM calls are synchronous.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def external_requests():
    """URLs the browser tried to reach outside the live server (all aborted)."""
    return []


@pytest.fixture
def page(request, django_db_setup, browser, live_server, external_requests):
    origin = urlsplit(live_server.url)
    allowed = (origin.scheme, origin.netloc)

    def route(route):
        url = route.request.url
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) == allowed or parts.scheme in ("data", "blob", "about"):
            route.continue_()
        else:
            external_requests.append(url)
            route.abort()

    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    context.route("**/*", route)
    page = context.new_page()
    page.external_requests = external_requests
    try:
        yield page
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        finally:
            context.close()
    assert external_requests == [], f"requests left localhost: {external_requests}"


def sign_in(page, user, password=PASSWORD):
    """Sign ``user`` in through the form at /login/ in ``page`` (any browser context) and land on the page after it."""
    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/login/" not in page.url, f"sign-in of {user.username} failed"
    return page


@pytest.fixture
def login(page):
    """login(user): sign in through the form at /login/ and land on the page after it."""
    return lambda user, password=PASSWORD: sign_in(page, user, password)
