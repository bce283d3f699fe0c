"""Sessions in Chromium: a person, or an admin, ends a session open in another browser, and that browser is signed out
at its next page; an idle one is sent to the sign-in page with the reason."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from core.models import UserSession
from tests.browser.conftest import PASSWORD, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CHROME_ON_LINUX = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)


@pytest.fixture
def other_browser(browser, live_server):
    """A second browser (its own cookies), as another computer of the same person would be."""
    context = browser.new_context(base_url=live_server.url, user_agent=CHROME_ON_LINUX)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def test_a_person_ends_their_session_in_another_browser_and_it_is_signed_out(page, login, other_browser, viewer):
    sign_in(other_browser, viewer)
    login(viewer)
    page.goto("/account/sessions/")
    rows = page.locator("#open-sessions tbody tr.session")
    expect(rows).to_have_count(2)
    expect(page.locator("#open-sessions tr.current")).to_contain_text("this session")
    other = page.locator("#open-sessions tr.session", has_text="Chrome 131 on Linux")
    with page.expect_navigation():
        other.get_by_role("button", name="End").click()
    expect(page.locator(".messages")).to_contain_text("Session ended")
    expect(rows).to_have_count(1)

    other_browser.goto("/audit/")
    expect(other_browser).to_have_url(re.compile(r"/login/\?next=/audit/$"))
    page.goto("/audit/")
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()


def test_an_admin_ends_someones_session_from_the_users_page(page, login, other_browser, admin, viewer):
    sign_in(other_browser, viewer)
    login(admin)
    page.goto("/users/")
    page.locator("tr", has_text="victor").get_by_role("link", name="Sessions").click()
    expect(page.get_by_role("heading", name="Sessions of victor", level=1)).to_be_visible()
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.locator("#open-sessions tr.session").get_by_role("button", name="End").click()
    expect(page.locator(".messages")).to_contain_text("1 session of victor ended.")

    other_browser.goto("/")
    assert "/login/" in other_browser.url


def test_an_idle_session_is_sent_to_the_sign_in_page_with_the_reason(page, login, viewer):
    login(viewer)
    UserSession.objects.filter(user=viewer).update(last_seen=timezone.now() - timedelta(minutes=45))
    page.goto("/audit/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/audit/$"))
    expect(page.locator(".messages")).to_contain_text("You were signed out after 30 minutes without activity.")
    page.fill("#id_username", "victor")
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    expect(page.get_by_role("heading", name="Audit log", level=1)).to_be_visible()
