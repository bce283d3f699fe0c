"""Issue 16: in Chromium, a person sets up two-factor authentication from the QR code page (the secret read off the
page, the code computed from it with pyotp as a phone would), signs out, and signs in again with password and code."""

import time

import pyotp
import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery"


def test_set_up_totp_then_sign_in_with_password_and_code(page, login, make_user):
    user = make_user("tina")
    login(user)

    page.goto("/account/mfa/")
    with page.expect_navigation():
        page.click("#mfa-setup-link")
    # The QR code is an SVG data: image, which the Content-Security-Policy lets through: it is drawn.
    qr = page.locator("#mfa-qr")
    expect(qr).to_be_visible()
    assert page.evaluate("document.getElementById('mfa-qr').naturalWidth") > 0
    totp = pyotp.TOTP(page.inner_text("#mfa-secret").replace(" ", "").strip())

    left = 30 - time.time() % 30
    if left < 4:
        time.sleep(left + 0.1)
    page.fill("#id_code", totp.now())
    with page.expect_navigation():
        page.click("button[type=submit].primary")
    codes = page.inner_text("#recovery-codes").split()
    assert len(codes) == 10
    assert TOTPDevice.objects.get(user=user).confirmed

    with page.expect_navigation():
        page.click("text=Sign out")

    page.goto("/login/?next=/audit/")
    page.fill("#id_username", "tina")
    page.fill("#id_password", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/login/code/"), page.url
    # Not signed in yet: any page sends back to the sign-in.
    page.goto("/audit/")
    assert "/login/" in page.url and "/login/code/" not in page.url
    page.go_back()

    # The code of the set-up step is used up; the phone's next one (one step ahead) is accepted.
    page.goto("/login/code/")
    page.fill("#id_code", totp.at(time.time() + 30))
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.endswith("/audit/"), page.url
    expect(page.locator(".who")).to_contain_text("tina")
