"""From an empty portal to a first report, in Chromium, following the dashboard's first-run checklist: each step's
link leads to its form, and each item ticks itself once the portal holds what it stands for. The agent is the real
one (agent/mde-offline-agent.sh under dash, with the stand-in mdatp) run against the live server."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from fleet.models import Endpoint, EndpointGroup
from fleet.services import ingest
from mirror.models import SyncRun
from tests.fleet.test_agent import Endpoint_

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
STEPS = ["upstream", "mirror", "sync", "group", "approved", "secret", "endpoint", "report"]


def checklist(page) -> dict:
    """Each step's state as the dashboard shows it: "done", "next" or "todo"."""
    page.goto("/")
    states = {}
    for key in STEPS:
        item = page.locator(f"#step-{key}")
        classes = item.get_attribute("class") or ""
        states[key] = "done" if " done" in classes else "next" if " next" in classes else "todo"
    return states


def expect_ticked(page, done: int):
    """The first ``done`` steps ticked, the next one highlighted, the rest to do."""
    states = checklist(page)
    expected = {key: "done" if i < done else "next" if i == done else "todo" for i, key in enumerate(STEPS)}
    assert states == expected
    expect(page.locator("#first-run")).to_contain_text(f"{done} of 8 steps done")


def follow(page, key):
    """Click the step's link on the dashboard, as an admin would."""
    page.goto("/")
    with page.expect_navigation():
        page.locator(f"#step-{key} a").first.click()


def screenshots(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.goto("/")
    for width in (390, 1440):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/")
        width_ok = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert width_ok, f"the dashboard is wider than {width} px"
        page.locator("#first-run").screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"))
        page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def test_an_admin_goes_from_an_empty_portal_to_a_first_report_by_the_checklist(
    page, login, admin, settings, store, standin, tmp_path, live_server
):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # "Sync now" runs the sync in the live server, as a worker would
    settings.MIRROR_RETRY_BACKOFF = 0.01
    settings.PORTAL_BASE_URL = live_server.url  # endpoints are told the live server's URLs
    login(admin)
    expect_ticked(page, 0)
    screenshots(page, "checklist")

    # 1. The upstream: the stand-in for Microsoft's download service.
    follow(page, "upstream")
    page.fill("#id_name", "Stand-in Microsoft")
    page.fill("#id_base_url", standin.base_url)
    with page.expect_navigation():
        page.locator("main form button[type=submit]").last.click()
    expect_ticked(page, 1)

    # 2. The mirror: Linux, production, x86_64, synced only when asked.
    follow(page, "mirror")
    page.fill("#id_name", "Main")
    page.fill("#id_slug", "main")
    for field, value in (("platforms", "linux"), ("channels", "production"), ("archs", "x86_64")):
        for box in page.locator(f"input[name={field}]").all():
            box.set_checked(box.get_attribute("value") == value)
    page.fill("#id_sync_interval_minutes", "0")
    with page.expect_navigation():
        page.locator("main form button[type=submit]").last.click()
    expect_ticked(page, 2)

    # 3. The first sync, from the mirror's page the step links to.
    follow(page, "sync")
    page.get_by_role("button", name="Sync now").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sync #")
    assert SyncRun.objects.get().state == "succeeded"
    expect_ticked(page, 3)

    # 4. The ring, on the mirror just synced.
    follow(page, "group")
    page.fill("#id_name", "Pilot")
    page.fill("#id_slug", "pilot")
    for box in page.locator("input[name=platforms]").all():
        box.set_checked(box.get_attribute("value") == "linux")
    with page.expect_navigation():
        page.locator("main form button[type=submit]").last.click()
    group = EndpointGroup.objects.get(slug="pilot")
    expect_ticked(page, 4)

    # 5. A version approved for the ring, through its confirmation page: the version list offers the newest.
    follow(page, "approved")
    assert page.url.endswith("/groups/pilot/#approved-versions")
    page.get_by_role("button", name="Approve…").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("for Pilot")
    page.locator("main form button[type=submit]").last.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Pilot")
    expect_ticked(page, 5)

    # 6. The enrollment secret, on the ring's page; it is shown once.
    follow(page, "secret")
    page.fill("#id_secret_name", "first machines")
    with page.expect_navigation():
        page.get_by_role("button", name="Create secret").click()
    secret = page.locator("#enrollment-secret").inner_text().strip()
    assert secret.startswith("mde_enr_")
    expect_ticked(page, 6)

    # 7 and 8. The agent on a first machine: the step links to the install steps; the real agent enrolls (7) and
    # sends its `mdatp health` report (8) in one run.
    follow(page, "endpoint")
    assert page.url.endswith("/groups/pilot/#install-agent")
    url = group.definition_url("linux")
    (tmp_path / "machine").mkdir()
    machine = Endpoint_(
        tmp_path / "machine",
        live_server.url,
        secret,
        env={
            "MDATP_STANDIN_OFFLINE_DEFINITION_URL_CONFIGURED": url,
            "MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI": url,
        },
    )
    enrolled = machine.run("--enroll-only")
    assert enrolled.returncode == 0, enrolled.stderr
    expect_ticked(page, 7)
    screenshots(page, "checklist-agent")

    ingest._GROUPS.clear()
    run = machine.run()
    assert run.returncode == 0, run.stderr
    endpoint = Endpoint.objects.get()
    assert endpoint.last_seen is not None and endpoint.group == group
    assert endpoint.compliance != "unserved", "the ring serves the approved version"

    # All done: the checklist gives way to the fleet.
    page.goto("/")
    expect(page.locator("#first-run")).to_have_count(0)
    expect(page.locator("#fleet-compliance")).to_contain_text("Pilot")
    screenshots_done(page)


def screenshots_done(page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width in (390, 1440):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto("/")
        page.screenshot(path=str(SCREENSHOTS / f"dashboard-first-report-{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})
