"""A French session in Chromium: the browser asks for French, the person can choose English, and the choice stays
theirs from one sign-in to the next until they go back to following the browser."""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def french_page(browser, live_server, external_requests):
    context = browser.new_context(base_url=live_server.url, locale="fr-FR", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def choose_language(page, value):
    page.select_option("#language-choice", value)
    with page.expect_navigation():
        page.locator("form.language-form button[type=submit]").click()


def test_a_french_browser_gets_french_and_an_english_choice_stays(french_page, admin, make_group):
    page = french_page
    make_group("pilote", 10)
    page.goto("/login/")
    expect(page.locator("html")).to_have_attribute("lang", "fr")
    expect(page.get_by_role("button", name="Se connecter")).to_be_visible()

    sign_in(page, admin)
    expect(page.get_by_role("heading", name="Tableau de bord", level=1)).to_be_visible()
    page.goto("/groups/")
    expect(page.get_by_role("heading", name="Groupes", level=1)).to_be_visible()

    choose_language(page, "en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("heading", name="Groups", level=1)).to_be_visible()

    # Signed out and in again, the browser still asks for French: the person's choice wins.
    page.locator("form[action='/logout/'] button").click()
    sign_in(page, admin)
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()

    choose_language(page, "")
    expect(page.get_by_role("heading", name="Tableau de bord", level=1)).to_be_visible()
