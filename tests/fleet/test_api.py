import io
import json
import plistlib

import pytest

from core.models import AuditEvent
from fleet.choices import RolloutMode
from fleet.models import ApprovalEvent, EndpointGroup, GroupTarget
from fleet.services import rings
from mirror.choices import PackageSource
from mirror.models import Mirror, SignaturePackage

pytestmark = pytest.mark.django_db

GROUP_BODY = {
    "name": "Pilot",
    "slug": "pilot",
    "mirror": "main",
    "platforms": ["linux"],
    "channel": "production",
    "ring_order": 10,
}


def served(group, platform="linux", arch="x86_64"):
    """(current id, previous id) the group serves for a target, from the database."""
    row = GroupTarget.objects.filter(group=group, platform=platform, channel=group.channel, arch=arch).first()
    return (row.current_id, row.previous_id) if row else (None, None)


def approval_state():
    """Everything an approval change touches: the rows, their history and the audit entries."""
    rows = sorted(
        GroupTarget.objects.values_list("group_id", "platform", "arch", "current_id", "previous_id", "approved_at")
    )
    return rows, ApprovalEvent.objects.count(), AuditEvent.objects.filter(action__startswith="approval.").count()


def group_row(group):
    return EndpointGroup.objects.filter(pk=group.pk).values().get()


# --- Groups: CRUD and field errors ---------------------------------------------------------------


def test_an_admin_creates_a_group_and_gets_its_urls_and_tree(api, admin, mirror, settings):
    response = api.as_user(admin).post("/api/v1/groups/", {**GROUP_BODY, "platforms": ["mac", "linux"]}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    group = EndpointGroup.objects.get(slug="pilot")
    assert body["id"] == group.pk and body["mirror"] == "main" and body["source_group"] is None
    assert body["platforms"] == ["linux", "mac"]  # in the canonical order
    assert body["urls"] == {
        "linux": f"{settings.PORTAL_BASE_URL}/mirror/groups/pilot/linux/production/",
        "mac": f"{settings.PORTAL_BASE_URL}/mirror/groups/pilot/mac/production/",
    }
    assert body["tree_path"] == str(group.tree_path)
    assert body["update_interval"] == 28800 and body["rollout"] == "manual"
    event = AuditEvent.objects.get(action="group.create", target_label="Pilot", actor_label="alice")
    assert event.details["fields"]["mirror"] == "main"  # every field, the mirror by slug, as the group form records it
    # save_group ran: the group has a row per target it serves.
    assert GroupTarget.objects.filter(group=group).count() == 4


def test_groups_are_listed_filtered_and_ordered(api, viewer, make_group):
    pilot = make_group("pilot", 10)
    make_group("broad", 20, rollout=RolloutMode.AFTER, source_group=pilot)
    make_group("servers", 5, rollout=RolloutMode.LATEST)
    api.as_user(viewer)
    assert [g["slug"] for g in api.get("/api/v1/groups/").json()["results"]] == ["servers", "pilot", "broad"]
    assert [g["slug"] for g in api.get("/api/v1/groups/?ordering=name").json()["results"]] == [
        "broad",
        "pilot",
        "servers",
    ]
    after = api.get("/api/v1/groups/?rollout=after&mirror=main&channel=production").json()["results"]
    assert [(g["slug"], g["source_group"]) for g in after] == [("broad", "pilot")]
    assert api.get("/api/v1/groups/?mirror=elsewhere").json()["count"] == 0
    assert api.get("/api/v1/groups/?rollout=sometimes").status_code == 400


def test_an_admin_changes_a_group_and_the_change_is_audited(api, admin, make_group):
    group = make_group("pilot")
    response = api.as_user(admin).patch(
        f"/api/v1/groups/{group.pk}/", {"update_interval": 3600, "fallback_to_cloud": True}, format="json"
    )
    assert response.status_code == 200, response.json()
    group.refresh_from_db()
    assert (group.update_interval, group.fallback_to_cloud) == (3600, True)
    event = AuditEvent.objects.get(action="group.update")
    # As the group form records it (tests/fleet/test_ui.py): from and to.
    assert event.details == {
        "update_interval": {"from": 28800, "to": 3600},
        "fallback_to_cloud": {"from": False, "to": True},
    }


def test_renaming_a_slug_moves_the_group_tree(api, admin, make_group, make_package):
    group = make_group("pilot")
    rings.approve_package(group, make_package())
    old_tree = group.tree_path
    assert old_tree.exists()
    response = api.as_user(admin).patch(f"/api/v1/groups/{group.pk}/", {"slug": "canary"}, format="json")
    assert response.status_code == 200, response.json()
    group.refresh_from_db()
    assert not old_tree.exists()
    assert (group.tree_path / "linux/production/arch_x86_64/updates.zip").exists()
    assert response.json()["urls"]["linux"].endswith("/mirror/groups/canary/linux/production/")


@pytest.mark.parametrize(
    "change,field,words",
    [
        ({"platforms": ["windows"]}, "platforms", '"windows" is not a valid choice'),
        ({"platforms": []}, "platforms", "may not be empty"),
        ({"update_interval": 59}, "update_interval", "greater than or equal to 60"),
        ({"update_interval": 86401}, "update_interval", "less than or equal to 86400"),
        ({"slug": "new"}, "slug", "reserved"),
        ({"mirror": "nowhere"}, "mirror", "does not exist"),
        ({"rollout": "after"}, "source_group", "Choose the ring this one follows"),
    ],
)
def test_invalid_group_settings_are_refused_with_a_field_error_and_nothing_is_created(
    api, admin, mirror, change, field, words
):
    response = api.as_user(admin).post("/api/v1/groups/", {**GROUP_BODY, **change}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and words in str(body["errors"][field])
    assert not EndpointGroup.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="group.").exists()


def test_a_platform_the_mirror_does_not_sync_is_refused(api, admin, mirror):
    Mirror.objects.create(
        name="linux only",
        slug="lin",
        upstream=mirror.upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=0,
    )
    response = api.as_user(admin).post(
        "/api/v1/groups/", {**GROUP_BODY, "mirror": "lin", "platforms": ["linux", "mac"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"]["platforms"] == ["Mirror lin does not sync mac; it syncs linux."]
    assert not EndpointGroup.objects.exists()


@pytest.mark.parametrize("interval", [59, 86401])
def test_an_interval_outside_60_to_86400_seconds_changes_nothing(api, admin, make_group, interval):
    group = make_group("pilot")
    before = group_row(group)
    response = api.as_user(admin).patch(
        f"/api/v1/groups/{group.pk}/", {"update_interval": interval, "description": "x"}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["update_interval"]
    assert group_row(group) == before
    assert not AuditEvent.objects.filter(action="group.update").exists()


def test_a_ring_cannot_follow_a_ring_that_follows_it(api, admin, make_group):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, rollout=RolloutMode.AFTER, source_group=pilot)
    response = api.as_user(admin).patch(
        f"/api/v1/groups/{pilot.pk}/", {"rollout": "after", "source_group": "broad"}, format="json"
    )
    assert response.status_code == 400
    assert "would be a loop" in response.json()["errors"]["source_group"][0]
    pilot.refresh_from_db()
    assert pilot.rollout == RolloutMode.MANUAL and pilot.source_group is None
    itself = api.patch(f"/api/v1/groups/{broad.pk}/", {"source_group": "broad"}, format="json")
    assert itself.json()["errors"]["source_group"] == ["A ring cannot follow itself."]


def test_only_admins_change_groups(api, operator, viewer, make_group):
    group = make_group("pilot")
    for user in (operator, viewer):
        api.as_user(user)
        assert (
            api.post("/api/v1/groups/", {**GROUP_BODY, "slug": "other", "name": "Other"}, format="json").status_code
            == 403
        )
        assert api.patch(f"/api/v1/groups/{group.pk}/", {"description": "x"}, format="json").status_code == 403
        assert api.delete(f"/api/v1/groups/{group.pk}/").status_code == 403
        assert api.get(f"/api/v1/groups/{group.pk}/").status_code == 200
    assert EndpointGroup.objects.get().description == ""


def test_an_admin_deletes_a_group_and_its_tree(api, admin, make_group, make_package):
    group = make_group("pilot")
    rings.approve_package(group, make_package())
    tree = group.tree_path
    assert api.as_user(admin).delete(f"/api/v1/groups/{group.pk}/").status_code == 204
    assert not EndpointGroup.objects.exists() and not tree.exists()
    assert AuditEvent.objects.filter(action="group.delete", target_label="Pilot").exists()


def test_a_group_another_ring_follows_cannot_be_deleted(api, admin, make_group):
    pilot = make_group("pilot", 10)
    make_group("broad", 20, rollout=RolloutMode.AFTER, source_group=pilot)
    response = api.as_user(admin).delete(f"/api/v1/groups/{pilot.pk}/")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == 409 and body["code"] == "conflict"
    assert body["errors"] == {"non_field_errors": ["ring broad follows pilot; change its rollout first"]}
    assert body["detail"] == "ring broad follows pilot; change its rollout first"
    assert EndpointGroup.objects.filter(slug="pilot").exists()
    assert not AuditEvent.objects.filter(action="group.delete").exists()


def test_a_group_with_endpoints_cannot_be_deleted(api, admin, make_group, make_endpoints):
    group = make_group("pilot")
    make_endpoints(group, 2, "1.407.1.0")
    response = api.as_user(admin).delete(f"/api/v1/groups/{group.pk}/")
    assert response.status_code == 409 and "2 endpoints are in pilot" in response.json()["detail"]
    assert EndpointGroup.objects.filter(pk=group.pk).exists()


# --- Approve, promote, roll back --------------------------------------------------------------------


def test_an_operator_approves_a_package_and_gets_the_target_status(api, operator, make_group, make_package):
    group = make_group("pilot")
    first, second = make_package(), make_package()
    api.as_user(operator)
    assert api.post(f"/api/v1/groups/{group.pk}/approve/", {"package": first.pk}, format="json").status_code == 200
    response = api.post(
        f"/api/v1/groups/{group.pk}/approve/", {"package": second.pk, "expected_current": first.pk}, format="json"
    )
    assert response.status_code == 200, response.json()
    entry = response.json()
    assert (entry["platform"], entry["channel"], entry["arch"]) == ("linux", "production", "x86_64")
    assert entry["current"] == {
        "id": second.pk,
        "definition_version": second.definition_version,
        "engine_version": second.engine_version,
        "sha256": second.sha256,
        "size": second.size,
    }
    assert entry["previous"]["id"] == first.pk and entry["approved_by"] == "oscar"
    assert entry["url"].endswith("/mirror/groups/pilot/linux/production/")
    assert served(group) == (second.pk, first.pk)
    event = AuditEvent.objects.filter(action="approval.approve").first()
    assert event.actor_label == "oscar" and event.details["to"] == second.definition_version


def test_approving_with_expected_current_null_works_when_nothing_is_approved(api, operator, make_group, make_package):
    group = make_group("pilot")
    package = make_package()
    response = api.as_user(operator).post(
        f"/api/v1/groups/{group.pk}/approve/", {"package": package.pk, "expected_current": None}, format="json"
    )
    assert response.status_code == 200, response.json()
    assert served(group) == (package.pk, None)


def test_a_package_for_another_target_is_refused_on_package_and_nothing_changes(
    api, operator, make_group, make_package
):
    group = make_group("pilot", platforms=("linux",))
    rings.approve_package(group, make_package())
    mac = make_package(platform="mac")
    before = approval_state()
    response = api.as_user(operator).post(f"/api/v1/groups/{group.pk}/approve/", {"package": mac.pk}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400 and body["code"] == "invalid"
    assert list(body["errors"]) == ["package"]
    assert (
        "is for mac/production/arch_x86_64; group pilot serves linux/production/arch_x86_64"
        in body["errors"]["package"][0]
    )
    assert body["detail"] == f"package: {body['errors']['package'][0]}"
    assert approval_state() == before


def test_an_unknown_package_id_is_a_field_error(api, operator, make_group):
    group = make_group("pilot")
    response = api.as_user(operator).post(f"/api/v1/groups/{group.pk}/approve/", {"package": 999999}, format="json")
    assert response.status_code == 400 and "package" in response.json()["errors"]


def test_a_stale_expected_current_is_a_409_and_nothing_changes(api, operator, make_group, make_package):
    group = make_group("pilot")
    first, second, third = make_package(), make_package(), make_package()
    rings.approve_package(group, first)
    rings.approve_package(group, second)  # approved by someone else meanwhile
    before = approval_state()
    response = api.as_user(operator).post(
        f"/api/v1/groups/{group.pk}/approve/", {"package": third.pk, "expected_current": first.pk}, format="json"
    )
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict"
    assert (
        f"it now serves {second.definition_version}; reload and confirm again" in body["errors"]["non_field_errors"][0]
    )
    assert approval_state() == before and served(group) == (second.pk, first.pk)


def test_a_viewer_cannot_approve_promote_or_roll_back(api, viewer, make_group, make_package):
    pilot = make_group("pilot", 10)
    make_group("broad", 20)
    first, second = make_package(), make_package()
    rings.approve_package(pilot, first)
    rings.approve_package(pilot, second)
    before = approval_state()
    api.as_user(viewer)
    target = {"platform": "linux", "arch": "x86_64"}
    for path, body in (("approve", {"package": first.pk}), ("promote", target), ("rollback", target)):
        response = api.post(f"/api/v1/groups/{pilot.pk}/{path}/", body, format="json")
        assert response.status_code == 403, path
        assert response.json()["detail"] == "This action needs the operator role; you are a viewer."
    assert approval_state() == before


def test_promote_approves_in_the_next_ring_what_this_one_serves(api, operator, make_group, make_package):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20)
    make_group("late", 30)
    package = make_package(arch="arm64")
    rings.approve_package(pilot, package)
    response = api.as_user(operator).post(
        f"/api/v1/groups/{pilot.pk}/promote/",
        {"platform": "linux", "arch": "arm64", "expected_current": None},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["group"] == "broad" and body["arch"] == "arm64" and body["current"]["id"] == package.pk
    assert body["url"].endswith("/mirror/groups/broad/linux/production/")
    assert served(broad, arch="arm64") == (package.pk, None)
    event = ApprovalEvent.objects.get(group=broad)
    assert event.action == "promote" and event.reason == "promoted from pilot" and event.actor_label == "oscar"


def test_promoting_from_the_last_ring_or_with_nothing_approved_is_a_409(api, operator, make_group, make_package):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20)
    before = approval_state()
    api.as_user(operator)
    target = {"platform": "linux", "arch": "x86_64"}
    nothing = api.post(f"/api/v1/groups/{pilot.pk}/promote/", target, format="json")
    assert nothing.status_code == 409 and "nothing is approved in pilot" in nothing.json()["detail"]
    rings.approve_package(broad, make_package())
    before = approval_state()
    last = api.post(f"/api/v1/groups/{broad.pk}/promote/", target, format="json")
    assert last.status_code == 409 and "no ring after broad" in last.json()["detail"]
    assert approval_state() == before


def test_promoting_a_platform_the_group_lacks_is_refused_on_platform(api, operator, make_group):
    pilot = make_group("pilot", 10)
    make_group("broad", 20)
    response = api.as_user(operator).post(
        f"/api/v1/groups/{pilot.pk}/promote/", {"platform": "mac", "arch": "x86_64"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"platform": ["group pilot does not serve mac/production/arch_x86_64"]}


def test_a_stale_expected_current_on_promote_is_a_409(api, operator, make_group, make_package):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20)
    old, new = make_package(), make_package()
    rings.approve_package(broad, old)
    rings.approve_package(pilot, new)
    before = approval_state()
    response = api.as_user(operator).post(
        f"/api/v1/groups/{pilot.pk}/promote/",
        {"platform": "linux", "arch": "x86_64", "expected_current": None},
        format="json",
    )
    assert response.status_code == 409 and f"now serves {old.definition_version}" in response.json()["detail"]
    assert approval_state() == before and served(broad) == (old.pk, None)


def test_an_operator_rolls_back_to_the_previous_package(api, operator, make_group, make_package):
    group = make_group("pilot")
    first, second = make_package(), make_package()
    rings.approve_package(group, first)
    rings.approve_package(group, second)
    response = api.as_user(operator).post(
        f"/api/v1/groups/{group.pk}/rollback/",
        {"platform": "linux", "arch": "x86_64", "expected_current": second.pk},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["current"]["id"] == first.pk and response.json()["previous"] is None
    assert served(group) == (first.pk, None)
    assert AuditEvent.objects.filter(action="approval.rollback", actor_label="oscar").count() == 1
    assert ApprovalEvent.objects.filter(
        action="rollback", reason=f"rolled back from {second.definition_version}"
    ).exists()


def test_a_rollback_with_no_previous_package_is_a_409_and_nothing_changes(api, operator, make_group, make_package):
    group = make_group("pilot")
    rings.approve_package(group, make_package())
    before = approval_state()
    response = api.as_user(operator).post(
        f"/api/v1/groups/{group.pk}/rollback/", {"platform": "linux", "arch": "x86_64"}, format="json"
    )
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == 409 and body["code"] == "conflict"
    assert body["errors"] == {
        "non_field_errors": ["pilot has no previous version for linux/production/arch_x86_64 to roll back to"]
    }
    assert approval_state() == before


def test_a_rollback_with_a_stale_expected_current_is_a_409(api, operator, make_group, make_package):
    group = make_group("pilot")
    first, second = make_package(), make_package()
    rings.approve_package(group, first)
    rings.approve_package(group, second)
    before = approval_state()
    response = api.as_user(operator).post(
        f"/api/v1/groups/{group.pk}/rollback/",
        {"platform": "linux", "arch": "x86_64", "expected_current": first.pk},
        format="json",
    )
    assert response.status_code == 409 and "changed meanwhile" in response.json()["detail"]
    assert approval_state() == before


def test_a_bad_arch_is_a_field_error(api, operator, make_group):
    group = make_group("pilot")
    response = api.as_user(operator).post(
        f"/api/v1/groups/{group.pk}/rollback/", {"platform": "linux", "arch": "sparc"}, format="json"
    )
    assert response.status_code == 400 and '"sparc" is not a valid choice.' in response.json()["errors"]["arch"][0]


# --- Status and history ------------------------------------------------------------------------------


def test_status_lists_every_target_with_nulls_where_nothing_is_approved(api, viewer, make_group, make_package):
    group = make_group("pilot", platforms=("linux", "mac"))
    package = make_package(platform="mac", arch="arm64")
    rings.approve_package(group, package)
    response = api.as_user(viewer).get(f"/api/v1/groups/{group.pk}/status/")
    assert response.status_code == 200
    entries = {(e["platform"], e["arch"]): e for e in response.json()}
    assert set(entries) == {("linux", "x86_64"), ("linux", "arm64"), ("mac", "x86_64"), ("mac", "arm64")}
    assert entries[("mac", "arm64")]["current"]["sha256"] == package.sha256
    assert entries[("linux", "x86_64")]["current"] is None and entries[("linux", "x86_64")]["previous"] is None
    assert entries[("linux", "x86_64")]["gate_state"] == "manual"


def test_status_says_why_an_after_ring_waits_on_its_health_gate(
    api, operator, make_group, make_package, make_endpoints
):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, rollout=RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=90)
    package = make_package()
    make_endpoints(pilot, 5, package.definition_version)
    make_endpoints(pilot, 5, "1.407.1.0")
    api.as_user(operator)
    assert api.post(f"/api/v1/groups/{pilot.pk}/approve/", {"package": package.pk}, format="json").status_code == 200
    entry = next(e for e in api.get(f"/api/v1/groups/{broad.pk}/status/").json() if e["arch"] == "x86_64")
    assert entry["gate_state"] == "waiting"
    assert entry["gate_reason"] == f"pilot: 5 of 10 endpoints on {package.definition_version} (50 % < 90 %)"
    assert entry["candidate"]["id"] == package.pk and entry["current"] is None and entry["checked_at"]


def test_the_approval_history_is_listed_and_filtered(api, viewer, make_group, make_package):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20)
    first, second = make_package(), make_package()
    rings.approve_package(pilot, first)
    rings.approve_package(pilot, second)
    rings.promote(pilot, ("linux", "production", "x86_64"))
    rings.rollback(pilot, ("linux", "production", "x86_64"))
    api.as_user(viewer)
    everything = api.get("/api/v1/approvals/?ordering=created").json()
    assert [e["action"] for e in everything["results"]] == ["approve", "approve", "promote", "rollback"]
    rollback = api.get("/api/v1/approvals/?group=pilot&action=rollback").json()["results"]
    assert rollback == [
        {
            "id": rollback[0]["id"],
            "group": "pilot",
            "platform": "linux",
            "channel": "production",
            "arch": "x86_64",
            "action": "rollback",
            "package": first.pk,
            "definition_version": first.definition_version,
            "engine_version": first.engine_version,
            "replaced_version": second.definition_version,
            "actor": "system",
            "reason": f"rolled back from {second.definition_version}",
            "created": rollback[0]["created"],
        }
    ]
    assert [e["group"] for e in api.get(f"/api/v1/approvals/?group={broad.slug}").json()["results"]] == ["broad"]
    assert api.get("/api/v1/approvals/?platform=mac&arch=arm64&channel=production").json()["count"] == 0
    assert api.get("/api/v1/approvals/?action=undo").status_code == 400
    assert api.post("/api/v1/approvals/", {}, format="json").status_code in (403, 405)


# --- Managed configuration ------------------------------------------------------------------------------


def test_a_viewer_downloads_the_linux_managed_json_with_exact_keys_and_types(api, viewer, make_group, settings):
    group = make_group("pilot", update_interval=3600, enforcement_level="real_time")
    response = api.as_user(viewer).get(f"/api/v1/groups/{group.pk}/managed-config/?platform=linux")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="mdatp_managed.json"'
    assert json.loads(response.content) == {
        "cloudService": {"automaticDefinitionUpdateEnabled": True, "definitionUpdatesInterval": 3600},
        "antivirusEngine": {
            "offlineDefinitionUpdateUrl": f"{settings.PORTAL_BASE_URL}/mirror/groups/pilot/linux/production/",
            "offlineDefinitionUpdate": "enabled",
            "offlineDefinitionUpdateFallbackToCloud": False,
            "enforcementLevel": "real_time",
        },
        "features": {"offlineDefinitionUpdateVerifySig": "enabled"},
    }


def test_the_mac_profile_is_a_plist_for_the_wdav_domain(api, viewer, make_group, settings):
    group = make_group("pilot", platforms=("linux", "mac"), verify_signature=False)
    response = api.as_user(viewer).get(
        f"/api/v1/groups/{group.pk}/managed-config/?platform=mac", HTTP_ACCEPT="application/x-apple-aspen-config"
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    assert response["Content-Disposition"] == 'attachment; filename="pilot.mobileconfig"'
    profile = plistlib.loads(response.content)
    payload = profile["PayloadContent"][0]
    assert payload["PayloadType"] == "com.microsoft.wdav"
    assert (
        payload["antivirusEngine"]["offlineDefinitionUpdateUrl"]
        == f"{settings.PORTAL_BASE_URL}/mirror/groups/pilot/mac/production/"
    )
    assert payload["features"]["offlineDefinitionUpdateVerifySig"] == "disabled"


def test_a_matching_etag_gets_a_304_and_a_policy_change_a_new_etag(api, admin, make_group):
    group = make_group("pilot")
    url = f"/api/v1/groups/{group.pk}/managed-config/?platform=linux"
    api.as_user(admin)
    first = api.get(url)
    etag = first["ETag"]
    assert etag and first["Last-Modified"]
    again = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b""
    api.patch(f"/api/v1/groups/{group.pk}/", {"update_interval": 600}, format="json")
    changed = api.get(url, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag


@pytest.mark.parametrize(
    "query,words",
    [
        ("", "Give ?platform= one of linux"),
        ("?platform=windows", "unknown platform 'windows'"),
        ("?platform=mac", "group pilot has no mac endpoints"),
    ],
)
def test_a_missing_unknown_or_absent_platform_is_a_400_json_error(api, viewer, make_group, query, words):
    group = make_group("pilot", platforms=("linux",))
    response = api.as_user(viewer).get(f"/api/v1/groups/{group.pk}/managed-config/{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400 and body["code"] == "invalid"
    assert list(body["errors"]) == ["platform"] and words in body["errors"]["platform"][0]


# --- Import of an existing mdatp_managed.json -----------------------------------------------------------

MICROSOFT_SAMPLE = {
    "cloudService": {"automaticDefinitionUpdateEnabled": True, "definitionUpdatesInterval": 1202},
    "antivirusEngine": {
        "offlineDefinitionUpdateUrl": "http://172.22.199.67:8000/linux/production/",
        "offlineDefintionUpdateFallbackToCloud": True,
        "offlineDefinitionUpdate": "enabled",
    },
    "features": {"offlineDefinitionUpdateVerifySig": "enabled"},
}


def test_importing_microsofts_sample_reads_the_misspelled_fallback_key_with_a_warning(api, admin, make_group):
    group = make_group("pilot")
    response = api.as_user(admin).post(
        f"/api/v1/groups/{group.pk}/import-config/", {"content": json.dumps(MICROSOFT_SAMPLE)}, format="json"
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert any("offlineDefintionUpdateFallbackToCloud is misspelled" in w for w in body["warnings"])
    assert any("offlineDefinitionUpdateUrl" in w and "ignored" in w for w in body["warnings"])
    assert body["group"]["fallback_to_cloud"] is True and body["group"]["update_interval"] == 1202
    group.refresh_from_db()
    assert group.fallback_to_cloud is True and group.update_interval == 1202
    event = AuditEvent.objects.get(action="group.update")
    assert event.actor_label == "alice" and event.details["imported"] == {
        "update_interval": 1202,
        "fallback_to_cloud": True,
    }


def test_a_config_file_can_be_uploaded_as_multipart(api, admin, make_group):
    group = make_group("pilot")
    upload = io.BytesIO(json.dumps({"cloudService": {"automaticDefinitionUpdateEnabled": False}}).encode())
    upload.name = "mdatp_managed.json"
    response = api.as_user(admin).post(
        f"/api/v1/groups/{group.pk}/import-config/", {"file": upload}, format="multipart"
    )
    assert response.status_code == 200, response.json()
    assert response.json()["warnings"] == []
    group.refresh_from_db()
    assert group.automatic_updates is False


def test_wrong_types_are_refused_keyed_by_json_path_and_the_group_is_unchanged(api, admin, make_group):
    group = make_group("pilot")
    before = group_row(group)
    bad = {
        "cloudService": {"definitionUpdatesInterval": "8h", "automaticDefinitionUpdateEnabled": "yes"},
        "antivirusEngine": {"offlineDefinitionUpdate": True},
    }
    response = api.as_user(admin).post(
        f"/api/v1/groups/{group.pk}/import-config/", {"content": json.dumps(bad)}, format="json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["errors"]) == {
        "cloudService.definitionUpdatesInterval",
        "cloudService.automaticDefinitionUpdateEnabled",
        "antivirusEngine.offlineDefinitionUpdate",
    }
    assert body["errors"]["cloudService.definitionUpdatesInterval"] == [
        'expected a whole number of seconds (60–86400, default 28800), got the string "8h"'
    ]
    assert "cloudService.definitionUpdatesInterval: expected a whole number" in body["detail"]
    assert group_row(group) == before
    assert not AuditEvent.objects.filter(action="group.update").exists()


@pytest.mark.parametrize(
    "body,field",
    [
        ({"content": "{not json"}, "file"),
        ({}, "content"),
    ],
)
def test_an_unreadable_or_missing_config_is_a_400(api, admin, make_group, body, field):
    group = make_group("pilot")
    response = api.as_user(admin).post(f"/api/v1/groups/{group.pk}/import-config/", body, format="json")
    assert response.status_code == 400 and field in response.json()["errors"]


def test_only_admins_import_a_config(api, operator, make_group):
    group = make_group("pilot")
    response = api.as_user(operator).post(
        f"/api/v1/groups/{group.pk}/import-config/", {"content": json.dumps(MICROSOFT_SAMPLE)}, format="json"
    )
    assert response.status_code == 403
    group.refresh_from_db()
    assert group.update_interval == 28800


# --- Schema ------------------------------------------------------------------------------------------------


def test_the_openapi_schema_describes_the_group_api(api, viewer):
    response = api.as_user(viewer).get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in (
        "/api/v1/groups/",
        "/api/v1/groups/{id}/",
        "/api/v1/groups/{id}/status/",
        "/api/v1/groups/{id}/approve/",
        "/api/v1/groups/{id}/promote/",
        "/api/v1/groups/{id}/rollback/",
        "/api/v1/groups/{id}/managed-config/",
        "/api/v1/groups/{id}/import-config/",
        "/api/v1/approvals/",
    ):
        assert path in paths, path
    for action in ("approve", "promote", "rollback"):
        assert "requestBody" in paths[f"/api/v1/groups/{{id}}/{action}/"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(
        paths["/api/v1/groups/{id}/import-config/"]["post"]["requestBody"]["content"]
    )
    assert (
        "application/x-apple-aspen-config"
        in paths["/api/v1/groups/{id}/managed-config/"]["get"]["responses"]["200"]["content"]
    )


def test_a_secret_created_by_the_system_shows_null_where_the_schema_says_so(api, viewer, make_group):
    # Was a schema violation: created_by came back null, documented as a string.
    from fleet.services import enrollment

    enrollment.create_enrollment_secret(make_group("pilot"), "provisioning")
    assert api.as_user(viewer).get("/api/v1/enrollment-secrets/").json()["results"][0]["created_by"] is None
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]
    assert schemas["EnrollmentSecret"]["properties"]["created_by"]["nullable"] is True


def test_an_endpoints_reports_are_paginated_and_ordered_on_request(api, viewer, make_group):
    from fleet.services import enrollment, ingest
    from tests.samples import DESIGN_SAMPLE

    secret = enrollment.create_enrollment_secret(make_group("pilot"), "x")[1]
    endpoint, _ = enrollment.enroll(secret, "machine-1", "host-1", "linux", "x86_64")
    first = ingest.ingest_report(endpoint, DESIGN_SAMPLE.encode()).report
    second = ingest.ingest_report(endpoint, DESIGN_SAMPLE.replace("1.407.417.0", "1.407.418.0").encode()).report
    api.as_user(viewer)
    newest_first = api.get(f"/api/v1/endpoints/{endpoint.pk}/reports/").json()
    assert newest_first["count"] == 2 and [r["id"] for r in newest_first["results"]] == [second.pk, first.pk]
    oldest_first = api.get(f"/api/v1/endpoints/{endpoint.pk}/reports/?ordering=received_at&page_size=1").json()
    assert [r["id"] for r in oldest_first["results"]] == [first.pk] and oldest_first["next"]


def test_an_import_the_upstream_contradicted_cannot_be_approved_for_a_ring(api, operator, make_group, make_package):
    group = make_group("pilot")
    upstreams = make_package(definition="1.407.500.0")
    imported = make_package(definition="1.407.501.0")
    SignaturePackage.objects.filter(pk=imported.pk).update(source=PackageSource.IMPORT, conflicts_with=upstreams)
    api.as_user(operator)
    response = api.post(f"/api/v1/groups/{group.pk}/approve/", {"package": imported.pk}, format="json")
    assert response.status_code == 400
    assert "upstream serves other bytes for that version" in str(response.json())
    assert not GroupTarget.objects.filter(group=group, current__isnull=False).exists()
    assert api.post(f"/api/v1/groups/{group.pk}/approve/", {"package": upstreams.pk}, format="json").status_code == 200
