"""Sign-in with OpenID Connect in Chromium: the portal's button, the real provider's sign-in page
(tests/oidc_provider), back to the portal with the role the admin's mapping gives, shown in the top bar."""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from core.choices import AccountSource, Role
from core.models import RoleMapping
from tests.oidc_provider import PASSWORD, process

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The provider's fixtures (tests/oidc_provider/process.py), for this module.
oidc_provider = process.oidc_provider
oidc = process.oidc


@pytest.fixture
def sso_page(browser, live_server, oidc):
    """A page that may reach the live server and the provider, nothing else."""
    allowed = {urlsplit(live_server.url).netloc, urlsplit(oidc.url).netloc}
    outside = []

    def route(route):
        if urlsplit(route.request.url).netloc in allowed:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    context.route("**/*", route)
    try:
        yield context.new_page()
    finally:
        context.close()
    assert outside == []


def test_a_person_signs_in_through_the_provider_and_sees_their_mapped_role(sso_page, oidc):
    RoleMapping.objects.create(source=AccountSource.OIDC, value="portal-operators", role=Role.OPERATOR)
    page = sso_page
    page.goto("/login/")
    with page.expect_navigation():
        page.click("#sign-in-oidc")
    assert page.url.startswith(oidc.url), page.url  # the provider's own sign-in page
    page.fill("#id_username", "oscar")
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation(url=lambda url: "/login/" not in url and "127.0.0.1" not in url):
        page.click("#provider-sign-in")
    expect(page.locator(".topbar .who")).to_contain_text("oscar")
    expect(page.locator(".topbar .who .badge")).to_have_text("Operator")


def test_a_person_with_no_mapped_role_reads_why_on_the_sign_in_page(sso_page, oidc):
    page = sso_page
    page.goto("/login/")
    with page.expect_navigation():
        page.click("#sign-in-oidc")
    page.fill("#id_username", "nobody")
    page.fill("#id_password", PASSWORD)
    page.click("#provider-sign-in")
    page.wait_for_url("**/login/")
    expect(page.locator(".messages")).to_contain_text("none of their groups or roles is mapped to a portal role")
