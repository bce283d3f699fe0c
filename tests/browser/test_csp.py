"""Issue 14, item 12: every main page works under the Content-Security-Policy in real Chromium (htmx, Chart.js,
Swagger UI, the confirmations), with not one violation reported by the browser."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from core import services
from fleet.services.rings import approve_package
from mirror.choices import SyncState, SyncTrigger
from mirror.models import SyncRun

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Chromium reports each blocked script, style, image or request as a `securitypolicyviolation` event on the
# document (https://developer.mozilla.org/docs/Web/API/SecurityPolicyViolationEvent) and as a console error.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(`${event.effectiveDirective} blocked ${event.blockedURI || "inline"} at ${event.sourceFile}:${event.lineNumber}`);
});
"""


@pytest.fixture
def watched(page):
    """The page, recording every CSP violation (events and console messages) in ``page.violations``."""
    page.violations = []
    page.add_init_script(RECORD_VIOLATIONS)
    page.on(
        "console",
        lambda message: page.violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    return page


def violations(page) -> list[str]:
    return page.violations + page.evaluate("window.__violations")


@pytest.fixture
def portal(mirror, make_group, make_package, make_endpoints, admin):
    pilot = make_group("pilot", 10)
    package = make_package()
    approve_package(pilot, package, admin)
    make_endpoints(pilot, 3, package.definition_version)
    # A running sync: its page's progress card polls itself with htmx.
    run = SyncRun.objects.create(
        mirror=mirror, trigger=SyncTrigger.MANUAL, state=SyncState.RUNNING, started_at=timezone.now()
    )
    services.create_api_token(admin, "ansible")
    return pilot, package, run


def test_every_main_page_runs_under_the_policy_with_no_violation(watched, login, admin, portal, live_server):
    pilot, package, run = portal
    page = watched
    response = page.goto("/login/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "http" not in policy
    login(admin)
    # The dashboard draws its charts with Chart.js (the trend needs daily snapshots, which a new fleet lacks).
    expect(page.locator(".has-chart #chart-compliance")).to_be_visible()
    expect(page.locator(".has-chart #chart-versions")).to_be_visible()
    for path in [
        "/groups/",
        f"/groups/{pilot.slug}/",
        "/groups/endpoints/",
        "/mirror/",
        "/mirror/main/",
        "/mirror/packages/",
        f"/mirror/packages/{package.pk}/",
        "/mirror/runs/",
        "/mirror/bundles/",
        "/alerts/",
        "/alerts/channels/new/",
        "/audit/",
        "/tokens/",
        "/users/",
        "/users/security/",
        "/account/mfa/",
        "/account/mfa/setup/",  # the QR code: an SVG data: image
        "/",
    ]:
        response = page.goto(path)
        assert response.status == 200, path
        assert violations(page) == [], path

    # htmx polls the running sync's progress card and swaps it in.
    page.goto(f"/mirror/runs/{run.pk}/")
    with page.expect_response(lambda answer: f"/mirror/runs/{run.pk}/progress/" in answer.url):
        pass
    assert violations(page) == []

    # Swagger UI: its bundle, its start-up script (a file, ?script) and the schema it fetches.
    page.goto("/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible(timeout=20_000)
    expect(page.locator(".opblock-tag", has_text="mirrors")).to_be_visible()
    assert violations(page) == []


def test_a_confirmation_still_asks_before_a_token_is_revoked(watched, login, admin, portal):
    page = watched
    login(admin)
    page.goto("/tokens/")
    revoke = page.get_by_role("button", name="Revoke")
    questions = []

    def answer(dialog, accept):
        questions.append(dialog.message)
        dialog.accept() if accept else dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    revoke.click()
    expect(page.get_by_role("button", name="Revoke")).to_be_visible()
    assert questions == ["Revoke this token? Anything using it stops working."]
    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    with page.expect_navigation():
        revoke.click()
    expect(page.get_by_text("revoked; it no longer works")).to_be_visible()
    assert violations(page) == []
