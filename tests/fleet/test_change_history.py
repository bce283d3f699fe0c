"""Issue 17: history that grows with changes, not with reports (EndpointChange, the last raw reports, pruning)."""

from datetime import timedelta

import pytest
from django.apps import apps
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.choices import Compliance
from fleet.models import Endpoint, EndpointChange, HealthReport
from fleet.services import chores, ingest
from tests.samples import health_text

pytestmark = pytest.mark.django_db(transaction=False)


def report(endpoint, body, at=None, minute=0):
    """Ingest as the report path does: the endpoint as its token loads it, fresh from the database."""
    return ingest.ingest_report(Endpoint.objects.get(pk=endpoint.pk), body.encode(), now=at, minute=minute)


def test_a_first_report_is_a_change_from_nothing(endpoint, pilot):
    report(endpoint, health_text(pilot))
    change = EndpointChange.objects.get()
    assert change.endpoint_id == endpoint.pk
    assert change.changes["definitions_version"] == [None, "1.407.417.0"]
    assert change.changes["compliance"] == [None, Compliance.UP_TO_DATE]
    assert change.changes["offline_update"] == [None, "enabled"]
    assert change.changes["app_version"] == [None, "101.24032.0007"]
    assert change.at == HealthReport.objects.get().received_at


def test_an_identical_report_writes_no_change_and_no_query_for_one(endpoint, pilot):
    report(endpoint, health_text(pilot), minute=0)
    with CaptureQueriesContext(connection) as captured:
        report(endpoint, health_text(pilot), minute=1)
    assert EndpointChange.objects.count() == 1 and HealthReport.objects.count() == 2
    assert not [q for q in captured.captured_queries if EndpointChange._meta.db_table in q["sql"]]


def test_a_change_records_only_what_changed_before_and_after(endpoint, pilot):
    report(endpoint, health_text(pilot), minute=0)
    report(
        endpoint,
        health_text(pilot, "1.407.418.0", definitions_update_fail_reason='"Network error"'),
        minute=1,
    )
    latest = EndpointChange.objects.first()
    assert latest.changes["definitions_version"] == ["1.407.417.0", "1.407.418.0"]
    assert latest.changes["fail_reason"] == ["", "Network error"]
    assert latest.changes["compliance"] == [Compliance.UP_TO_DATE, Compliance.FAILING]
    assert "update_failed" in latest.changes["finding_codes"][1]
    assert "app_version" not in latest.changes and "offline_update" not in latest.changes


def test_settings_that_change_are_recorded(endpoint, pilot):
    report(endpoint, health_text(pilot), minute=0)
    report(endpoint, health_text(pilot, offline_definition_update_fallback_to_cloud="true[managed]"), minute=1)
    assert EndpointChange.objects.first().changes["fallback_to_cloud"] == [False, True]


# Outside a test transaction: the store's own atomicity is what is tested, not a savepoint around it.
@pytest.mark.django_db(transaction=True)
def test_a_failure_after_the_state_write_leaves_neither_state_report_nor_change(endpoint, pilot, monkeypatch):
    report(endpoint, health_text(pilot), minute=0)
    # The change record is the statement's last write on SQLite and part of the one statement on PostgreSQL:
    # JSON the database refuses makes it fail after the endpoint's row was updated.
    monkeypatch.setattr(ingest, "_change_json", lambda changes: "not json {")
    before = Endpoint.objects.get(pk=endpoint.pk)
    with pytest.raises(DatabaseError):
        report(endpoint, health_text(pilot, "1.407.418.0"), minute=1)
    after = Endpoint.objects.get(pk=endpoint.pk)
    assert after.definitions_version == before.definitions_version == "1.407.417.0"
    assert after.reports_received == 1
    assert HealthReport.objects.count() == 1 and EndpointChange.objects.count() == 1


def test_pruning_keeps_exactly_the_last_n_raw_reports_and_drops_old_changes(endpoint, pilot, settings):
    settings.FLEET_RAW_REPORTS_KEPT = 3
    now = timezone.now()
    for hour in range(6):
        report(endpoint, health_text(pilot, f"1.407.41{hour}.0"), at=now - timedelta(hours=6 - hour), minute=hour)
    newest = list(HealthReport.objects.order_by("-received_at").values_list("pk", flat=True)[:3])
    EndpointChange.objects.filter(pk=EndpointChange.objects.order_by("at").first().pk).update(
        at=now - timedelta(days=settings.FLEET_CHANGE_RETENTION_DAYS + 1)
    )
    assert chores.prune_reports(now=now) == 3
    assert sorted(HealthReport.objects.values_list("pk", flat=True)) == sorted(newest)
    assert chores.prune_reports(now=now) == 0
    assert chores.prune_changes(now=now) == 1
    assert EndpointChange.objects.count() == 5


def test_the_migration_turns_a_seeded_history_into_changes_and_keeps_the_last_n(endpoint, pilot, settings):
    from importlib import import_module

    settings.FLEET_RAW_REPORTS_KEPT = 2
    now = timezone.now()
    versions = ["1.407.410.0", "1.407.410.0", "1.407.411.0", "1.407.411.0", "1.407.411.0", "1.407.412.0"]
    for hour, version in enumerate(versions):
        report(endpoint, health_text(pilot, version), at=now - timedelta(hours=6 - hour), minute=hour)
    EndpointChange.objects.all().delete()  # as before issue 17: reports only

    import_module("fleet.migrations.0008_reports_to_changes").reports_to_changes(apps, None)

    changes = list(EndpointChange.objects.order_by("at"))
    assert [c.changes["definitions_version"] for c in changes] == [
        [None, "1.407.410.0"],
        ["1.407.410.0", "1.407.411.0"],
        ["1.407.411.0", "1.407.412.0"],
    ]
    assert HealthReport.objects.count() == 2
    assert [r.definitions_version for r in HealthReport.objects.order_by("received_at")] == versions[-2:]


def test_the_page_and_the_api_show_the_changes(endpoint, pilot, client, viewer, api):
    report(endpoint, health_text(pilot), minute=0)
    report(endpoint, health_text(pilot, "1.407.418.0"), minute=1)
    client.force_login(viewer)
    page = client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    assert "Change history" in page and 'data-field="definitions_version"' in page
    assert '1.407.417.0</span> → <span class="version">1.407.418.0' in page
    answer = api.as_user(viewer).get(f"/api/v1/endpoints/{endpoint.pk}/changes/")
    assert answer.status_code == 200, answer.content
    results = answer.json()["results"]
    assert results[0]["changes"]["definitions_version"] == ["1.407.417.0", "1.407.418.0"]
    assert len(results) == 2
    reports = api.as_user(viewer).get(f"/api/v1/endpoints/{endpoint.pk}/reports/").json()["results"]
    assert len(reports) == 2


def test_the_known_issue_fires_from_the_change_records_even_after_the_raw_reports_are_pruned(endpoint, pilot, settings):
    settings.FLEET_RAW_REPORTS_KEPT = 1
    now = timezone.now()
    for hour, switch in enumerate(('"enabled" [managed]', '"disabled"', '"enabled" [managed]')):
        report(endpoint, health_text(pilot, offline_definition_update=switch), at=now - timedelta(hours=3 - hour))
    chores.prune_reports(now=now)
    assert HealthReport.objects.count() == 1
    accepted = report(
        endpoint,
        health_text(pilot, definitions_update_fail_reason='"Network error"'),
        at=now,
        minute=5,
    )
    assert "reenable_known_issue" in {f.code for f in accepted.findings}
