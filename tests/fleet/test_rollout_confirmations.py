"""Safe rollout actions (issue 15): the plan each confirmation page shows, the version list's default, statuses
right after an action, group delete guarded like mirrors, and approving from a package's page."""

from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from core.models import AuditEvent
from fleet.choices import Compliance, GateState, RolloutMode
from fleet.forms import ApproveForm
from fleet.models import Endpoint, EndpointGroup, GroupTarget
from fleet.services import enrollment
from fleet.services.rings import (
    ApprovalError,
    approve_package,
    delete_group,
    deletion_blockers,
    evaluate_group,
    packages_for,
    plan_approval,
    plan_promotion,
    plan_rollback,
    promote,
    rejudge_endpoints,
    rollback,
)
from mirror.services.publish import publish

pytestmark = pytest.mark.django_db

TARGET = ("linux", "production", "x86_64")


@pytest.fixture
def judged(make_endpoints):
    """Endpoints that reported (judged against what their ring serves), not just enrolled."""

    def make(group, count, version):
        endpoints = make_endpoints(group, count, version)
        Endpoint.objects.filter(pk__in=[e.pk for e in endpoints]).update(compliance=Compliance.UP_TO_DATE)
        rejudge_endpoints(group, "linux", "x86_64", follow_up=False)
        return endpoints

    return make


def row(group) -> GroupTarget:
    return GroupTarget.objects.get(group=group, platform="linux", channel="production", arch="x86_64")


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


# --- The plan: from → to, the endpoints it changes, the rule it overrides -----------------------------------


def test_the_approval_plan_counts_the_endpoints_that_fetch_it_and_change_state(
    make_group, make_package, operator, judged, make_endpoints
):
    pilot = make_group("pilot")
    old, new = make_package(), make_package(engine="1.1.24020.3")
    approve_package(pilot, old, operator)
    judged(pilot, 3, old.definition_version)
    judged(pilot, 2, new.definition_version)  # already on it (from the cloud): up to date either way
    make_endpoints(pilot, 4, old.definition_version)  # enrolled, never reported: not judged
    plan = plan_approval(pilot, new)
    assert (plan.before, plan.after) == (old, new)
    assert plan.engine_changes and not plan.downgrade
    assert (plan.endpoints, plan.receiving, plan.state_changes) == (9, 7, 3)  # the 3 judged on old become behind
    assert plan.overrides == ""


def test_a_plan_changes_nothing(make_group, make_package, operator, judged):
    pilot = make_group("pilot")
    old, new = make_package(), make_package()
    approve_package(pilot, old, operator)
    judged(pilot, 2, old.definition_version)
    plan_approval(pilot, new)
    assert row(pilot).current == old
    assert set(Endpoint.objects.values_list("compliance", flat=True)) == {Compliance.UP_TO_DATE}


def test_the_rollback_plan_counts_endpoints_left_on_the_rolled_back_version(make_group, make_package, operator, judged):
    pilot = make_group("pilot")
    old, new = make_package(), make_package()
    approve_package(pilot, old, operator)
    approve_package(pilot, new, operator)
    judged(pilot, 5, new.definition_version)
    judged(pilot, 1, old.definition_version)
    plan = plan_rollback(pilot, TARGET)
    assert (plan.before, plan.after, plan.downgrade) == (new, old, True)
    assert (plan.endpoints, plan.receiving, plan.state_changes) == (6, 5, 6)  # 5 rolled back, 1 up to date again
    rollback(pilot, TARGET, operator)
    assert Endpoint.objects.filter(compliance=Compliance.ROLLED_BACK).count() == 5  # what the plan said


def test_promote_says_it_overrides_the_health_gate_holding_the_version(make_group, make_package, operator, judged):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=90)
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(broad, first, operator)
    approve_package(pilot, second, operator)
    judged(pilot, 1, second.definition_version)
    judged(pilot, 9, first.definition_version)
    plan = plan_promotion(pilot, TARGET)
    assert plan.group == broad and (plan.before, plan.after) == (first, second)
    assert plan.overrides == f"pilot: 1 of 10 endpoints on {second.definition_version} (10 % < 90 %)"


def test_approve_says_it_overrides_the_delay_of_an_after_ring(make_group, make_package, operator):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=24, gate_percent=0)
    package = make_package()
    approve_package(pilot, package, operator)
    assert "due in" in plan_approval(broad, package).overrides


def test_approving_again_a_version_rolled_back_says_so(make_group, make_package, operator):
    latest = make_group("latest", 10, RolloutMode.LATEST)
    old, new = make_package(), make_package()
    approve_package(latest, old, operator)
    approve_package(latest, new, operator)
    rollback(latest, TARGET, operator)
    assert plan_approval(latest, new).overrides.startswith(f"{new.definition_version} was rolled back here")


def test_a_manual_ring_has_no_rule_to_override(make_group, make_package, operator):
    pilot = make_group("pilot")
    assert plan_approval(pilot, make_package()).overrides == ""


def test_a_plan_refuses_as_the_change_would(make_group, make_package, operator):
    pilot = make_group("pilot")
    package = make_package()
    approve_package(pilot, package, operator)
    with pytest.raises(ApprovalError, match="already serves"):
        plan_approval(pilot, package)
    with pytest.raises(ApprovalError, match="is for linux/production/arch_arm64"):
        plan_approval(make_group("mac-only", platforms=("mac",)), make_package(arch="arm64"))


# --- The version list never preselects a downgrade ---------------------------------------------------------


def test_the_default_is_the_newest_version_newer_than_the_one_served(make_group, make_package, operator):
    pilot = make_group("pilot")
    first, second, third = make_package(), make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(pilot, second, operator)
    form = ApproveForm(group=pilot, target=TARGET, packages=packages_for(pilot, TARGET), current=second)
    assert form.fields["package"].initial == third.pk


def test_with_an_n_1_and_nothing_newer_no_version_is_preselected(make_group, make_package, operator):
    pilot = make_group("pilot")
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(pilot, second, operator)  # first is now n-1, and older
    form = ApproveForm(group=pilot, target=TARGET, packages=packages_for(pilot, TARGET), current=second)
    assert form.fields["package"].initial is None
    choices = dict(form.fields["package"].choices)
    assert choices[""] == "Choose a version"
    assert choices[first.pk].endswith("— older: a downgrade")
    assert choices[second.pk].endswith("— served now")


def test_the_group_page_preselects_nothing_older(client, operator, make_group, make_package):
    pilot = make_group("pilot")
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(pilot, second, operator)
    client.force_login(operator)
    page = client.get("/groups/pilot/").content.decode()
    versions = page.split('id="id_linux_x86_64_package"')[1].split("</select>")[0]
    assert '<option value="" selected>Choose a version</option>' in versions and versions.count(" selected") == 1


def test_a_downgrade_chosen_explicitly_is_labelled_on_its_confirmation(client, operator, make_group, make_package):
    pilot = make_group("pilot")
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(pilot, second, operator)
    client.force_login(operator)
    page = client.get(f"/groups/pilot/approve/linux/x86_64/?package={first.pk}").content.decode()
    assert f"<h1>Approve {first.definition_version} for Pilot</h1>" in page
    assert '<span class="state warn" id="downgrade">downgrade</span>' in page
    assert f"This is a downgrade: {first.definition_version} is older than {second.definition_version}" in page


# --- Approve goes through a confirmation page ---------------------------------------------------------------


def test_approve_shows_a_confirmation_then_serves_the_version(client, operator, make_group, make_package, judged):
    pilot = make_group("pilot")
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    judged(pilot, 4, first.definition_version)
    client.force_login(operator)
    confirm = client.get(f"/groups/pilot/approve/linux/x86_64/?package={second.pk}")
    page = confirm.content.decode()
    assert confirm.status_code == 200
    assert "4 of the 4 endpoints of Pilot on linux/x86_64 run another version" in page
    assert "4 endpoints change state at once" in page
    assert f'name="expected_current" value="{first.pk}"' in page and f'name="package" value="{second.pk}"' in page
    assert row(pilot).current == first  # the page changed nothing
    response = client.post(
        "/groups/pilot/approve/linux/x86_64/", {"package": second.pk, "expected_current": first.pk}, follow=True
    )
    assert (
        f"Pilot now serves {second.definition_version} for linux/production/arch_x86_64; "
        f"{first.definition_version} stays available as n-1." in messages_of(response)
    )
    assert row(pilot).current == second


def test_an_approval_page_without_a_version_sends_back_with_a_message(client, operator, make_group):
    make_group("pilot")
    client.force_login(operator)
    response = client.get("/groups/pilot/approve/linux/x86_64/", follow=True)
    assert "Cannot approve: choose one of the versions offered" in messages_of(response)


def test_a_viewer_cannot_see_an_approval_page(client, viewer, make_group, make_package):
    make_group("pilot")
    package = make_package()
    client.force_login(viewer)
    assert client.get(f"/groups/pilot/approve/linux/x86_64/?package={package.pk}").status_code == 403


def test_the_promote_page_names_the_gate_it_overrides(client, operator, make_group, make_package):
    pilot = make_group("pilot", 10)
    make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=90)
    package = make_package()
    approve_package(pilot, package, operator)
    client.force_login(operator)
    page = client.get("/groups/pilot/promote/linux/x86_64/").content.decode()
    assert 'id="gate-overridden"' in page
    assert "pilot: no linux/x86_64 endpoint has reported in the last 48 h" in page


# --- Statuses right after an action ------------------------------------------------------------------------


def published(mirror, *packages):
    """Packages the mirror published in turn: a 'latest' ring takes each at once (mirror.signals.package_published)."""
    for package in packages:
        publish(mirror, package)
    return packages


def test_after_a_rollback_the_ring_shows_its_new_verdict_at_once(make_group, make_package, operator, mirror):
    latest = make_group("latest", 10, RolloutMode.LATEST)
    old, new = published(mirror, make_package(), make_package())
    assert (row(latest).current, row(latest).gate_state) == (new, GateState.CURRENT)
    rollback(latest, TARGET, operator)
    # No periodic check has run: the verdict was written by the roll back itself.
    verdict = row(latest)
    assert verdict.gate_state == GateState.WAITING
    assert verdict.gate_reason.startswith(f"{new.definition_version} was rolled back here")


def test_after_a_promote_the_next_ring_is_no_longer_shown_waiting(make_group, make_package, operator):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=24, gate_percent=90)
    package = make_package()
    approve_package(pilot, package, operator)
    assert row(broad).gate_state == GateState.WAITING  # the delay holds it
    promote(pilot, TARGET, operator)
    assert (row(broad).gate_state, row(broad).current) == (GateState.CURRENT, package)


def test_a_person_s_change_is_not_undone_before_the_periodic_check(make_group, make_package, operator, mirror):
    latest = make_group("latest", 10, RolloutMode.LATEST)
    old, new = published(mirror, make_package(), make_package())
    approve_package(latest, old, operator)  # a downgrade chosen by hand
    verdict = row(latest)
    assert verdict.current == old and verdict.gate_state == GateState.WAITING  # the rule says it will follow
    assert verdict.gate_reason.endswith("due, the next rollout check serves it")


def test_the_groups_page_shows_the_status_right_after_a_rollback(client, operator, make_group, make_package, mirror):
    make_group("latest", 10, RolloutMode.LATEST)
    old, new = published(mirror, make_package(), make_package())
    client.force_login(operator)
    client.post("/groups/latest/rollback/linux/x86_64/", {"package": old.pk, "expected_current": new.pk})
    page = client.get("/groups/").content.decode()
    assert f"{new.definition_version} was rolled back here" in page
    assert '<span class="state ok">up to date</span>' not in page.split("linux/arch_x86_64")[1].split("</li>")[0]


def test_a_ring_that_serves_nothing_is_never_shown_up_to_date(client, viewer, make_group):
    make_group("latest", 10, RolloutMode.LATEST)  # its mirror has nothing yet
    client.force_login(viewer)
    page = client.get("/groups/").content.decode()
    assert "serves nothing" in page and '<span class="state ok">' not in page


# --- Group delete, guarded like mirrors -------------------------------------------------------------------------


def test_a_group_with_endpoints_or_usable_secrets_cannot_be_deleted(make_group, make_endpoints, admin):
    lonely = make_group("lonely")
    make_endpoints(lonely, 2, "1.0.0.0")
    enrollment.create_enrollment_secret(lonely, "servers", admin)
    reasons = deletion_blockers(lonely)
    assert reasons[0] == "2 endpoints are in lonely; move them to another group or decommission them first"
    assert reasons[1].startswith("1 enrollment secret of lonely still enrolls machines (servers); revoke it first")
    with pytest.raises(ApprovalError, match="decommission them first"):
        delete_group(lonely, admin)
    assert EndpointGroup.objects.filter(slug="lonely").exists()


def test_once_its_endpoints_are_decommissioned_and_secrets_revoked_a_group_is_deleted(
    make_group, make_endpoints, admin
):
    lonely = make_group("lonely")
    for endpoint in make_endpoints(lonely, 2, "1.0.0.0"):
        enrollment.decommission_endpoint(endpoint, admin)
    secret, _ = enrollment.create_enrollment_secret(lonely, "servers", admin)
    enrollment.revoke_enrollment_secret(secret, admin)
    assert deletion_blockers(lonely) == []
    delete_group(lonely, admin)
    assert not EndpointGroup.objects.filter(slug="lonely").exists() and not Endpoint.objects.exists()
    event = AuditEvent.objects.get(action="group.delete")
    assert event.actor_label == "alice" and event.details == {"slug": "lonely", "decommissioned_endpoints": 2}


def test_the_delete_page_says_what_to_do_first(client, admin, make_group, make_endpoints):
    lonely = make_group("lonely")
    make_endpoints(lonely, 1, "1.0.0.0")
    client.force_login(admin)
    page = client.get("/groups/lonely/delete/").content.decode()
    assert "This group cannot be deleted yet:" in page
    assert "1 endpoint is in lonely; move it to another group or decommission it first" in page
    assert '<form method="post">' not in page
    response = client.post("/groups/lonely/delete/", follow=True)
    assert any("decommission it first" in m for m in messages_of(response))
    assert EndpointGroup.objects.filter(slug="lonely").exists()


def test_an_admin_deletes_an_unused_group_through_its_confirmation(client, admin, make_group):
    make_group("lonely")
    client.force_login(admin)
    page = client.get("/groups/lonely/delete/").content.decode()
    assert "Delete group Lonely" in page and "answer 404" in page
    response = client.post("/groups/lonely/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/groups/"
    assert any(m.startswith("Group Lonely deleted.") for m in messages_of(response))
    assert not EndpointGroup.objects.exists()


def test_operators_cannot_delete_groups(client, operator, make_group):
    make_group("lonely")
    client.force_login(operator)
    assert client.get("/groups/lonely/delete/").status_code == 403
    assert client.post("/groups/lonely/delete/").status_code == 403
    assert EndpointGroup.objects.filter(slug="lonely").exists()


# --- Approve from a package's page ----------------------------------------------------------------------------


def test_a_package_page_offers_each_ring_its_approval(client, operator, make_group, make_package):
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    make_group("macs", 30, platforms=("mac",))
    old, new = make_package(), make_package()
    approve_package(pilot, new, operator)
    approve_package(broad, old, operator)
    client.force_login(operator)
    page = client.get(f"/mirror/packages/{new.pk}/").content.decode()
    section = page.split('id="approve-for-ring"')[1]
    assert "Pilot" in section and "serves this version" in section
    assert f"serves the older {old.definition_version}" in section
    assert f'href="/groups/broad/approve/linux/x86_64/?package={new.pk}"' in section
    assert "/groups/pilot/approve/" not in section  # already served there
    assert "Macs" not in section  # another platform
    confirm = client.get(f"/groups/broad/approve/linux/x86_64/?package={new.pk}").content.decode()
    assert f"Approve {new.definition_version} for Broad" in confirm


def test_a_viewer_sees_the_rings_but_no_approve_button(client, viewer, make_group, make_package):
    make_group("pilot")
    package = make_package()
    client.force_login(viewer)
    page = client.get(f"/mirror/packages/{package.pk}/").content.decode()
    assert 'id="approve-for-ring"' in page and "/approve/" not in page


# --- The group form explains Defender where the choice is made ----------------------------------------------


def test_the_group_form_explains_each_defender_choice_with_microsoft_s_page(client, admin, mirror):
    client.force_login(admin)
    page = client.get("/groups/new/").content.decode()
    for key, url in (
        ("enforcement_level", "https://learn.microsoft.com/en-us/defender-endpoint/linux-preferences"),
        ("fallback_to_cloud", "https://learn.microsoft.com/en-us/defender-endpoint/linux-support-offline-security"),
        ("update_interval", "https://learn.microsoft.com/en-us/defender-endpoint/linux-preferences"),
        ("offline_update", "https://learn.microsoft.com/en-us/defender-endpoint/linux-support-offline-security"),
        ("channel", "https://docs.microsoft.com/en-us/microsoft-365/security/defender-endpoint/updates"),
    ):
        help_text = page.split(f'id="id_{key}_helptext">')[1].split("</small>")[0]
        assert url in help_text, key
    assert "passive reports threats but blocks nothing" in page
    assert "On an offline network it cannot reach the cloud" in page
    assert "28800 is every 8 h" in page
    assert "(n-1)" in page


def test_the_confirmation_shows_the_check_interval_in_words(client, operator, make_group, make_package):
    make_group("pilot", update_interval=28800)
    package = make_package()
    client.force_login(operator)
    page = client.get(f"/groups/pilot/approve/linux/x86_64/?package={package.pk}").content.decode()
    assert "check every 8 h" in page and "28800 s" not in page


def test_gate_reasons_written_by_the_periodic_check_still_hold(make_group, make_package, make_endpoints, operator):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=50)
    package = make_package()
    approve_package(pilot, package, operator)
    GroupTarget.objects.filter(group=pilot).update(approved_at=timezone.now() - timedelta(hours=1))
    make_endpoints(pilot, 2, package.definition_version)
    evaluate_group(broad)
    assert row(broad).current == package  # the rule still approves what is due
