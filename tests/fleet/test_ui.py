"""The groups pages: list, form, detail with approve / promote / roll back, policy import, config download."""

import json
import plistlib
import re

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from core.models import AuditEvent
from fleet.choices import ApprovalAction, GateState, RolloutMode
from fleet.models import ApprovalEvent, EndpointGroup, GroupTarget
from fleet.services.rings import approve_package, evaluate_rollouts, promote
from mirror.models import Mirror
from tests.web import external_urls

pytestmark = pytest.mark.django_db

TARGET = ("linux", "production", "x86_64")
MANIFEST_URL = "/mirror/groups/{slug}/linux/production/arch_x86_64/manifest.json"

# The sample of the seed document, as admins have it on their endpoints: note the misspelled
# "offlineDefintionUpdateFallbackToCloud" and the loose indentation.
SEED_SAMPLE = """{
  "cloudService": {
    "automaticDefinitionUpdateEnabled": true,
    "definitionUpdatesInterval": 1202
  },
  "antivirusEngine": {
    "offlineDefinitionUpdateUrl": "http://172.22.199.67:8000/linux/production/",
    "offlineDefintionUpdateFallbackToCloud":true,
    "offlineDefinitionUpdate": "enabled"
  },
"features": {
"offlineDefinitionUpdateVerifySig": "enabled"
}
}
"""


def served_version(client, slug):
    response = client.get(MANIFEST_URL.format(slug=slug))
    return json.loads(response.content)["DefinitionVersion"] if response.status_code == 200 else response.status_code


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def row(group, target=TARGET) -> GroupTarget:
    return GroupTarget.objects.select_related("current", "previous").get(
        group=group, platform=target[0], channel=target[1], arch=target[2]
    )


def form_data(mirror, **overrides) -> dict:
    data = {
        "name": "Pilot",
        "slug": "pilot",
        "description": "",
        "mirror": mirror.pk,
        "platforms": ["linux"],
        "channel": "production",
        "ring_order": 10,
        "staleness_hours": 48,
        "rollout": "manual",
        "source_group": "",
        "delay_hours": 24,
        "gate_percent": 90,
        "automatic_updates": "on",
        "update_interval": 28800,
        "offline_update": "on",
        "verify_signature": "on",
        "enforcement_level": "",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


@pytest.fixture
def rings(make_group):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20)
    return pilot, broad


@pytest.fixture
def approved(rings, make_package, operator):
    """pilot serves `second` with `first` as n-1; broad serves `first`."""
    pilot, broad = rings
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(pilot, second, operator)
    approve_package(broad, first, operator)
    return first, second


# --- The list -------------------------------------------------------------------------------------


def test_the_list_shows_groups_in_ring_order_with_their_rollout_rule_in_words(
    client, viewer, make_group, make_package, operator
):
    broad = make_group("broad", 20)
    pilot = make_group("pilot", 10)
    make_group("late", 30, RolloutMode.AFTER, source_group=pilot, delay_hours=24, gate_percent=90)
    approve_package(broad, make_package(definition="1.407.417.0"), operator)
    client.force_login(viewer)
    page = client.get("/groups/").content.decode()
    assert page.index(">Pilot</a>") < page.index(">Broad</a>") < page.index(">Late</a>")
    assert "after pilot + 24 h, gate 90 %" in page
    assert "manual approvals only" in page
    assert '<strong class="token">1.407.417.0</strong>' in page
    assert "main" in page and "Production" in page


def test_the_list_shows_why_a_ring_waits(client, viewer, make_group, make_package, make_endpoints):
    from mirror.services.publish import publish

    pilot = make_group("pilot", 10, RolloutMode.LATEST)
    make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=90)
    package = make_package(definition="1.407.417.0")
    publish(pilot.mirror, package)
    make_endpoints(pilot, 41, "1.407.417.0")
    make_endpoints(pilot, 9, "1.407.400.0")
    evaluate_rollouts()
    client.force_login(viewer)
    reason = "pilot: 41 of 50 endpoints on 1.407.417.0 (82 % &lt; 90 %)"
    assert reason in client.get("/groups/").content.decode()
    assert reason in client.get("/groups/broad/").content.decode()


def test_an_empty_list_invites_an_admin_to_add_one(client, admin, mirror):
    client.force_login(admin)
    page = client.get("/groups/").content.decode()
    assert 'No group yet — <a href="/groups/new/">add one</a>' in page


def test_without_a_mirror_the_empty_list_asks_for_a_mirror_first(client, admin):
    client.force_login(admin)
    page = client.get("/groups/").content.decode()
    assert '<a href="/mirror/new/">add a mirror first</a>' in page
    assert "/groups/new/" not in page
    form = client.get("/groups/new/").content.decode()
    assert "Add a mirror first." in form and 'href="/mirror/new/"' in form


def test_an_empty_list_tells_others_that_an_admin_must_add_one(client, operator, mirror):
    client.force_login(operator)
    page = client.get("/groups/").content.decode()
    assert "No group yet — an admin must add one." in page
    assert "/groups/new/" not in page


def test_the_navigation_shows_groups(client, viewer):
    client.force_login(viewer)
    assert '<a href="/groups/" aria-current="page">Groups</a>' in client.get("/groups/").content.decode()


# --- Roles ----------------------------------------------------------------------------------------


def test_an_anonymous_visitor_is_sent_to_sign_in(client, rings):
    response = client.get("/groups/pilot/")
    assert response.status_code == 302 and response.url.startswith("/login/")


def test_a_viewer_sees_no_control_that_changes_anything(client, viewer, approved):
    client.force_login(viewer)
    page = client.get("/groups/pilot/").content.decode()
    page = page[page.index("<main") :]  # the top bar's language menu is everyone's own setting
    assert "1.407.418.0" in page  # sees what is served
    for control in (
        "/approve/",
        ">Approve…</button>",
        "Promote to",
        "/promote/",
        "Roll back to",
        "/rollback/",
        "Import mdatp_managed.json",
        "/import/",
        "/edit/",
        "<select",
        "<textarea",
        'type="file"',
    ):
        assert control not in page, control
    assert "/groups/new/" not in client.get("/groups/").content.decode()


def test_a_viewer_gets_403_on_every_change_and_nothing_changes(client, viewer, approved, mirror):
    first, second = approved
    client.force_login(viewer)
    posts = {
        "/groups/pilot/approve/linux/x86_64/": {"package": first.pk, "expected_current": second.pk},
        "/groups/pilot/promote/linux/x86_64/": {"package": second.pk, "expected_current": first.pk},
        "/groups/pilot/rollback/linux/x86_64/": {"package": first.pk, "expected_current": second.pk},
        "/groups/pilot/import/": {"text": SEED_SAMPLE},
        "/groups/new/": form_data(mirror, name="Other", slug="other"),
        "/groups/pilot/edit/": form_data(mirror, name="Renamed"),
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 403, url
    for url in (
        "/groups/pilot/promote/linux/x86_64/",
        "/groups/pilot/rollback/linux/x86_64/",
        "/groups/new/",
        "/groups/pilot/edit/",
    ):
        assert client.get(url).status_code == 403, url  # not even the confirmation or the form
    assert served_version(client, "pilot") == second.definition_version
    assert served_version(client, "broad") == first.definition_version
    assert list(EndpointGroup.objects.values_list("name", flat=True)) == ["Pilot", "Broad"]
    assert EndpointGroup.objects.get(slug="pilot").fallback_to_cloud is False


def test_an_operator_approves_but_cannot_edit_groups_or_import_policy(client, operator, approved):
    client.force_login(operator)
    page = client.get("/groups/pilot/").content.decode()
    assert ">Approve…</button>" in page and "Promote to Broad" in page and "Roll back to" in page
    assert "Import mdatp_managed.json" not in page and "/edit/" not in page
    assert client.get("/groups/new/").status_code == 403
    assert client.get("/groups/pilot/edit/").status_code == 403
    assert client.post("/groups/pilot/import/", {"text": SEED_SAMPLE}).status_code == 403


def test_changes_are_post_only(client, admin, approved):
    first, second = approved
    client.force_login(admin)
    # A GET of an approval is its confirmation page: it changes nothing.
    assert client.get(f"/groups/pilot/approve/linux/x86_64/?package={first.pk}").status_code == 200
    assert served_version(client, "pilot") == second.definition_version
    assert client.get("/groups/pilot/import/").status_code == 405
    assert client.post("/groups/pilot/managed-config/linux/").status_code == 405


def test_every_form_that_posts_carries_a_csrf_token_and_a_post_without_it_is_refused(admin, approved):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    for url in ("/groups/pilot/", "/groups/new/", "/groups/pilot/edit/", "/groups/pilot/rollback/linux/x86_64/"):
        page = client.get(url).content.decode()
        forms = re.findall(r"<form[^>]*method=\"post\".*?</form>", page, flags=re.S)
        assert forms, url
        assert all("csrfmiddlewaretoken" in form for form in forms), url
    first, second = approved
    response = client.post("/groups/pilot/rollback/linux/x86_64/", {"package": first.pk, "expected_current": second.pk})
    assert response.status_code == 403
    assert served_version(client, "pilot") == second.definition_version


def test_every_control_has_a_label(client, admin, approved):
    client.force_login(admin)
    for url in ("/groups/pilot/", "/groups/new/"):
        page = client.get(url).content.decode()
        for tag in re.findall(r"<(?:select|textarea|input)\b[^>]*>", page):
            if 'type="hidden"' in tag or 'type="submit"' in tag:
                continue
            control_id = re.search(r'id="([^"]+)"', tag).group(1)
            assert f'for="{control_id}"' in page or re.search(rf"<label>\s*{re.escape(tag)}", page), tag


MICROSOFT_DOCS = ("https://learn.microsoft.com/en-us/defender-endpoint/", "https://docs.microsoft.com/en-us/")


@pytest.mark.parametrize(
    "path", ["/groups/", "/groups/pilot/", "/groups/new/", "/groups/pilot/edit/", "/groups/pilot/promote/linux/x86_64/"]
)
def test_no_group_page_loads_anything_from_outside(client, admin, approved, path):
    client.force_login(admin)
    response = client.get(path)
    assert response.status_code == 200
    # Only links to Microsoft's documentation (the form's inline help) point outside; nothing is loaded from there.
    outside = [url for url in external_urls(response.content.decode()) if not url.startswith(MICROSOFT_DOCS)]
    assert outside == []


# --- Approve, promote, roll back --------------------------------------------------------------------


def test_the_detail_page_shows_versions_engine_who_and_the_actions(client, operator, approved):
    first, second = approved
    client.force_login(operator)
    page = client.get("/groups/pilot/").content.decode()
    assert f'<strong class="token">{second.definition_version}</strong> (engine {second.engine_version})' in page
    assert f'<span class="token">{first.definition_version}</span> (engine {first.engine_version})' in page
    assert "by oscar" in page
    assert "Promote to Broad" in page
    assert f"Roll back to {first.definition_version}" in page
    assert "https://portal.example.org/mirror/groups/pilot/linux/production/" in page
    assert 'action="/groups/pilot/approve/linux/x86_64/"' in page  # the version list leads to a confirmation
    # n-1 of pilot's arm64 target: nothing approved, so no promote and no roll back there
    assert page.count("Promote to Broad") == 1


def test_an_operator_approves_a_package_and_the_group_url_serves_it(client, operator, rings, make_package):
    pilot, _ = rings
    package = make_package(definition="1.407.500.0")
    client.force_login(operator)
    assert served_version(client, "pilot") == 404
    response = client.post(
        "/groups/pilot/approve/linux/x86_64/", {"package": package.pk, "expected_current": ""}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/groups/pilot/"
    assert "Pilot now serves 1.407.500.0 for linux/production/arch_x86_64." in messages_of(response)
    assert served_version(client, "pilot") == "1.407.500.0"
    event = ApprovalEvent.objects.get(group=pilot)
    assert (event.action, event.actor_label) == (ApprovalAction.APPROVE, "oscar")


def test_an_approval_from_a_stale_page_changes_nothing(client, operator, approved, make_package):
    first, second = approved
    newer = make_package()
    client.force_login(operator)
    response = client.post(
        "/groups/pilot/approve/linux/x86_64/", {"package": newer.pk, "expected_current": first.pk}, follow=True
    )
    assert any("changed meanwhile" in m for m in messages_of(response))
    assert served_version(client, "pilot") == second.definition_version


def test_a_package_of_another_target_is_refused_with_a_message(client, operator, rings, make_package):
    arm = make_package(arch="arm64")
    client.force_login(operator)
    response = client.post(
        "/groups/pilot/approve/linux/x86_64/", {"package": arm.pk, "expected_current": ""}, follow=True
    )
    assert any(m.startswith("Nothing approved for linux/production/arch_x86_64") for m in messages_of(response))
    assert served_version(client, "pilot") == 404


def test_promote_asks_for_confirmation_then_the_next_ring_serves_the_version(
    client, operator, approved, make_endpoints, rings
):
    first, second = approved
    _, broad = rings
    make_endpoints(broad, 3, first.definition_version)
    client.force_login(operator)
    confirm = client.get("/groups/pilot/promote/linux/x86_64/")
    page = confirm.content.decode()
    assert confirm.status_code == 200
    assert f"Promote {second.definition_version} from Pilot to Broad" in page
    assert "3 of the 3 endpoints of Broad on linux/x86_64 run another version" in page
    assert served_version(client, "broad") == first.definition_version  # a GET changes nothing
    response = client.post(
        "/groups/pilot/promote/linux/x86_64/", {"package": second.pk, "expected_current": first.pk}, follow=True
    )
    assert (
        f"Broad now serves {second.definition_version} for linux/production/arch_x86_64 (promoted from Pilot)."
        in messages_of(response)
    )
    assert served_version(client, "broad") == second.definition_version
    assert ApprovalEvent.objects.filter(group=broad).first().action == ApprovalAction.PROMOTE


def test_a_stale_promote_confirmation_shows_a_message_and_changes_nothing(
    client, operator, approved, rings, make_package
):
    first, second = approved
    _, broad = rings
    client.force_login(operator)
    client.get("/groups/pilot/promote/linux/x86_64/")
    meanwhile = make_package()
    approve_package(broad, meanwhile, operator)  # someone else changed broad after the page was shown
    response = client.post(
        "/groups/pilot/promote/linux/x86_64/", {"package": second.pk, "expected_current": first.pk}, follow=True
    )
    assert any("changed meanwhile" in m and "reload and confirm again" in m for m in messages_of(response))
    assert "changed meanwhile" in response.content.decode()
    assert served_version(client, "broad") == meanwhile.definition_version


def test_a_promote_confirmation_for_a_version_pilot_no_longer_serves_changes_nothing(
    client, operator, approved, make_package
):
    first, second = approved
    pilot = EndpointGroup.objects.get(slug="pilot")
    third = make_package()
    approve_package(pilot, third, operator)  # pilot moved on after the page showed `second`
    client.force_login(operator)
    response = client.post(
        "/groups/pilot/promote/linux/x86_64/", {"package": second.pk, "expected_current": first.pk}, follow=True
    )
    assert any(f"it would now receive {third.definition_version}" in m for m in messages_of(response))
    assert served_version(client, "broad") == first.definition_version


def test_roll_back_asks_for_confirmation_then_serves_the_previous_version(client, operator, approved):
    first, second = approved
    client.force_login(operator)
    page = client.get("/groups/pilot/rollback/linux/x86_64/").content.decode()
    assert f"Roll back Pilot to {first.definition_version}" in page
    assert f"{second.definition_version} is not approved again automatically" in page
    assert served_version(client, "pilot") == second.definition_version
    response = client.post(
        "/groups/pilot/rollback/linux/x86_64/", {"package": first.pk, "expected_current": second.pk}, follow=True
    )
    assert any(m.startswith(f"Pilot rolled back to {first.definition_version}") for m in messages_of(response))
    assert served_version(client, "pilot") == first.definition_version
    assert row(EndpointGroup.objects.get(slug="pilot")).current == first


def test_a_stale_rollback_confirmation_shows_a_message_and_changes_nothing(client, operator, approved, make_package):
    first, second = approved
    pilot = EndpointGroup.objects.get(slug="pilot")
    client.force_login(operator)
    client.get("/groups/pilot/rollback/linux/x86_64/")
    third = make_package()
    approve_package(pilot, third, operator)  # now third, with second as n-1
    response = client.post(
        "/groups/pilot/rollback/linux/x86_64/", {"package": first.pk, "expected_current": second.pk}, follow=True
    )
    assert any("changed meanwhile" in m for m in messages_of(response))
    assert served_version(client, "pilot") == third.definition_version
    assert not ApprovalEvent.objects.filter(action=ApprovalAction.ROLLBACK).exists()


def test_promote_is_refused_when_the_next_ring_already_serves_the_version(client, operator, approved, rings):
    first, second = approved
    pilot, broad = rings
    promote(pilot, TARGET, operator)
    client.force_login(operator)
    response = client.get("/groups/pilot/promote/linux/x86_64/", follow=True)
    assert (
        f"Cannot promote: broad already serves {second.definition_version} for linux/production/arch_x86_64"
        in messages_of(response)
    )


def test_the_approve_form_preselects_the_newest_version_not_served_yet(client, operator, approved, make_package):
    first, second = approved
    newest = make_package()
    client.force_login(operator)
    page = client.get("/groups/pilot/").content.decode()
    assert f'<option value="{newest.pk}" selected>{newest.definition_version}' in page
    assert (
        f'<option value="{second.pk}">{second.definition_version} (engine {second.engine_version}, ' in page
        and "— served now" in page
    )


def test_roll_back_without_a_previous_version_says_so(client, operator, rings, make_package):
    pilot, _ = rings
    approve_package(pilot, make_package(), operator)
    client.force_login(operator)
    response = client.get("/groups/pilot/rollback/linux/x86_64/", follow=True)
    assert any("no previous version" in m for m in messages_of(response))


def test_a_target_the_group_does_not_serve_is_404(client, operator, rings):
    client.force_login(operator)
    assert client.get("/groups/pilot/rollback/mac/x86_64/").status_code == 404
    assert client.get("/groups/nowhere/").status_code == 404


# --- Create and edit --------------------------------------------------------------------------------


def test_an_admin_creates_a_group_and_it_is_audited(client, admin, mirror):
    client.force_login(admin)
    form = client.get("/groups/new/").content.decode()
    assert 'data-slug-from="id_name"' in form  # the slug fills itself from the name (portal/static/portal/slug.js)
    assert (
        "cloudService.definitionUpdatesInterval" in form
        and "antivirusEngine.offlineDefinitionUpdateFallbackToCloud" in form
    )
    assert 'type="checkbox" name="platforms" value="mac"' in form
    response = client.post("/groups/new/", form_data(mirror, platforms=["linux", "mac"]))
    assert response.status_code == 302 and response.url == "/groups/pilot/"
    group = EndpointGroup.objects.get(slug="pilot")
    assert group.platforms == ["linux", "mac"] and group.update_interval == 28800 and group.fallback_to_cloud is False
    event = AuditEvent.objects.get(action="group.create")
    assert event.actor_label == "alice" and event.details["fields"]["mirror"] == "main"


def test_an_interval_of_59_seconds_shows_the_field_error_and_keeps_what_was_typed(client, admin, mirror):
    client.force_login(admin)
    response = client.post("/groups/new/", form_data(mirror, name="Typed name", slug="typed", update_interval=59))
    page = response.content.decode()
    assert response.status_code == 400
    error = re.search(r'<div class="field has-error">\s*<label for="id_update_interval">.*?<small', page, flags=re.S)
    assert error and "Give a number of seconds between 60 and 86400" in error.group(0)
    assert error.group(0).count('class="field-error"') == 1  # one sentence, not the validator's as well
    assert 'value="Typed name"' in page and 'value="59"' in page
    assert not EndpointGroup.objects.exists()


def test_a_platform_the_mirror_does_not_sync_is_a_field_error(client, admin, mirror):
    linux_only = Mirror.objects.create(
        name="linux only",
        slug="linux-only",
        upstream=mirror.upstream,
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
    )
    client.force_login(admin)
    response = client.post("/groups/new/", form_data(linux_only, platforms=["linux", "mac"]))
    page = response.content.decode()
    assert response.status_code == 400
    assert "<legend>Platforms</legend>" in page
    assert "Mirror linux-only does not sync mac; it syncs linux." in page
    assert re.search(r'name="platforms" value="mac"[^>]*checked', page)  # the choice is kept
    assert not EndpointGroup.objects.exists()


def test_no_platform_at_all_gets_the_model_sentence_once(client, admin, mirror):
    client.force_login(admin)
    page = client.post("/groups/new/", form_data(mirror, platforms=None)).content.decode()
    assert page.count("Choose at least one of linux, mac.") == 1
    assert "This field is required" not in page


def test_a_ring_that_follows_needs_its_source_ring(client, admin, mirror, make_group):
    make_group("pilot", 10)
    client.force_login(admin)
    response = client.post(
        "/groups/new/", form_data(mirror, name="Broad", slug="broad", ring_order=20, rollout="after")
    )
    assert response.status_code == 400
    assert "Choose the ring this one follows." in response.content.decode()


def test_an_admin_edits_a_group_and_the_change_is_audited(client, admin, make_group):
    pilot = make_group("pilot", 10)
    make_group("broad", 20)
    client.force_login(admin)
    page = client.get("/groups/broad/edit/").content.decode()
    assert 'value="Broad"' in page
    assert f'<option value="{pilot.pk}">Pilot</option>' in page and ">Broad</option>" not in page  # never itself
    response = client.post(
        "/groups/broad/edit/",
        form_data(
            pilot.mirror,
            name="Broad",
            slug="broad",
            ring_order=20,
            rollout="after",
            source_group=pilot.pk,
            delay_hours=12,
            gate_percent=80,
        ),
    )
    assert response.status_code == 302
    broad = EndpointGroup.objects.get(slug="broad")
    assert (broad.rollout, broad.source_group, broad.delay_hours) == (RolloutMode.AFTER, pilot, 12)
    event = AuditEvent.objects.get(action="group.update")
    assert event.details["source_group"] == {"from": None, "to": "pilot"}
    assert event.details["gate_percent"] == {"from": 90, "to": 80}
    assert "name" not in event.details
    assert "after pilot + 12 h, gate 80 %" in client.get("/groups/").content.decode()


def test_an_invalid_edit_keeps_the_saved_name_in_the_page_links(client, admin, make_group):
    pilot = make_group("pilot", 10)
    client.force_login(admin)
    page = client.post("/groups/pilot/edit/", form_data(pilot.mirror, name="Pilot", slug="new")).content.decode()
    assert "&#x27;new&#x27; is reserved; choose another." in page
    assert 'href="/groups/pilot/"' in page
    assert EndpointGroup.objects.get(pk=pilot.pk).slug == "pilot"


# --- Policy import ---------------------------------------------------------------------------------


def test_importing_the_seed_sample_warns_about_its_misspelling_and_sets_fallback_to_cloud(client, admin, make_group):
    make_group("pilot", 10)
    client.force_login(admin)
    response = client.post("/groups/pilot/import/", {"text": SEED_SAMPLE}, follow=True)
    warnings = [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "warning"]
    assert any("offlineDefintionUpdateFallbackToCloud is misspelled" in w for w in warnings)
    assert any(
        "offlineDefinitionUpdateUrl (http://172.22.199.67:8000/linux/production/) ignored" in w for w in warnings
    )
    assert 'class="message warning"' in response.content.decode()
    group = EndpointGroup.objects.get(slug="pilot")
    assert group.fallback_to_cloud is True and group.update_interval == 1202
    assert (
        "&quot;offlineDefinitionUpdateFallbackToCloud&quot;: true" in response.content.decode()
    )  # the preview follows


def test_an_uploaded_file_is_imported_too(client, admin, make_group):
    from django.core.files.uploadedfile import SimpleUploadedFile

    make_group("pilot", 10)
    client.force_login(admin)
    upload = SimpleUploadedFile("mdatp_managed.json", SEED_SAMPLE.encode(), content_type="application/json")
    response = client.post("/groups/pilot/import/", {"file": upload})
    assert response.status_code == 302
    assert EndpointGroup.objects.get(slug="pilot").fallback_to_cloud is True


def test_importing_a_wrong_type_shows_the_error_and_changes_nothing(client, admin, make_group):
    make_group("pilot", 10)
    client.force_login(admin)
    text = SEED_SAMPLE.replace('"definitionUpdatesInterval": 1202', '"definitionUpdatesInterval": "often"')
    response = client.post("/groups/pilot/import/", {"text": text})
    page = response.content.decode()
    assert response.status_code == 400
    assert re.search(
        r'<div class="form-error" role="alert">cloudService\.definitionUpdatesInterval: expected a whole number of seconds'
        r".*?got the string &quot;often&quot;",
        page,
    )
    assert "often" in page  # what was pasted stays in the textarea
    group = EndpointGroup.objects.get(slug="pilot")
    assert group.update_interval == 28800 and group.fallback_to_cloud is False
    assert not AuditEvent.objects.filter(action="group.update").exists()


def test_an_import_with_nothing_given_asks_for_the_file(client, admin, make_group):
    make_group("pilot", 10)
    client.force_login(admin)
    response = client.post("/groups/pilot/import/", {"text": "  "})
    assert response.status_code == 400
    assert "Choose the mdatp_managed.json file or paste its content." in response.content.decode()


# --- Managed configuration --------------------------------------------------------------------------


def test_the_linux_download_is_mdatp_managed_json_with_the_exact_keys(client, viewer, make_group):
    make_group("pilot", 10, platforms=("linux", "mac"), fallback_to_cloud=True, update_interval=3600)
    client.force_login(viewer)
    response = client.get("/groups/pilot/managed-config/linux/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="mdatp_managed.json"'
    assert json.loads(response.content) == {
        "cloudService": {"automaticDefinitionUpdateEnabled": True, "definitionUpdatesInterval": 3600},
        "antivirusEngine": {
            "offlineDefinitionUpdateUrl": "https://portal.example.org/mirror/groups/pilot/linux/production/",
            "offlineDefinitionUpdate": "enabled",
            "offlineDefinitionUpdateFallbackToCloud": True,
        },
        "features": {"offlineDefinitionUpdateVerifySig": "enabled"},
    }


def test_the_detail_page_previews_the_linux_file_and_links_both_downloads(client, viewer, make_group):
    make_group("pilot", 10, platforms=("linux", "mac"))
    client.force_login(viewer)
    page = client.get("/groups/pilot/").content.decode()
    preview = re.search(r'<pre class="config">(.*?)</pre>', page, flags=re.S).group(1)
    assert json.loads(preview.replace("&quot;", '"'))["cloudService"]["definitionUpdatesInterval"] == 28800
    assert 'href="/groups/pilot/managed-config/linux/">Download mdatp_managed.json' in page
    assert 'href="/groups/pilot/managed-config/mac/">Download pilot.mobileconfig' in page


def test_a_mac_only_group_previews_the_same_keys_with_its_mac_url(client, viewer, make_group):
    make_group("macs", 10, platforms=("mac",))
    client.force_login(viewer)
    page = client.get("/groups/macs/").content.decode()
    preview = json.loads(
        re.search(r'<pre class="config">(.*?)</pre>', page, flags=re.S).group(1).replace("&quot;", '"')
    )
    assert (
        preview["antivirusEngine"]["offlineDefinitionUpdateUrl"]
        == "https://portal.example.org/mirror/groups/macs/mac/production/"
    )
    assert "managed-config/linux/" not in page


def test_the_mac_download_is_a_configuration_profile(client, viewer, make_group):
    make_group("pilot", 10, platforms=("linux", "mac"))
    client.force_login(viewer)
    response = client.get("/groups/pilot/managed-config/mac/")
    assert response["Content-Type"] == "application/x-apple-aspen-config"
    assert response["Content-Disposition"] == 'attachment; filename="pilot.mobileconfig"'
    assert plistlib.loads(response.content)["PayloadContent"][0]["PayloadType"] == "com.microsoft.wdav"


def test_a_platform_the_group_lacks_is_404_with_a_readable_message(client, viewer, make_group):
    make_group("pilot", 10)
    client.force_login(viewer)
    response = client.get("/groups/pilot/managed-config/mac/")
    assert response.status_code == 404
    assert "group pilot has no mac endpoints (its platforms: linux)" in response.content.decode()
    assert client.get("/groups/pilot/managed-config/windows/").status_code == 404


# --- Bounded queries --------------------------------------------------------------------------------


@pytest.fixture
def busy(make_group, make_package, operator):
    """Four rings on both platforms and archs, each with a few approvals per target."""
    groups = [
        make_group(slug, order, platforms=("linux", "mac"))
        for slug, order in (("pilot", 10), ("early", 20), ("broad", 30), ("late", 40))
    ]
    for target in (("linux", "x86_64"), ("linux", "arm64"), ("mac", "x86_64"), ("mac", "arm64")):
        packages = [make_package(platform=target[0], arch=target[1]) for _ in range(3)]
        for group in groups:
            for package in packages:
                approve_package(group, package, operator)
    return groups


def test_the_list_makes_a_bounded_number_of_queries(client, operator, busy, django_assert_max_num_queries):
    client.force_login(operator)
    # session, user, the session's row (core.sessions), role, groups, approvals; on a session's first page only, its
    # language preference and whether its password must be changed (both then kept in the session, saved again)
    with django_assert_max_num_queries(11):
        response = client.get("/groups/")
    assert response.content.decode().count('<strong class="token">') == 16


def test_the_detail_page_makes_a_bounded_number_of_queries(client, operator, busy, django_assert_max_num_queries):
    client.force_login(operator)
    # session, user, role, group, status and the upstream's withdrawals, then per target (4): packages and next
    # ring, then history
    # (and the session's row; on a session's first page, the language preference and the forced-change flag, and
    # the session saved again)
    with django_assert_max_num_queries(22):
        response = client.get("/groups/early/")
    page = response.content.decode()
    assert page.count("Promote to Broad") == 4 and page.count(">Approve…</button>") == 4
    assert page.count("<td>oscar</td>") == 12


def test_the_gate_state_is_shown_for_each_target(client, viewer, make_group):
    make_group("pilot", 10)
    client.force_login(viewer)
    GroupTarget.objects.filter(arch="arm64").update(
        gate_state=GateState.WAITING, gate_reason="pilot: no linux/arm64 endpoint has reported"
    )
    page = client.get("/groups/pilot/").content.decode()
    assert (
        '<span class="state warn">waiting</span> <span class="gate-reason breakable">pilot: no linux/arm64 endpoint has reported</span>'
        in page
    )
    assert '<span class="state muted">manual</span>' in page
