"""The main flows in a real browser: sign in, dashboard, promote / roll back, endpoint filters, roles, Sync now."""

import json
import re
import threading

import pytest
from playwright.sync_api import expect

from fleet.choices import Compliance
from fleet.models import Endpoint
from fleet.services.rings import approve_package
from mirror.models import Mirror, SyncRun, Upstream
from tests.web import verify

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MANIFEST = "/mirror/groups/{slug}/linux/production/arch_x86_64/manifest.json"


def served(page, slug):
    """The definitions version the group's URL serves now, as an endpoint would fetch it."""
    response = page.request.get(MANIFEST.format(slug=slug))
    return json.loads(response.body())["DefinitionVersion"] if response.ok else response.status


@pytest.fixture
def rings(make_group, make_package, operator):
    """pilot serves `second` (n-1 `first`); broad serves `first`."""
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(pilot, second, operator)
    approve_package(broad, first, operator)
    return pilot, broad, first.definition_version, second.definition_version


def test_sign_in_and_the_dashboard_shows_the_fleet(page, login, viewer, make_group, make_endpoints):
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    make_endpoints(pilot, 3, "1.407.417.0", prefix="pilot-ok")
    make_endpoints(pilot, 2, "1.407.400.0", prefix="pilot-bad")
    make_endpoints(broad, 4, "1.407.400.0", prefix="broad")
    Endpoint.objects.filter(machine_id__startswith="pilot-ok").update(compliance=Compliance.UP_TO_DATE)
    Endpoint.objects.filter(machine_id__startswith="pilot-bad").update(compliance=Compliance.FAILING)
    Endpoint.objects.filter(group=broad).update(compliance=Compliance.BEHIND)

    login(viewer)
    expect(page.get_by_role("heading", name="Dashboard", level=1)).to_be_visible()
    compliance = page.locator("#fleet-compliance")
    expect(compliance.get_by_role("heading", name="Fleet compliance")).to_be_visible()
    expect(compliance.locator("tr.total-row td").first).to_have_text("9")
    expect(compliance.get_by_role("row", name="Pilot")).to_contain_text("5")
    expect(compliance.get_by_role("row", name="Broad")).to_contain_text("4")
    expect(page.locator("#versions").get_by_role("heading", name="Definitions versions")).to_be_visible()
    expect(page.locator("#versions")).to_contain_text("1.407.417.0")
    assert page.external_requests == []


def test_promote_then_roll_back_through_the_confirmation_pages(page, login, operator, rings):
    pilot, broad, first, second = rings
    login(operator)
    assert served(page, "broad") == first

    page.goto("/groups/pilot/")
    expect(page.locator("#target-linux-x86_64")).to_contain_text("linux")
    page.get_by_role("button", name="Promote to Broad").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Promote {second} from Pilot to Broad")
    page.get_by_role("button", name="Promote to Broad").click()
    expect(page.get_by_role("heading", level=1)).not_to_contain_text("Promote")
    assert served(page, "broad") == second

    page.goto("/groups/broad/")
    target = page.locator("section.card", has=page.locator("#target-linux-x86_64"))
    expect(target.locator("dd").first).to_contain_text(second)  # serves now
    expect(target.locator("dd").nth(1)).to_contain_text(first)  # n-1
    page.get_by_role("button", name=f"Roll back to {first}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Roll back Broad to {first}")
    page.get_by_role("button", name=f"Roll back to {first}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Broad")
    target = page.locator("section.card", has=page.locator("#target-linux-x86_64"))
    expect(target.locator("dd").first).to_contain_text(first)
    expect(page.get_by_role("table")).to_contain_text("Roll")  # the history lists the rollback
    assert served(page, "broad") == first
    assert served(page, "pilot") == second
    assert page.external_requests == []


def test_filter_endpoints_by_compliance(page, login, viewer, make_group, make_endpoints):
    pilot = make_group("pilot", 10)
    make_endpoints(pilot, 2, "1.407.400.0", prefix="bad")
    make_endpoints(pilot, 3, "1.407.417.0", prefix="good")
    Endpoint.objects.filter(machine_id__startswith="bad").update(compliance=Compliance.FAILING)
    Endpoint.objects.filter(machine_id__startswith="good").update(compliance=Compliance.UP_TO_DATE)

    login(viewer)
    page.goto("/groups/endpoints/")
    rows = page.locator("table.table tbody tr")
    expect(rows).to_have_count(5)
    page.get_by_label("Compliance", exact=True).select_option("failing")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(2)
    assert sorted(rows.locator("td:first-child").all_inner_texts()) == ["bad-0", "bad-1"]
    expect(page.locator(".summary-total")).to_contain_text("2 endpoints match")
    assert "compliance=failing" in page.url
    page.get_by_role("link", name="Clear", exact=True).click()
    expect(rows).to_have_count(5)
    assert page.external_requests == []


def test_a_viewer_sees_no_control_that_changes_anything(page, login, viewer, rings):
    login(viewer)
    for url in ("/groups/pilot/", "/groups/broad/", "/mirror/main/"):
        page.goto(url)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        for name in ("Approve", "Promote", "Roll back", "Sync now", "Import", "Create secret"):
            expect(page.get_by_role("button", name=name)).to_have_count(0)
        expect(page.locator("main form[method=post]")).to_have_count(0)
    expect(page.get_by_role("heading", name="main", level=1)).to_be_visible()
    assert page.external_requests == []


def test_sync_now_and_the_run_page_follows_the_run_until_it_ends(
    page, login, operator, settings, store, standin, monkeypatch
):
    from mirror import tasks

    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.MIRROR_RETRY_BACKOFF = 0.01
    upstream = Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5)
    Mirror.objects.create(
        name="main",
        slug="main",
        upstream=upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=0,
    )

    # The task runs eagerly (in-process) once the run is committed, but only after the run page has
    # loaded: the page must then follow the run through its htmx polling, with no reload.
    page_loaded, workers = threading.Event(), []
    delay = tasks.sync_mirror.delay

    def delay_after_page_load(run_id):
        def work():
            from django.db import connection

            try:
                page_loaded.wait(15)
                delay(run_id)
            finally:
                connection.close()

        worker = threading.Thread(target=work, daemon=True)
        workers.append(worker)
        worker.start()

    monkeypatch.setattr(tasks.sync_mirror, "delay", delay_after_page_load)
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "/progress/" in request.url else None)

    try:
        login(operator)
        page.goto("/mirror/main/")
        page.get_by_role("button", name="Sync now").click()
        run = SyncRun.objects.get()
        expect(page.get_by_role("heading", level=1)).to_have_text(f"Sync #{run.pk} of main")
        progress = page.locator("#run-progress")
        expect(progress).to_have_attribute("hx-trigger", "every 2s")  # active: the block polls
        expect(progress).to_contain_text("Queued")
        page.evaluate("window.__not_reloaded = true")
        page_loaded.set()

        expect(progress).to_contain_text("Succeeded", timeout=30_000)
        expect(progress).not_to_have_attribute("hx-trigger", "every 2s")  # finished: polling stops
        expect(progress.locator("tbody")).to_contain_text("linux/production/arch_x86_64")
        assert page.evaluate("window.__not_reloaded === true"), "the page was reloaded"
        assert polls, "the progress block never polled"
    finally:
        page_loaded.set()
        for worker in workers:
            worker.join(30)
    run.refresh_from_db()
    assert run.state == "succeeded"
    assert page.external_requests == []


def test_an_admin_adds_a_webhook_copies_its_secret_once_and_sends_a_signed_test(page, login, admin, receiver):
    login(admin)
    page.goto("/alerts/channels/new/")
    page.fill("#id_name", "SOC webhook")
    page.select_option("#id_kind", "webhook")
    page.fill("#id_url", receiver.url)
    with page.expect_navigation():
        page.get_by_role("button", name="Create channel").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("created")
    secret = page.locator("#signing-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    page.get_by_role("link", name=re.compile("I have copied it")).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("SOC webhook")
    assert secret not in page.content()  # shown once: the channel's page has only its hint

    with page.expect_navigation():
        page.get_by_role("button", name="Send a test message").click()
    messages = page.locator("section", has=page.get_by_role("heading", name="Messages"))
    expect(messages.locator("tbody tr").first).to_contain_text("delivered")
    [(headers, body)] = receiver.requests
    assert verify(secret, headers, body)  # as the README tells a receiver to check it
    assert json.loads(body)["kind"] == "test"
    assert page.external_requests == []
