"""Issue 16: someone whose password an admin reset with "must change at next sign-in" signs in, in Chromium, and is
held on the password change page until they change it; then the page they asked for opens."""

import pytest
from playwright.sync_api import expect

from core.models import Account

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GIVEN = "given-by-the-helpdesk"
NEW = "a-brand-new-passphrase"


def test_a_forced_password_change_after_sign_in(page, login, make_user):
    user = make_user("una", password=GIVEN)
    Account.objects.create(user=user, must_change_password=True)

    login(user, GIVEN)
    assert page.url.endswith("/account/password/?next=%2F"), page.url
    expect(page.locator("#must-change")).to_be_visible()

    # Every other page leads back here, the menu's links included.
    page.goto("/audit/")
    assert "/account/password/" in page.url
    page.goto("/account/")
    assert "/account/password/" in page.url

    # A new password the validators refuse keeps the person here, with the reason.
    page.fill("#id_old_password", GIVEN)
    page.fill("#id_new_password1", "short")
    page.fill("#id_new_password2", "short")
    with page.expect_navigation():
        page.click("form[action='/account/password/'] button[type=submit]")
    expect(page.locator(".field-error")).to_contain_text("This password is too short.")

    page.fill("#id_old_password", GIVEN)
    page.fill("#id_new_password1", NEW)
    page.fill("#id_new_password2", NEW)
    with page.expect_navigation():
        page.click("form[action='/account/password/'] button[type=submit]")
    assert page.url.endswith("/"), page.url
    expect(page.locator(".messages")).to_contain_text("Your password is changed")

    page.goto("/account/")
    expect(page.locator("#account-username")).to_have_text("una")
    user.refresh_from_db()
    assert user.check_password(NEW) and not user.account.must_change_password
