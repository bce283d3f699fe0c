"""The first-run checklist: each step ticks itself from real rows, in order, in one query; the dashboard shows it
until the first report, with the next step highlighted and links only for those who may follow them."""

from html import unescape

import pytest
from django.utils import timezone

from fleet.models import Endpoint, EndpointGroup
from fleet.services import enrollment
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror, SyncRun, Upstream
from portal.checklist import first_run_checklist

pytestmark = pytest.mark.django_db

ORDER = ["upstream", "mirror", "sync", "group", "approved", "secret", "endpoint", "report"]


def state(user=None) -> dict:
    checklist = first_run_checklist(user)
    return {step.key: step.done for step in checklist.steps}, checklist


def test_an_empty_portal_has_every_step_to_do_and_the_upstream_first():
    done, checklist = state()
    assert [step.key for step in checklist.steps] == ORDER
    assert not any(done.values()) and not checklist.complete
    assert checklist.next.key == "upstream" and [s.key for s in checklist.steps if s.next] == ["upstream"]
    assert checklist.next.url == "/mirror/upstreams/new/"


def test_each_step_ticks_itself_from_the_rows_it_stands_for(
    store, make_package, operator, reporting_endpoint, django_assert_num_queries
):
    upstream = Upstream.objects.create(name="microsoft")
    assert state()[0] == {**dict.fromkeys(ORDER, False), "upstream": True}

    mirror = Mirror.objects.create(
        name="main", slug="main", upstream=upstream, platforms=["linux"], channels=["production"], archs=["x86_64"]
    )
    done, checklist = state()
    assert done["mirror"] and not done["sync"]
    assert checklist.next.key == "sync" and checklist.next.url == "/mirror/main/"  # where "Sync now" is

    # A failed or running sync is not a first successful one.
    SyncRun.objects.create(mirror=mirror, trigger=SyncTrigger.MANUAL, state=SyncState.FAILED)
    SyncRun.objects.create(mirror=mirror, trigger=SyncTrigger.MANUAL, state=SyncState.RUNNING)
    assert not state()[0]["sync"]
    SyncRun.objects.create(
        mirror=mirror, trigger=SyncTrigger.MANUAL, state=SyncState.SUCCEEDED, finished_at=timezone.now()
    )
    done, checklist = state()
    assert done["sync"] and checklist.next.key == "group" and checklist.next.url == "/groups/new/"

    group = EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], ring_order=10)
    group.full_clean()
    from fleet.services.rings import approve_package, save_group

    save_group(group)
    done, checklist = state()
    assert done["group"] and checklist.next.key == "approved"
    assert checklist.next.url == "/groups/pilot/#approved-versions"

    # A ring that serves nothing answers 404 to its endpoints: approving a version is a step of its own.
    approve_package(group, make_package(), operator)
    done, checklist = state()
    assert done["approved"] and checklist.next.key == "secret"
    assert checklist.next.url == "/groups/pilot/#enrollment-secrets"

    # A revoked secret enrolls nothing: it does not count.
    revoked, _ = enrollment.create_enrollment_secret(group, "old")
    revoked.revoked_at = timezone.now()
    revoked.save()
    assert not state()[0]["secret"]
    secret = enrollment.create_enrollment_secret(group, "lab")[1]
    done, checklist = state()
    assert done["secret"] and checklist.next.key == "endpoint"
    assert checklist.next.url == "/groups/pilot/#install-agent"

    enrollment.enroll(secret, "machine-1", "machine-1", "linux", "x86_64")
    done, checklist = state()
    assert done["endpoint"] and not done["report"] and checklist.next.key == "report"

    reporting_endpoint(group, "machine-1")
    done, checklist = state()
    assert all(done.values()) and checklist.complete and checklist.next is None
    assert Endpoint.objects.get().last_seen is not None

    # Eight facts and two slugs, one query.
    with django_assert_num_queries(1):
        first_run_checklist()


def test_the_dashboard_shows_the_steps_with_the_next_one_highlighted(client, admin):
    Upstream.objects.create(name="microsoft")
    client.force_login(admin)
    html = unescape(client.get("/").content.decode())
    assert 'id="first-run"' in html and "1 of 8 steps done" in html
    assert 'class="checklist-step done" id="step-upstream" data-done="true"' in html
    assert 'class="checklist-step next" id="step-mirror" data-done="false" aria-current="step"' in html
    assert '<a href="/mirror/new/">Add a mirror</a>' in html
    # The old first hint, shown before anything existed, is gone.
    assert "create an enrollment secret on a" not in html


def test_a_viewer_is_told_who_does_a_step_instead_of_a_link_that_would_refuse_them(client, viewer):
    client.force_login(viewer)
    html = unescape(client.get("/").content.decode())
    assert "Add an upstream" in html and 'href="/mirror/upstreams/new/"' not in html
    assert "Ask an admin to do it." in html
    # What a viewer may open is still linked.
    assert '<a href="/groups/endpoints/">Receive a first health report</a>' in html


def test_the_checklist_goes_away_once_the_first_report_is_in(
    client, admin, mirror, make_group, make_package, reporting_endpoint
):
    from fleet.services.rings import approve_package

    SyncRun.objects.create(mirror=mirror, trigger=SyncTrigger.MANUAL, state=SyncState.SUCCEEDED)
    group = make_group("pilot")
    approve_package(group, make_package(), admin)
    reporting_endpoint(group, "machine-1")
    assert first_run_checklist().complete
    client.force_login(admin)
    html = client.get("/").content.decode()
    assert 'id="first-run"' not in html and "Fleet compliance" in html
