"""The endpoint pages (/groups/endpoints/) and the enrollment secrets on the group page."""

import csv
import hashlib
import io
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.errors import Refused
from core.models import AuditEvent
from fleet.choices import Compliance
from fleet.models import Endpoint, EndpointGroup, EnrollmentSecret, HealthReport
from fleet.services import enrollment, ingest
from tests.samples import DESIGN_SAMPLE
from tests.web import external_urls

pytestmark = pytest.mark.django_db

LIST = "/groups/endpoints/"


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def fleet(make_group, make_endpoints):
    """pilot (linux): 3 up to date, 2 failing with update_failed; broad (linux): 4 behind; macs (mac): 1 new."""
    pilot, broad, macs = make_group("pilot", 10), make_group("broad", 20), make_group("macs", 30, platforms=("mac",))
    make_endpoints(pilot, 3, "1.407.418.0", prefix="pilot-ok")
    Endpoint.objects.filter(machine_id__startswith="pilot-ok").update(compliance=Compliance.UP_TO_DATE)
    make_endpoints(pilot, 2, "1.407.417.0", prefix="pilot-bad")
    Endpoint.objects.filter(machine_id__startswith="pilot-bad").update(
        compliance=Compliance.FAILING,
        finding_codes=",update_failed,stale,",
        findings=[
            {
                "code": "update_failed",
                "severity": "critical",
                "title": "The last signature update failed",
                "explanation": 'The agent reports definitions_update_fail_reason "timeout".',
                "fix": "1. Check the endpoint reaches the mirror.\n2. Retry the update: `mdatp definitions update`.",
                "values": {"definitions_update_fail_reason": "timeout"},
            }
        ],
    )
    make_endpoints(broad, 4, "1.407.400.0", prefix="broad")
    Endpoint.objects.filter(group=broad).update(compliance=Compliance.BEHIND)
    make_endpoints(macs, 1, "", platform="mac", prefix="mac")
    return pilot, broad, macs


def hostnames(response) -> list[str]:
    return [e.hostname for e in response.context["rows"]]


# --- The list: filters, summary, pagination --------------------------------------------------------


def test_the_list_filters_and_counts_each_compliance_state(client, viewer, fleet):
    client.force_login(viewer)
    response = client.get(LIST)
    assert response.status_code == 200
    assert response.context["total"] == 10
    counts = {s["value"]: s["count"] for s in response.context["summary"]}
    assert counts == {"failing": 2, "behind": 4, "up_to_date": 3, "new": 1}
    page = response.content.decode()
    assert "<strong>10</strong> endpoints" in page
    assert 'data-state="failing"><span class="state bad">2</span> Failing</a>' in page

    response = client.get(LIST, {"group": "pilot"})
    assert response.context["total"] == 5
    assert {s["value"]: s["count"] for s in response.context["summary"]} == {"failing": 2, "up_to_date": 3}
    assert "<strong>5</strong> endpoints match" in response.content.decode()

    assert sorted(hostnames(client.get(LIST, {"compliance": "failing"}))) == ["pilot-bad-0", "pilot-bad-1"]
    assert len(hostnames(client.get(LIST, {"version": "1.407.400.0"}))) == 4
    assert sorted(hostnames(client.get(LIST, {"finding": "update_failed"}))) == ["pilot-bad-0", "pilot-bad-1"]
    assert hostnames(client.get(LIST, {"finding": "stale", "group": "pilot"})) == ["pilot-bad-0", "pilot-bad-1"]
    assert hostnames(client.get(LIST, {"platform": "mac"})) == ["mac-0"]
    assert hostnames(client.get(LIST, {"q": "BROAD-3"})) == ["broad-3"]
    assert client.get(LIST, {"group": "pilot", "compliance": "behind"}).context["total"] == 0


def test_a_summary_count_links_to_its_state_within_the_current_filter(client, viewer, fleet):
    client.force_login(viewer)
    summary = client.get(LIST, {"group": "pilot"}).context["summary"]
    failing = next(s for s in summary if s["value"] == "failing")
    assert "group=pilot" in failing["url"] and "compliance=failing" in failing["url"]
    assert client.get(LIST + failing["url"]).context["total"] == 2


def test_decommissioned_endpoints_are_hidden_unless_asked_for(client, viewer, fleet):
    Endpoint.objects.filter(hostname="broad-0").update(decommissioned_at=timezone.now())
    client.force_login(viewer)
    assert "broad-0" not in hostnames(client.get(LIST, {"group": "broad"}))
    assert hostnames(client.get(LIST, {"decommissioned": "true"})) == ["broad-0"]
    assert len(hostnames(client.get(LIST, {"group": "broad", "decommissioned": "unknown"}))) == 4


def test_an_unknown_filter_value_matches_nothing_and_says_why(client, viewer, fleet):
    client.force_login(viewer)
    response = client.get(LIST, {"compliance": "bogus"})
    assert response.status_code == 200 and response.context["total"] == 0
    assert "field-error" in response.content.decode()


def list_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(LIST)
    assert response.status_code == 200
    return len(queries)


def test_the_list_makes_the_same_number_of_queries_for_10_and_200_endpoints(
    client, viewer, make_group, make_endpoints, django_assert_max_num_queries
):
    pilot = make_group("pilot", 10)
    make_endpoints(pilot, 10, "1.407.417.0", prefix="a")
    client.force_login(viewer)
    client.get(LIST)  # the session and the like, warm
    small = list_queries(client)
    make_endpoints(pilot, 190, "1.407.418.0", prefix="b")
    assert list_queries(client) == small
    # session, user, the session's row (core.sessions), role, group choices, summary, one page, the enrollment
    # claims waiting
    with django_assert_max_num_queries(8):
        client.get(LIST, {"group": "pilot", "compliance": "new", "after": "a-5|6"})


def test_pagination_moves_forward_and_back_without_duplicates_or_skips(client, viewer, make_group, make_endpoints):
    pilot = make_group("pilot", 10)
    make_endpoints(pilot, 110, "1.407.417.0", prefix="host")
    # Several machines with one hostname: the id breaks the tie across a page boundary.
    Endpoint.objects.bulk_create(
        [Endpoint(machine_id=f"dup-{i}", hostname="host-5", group=pilot, platform="linux") for i in range(12)]
    )
    expected = list(Endpoint.objects.order_by("hostname", "pk").values_list("pk", flat=True))
    client.force_login(viewer)
    seen, pages, url = [], [], LIST
    while url:
        response = client.get(url if url.startswith("/") else LIST + url)
        pages.append([e.pk for e in response.context["rows"]])
        seen += pages[-1]
        url = response.context["next_url"]
    assert [len(p) for p in pages] == [50, 50, 22]
    assert seen == expected  # in order, each once
    back = client.get(LIST + response.context["previous_url"])
    assert [e.pk for e in back.context["rows"]] == pages[1]
    assert 'rel="next"' in back.content.decode() and 'rel="prev"' in back.content.decode()


def test_a_malformed_cursor_starts_from_the_first_page(client, viewer, fleet):
    client.force_login(viewer)
    response = client.get(LIST, {"after": "no-id-here"})
    assert response.status_code == 200 and len(response.context["rows"]) == 10


def test_an_empty_fleet_says_how_endpoints_arrive(client, operator, make_group):
    make_group("pilot", 10)
    client.force_login(operator)
    page = client.get(LIST).content.decode()
    assert "No endpoint has enrolled yet." in page
    assert "create an enrollment secret" in page and "install the agent" in page
    assert "Export CSV" not in page


def test_the_navigation_shows_endpoints(client, viewer):
    client.force_login(viewer)
    assert '<a href="/groups/endpoints/" aria-current="page">Endpoints</a>' in client.get(LIST).content.decode()


def test_endpoints_is_a_reserved_group_slug(mirror):
    group = EndpointGroup(name="Endpoints", slug="endpoints", mirror=mirror, platforms=["linux"])
    with pytest.raises(ValidationError, match="reserved"):
        group.full_clean()


# --- CSV export --------------------------------------------------------------------------------------


def read_csv(response) -> list[list[str]]:
    assert response.streaming
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_csv_export_streams_one_row_per_filtered_endpoint(client, viewer, fleet):
    Endpoint.objects.filter(hostname="pilot-bad-0").update(hostname='=HYPERLINK("http://evil")', app_version="-1+2")
    client.force_login(viewer)
    response = client.get("/groups/endpoints/export.csv", {"group": "pilot"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="endpoints-pilot-')
    rows = read_csv(response)
    assert rows[0] == [
        "hostname",
        "machine_id",
        "group",
        "platform",
        "arch",
        "compliance",
        "definitions_version",
        "last_seen",
        "findings",
        "app_version",
    ]
    assert len(rows) == 1 + 5
    evil = next(r for r in rows if r[1] == "pilot-bad-0")
    assert evil[0] == '\'=HYPERLINK("http://evil")' and evil[9] == "'-1+2"
    assert evil[2:7] == ["pilot", "linux", "x86_64", "failing", "1.407.417.0"]
    assert evil[8] == "update_failed stale"
    assert len(read_csv(client.get(LIST, {"format": "csv"}))) == 1 + 10


def test_the_csv_filename_is_safe_whatever_the_filter(client, viewer, fleet):
    client.force_login(viewer)
    response = client.get("/groups/endpoints/export.csv", {"group": 'x"; evil=1\r\n'})
    disposition = response["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and disposition.count('"') == 2
    assert read_csv(response) == [read_csv(client.get("/groups/endpoints/export.csv"))[0]]  # matches nothing


# --- The detail page -------------------------------------------------------------------------------------


def test_the_detail_page_shows_findings_with_their_fix_and_the_config_drift(client, viewer, fleet):
    pilot = fleet[0]
    endpoint = Endpoint.objects.get(hostname="pilot-bad-0")
    endpoint.offline_url_configured = "http://old-mirror.example.org/linux/production/"
    endpoint.offline_update, endpoint.verify_sig = "disabled", "enabled"
    endpoint.fallback_to_cloud, endpoint.automatic_updates = None, True
    endpoint.last_seen = timezone.now()
    endpoint.save()
    client.force_login(viewer)
    response = client.get(f"/groups/endpoints/{endpoint.pk}/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "The last signature update failed" in page
    assert "2. Retry the update: <code>mdatp definitions update</code>." in page  # Markdown backticks as code
    assert 'class="state bad">critical</span>' in page
    drift = {row["label"]: row for row in response.context["drift"]}
    assert drift["Mirror URL"]["state"] == "differs"
    assert drift["Mirror URL"]["wanted"] == pilot.definition_url("linux")
    assert drift["Offline update"]["state"] == "differs"
    assert drift["Verify the signature"]["state"] == "matches"
    assert drift["Fall back to Microsoft's cloud"]["state"] == "not reported"
    assert drift["Automatic updates"]["state"] == "matches"
    assert "http://old-mirror.example.org/linux/production/" in page and pilot.definition_url("linux") in page


def test_the_report_history_shows_the_last_raw_reports_kept_each_with_its_raw_body(
    client, viewer, make_group, settings
):
    settings.FLEET_RAW_REPORTS_KEPT = 20
    pilot = make_group("pilot", 10)
    secret, plaintext = enrollment.create_enrollment_secret(pilot, "test")
    endpoint, _ = enrollment.enroll(plaintext, "machine-1", "web-1", "linux", "x86_64")
    for minute in range(22):  # one a minute: 22 at once would be a burst, refused after FLEET_REPORT_BURST
        ingest.ingest_report(Endpoint.objects.get(pk=endpoint.pk), DESIGN_SAMPLE.encode(), minute=minute)
    HealthReport.objects.filter(endpoint=endpoint).update(raw=DESIGN_SAMPLE + "# marker\n")
    client.force_login(viewer)
    page = client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    assert page.count('<details class="raw">') == 20
    assert page.count("# marker") == 20
    # The findings of the last report, as ingestion judged them: the agent's URL is not the group's.
    assert "The endpoint does not use its group&#x27;s mirror URL" in page
    assert (
        "<code>mdatp health --field offline_definition_url_configured</code> must print that URL with [managed]."
        in page
    )


def test_an_unknown_endpoint_is_a_404(client, viewer):
    client.force_login(viewer)
    assert client.get("/groups/endpoints/999999/").status_code == 404


# --- Move and decommission -----------------------------------------------------------------------------


def test_an_operator_moves_an_endpoint_and_it_is_audited(client, operator, fleet):
    endpoint = Endpoint.objects.get(hostname="broad-0")
    client.force_login(operator)
    page = client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    assert f'action="/groups/endpoints/{endpoint.pk}/move/"' in page
    assert '<option value="pilot">Pilot</option>' in page
    assert 'value="macs"' not in page and 'value="broad"' not in page  # another platform; where it already is
    response = client.post(f"/groups/endpoints/{endpoint.pk}/move/", {"group": "pilot"})
    assert response.status_code == 302 and response.url == f"/groups/endpoints/{endpoint.pk}/"
    endpoint.refresh_from_db()
    assert endpoint.group.slug == "pilot"
    event = AuditEvent.objects.get(action="endpoint.move")
    assert event.actor == operator and event.details == {"from": "broad", "to": "pilot"}
    assert "moved from Broad to Pilot" in messages_of(response)[0]


def test_a_refused_move_says_why_and_changes_nothing(client, operator, fleet):
    endpoint = Endpoint.objects.get(hostname="broad-0")
    client.force_login(operator)
    response = client.post(f"/groups/endpoints/{endpoint.pk}/move/", {"group": "macs"})
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.group.slug == "broad"
    assert messages_of(response) == ["broad-0 not moved: group macs has no linux endpoints."]
    assert not AuditEvent.objects.filter(action="endpoint.move").exists()


def test_an_operator_decommissions_an_endpoint_after_confirming(client, operator, make_group):
    pilot = make_group("pilot", 10)
    _, plaintext = enrollment.create_enrollment_secret(pilot, "test")
    endpoint, token = enrollment.enroll(plaintext, "machine-1", "web-1", "linux", "x86_64")
    assert endpoint.token_hash
    client.force_login(operator)
    url = f"/groups/endpoints/{endpoint.pk}/decommission/"
    confirm = client.get(url)
    assert confirm.status_code == 200 and "Its token stops working at once" in confirm.content.decode()
    response = client.post(url)
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.decommissioned_at is not None and endpoint.token_hash is None
    assert ingest.endpoint_for_token(f"Bearer {token}") is None
    assert AuditEvent.objects.filter(action="endpoint.decommission", actor=operator).count() == 1
    page = client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    assert "Decommissioned on" in page and "Decommission…" not in page
    assert client.get(url).status_code == 302  # nothing left to confirm


def test_a_viewer_sees_no_control_and_cannot_post(client, viewer, fleet):
    pilot = fleet[0]
    secret, _ = enrollment.create_enrollment_secret(pilot, "pilot endpoints")
    endpoint = Endpoint.objects.get(hostname="broad-0")
    client.force_login(viewer)
    page = client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    main = page.split('<main id="main"')[1]  # the header's language menu is everyone's
    for control in ("/move/", "/decommission/", "<select", "Decommission", "Move to group"):
        assert control not in main, control
    group_page = client.get("/groups/pilot/").content.decode()
    assert "pilot endpoints" in group_page and f"{secret.hint}…" in group_page  # sees the list
    for control in ("/secrets/", "Rotate", "Revoke</button>", "Create secret"):
        assert control not in group_page, control
    assert client.get(f"/groups/endpoints/{endpoint.pk}/decommission/").status_code == 403
    for url, data in (
        (f"/groups/endpoints/{endpoint.pk}/move/", {"group": "pilot"}),
        (f"/groups/endpoints/{endpoint.pk}/decommission/", {}),
        ("/groups/pilot/secrets/new/", {"name": "x"}),
        (f"/groups/pilot/secrets/{secret.pk}/rotate/", {}),
        (f"/groups/pilot/secrets/{secret.pk}/revoke/", {}),
    ):
        assert client.post(url, data).status_code == 403, url
    endpoint.refresh_from_db()
    secret.refresh_from_db()
    assert endpoint.group.slug == "broad" and endpoint.decommissioned_at is None and secret.revoked_at is None
    assert EnrollmentSecret.objects.count() == 1


def test_get_on_a_post_only_url_is_405(client, operator, fleet):
    secret, _ = enrollment.create_enrollment_secret(fleet[0], "pilot endpoints")
    endpoint = Endpoint.objects.get(hostname="broad-0")
    client.force_login(operator)
    for url in (
        f"/groups/endpoints/{endpoint.pk}/move/",
        "/groups/pilot/secrets/new/",
        f"/groups/pilot/secrets/{secret.pk}/rotate/",
        f"/groups/pilot/secrets/{secret.pk}/revoke/",
    ):
        assert client.get(url).status_code == 405, url


# --- Enrollment secrets ---------------------------------------------------------------------------------


def test_the_group_page_invites_an_operator_to_create_the_first_secret(client, operator, viewer, make_group):
    make_group("pilot", 10)
    client.force_login(operator)
    page = client.get("/groups/pilot/").content.decode()
    assert "No enrollment secret yet: create one below" in page
    assert 'action="/groups/pilot/secrets/new/"' in page
    client.force_login(viewer)
    assert "an operator must create one" in client.get("/groups/pilot/").content.decode()


def test_creating_a_secret_shows_it_once_and_stores_only_its_hash(client, operator, make_group):
    pilot = make_group("pilot", 10)
    client.force_login(operator)
    expires = (timezone.now() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    response = client.post("/groups/pilot/secrets/new/", {"name": "pilot servers", "expires_at": expires})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    plaintext = response.context["plaintext"]
    assert plaintext.startswith(EnrollmentSecret.PREFIX)
    page = response.content.decode()
    assert plaintext in page and "Copy it now; it is not stored." in page
    secret = EnrollmentSecret.objects.get()
    assert secret.group == pilot and secret.name == "pilot servers" and secret.created_by == operator
    assert secret.expires_at.strftime("%Y-%m-%dT%H:%M") == expires
    assert secret.secret_hash == sha256(plaintext) and secret.hint == plaintext[:12]
    assert plaintext not in str(list(EnrollmentSecret.objects.values()))
    assert not messages_of(response)
    again = client.get("/groups/pilot/").content.decode()
    assert plaintext not in again and f"{secret.hint}…" in again and "pilot servers" in again
    assert AuditEvent.objects.filter(action="enrollment_secret.create").count() == 1
    endpoint, _ = enrollment.enroll(plaintext, "machine-1", "web-1", "linux", "x86_64")  # it works
    assert endpoint.group == pilot


def test_a_refused_secret_form_comes_back_on_the_group_page(client, operator, make_group):
    make_group("pilot", 10)
    client.force_login(operator)
    response = client.post("/groups/pilot/secrets/new/", {"name": "", "expires_at": "2001-01-01T00:00"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "This field is required." in page and "Choose a moment in the future" in page
    assert not EnrollmentSecret.objects.exists()


def test_rotating_shows_a_new_secret_and_revokes_the_old(client, operator, make_group):
    pilot = make_group("pilot", 10)
    old, old_plaintext = enrollment.create_enrollment_secret(pilot, "pilot servers", operator)
    client.force_login(operator)
    assert f'action="/groups/pilot/secrets/{old.pk}/rotate/"' in client.get("/groups/pilot/").content.decode()
    response = client.post(f"/groups/pilot/secrets/{old.pk}/rotate/")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    plaintext = response.context["plaintext"]
    assert plaintext != old_plaintext and plaintext in response.content.decode()
    assert f"The previous secret ({old.hint}…) is revoked" in response.content.decode()
    old.refresh_from_db()
    new = EnrollmentSecret.objects.exclude(pk=old.pk).get()
    assert old.revoked_at is not None and new.revoked_at is None
    assert new.name == "pilot servers" and new.secret_hash == sha256(plaintext)
    with pytest.raises(Refused):
        enrollment.enroll(old_plaintext, "machine-1", "web-1", "linux", "x86_64")
    again = client.post(f"/groups/pilot/secrets/{old.pk}/rotate/")  # a revoked one is not rotated again
    assert again.status_code == 302 and "create a new one instead" in messages_of(again)[0]
    assert EnrollmentSecret.objects.count() == 2


def test_the_page_refuses_to_rotate_a_revoked_secret_and_the_secret_stays_as_it_was(client, operator, make_group):
    pilot = make_group("pilot", 10)
    secret, plaintext = enrollment.create_enrollment_secret(pilot, "pilot servers")
    enrollment.revoke_enrollment_secret(secret)
    client.force_login(operator)  # audited as a sign-in: before the count
    before, audited = list(EnrollmentSecret.objects.values()), AuditEvent.objects.count()
    response = client.post(f"/groups/pilot/secrets/{secret.pk}/rotate/")
    assert response.status_code == 302 and response.url == "/groups/pilot/#enrollment-secrets"
    assert messages_of(response) == [
        f"Enrollment secret pilot servers ({secret.hint}…) is revoked: create a new one instead."
    ]
    assert list(EnrollmentSecret.objects.values()) == before and AuditEvent.objects.count() == audited
    with pytest.raises(Refused):
        enrollment.enroll(plaintext, "machine-1", "web-1", "linux", "x86_64")


def test_revoking_a_secret(client, operator, make_group):
    pilot = make_group("pilot", 10)
    make_group("broad", 20)
    secret, _ = enrollment.create_enrollment_secret(pilot, "pilot servers")
    client.force_login(operator)
    assert client.post(f"/groups/broad/secrets/{secret.pk}/revoke/").status_code == 404  # another group's
    response = client.post(f"/groups/pilot/secrets/{secret.pk}/revoke/")
    assert response.status_code == 302 and response.url == "/groups/pilot/#enrollment-secrets"
    secret.refresh_from_db()
    assert secret.revoked_at is not None
    assert AuditEvent.objects.filter(action="enrollment_secret.revoke").count() == 1
    page = client.get("/groups/pilot/").content.decode()
    assert '<span class="state muted">revoked' in page and f"/secrets/{secret.pk}/revoke/" not in page


# --- Air-gapped ------------------------------------------------------------------------------------------


def test_the_endpoint_pages_load_nothing_from_outside(client, operator, fleet):
    endpoint = Endpoint.objects.get(hostname="pilot-bad-0")
    client.force_login(operator)
    created = client.post("/groups/pilot/secrets/new/", {"name": "x"})
    for response in (
        client.get(LIST),
        client.get(f"/groups/endpoints/{endpoint.pk}/"),
        client.get(f"/groups/endpoints/{endpoint.pk}/decommission/"),
        created,
        client.get("/groups/pilot/"),
    ):
        assert response.status_code == 200
        assert external_urls(response.content.decode()) == []
