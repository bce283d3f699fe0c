"""Issue 17: the beat chores at fleet scale, and the change records of states changed outside a report."""

from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.choices import Compliance
from fleet.models import Endpoint, EndpointChange, HealthReport
from fleet.services import chores, enrollment, ingest, rings
from tests.samples import health_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def pilot(make_group, make_package):
    group = make_group("pilot", 10)
    rings.approve_package(group, make_package(definition="1.407.417.0"))
    return group


def long_silent(group) -> timezone.datetime:
    return timezone.now() - timedelta(seconds=3 * group.update_interval + 60)


def compliance_changes(endpoint) -> list:
    return [
        c.changes["compliance"]
        for c in EndpointChange.objects.filter(endpoint=endpoint, changes__has_key="compliance").order_by("id")
    ]


# --- Silent endpoints --------------------------------------------------------------------------------------


def test_an_endpoint_turning_silent_gets_a_change_record_from_the_state_it_had(pilot, reporting_endpoint):
    quiet = reporting_endpoint(pilot, "quiet")
    reporting_endpoint(pilot, "talkative")
    _, secret = enrollment.create_enrollment_secret(pilot, "lab")
    never = enrollment.enroll(secret, "never", "never", "linux", "x86_64").endpoint
    Endpoint.objects.filter(pk=quiet.pk).update(last_seen=long_silent(pilot))
    Endpoint.objects.filter(pk=never.pk).update(enrolled_at=long_silent(pilot))
    now = timezone.now()

    assert chores.mark_silent(now=now) == 2

    assert compliance_changes(quiet) == [[None, Compliance.UP_TO_DATE], [Compliance.UP_TO_DATE, Compliance.SILENT]]
    assert compliance_changes(never) == [[Compliance.NEW, Compliance.SILENT]]
    assert EndpointChange.objects.filter(endpoint=quiet).order_by("-id").first().at == now
    assert Endpoint.objects.get(machine_id="talkative").compliance == Compliance.UP_TO_DATE
    assert chores.mark_silent() == 0  # silent already: no second record
    assert EndpointChange.objects.filter(changes__compliance__1=Compliance.SILENT).count() == 2


def test_silent_marking_goes_a_batch_of_rows_a_statement(pilot, make_endpoints):
    make_endpoints(pilot, 5, "1.407.417.0", seen=long_silent(pilot))
    with CaptureQueriesContext(connection) as queries:
        assert chores.mark_silent(batch=2) == 5
    batches = [q["sql"] for q in queries if "LIMIT 2" in q["sql"]]
    assert len(batches) == 3  # 2 + 2 + 1: the short batch ends the walk
    assert set(Endpoint.objects.values_list("compliance", flat=True)) == {Compliance.SILENT}
    assert EndpointChange.objects.count() == 5


def test_an_endpoint_that_reports_between_the_selection_and_the_update_is_left_alone(pilot, reporting_endpoint):
    """SQLite writes a batch in two steps; the report that gets in between has judged the endpoint: it keeps that."""
    if connection.vendor == "postgresql":
        pytest.skip("one statement on PostgreSQL: nothing gets in between (the row-lock test shows what it skips)")
    endpoint = reporting_endpoint(pilot, "late")
    Endpoint.objects.filter(pk=endpoint.pk).update(last_seen=long_silent(pilot))
    reported = []

    def report_after_the_selection(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if "LIMIT" in sql and not reported:
            reported.append(True)
            ingest.ingest_report(Endpoint.objects.get(pk=endpoint.pk), health_text(pilot).encode(), minute=1)
        return result

    with connection.execute_wrapper(report_after_the_selection):
        assert chores.mark_silent() == 0
    assert reported
    assert Endpoint.objects.get(pk=endpoint.pk).compliance == Compliance.UP_TO_DATE
    assert compliance_changes(endpoint) == [[None, Compliance.UP_TO_DATE]]


@pytest.mark.django_db(transaction=True)
def test_silent_marking_skips_a_row_a_report_holds_locked_instead_of_waiting_for_it(pilot, make_endpoints):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and SKIP LOCKED are PostgreSQL's")
    busy, idle = make_endpoints(pilot, 2, "1.407.417.0", seen=long_silent(pilot))
    other = connections.create_connection("default")  # another session, as a web process's
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            cursor.execute("SELECT id FROM fleet_endpoint WHERE id = %s FOR UPDATE", [busy.pk])
        with connection.cursor() as cursor:
            # Waiting would be an error here, not a hang: the test fails instead of blocking.
            cursor.execute("SET lock_timeout = '5s'")
        assert chores.mark_silent() == 1
        # The report that held the lock commits: the endpoint just reported, it is not silent.
        with other.cursor() as cursor:
            cursor.execute(
                "UPDATE fleet_endpoint SET last_seen = now(), reports_received = reports_received + 1 WHERE id = %s",
                [busy.pk],
            )
        other.commit()
    finally:
        other.close()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert chores.mark_silent() == 0
    assert Endpoint.objects.get(pk=idle.pk).compliance == Compliance.SILENT
    assert Endpoint.objects.get(pk=busy.pk).compliance != Compliance.SILENT
    assert list(EndpointChange.objects.values_list("endpoint_id", flat=True)) == [idle.pk]


# --- Re-judging after an approval change ----------------------------------------------------------------


def test_re_judging_writes_a_change_record_for_each_endpoint_whose_state_changes(
    make_group, make_package, reporting_endpoint, operator
):
    broad = make_group("broad")
    current = reporting_endpoint(broad, "current", "1.407.417.0")
    older = reporting_endpoint(broad, "older", "1.407.300.0")
    failing = reporting_endpoint(broad, "failing", "1.407.417.0", definitions_update_fail_reason='"Network error"')
    approved_at = timezone.now()

    rings.approve_package(broad, make_package(definition="1.407.417.0"), operator)

    assert compliance_changes(current)[-1] == [Compliance.UNSERVED, Compliance.UP_TO_DATE]
    assert compliance_changes(older)[-1] == [Compliance.UNSERVED, Compliance.BEHIND]
    assert compliance_changes(failing) == [[None, Compliance.FAILING]]  # its state did not change: no record
    assert EndpointChange.objects.filter(at__gte=approved_at).count() == 2


def test_re_judging_goes_in_batches_and_records_every_change(make_group, make_package, make_endpoints):
    from fleet.services import states

    broad = make_group("broad")
    make_endpoints(broad, 5, "1.407.417.0")
    Endpoint.objects.filter(group=broad).update(compliance=Compliance.UNSERVED)
    rings.approve_package(broad, make_package(definition="1.407.417.0"))
    Endpoint.objects.filter(group=broad).update(compliance=Compliance.UNSERVED)
    EndpointChange.objects.all().delete()
    candidates = Endpoint.objects.exclude(compliance=Compliance.UP_TO_DATE)

    with CaptureQueriesContext(connection) as queries:
        assert states.change_compliance(candidates, Compliance.UP_TO_DATE, batch=2) == 5

    assert len([q for q in queries if "LIMIT 2" in q["sql"]]) == 3
    assert sorted(c.changes["compliance"][1] for c in EndpointChange.objects.all()) == [Compliance.UP_TO_DATE] * 5


# --- Pruning raw reports -------------------------------------------------------------------------------------


def test_pruning_reads_only_the_endpoints_that_reported_since_the_last_runs(pilot, settings):
    settings.FLEET_RAW_REPORTS_KEPT = 2
    _, secret = enrollment.create_enrollment_secret(pilot, "lab")
    now = timezone.now()
    fresh, idle = (enrollment.enroll(secret, name, name, "linux", "x86_64").endpoint for name in ("fresh", "idle"))
    for hour in range(4):
        for endpoint, last in ((fresh, now - timedelta(minutes=30)), (idle, now - timedelta(days=3))):
            ingest.ingest_report(
                Endpoint.objects.get(pk=endpoint.pk),
                health_text(pilot).encode(),
                now=last - timedelta(hours=3 - hour),
                minute=hour,
            )

    assert chores.prune_reports(now=now) == 2
    assert HealthReport.objects.filter(endpoint=fresh).count() == 2
    assert HealthReport.objects.filter(endpoint=idle).count() == 4  # not reported for days: not read this run
    assert chores.prune_reports(now=now, reported_within=timedelta(days=4)) == 2
    newest = HealthReport.objects.filter(endpoint=idle).order_by("-received_at")
    assert [r.received_at for r in newest] == [now - timedelta(days=3), now - timedelta(days=3, hours=1)]


def test_reports_received_at_the_same_moment_are_told_apart_by_id_at_the_edge(pilot, settings):
    settings.FLEET_RAW_REPORTS_KEPT = 2
    _, secret = enrollment.create_enrollment_secret(pilot, "lab")
    endpoint = enrollment.enroll(secret, "twins", "twins", "linux", "x86_64").endpoint
    now = timezone.now()
    times = [now - timedelta(minutes=40), now - timedelta(minutes=20), now - timedelta(minutes=20), now]
    for minute, at in enumerate(times):
        ingest.ingest_report(Endpoint.objects.get(pk=endpoint.pk), health_text(pilot).encode(), now=at, minute=minute)
    ids = list(HealthReport.objects.order_by("id").values_list("id", flat=True))

    assert chores.prune_reports(now=now) == 2
    assert sorted(HealthReport.objects.values_list("id", flat=True)) == [ids[2], ids[3]]  # the later of the twins stays
