"""Bulk move through the confirmation page in Chromium, and the endpoint pages fit the window (issue 15)."""

import pytest
from playwright.sync_api import expect

from core.models import AuditEvent
from fleet.choices import Compliance
from fleet.models import Endpoint, HealthReport
from tests.browser.conftest import SCREENSHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LONG = "x" * 180  # a token with no place to break, as long machine ids, URLs and fail reasons are


def test_select_all_then_move_through_the_confirmation_page(page, login, operator, make_group, make_endpoints):
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    make_endpoints(pilot, 3, "1.407.417.0", prefix="pilot")
    make_endpoints(broad, 1, "1.407.417.0", prefix="broad")

    login(operator)
    page.goto("/groups/endpoints/?group=pilot")
    boxes = page.locator('input[name="endpoint"]')
    expect(boxes).to_have_count(3)
    page.get_by_label("Select all on this page").check()
    for i in range(3):
        expect(boxes.nth(i)).to_be_checked()
    expect(page.locator('[data-selected-count="endpoint"]')).to_have_text("3")
    boxes.nth(2).uncheck()
    expect(page.get_by_label("Select all on this page")).not_to_be_checked()
    page.get_by_label("With the selection").select_option("move")
    page.locator("#bulk-group").select_option("broad")
    page.get_by_role("button", name="Review…").click()

    expect(page.locator("h1")).to_have_text("Move 2 endpoints to Broad")
    expect(page.locator("table tbody tr")).to_have_count(2)
    assert Endpoint.objects.filter(group=broad).count() == 1  # nothing moved by the page
    page.get_by_role("button", name="Move 2 endpoints to Broad").click()

    expect(page.locator(".messages")).to_contain_text("2 endpoints moved to Broad")
    assert "group=pilot" in page.url  # back to the list it came from
    expect(page.locator('input[name="endpoint"]')).to_have_count(1)
    assert Endpoint.objects.filter(group=broad).count() == 3
    assert AuditEvent.objects.filter(action="endpoint.move").count() == 2
    assert page.external_requests == []


@pytest.mark.parametrize("width", [390, 1440])
def test_the_endpoint_pages_are_never_wider_than_the_window(page, login, operator, make_group, width):
    group = make_group("pilot", 10)
    endpoint = Endpoint.objects.create(
        machine_id="m" * 64,
        hostname="host-" + LONG[:60],
        group=group,
        platform="linux",
        definitions_version="1.407.417.0",
        update_source_uri="https://mirror.example.org/" + LONG,
        offline_url_configured="https://mirror.example.org/" + LONG + "/",
        fail_reason="Failed to establish a new connection: " + LONG,
        compliance=Compliance.FAILING,
        finding_codes=",update_failed,not_updated_from_mirror,url_drift,",
        findings=[
            {
                "code": "update_failed",
                "severity": "critical",
                "title": "The last signature update failed",
                "explanation": f"The agent reports definitions_update_fail_reason {LONG}.",
                "fix": f"Run `curl -sSI https://mirror.example.org/{LONG}/arch_x86_64/manifest.json`.",
                "values": {"definitions_update_fail_reason": LONG},
            }
        ],
    )
    HealthReport.objects.create(
        endpoint=endpoint,
        form="text",
        compliance=Compliance.FAILING,
        raw="definitions_update_source_uri : " + LONG * 3 + "\n",
    )
    page.set_viewport_size({"width": width, "height": 900})
    login(operator)
    for path in (
        f"/groups/endpoints/{endpoint.pk}/",
        "/groups/endpoints/",
        f"/groups/endpoints/bulk/?action=decommission&endpoint={endpoint.pk}",
        "/groups/endpoints/agent/",
        "/groups/endpoints/claims/",
        "/mirror/groups/pilot/",
    ):
        assert page.goto(path).ok, path
        page.locator("details.raw").evaluate_all("nodes => nodes.forEach(node => node.open = true)")
        name = path.strip("/").split("?")[0].replace("/", "_").replace(str(endpoint.pk), "detail")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"endpoint_pages_{name}_{width}.png"), full_page=True)
        scroll_width, inner_width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll_width <= inner_width, f"{path} at {width} px is {scroll_width} px wide"
