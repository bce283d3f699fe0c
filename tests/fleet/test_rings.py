"""Rings end to end: a pilot that takes every new version, a broad ring that follows it behind a
health gate, each with its own mirror URL and on-disk tree; approvals, promotion, rollback."""

import hashlib
import io
import json
import os
import threading
import zipfile
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import AuditEvent
from fleet.choices import ApprovalAction, GateState, RolloutMode
from fleet.models import ApprovalEvent, EndpointGroup, GroupTarget
from fleet.services.rings import (
    ApprovalError,
    approve_package,
    delete_group,
    evaluate_rollouts,
    packages_for,
    plan_promotion,
    plan_rollback,
    promote,
    rollback,
    save_group,
)
from mirror.models import SignaturePackage
from mirror.services.publish import publish
from mirror.services.retention import prune_packages

TARGET = ("linux", "production", "x86_64")
ZIP_URL = "/mirror/groups/{slug}/linux/production/arch_x86_64/updates.zip"
MANIFEST_URL = "/mirror/groups/{slug}/linux/production/arch_x86_64/manifest.json"


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def served_version(client, slug, back=False):
    url = MANIFEST_URL.format(slug=slug)
    if back:
        url = url.replace("/production/", "/production_back/")
    response = client.get(url)
    return json.loads(response.content)["DefinitionVersion"] if response.status_code == 200 else response.status_code


def row(group, target=TARGET) -> GroupTarget:
    return GroupTarget.objects.select_related("current", "previous", "candidate").get(
        group=group, platform=target[0], channel=target[1], arch=target[2]
    )


@pytest.fixture
def rings(make_group):
    pilot = make_group("pilot", 10, RolloutMode.LATEST)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=90)
    return pilot, broad


# --- Rollout through the rings ----------------------------------------------------------------


def test_a_new_version_reaches_pilot_at_once_and_broad_only_when_the_gate_holds(
    mirror, rings, make_package, make_endpoints, client
):
    pilot, broad = rings
    first = make_package()
    publish(mirror, first)
    assert served_version(client, "pilot") == first.definition_version
    assert served_version(client, "broad") == 404  # pilot has no reporting endpoints yet
    assert row(broad).gate_state == GateState.WAITING
    assert row(broad).gate_reason == "pilot: no linux/x86_64 endpoint has reported in the last 48 h"

    make_endpoints(pilot, 41, first.definition_version)
    make_endpoints(pilot, 9, "1.407.400.0")
    evaluate_rollouts()
    assert served_version(client, "broad") == 404
    waiting = row(broad)
    assert waiting.gate_reason == f"pilot: 41 of 50 endpoints on {first.definition_version} (82 % < 90 %)"
    assert waiting.candidate == first

    make_endpoints(pilot, 50, first.definition_version)  # now 91 of 100
    evaluate_rollouts()
    assert served_version(client, "broad") == first.definition_version
    approved = row(broad)
    assert approved.gate_state == GateState.CURRENT and approved.candidate is None
    event = ApprovalEvent.objects.filter(group=broad).first()
    assert event.action == ApprovalAction.AUTO and event.actor_label == "system"
    assert event.reason == f"pilot: 91 of 100 endpoints on {first.definition_version} (91 % ≥ 90 %)"


def test_the_gate_counts_newer_versions_and_ignores_silent_decommissioned_and_other_arch_endpoints(
    mirror, rings, make_package, make_endpoints
):
    pilot, broad = rings
    package = make_package(definition="1.407.500.0")
    publish(mirror, package)
    make_endpoints(pilot, 9, "1.407.501.0")  # newer than the candidate: it passed through it
    make_endpoints(pilot, 1, "1.407.500.0")
    make_endpoints(pilot, 30, "1.407.1.0", seen=timezone.now() - timedelta(hours=49))  # silent beyond 48 h
    make_endpoints(pilot, 30, "1.407.1.0", arch="arm64")
    gone = make_endpoints(pilot, 30, "1.407.1.0")
    for endpoint in gone:
        endpoint.decommissioned_at = timezone.now()
        endpoint.save()
    evaluate_rollouts()
    assert row(broad).current == package


def test_a_failure_reported_in_the_source_ring_since_approval_holds_the_version_back(
    mirror, rings, make_package, make_endpoints, client
):
    pilot, broad = rings
    package = make_package()
    publish(mirror, package)
    make_endpoints(pilot, 99, package.definition_version)
    make_endpoints(pilot, 1, package.definition_version, failed_at=timezone.now())
    evaluate_rollouts()
    assert served_version(client, "broad") == 404
    assert (
        row(broad).gate_reason
        == f"pilot: 1 of 100 endpoints reported a definitions update failure since {package.definition_version} was approved there"
    )


def test_a_failure_from_before_the_approval_does_not_count(mirror, rings, make_package, make_endpoints):
    pilot, broad = rings
    make_endpoints(pilot, 10, "1.407.999.0", failed_at=timezone.now() - timedelta(hours=1))
    package = make_package(definition="1.407.999.0")
    publish(mirror, package)
    assert row(broad).current == package


def test_the_delay_is_counted_from_the_approval_in_the_source_ring(
    mirror, make_group, make_package, make_endpoints, client
):
    pilot = make_group("pilot", 10, RolloutMode.LATEST)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=24)
    package = make_package()
    publish(mirror, package)
    make_endpoints(pilot, 10, package.definition_version)
    evaluate_rollouts()
    assert served_version(client, "broad") == 404
    assert "due in 24.0 h (delay 24 h)" in row(broad).gate_reason
    GroupTarget.objects.filter(group=pilot).update(approved_at=timezone.now() - timedelta(hours=25))
    evaluate_rollouts()
    assert served_version(client, "broad") == package.definition_version


def test_a_manual_approval_in_the_source_ring_flows_to_its_followers_at_once(
    mirror, make_group, make_package, make_endpoints, operator, client
):
    pilot = make_group("pilot", 10, RolloutMode.MANUAL)
    make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=0)
    make_endpoints(pilot, 1, "1.0.0.0")
    package = make_package()
    approve_package(pilot, package, operator)
    assert served_version(client, "broad") == package.definition_version  # 0 % gate, 0 h delay


def test_manual_rings_never_move_on_their_own(mirror, make_group, make_package, client):
    make_group("frozen", 10, RolloutMode.MANUAL)
    publish(mirror, make_package())
    evaluate_rollouts()
    assert served_version(client, "frozen") == 404
    assert (
        GroupTarget.objects.get(group__slug="frozen", platform="linux", arch="x86_64").gate_reason
        == "manual approvals only"
    )


# --- Approvals, promotion, rollback --------------------------------------------------------------


def test_approve_then_approve_again_keeps_n_minus_1_under_back(mirror, make_group, make_package, operator, client):
    group = make_group("pilot")
    first, second = make_package(), make_package()
    approve_package(group, first, operator)
    approve_package(group, second, operator)
    assert served_version(client, "pilot") == second.definition_version
    assert served_version(client, "pilot", back=True) == first.definition_version
    assert row(group).approved_by == operator


def test_promote_approves_in_the_next_ring_what_this_one_serves(mirror, make_group, make_package, operator, client):
    pilot = make_group("pilot", 10)
    make_group("early", 15, platforms=("mac",))  # next by order but does not serve linux: skipped
    make_group("broad", 20)
    package = make_package()
    approve_package(pilot, package, operator)
    promote(pilot, TARGET, operator)
    assert served_version(client, "broad") == package.definition_version
    event = ApprovalEvent.objects.filter(group__slug="broad").get()
    assert (event.action, event.reason, event.actor_label) == (
        ApprovalAction.PROMOTE,
        "promoted from pilot",
        operator.username,
    )


def test_rolling_broad_back_serves_exactly_the_previous_bytes(
    mirror, rings, make_package, make_endpoints, operator, client
):
    pilot, broad = rings
    make_endpoints(pilot, 10, "1.407.999.0")  # healthy on anything up to .999
    old, new = make_package(definition="1.407.600.0"), make_package(definition="1.407.601.0")
    publish(mirror, old)
    old_bytes = body(client.get(ZIP_URL.format(slug="broad")))
    assert hashlib.sha256(old_bytes).hexdigest() == old.sha256
    publish(mirror, new)
    assert served_version(client, "broad") == new.definition_version

    rollback(broad, TARGET, operator)
    response = client.get(ZIP_URL.format(slug="broad"))
    assert body(response) == old_bytes
    assert response["ETag"] == f'"{old.sha256}"'
    assert served_version(client, "broad", back=True) == 404  # nothing was approved before `old`
    # The rule does not put the rolled-back version straight back...
    evaluate_rollouts()
    assert row(broad).current == old
    assert (
        row(broad).gate_reason == f"{new.definition_version} was rolled back here; approve it by hand to serve it again"
    )
    # ...until an operator approves it again by hand.
    approve_package(broad, new, operator)
    assert served_version(client, "broad") == new.definition_version


def test_a_rollback_restores_the_n_minus_1_of_the_restored_version(mirror, make_group, make_package, operator, client):
    group = make_group("pilot")
    a, b, c = make_package(), make_package(), make_package()
    for package in (a, b, c):
        approve_package(group, package, operator)
    rollback(group, TARGET, operator)
    assert (served_version(client, "pilot"), served_version(client, "pilot", back=True)) == (
        b.definition_version,
        a.definition_version,
    )


def test_every_approval_change_is_audited_with_who_what_and_from_which_version(
    mirror, make_group, make_package, operator
):
    pilot, _broad = make_group("pilot", 10), make_group("broad", 20)
    a, b = make_package(), make_package()
    approve_package(pilot, a, operator)
    approve_package(pilot, b, operator)
    promote(pilot, TARGET, operator)
    rollback(pilot, TARGET, operator)
    events = list(
        AuditEvent.objects.filter(action__startswith="approval.")
        .order_by("id")
        .values_list("action", "actor_label", "target_label", "details")
    )
    target = "linux/production/arch_x86_64"
    assert events == [
        (
            "approval.approve",
            operator.username,
            "Pilot",
            {"target": target, "from": None, "to": a.definition_version, "engine": a.engine_version},
        ),
        (
            "approval.approve",
            operator.username,
            "Pilot",
            {"target": target, "from": a.definition_version, "to": b.definition_version, "engine": b.engine_version},
        ),
        (
            "approval.promote",
            operator.username,
            "Broad",
            {
                "target": target,
                "from": None,
                "to": b.definition_version,
                "engine": b.engine_version,
                "reason": "promoted from pilot",
            },
        ),
        (
            "approval.rollback",
            operator.username,
            "Pilot",
            {
                "target": target,
                "from": b.definition_version,
                "to": a.definition_version,
                "engine": a.engine_version,
                "reason": f"rolled back from {b.definition_version}",
            },
        ),
    ]


# --- Bad input ---------------------------------------------------------------------------------------


def _nothing_changed(group):
    assert not GroupTarget.objects.filter(group=group, current__isnull=False).exists()
    assert not AuditEvent.objects.filter(action__startswith="approval.").exists()
    assert not (group.tree_path / "linux").exists()


@pytest.mark.parametrize("target", [("mac", "production", "x86_64"), ("linux", "preview", "x86_64")])
def test_a_package_for_another_target_is_refused_and_nothing_changes(
    mirror, make_group, make_package, operator, target
):
    group = make_group("pilot")  # linux, production
    package = make_package(*target)
    with pytest.raises(ApprovalError) as refused:
        approve_package(group, package, operator)
    assert refused.value.field == "package" and refused.value.status == 400
    assert str(refused.value).startswith(
        f"package {package.definition_version} is for {target[0]}/{target[1]}/arch_x86_64; group pilot serves"
    )
    _nothing_changed(group)


def test_a_rollback_with_no_previous_version_is_refused(mirror, make_group, make_package, operator, client):
    group = make_group("pilot")
    with pytest.raises(ApprovalError, match="no previous version") as refused:
        rollback(group, TARGET, operator)
    assert refused.value.status == 409
    _nothing_changed(group)
    approve_package(group, make_package(), operator)
    with pytest.raises(ApprovalError, match="no previous version"):
        rollback(group, TARGET, operator)


def test_a_stale_confirmation_is_refused(mirror, make_group, make_package, operator):
    group = make_group("pilot")
    a, b, c = make_package(), make_package(), make_package()
    approve_package(group, a, operator)
    seen = row(group).current_id
    approve_package(group, b, operator)  # someone else, meanwhile
    with pytest.raises(ApprovalError, match="changed meanwhile") as refused:
        approve_package(group, c, operator, expected_current=seen)
    assert refused.value.status == 409
    with pytest.raises(ApprovalError, match="changed meanwhile"):
        rollback(group, TARGET, operator, expected_current=seen)
    assert row(group).current == b


def test_promote_without_a_next_ring_or_an_approval_is_refused(mirror, make_group, make_package, operator):
    pilot = make_group("pilot", 10)
    with pytest.raises(ApprovalError, match="no ring after pilot"):
        promote(pilot, TARGET, operator)
    make_group("broad", 20)
    with pytest.raises(ApprovalError, match="nothing is approved in pilot"):
        promote(pilot, TARGET, operator)


def test_the_plans_show_what_promote_and_rollback_do_and_refuse_what_they_refuse(
    mirror, make_group, make_package, make_endpoints, operator
):
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    for plan, refusal in (
        (plan_promotion, "nothing is approved in pilot"),
        (plan_rollback, "pilot has no previous version"),
    ):
        with pytest.raises(ApprovalError, match=refusal) as refused:
            plan(pilot, TARGET)
        assert refused.value.status == 409
    first, second = make_package(), make_package()
    approve_package(broad, first, operator)
    approve_package(pilot, first, operator)
    approve_package(pilot, second, operator)
    make_endpoints(broad, 2, first.definition_version)
    plan = plan_promotion(pilot, TARGET)
    assert (plan.group, plan.before, plan.after, plan.endpoints) == (broad, first, second, 2)
    assert plan.target_name == "linux/production/arch_x86_64" and plan.url == broad.definition_url("linux")
    back = plan_rollback(pilot, TARGET)
    assert (back.group, back.before, back.after, back.endpoints) == (pilot, second, first, 0)
    promote(pilot, TARGET, operator, expected_current=first.pk, expected_package=second.pk)
    for refuse in (plan_promotion, promote):  # the page and the change refuse alike, with the same words
        with pytest.raises(
            ApprovalError, match=f"broad already serves {second.definition_version} for linux/production/arch_x86_64"
        ):
            refuse(pilot, TARGET)


@pytest.mark.parametrize("interval", [59, 86401, 0])
def test_an_interval_outside_60_to_86400_is_a_field_error(mirror, interval):
    from django.core.exceptions import ValidationError

    group = EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], update_interval=interval)
    with pytest.raises(ValidationError) as refused:
        group.full_clean()
    assert "update_interval" in refused.value.message_dict


def test_rings_cannot_follow_each_other_in_a_loop(mirror, make_group):
    from django.core.exceptions import ValidationError

    a = make_group("a", 10)
    b = make_group("b", 20, RolloutMode.AFTER, source_group=a)
    a.rollout, a.source_group = RolloutMode.AFTER, b
    with pytest.raises(ValidationError, match="loop"):
        a.full_clean()


# --- Serving and the on-disk tree --------------------------------------------------------------------


def test_the_group_url_serves_ranges_etags_and_head(mirror, make_group, make_package, operator, client):
    group = make_group("pilot")
    package = make_package()
    approve_package(group, package, operator)
    url = ZIP_URL.format(slug="pilot")
    whole = package.path.read_bytes()
    partial = client.get(url, HTTP_RANGE="bytes=100-199")
    assert partial.status_code == 206 and body(partial) == whole[100:200]
    assert partial["Content-Range"] == f"bytes 100-199/{len(whole)}"
    assert client.get(url, HTTP_IF_NONE_MATCH=f'"{package.sha256}"').status_code == 304
    head = client.head(url)
    assert head.status_code == 200 and int(head["Content-Length"]) == len(whole) and head["Last-Modified"]
    assert client.post(url).status_code == 405


def test_the_group_url_says_what_is_missing(mirror, make_group, client):
    make_group("pilot")
    assert client.get(ZIP_URL.format(slug="nope")).status_code == 404
    missing = client.get(ZIP_URL.format(slug="pilot"))
    assert (
        missing.status_code == 404
        and b"no version is approved for linux/production/arch_x86_64 in group pilot" in missing.content
    )
    other = client.get("/mirror/groups/pilot/mac/production/arch_x86_64/manifest.json")
    assert other.status_code == 404 and b"does not serve mac/production/arch_x86_64" in other.content


def test_x_accel_mode_hands_the_group_file_to_nginx(mirror, make_group, make_package, operator, client, settings):
    settings.MIRROR_X_ACCEL_PREFIX = "/_store"
    group = make_group("pilot")
    package = make_package()
    approve_package(group, package, operator)
    response = client.get(ZIP_URL.format(slug="pilot"))
    assert (
        response["X-Accel-Redirect"]
        == f"/_store/blobs/sha256/{package.sha256[:2]}/{package.sha256[2:4]}/{package.sha256}"
    )
    assert response["ETag"] == f'"{package.sha256}"'


def test_the_on_disk_tree_mirrors_the_approval_in_the_layout(mirror, make_group, make_package, operator):
    group = make_group("pilot")
    a, b = make_package(), make_package()
    approve_package(group, a, operator)
    approve_package(group, b, operator)
    root = mirror.publish_path / "groups" / "pilot"
    assert group.tree_path == root
    assert json.loads((root / "linux/production/arch_x86_64/manifest.json").read_text()) == b.manifest()
    assert (root / "linux/production/arch_x86_64/updates.zip").read_bytes() == b.path.read_bytes()
    assert json.loads((root / "linux/production_back/arch_x86_64/manifest.json").read_text()) == a.manifest()


def test_the_on_disk_tree_is_never_seen_half_switched(mirror, make_group, make_package, operator):
    """A reader opening the target folder once sees a matching pair, complete, every time.

    The folder is replaced whole (mirror.tree): one a reader opened just before its removal may lose its
    files (a 404 to a web server), which is allowed; a zip beside another version's manifest is not.
    """
    group = make_group("pilot")
    a, b = make_package(), make_package()
    approve_package(group, a, operator)
    link = group.tree_path / "linux/production/arch_x86_64"
    stop = threading.Event()
    seen, problems = set(), []

    def reader():
        while not stop.is_set():
            try:
                folder = os.open(link, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    manifest = json.loads(os.read(opened := os.open("manifest.json", os.O_RDONLY, dir_fd=folder), 4096))
                    os.close(opened)
                    with os.fdopen(os.open("updates.zip", os.O_RDONLY, dir_fd=folder), "rb") as handle:
                        data = handle.read()
                finally:
                    os.close(folder)
            except FileNotFoundError:
                continue  # the folder was replaced and removed between two opens: gone, not mixed
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as zf:
                    inside = zf.read("manifest.txt").decode().split()[-1]
                if inside != manifest["DefinitionVersion"]:
                    problems.append(f"manifest {manifest['DefinitionVersion']} beside a zip of {inside}")
                seen.add(inside)
            except Exception as exc:  # noqa: BLE001 - any failure to read is the bug this test looks for
                problems.append(repr(exc))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for i in range(60):
            if i % 3 == 2:
                rollback(group, TARGET, operator)
            else:
                approve_package(group, b if row(group).current_id == a.pk else a, operator)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert problems == []
    assert seen == {a.definition_version, b.definition_version}


def test_a_group_on_a_mirror_served_elsewhere_gets_a_url_in_that_tree(mirror, make_group):
    mirror.public_base_url = "https://updates.example.org/wdav"
    mirror.save()
    group = make_group("pilot")
    assert group.definition_url("linux") == "https://updates.example.org/wdav/groups/pilot/linux/production/"
    mirror.public_base_url = ""
    mirror.save()
    group.refresh_from_db()
    assert group.definition_url("linux") == "https://portal.example.org/mirror/groups/pilot/linux/production/"


def test_renaming_a_group_moves_its_tree(mirror, make_group, make_package, operator):
    group = make_group("pilot")
    approve_package(group, make_package(), operator)
    old = group.tree_path
    group.slug = "canary"
    save_group(group, operator)
    assert not old.exists()
    assert (mirror.publish_path / "groups/canary/linux/production/arch_x86_64/updates.zip").is_file()


def test_dropping_a_platform_drops_its_approvals_and_files(mirror, make_group, make_package, operator):
    group = make_group("both", platforms=("linux", "mac"))
    approve_package(group, make_package("mac"), operator)
    approve_package(group, make_package("linux"), operator)
    group.platforms = ["linux"]
    save_group(group, operator)
    assert list(GroupTarget.objects.filter(group=group, current__isnull=False).values_list("platform", flat=True)) == [
        "linux"
    ]
    assert not (group.tree_path / "mac").exists()
    assert (group.tree_path / "linux/production/arch_x86_64/updates.zip").is_file()


def test_a_ring_that_stops_following_frees_its_source_for_deletion(mirror, make_group, admin):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot)
    broad.rollout = RolloutMode.MANUAL
    broad.full_clean()
    save_group(broad, admin)
    broad.refresh_from_db()
    assert broad.source_group is None
    delete_group(pilot, admin)
    assert not EndpointGroup.objects.filter(slug="pilot").exists()


def test_groups_with_endpoints_or_followers_cannot_be_deleted(mirror, make_group, make_endpoints, operator):
    pilot = make_group("pilot", 10)
    make_group("broad", 20, RolloutMode.AFTER, source_group=pilot)
    with pytest.raises(ApprovalError, match="broad follows pilot"):
        delete_group(pilot, operator)
    lonely = make_group("lonely", 30)
    make_endpoints(lonely, 2, "1.0.0.0")
    with pytest.raises(ApprovalError, match="2 endpoint"):
        delete_group(lonely, operator)


# --- Retention --------------------------------------------------------------------------------------------


def test_retention_never_prunes_what_a_ring_serves_or_may_roll_back_to(mirror, make_group, make_package, operator):
    mirror.retention = 1
    mirror.save()
    group = make_group("broad")
    kept_current, kept_previous = make_package(), make_package()
    approve_package(group, kept_previous, operator)
    approve_package(group, kept_current, operator)
    newest = [make_package() for _ in range(3)]
    publish(mirror, newest[-2])
    publish(mirror, newest[-1])
    prune_packages()
    left = set(SignaturePackage.objects.values_list("pk", flat=True))
    assert {kept_current.pk, kept_previous.pk, newest[-1].pk, newest[-2].pk} <= left
    assert newest[0].pk not in left
    assert kept_previous.path.exists()


def test_versions_synced_from_the_stand_in_upstream_roll_through_the_rings(
    db, store, tmp_path, make_endpoints, client, settings
):
    """The whole path: upstream release -> sync -> pilot at once -> broad once pilot is healthy on it."""
    from mirror.choices import SyncState, SyncTrigger
    from mirror.models import Mirror, Upstream
    from mirror.services.sync import request_sync, run_sync
    from standins.upstream import StandinUpstream

    settings.MIRROR_RETRY_BACKOFF = 0.01
    with StandinUpstream(tmp_path / "upstream", package_size=200 * 1024) as standin:
        upstream = Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5)
        mirror = Mirror.objects.create(
            name="main",
            slug="main",
            upstream=upstream,
            platforms=["linux"],
            channels=["production"],
            archs=["x86_64"],
            sync_interval_minutes=0,
        )
        pilot = EndpointGroup.objects.create(
            name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], rollout=RolloutMode.LATEST
        )
        EndpointGroup.objects.create(
            name="Broad",
            slug="broad",
            mirror=mirror,
            platforms=["linux"],
            ring_order=20,
            rollout=RolloutMode.AFTER,
            source_group=pilot,
            delay_hours=0,
        )

        def sync():
            run, _ = request_sync(mirror, SyncTrigger.MANUAL)
            assert run_sync(run.pk).state == SyncState.SUCCEEDED

        sync()
        first = standin.current(*TARGET)
        make_endpoints(pilot, 10, first["definition"])
        evaluate_rollouts()
        assert served_version(client, "pilot") == served_version(client, "broad") == first["definition"]

        standin.release(*TARGET)
        sync()
        second = standin.current(*TARGET)
        assert served_version(client, "pilot") == second["definition"]
        assert served_version(client, "broad") == first["definition"]
        assert hashlib.sha256(body(client.get(ZIP_URL.format(slug="pilot")))).hexdigest() == second["sha256"]

        make_endpoints(pilot, 90, second["definition"])  # 90 of 100
        evaluate_rollouts()
        assert served_version(client, "broad") == second["definition"]
        assert served_version(client, "broad", back=True) == first["definition"]


def test_promote_refuses_when_the_source_ring_changed_after_the_confirmation(
    mirror, make_group, make_package, operator
):
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    a, b = make_package(), make_package()
    approve_package(pilot, a, operator)
    approve_package(pilot, b, operator)  # after the operator confirmed promoting `a`
    with pytest.raises(ApprovalError, match="changed meanwhile") as refused:
        promote(pilot, TARGET, operator, expected_package=a.pk)
    assert refused.value.status == 409
    assert not GroupTarget.objects.filter(group=broad, current__isnull=False).exists()


def test_packages_to_approve_are_listed_by_version_not_by_arrival(mirror, make_group, make_package):
    group = make_group("pilot")
    newer, older = make_package(definition="1.407.10.0"), make_package(definition="1.407.9.0")
    assert [p.pk for p in packages_for(group, TARGET)] == [newer.pk, older.pk]


def test_serving_a_group_file_takes_one_query(
    mirror, make_group, make_package, operator, client, django_assert_num_queries
):
    group = make_group("pilot")
    package = make_package()
    approve_package(group, package, operator)
    with django_assert_num_queries(1):
        assert client.get(MANIFEST_URL.format(slug="pilot"), HTTP_IF_NONE_MATCH='"nope"').status_code == 200
    with django_assert_num_queries(1):
        assert client.get(ZIP_URL.format(slug="pilot"), HTTP_IF_NONE_MATCH=f'"{package.sha256}"').status_code == 304


def test_an_upstream_withdrawal_moves_latest_rings_back_and_tells_the_others(
    db, store, tmp_path, make_endpoints, client, settings, operator, api
):
    """Microsoft serves an older version again: the mirror follows, 'latest' rings follow at once with the reason in
    their history, a manual ring keeps what it serves and its page and API say the upstream withdrew it."""
    from mirror.choices import SyncState, SyncTrigger
    from mirror.models import Mirror, Upstream
    from mirror.services.sync import request_sync, run_sync
    from standins.upstream import StandinUpstream

    settings.MIRROR_RETRY_BACKOFF = 0.01
    with StandinUpstream(tmp_path / "upstream", package_size=200 * 1024) as standin:
        upstream = Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5)
        mirror = Mirror.objects.create(
            name="main",
            slug="main",
            upstream=upstream,
            platforms=["linux"],
            channels=["production"],
            archs=["x86_64"],
            sync_interval_minutes=0,
        )
        pilot = EndpointGroup.objects.create(
            name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], rollout=RolloutMode.LATEST
        )
        lab = EndpointGroup.objects.create(name="Lab", slug="lab", mirror=mirror, platforms=["linux"], ring_order=20)
        early = EndpointGroup.objects.create(
            name="Early",
            slug="early",
            mirror=mirror,
            platforms=["linux"],
            ring_order=30,
            rollout=RolloutMode.AFTER,
            source_group=pilot,
            delay_hours=0,
            gate_percent=0,
        )

        def sync():
            run, _ = request_sync(mirror, SyncTrigger.MANUAL)
            run = run_sync(run.pk)
            assert run.state == SyncState.SUCCEEDED, run.error
            return run.results[0]["outcome"]

        sync()
        standin.release(*TARGET)
        sync()
        bad = SignaturePackage.objects.get(definition_version="1.407.418.0")
        approve_package(lab, bad, operator)
        make_endpoints(pilot, 3, "1.407.418.0")
        make_endpoints(pilot, 2, "1.407.417.0")
        EndpointGroup.objects.get(pk=pilot.pk).endpoints.update(compliance="up_to_date")  # as their reports said
        evaluate_rollouts()
        assert served_version(client, "pilot") == served_version(client, "lab") == "1.407.418.0"
        assert served_version(client, "early") == "1.407.418.0"

        standin.withdraw(*TARGET)
        assert sync() == "withdrawn"
        assert served_version(client, "pilot") == "1.407.417.0"
        event = ApprovalEvent.objects.filter(group=pilot).first()
        reason = "the upstream withdrew 1.407.418.0 (engine 1.1.24010.10): it serves 1.407.417.0 again"
        assert (event.action, event.actor_label, event.reason) == (ApprovalAction.ROLLBACK, "system", reason)
        audit = AuditEvent.objects.filter(action="approval.rollback").get()
        assert audit.details["reason"] == reason and audit.details["from"] == "1.407.418.0"
        # Its endpoints are judged at once: those still on the withdrawn version are on a rolled-back one.
        states = dict(pilot.endpoints.values_list("definitions_version", "compliance").distinct())
        assert states == {"1.407.418.0": "rolled_back", "1.407.417.0": "up_to_date"}

        assert served_version(client, "lab") == "1.407.418.0"  # manual: an operator decides
        evaluate_rollouts()
        assert served_version(client, "early") == "1.407.418.0"  # 'after' rings never follow their source down
        assert row(early).gate_reason == (
            "serves 1.407.418.0; pilot serves the older 1.407.417.0 now: roll back here too, or approve it, "
            "if it should follow"
        )
        api.as_user(operator)
        [status] = api.get(f"/api/v1/groups/{lab.pk}/status/").json()
        assert status["withdrawn"].startswith("The upstream withdrew 1.407.418.0 on ")
        assert "This ring still serves 1.407.418.0: roll it back, or approve 1.407.417.0." in status["withdrawn"]
        client.force_login(operator)
        assert "Withdrawn upstream" in client.get("/groups/lab/").content.decode()
        assert "Withdrawn upstream" not in client.get("/groups/pilot/").content.decode()

        assert sync() == "unchanged"  # nothing more happens while the upstream stays there
        assert ApprovalEvent.objects.filter(group=pilot).count() == 3
        standin.release(*TARGET)  # the fixed version
        assert sync() == "new"
        assert served_version(client, "pilot") == "1.407.419.0"


def test_a_delay_beyond_the_calendar_keeps_the_ring_waiting_instead_of_failing(mirror, make_group, make_package):
    pilot = make_group("pilot", 10, RolloutMode.LATEST)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=10**9, gate_percent=0)
    publish(mirror, make_package(definition="1.407.500.0"))
    evaluate_rollouts()
    waiting = row(broad)
    assert waiting.current is None and waiting.gate_state == GateState.WAITING
    assert "delay 1000000000 h" in waiting.gate_reason
