"""The fleet's tallies (issue 17): kept exact by fleet_endpoint's triggers whoever writes, read by the pages, and
checked from scratch by manage.py check_tallies."""

import importlib
import io
import random
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.core.management.color import no_style
from django.db import connection, connections, transaction
from django.utils import timezone

from fleet import tallies
from fleet.choices import Compliance
from fleet.filtersets import EndpointFilterSet
from fleet.management.commands.check_tallies import Command as CheckTallies
from fleet.models import TALLY_SHARDS, Endpoint, EndpointGroup, EndpointTally, FindingTally
from fleet.services import chores, enrollment, rings
from fleet.services import endpoints as bulk
from mirror.models import Mirror, Upstream

pytestmark = pytest.mark.django_db

MIGRATION = importlib.import_module("fleet.migrations.0010_tallies")


def exact() -> dict[int, dict[str, int]]:
    """Active endpoints per group and state, counted from the rows."""
    counts: dict[int, dict[str, int]] = {}
    for group_id, state in Endpoint.objects.filter(decommissioned_at__isnull=True).values_list(
        "group_id", "compliance"
    ):
        counts.setdefault(group_id, {})
        counts[group_id][state] = counts[group_id].get(state, 0) + 1
    return counts


def assert_exact():
    """The tallies say what the rows say, key by key (drift() recounts) and as the dashboard reads them."""
    found = tallies.drift()
    assert found.differences == []
    assert found.endpoints == Endpoint.objects.count()
    assert tallies.by_group_state() == exact()


def check(*args) -> tuple[int, str]:
    """manage.py check_tallies: (exit status, what it printed)."""
    out = io.StringIO()
    try:
        call_command("check_tallies", *args, stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue() + str(error)
    return 0, out.getvalue()


@pytest.fixture
def pilot(make_group):
    return make_group("pilot", 10)


@pytest.fixture
def broad(make_group):
    return make_group("broad", 20)


# --- Every writer keeps them exact ----------------------------------------------------------------------


def test_enrolling_counts_the_new_endpoint(pilot):
    secret = enrollment.create_enrollment_secret(pilot, "lab")[1]
    enrollment.enroll(secret, "machine-1", "web-1", "linux", "x86_64")
    enrollment.enroll(secret, "machine-2", "web-2", "linux", "arm64")
    assert tallies.by_group_state() == {pilot.pk: {Compliance.NEW: 2}}
    assert_exact()


def test_reports_move_the_endpoint_between_versions_states_and_findings(reporting_endpoint, pilot):
    reporting_endpoint(pilot, "web-1", "1.407.417.0")
    assert tallies.by_version_group() == {"1.407.417.0": {pilot.pk: 1}}
    assert tallies.by_group_state() == {pilot.pk: {Compliance.UNSERVED: 1}}

    endpoint = reporting_endpoint(pilot, "web-1", "1.407.418.0", definitions_update_fail_reason='"Network error"')
    assert endpoint.compliance == Compliance.FAILING and "update_failed" in endpoint.finding_codes
    assert tallies.by_version_group() == {"1.407.418.0": {pilot.pk: 1}}
    assert tallies.by_group_state() == {pilot.pk: {Compliance.FAILING: 1}}
    assert tallies.by_finding()["update_failed"] == 1
    assert_exact()

    reporting_endpoint(pilot, "web-1", "1.407.418.0")
    assert "update_failed" not in tallies.by_finding()
    assert_exact()


def test_an_approval_re_judges_the_rings_endpoints_in_one_update_and_the_tallies_follow(
    reporting_endpoint, pilot, make_package, operator
):
    reporting_endpoint(pilot, "current", "1.407.417.0")
    reporting_endpoint(pilot, "older", "1.407.300.0")
    rings.approve_package(pilot, make_package(definition="1.407.417.0"), operator)
    assert tallies.by_group_state() == {pilot.pk: {Compliance.UP_TO_DATE: 1, Compliance.BEHIND: 1}}
    assert_exact()


def test_silent_endpoints_marked_in_bulk_are_counted_silent(pilot, make_endpoints):
    long_ago = timezone.now() - timedelta(days=30)
    make_endpoints(pilot, 3, "1.407.417.0", seen=long_ago, prefix="gone")
    make_endpoints(pilot, 2, "1.407.417.0", prefix="here")
    assert chores.mark_silent() == 3
    assert tallies.by_group_state() == {pilot.pk: {Compliance.SILENT: 3, Compliance.NEW: 2}}
    assert_exact()


def test_a_bulk_move_and_a_bulk_decommission_are_counted(pilot, broad, make_endpoints, operator):
    moved = make_endpoints(pilot, 3, "1.407.417.0", prefix="moved")
    kept = make_endpoints(pilot, 2, "1.407.417.0", prefix="kept")
    bulk.apply_bulk("move", [e.pk for e in moved], operator, group=broad)
    assert tallies.by_group_state() == {pilot.pk: {Compliance.NEW: 2}, broad.pk: {Compliance.NEW: 3}}
    assert_exact()

    bulk.apply_bulk("decommission", [e.pk for e in kept], operator)
    assert tallies.by_group_state() == {broad.pk: {Compliance.NEW: 3}}
    assert tallies.by_group_state(active=False) == {pilot.pk: {Compliance.NEW: 2}}
    assert_exact()


def test_deleting_endpoints_and_then_their_group_leaves_nothing_counted(pilot, broad, make_endpoints, admin):
    doomed = make_endpoints(pilot, 3, "1.407.417.0")
    make_endpoints(broad, 1, "1.407.417.0")
    Endpoint.objects.filter(pk=doomed[0].pk).delete()
    assert tallies.by_group_state()[pilot.pk] == {Compliance.NEW: 2}
    for endpoint in doomed[1:]:
        enrollment.decommission_endpoint(endpoint, admin)
    rings.delete_group(pilot, admin)  # its decommissioned endpoints go with it
    assert not EndpointTally.objects.filter(group_id=pilot.pk).exists()
    assert tallies.by_group_state() == {broad.pk: {Compliance.NEW: 1}}
    assert_exact()


def test_finding_codes_count_once_per_endpoint_and_only_between_commas(pilot, make_endpoints):
    """What the list's filter (LIKE '%,code,%') matches: a code cut short at 300 characters is not one."""
    a, b, c, d = make_endpoints(pilot, 4, "1.407.417.0")
    Endpoint.objects.filter(pk=a.pk).update(finding_codes=",stale,url_drift,")
    Endpoint.objects.filter(pk=b.pk).update(finding_codes=",stale,stale,")
    Endpoint.objects.filter(pk=c.pk).update(finding_codes=",stale,update_fai")
    Endpoint.objects.filter(pk=d.pk).update(finding_codes='",odd\\code",')
    # A quote and a backslash (no code has them) cannot break the split either.
    assert tallies.by_finding() == {"stale": 3, "url_drift": 1, 'odd\\code"': 1}
    by_finding = tallies.by_finding()
    for code, n in by_finding.items():
        assert Endpoint.objects.filter(finding_codes__contains=f",{code},").count() == n
    assert_exact()
    Endpoint.objects.filter(pk__in=[a.pk, b.pk, c.pk, d.pk]).update(finding_codes="")
    assert tallies.by_finding() == {}
    assert_exact()


def test_many_endpoints_of_one_key_spread_over_the_shards(pilot, make_endpoints):
    make_endpoints(pilot, 3 * TALLY_SHARDS, "1.407.417.0")
    rows = EndpointTally.objects.filter(group=pilot)
    assert rows.count() == TALLY_SHARDS and {row.n for row in rows} == {3}
    assert tallies.by_group_state() == {pilot.pk: {Compliance.NEW: 3 * TALLY_SHARDS}}


def test_the_migration_counts_the_endpoints_that_were_there_before_it(pilot, broad, make_endpoints):
    make_endpoints(pilot, 5, "1.407.417.0")
    make_endpoints(broad, 2, "1.407.418.0")
    Endpoint.objects.filter(group=broad).update(finding_codes=",stale,", compliance=Compliance.STALE)
    EndpointTally.objects.all().delete()
    FindingTally.objects.all().delete()
    fill = MIGRATION.POSTGRESQL if connection.vendor == "postgresql" else MIGRATION.SQLITE
    with connection.cursor() as cursor:
        for sql in fill[-2:]:  # its two INSERT … SELECT, as frozen in the migration
            cursor.execute(sql)
    assert tallies.by_finding() == {"stale": 2}
    assert_exact()


def test_rows_no_endpoint_is_counted_in_are_pruned_and_come_back_when_needed(pilot, make_endpoints):
    endpoints = make_endpoints(pilot, 3, "1.407.417.0")
    Endpoint.objects.update(definitions_version="1.407.418.0", finding_codes=",stale,")
    Endpoint.objects.update(finding_codes="")
    assert EndpointTally.objects.filter(n=0).count() == 3 and FindingTally.objects.filter(n=0).count() == 3
    assert chores.prune_tallies() == 6
    assert not EndpointTally.objects.filter(n=0).exists() and not FindingTally.objects.exists()
    Endpoint.objects.filter(pk=endpoints[0].pk).update(definitions_version="1.407.417.0")
    assert tallies.by_version_group() == {"1.407.417.0": {pilot.pk: 1}, "1.407.418.0": {pilot.pk: 2}}
    assert_exact()


# --- The pages read them --------------------------------------------------------------------------------


FILTERS = [
    {},
    {"group": "pilot"},
    {"compliance": "stale"},
    {"group": "broad", "compliance": "new"},
    {"version": "1.407.418.0"},
    {"platform": "mac"},
    {"arch": "arm64", "group": "pilot"},
    {"finding": "stale"},
    {"finding": "stale", "group": "broad"},
    {"finding": "stale", "compliance": "new"},
    {"finding": "stale", "version": "1.407.418.0"},  # counted exactly
    {"finding": "ring_serves_nothing"},
    {"finding": "rolled_back_version", "compliance": "stale"},
    {"finding": "Stale"},  # counted exactly
    {"q": "pilot"},  # counted exactly
    {"decommissioned": "true"},
    {"decommissioned": "unknown", "group": "pilot"},
    {"group": "nowhere"},
]


@pytest.mark.parametrize("query", FILTERS, ids=[repr(f) for f in FILTERS])
def test_the_list_summary_from_tallies_is_the_exact_grouped_count(query, pilot, broad, make_endpoints):
    make_endpoints(pilot, 4, "1.407.417.0", prefix="pilot")
    make_endpoints(pilot, 2, "1.407.417.0", arch="arm64", prefix="pilot-arm")
    make_endpoints(broad, 3, "1.407.418.0", prefix="broad")
    make_endpoints(broad, 1, "", platform="mac", prefix="mac")
    Endpoint.objects.filter(hostname__startswith="broad-0").update(finding_codes=",stale,", compliance=Compliance.STALE)
    Endpoint.objects.filter(hostname__startswith="broad-1").update(finding_codes=",stale,")
    Endpoint.objects.filter(hostname__startswith="pilot-0").update(decommissioned_at=timezone.now())
    Endpoint.objects.filter(hostname__startswith="pilot-1").update(compliance=Compliance.UNSERVED)
    data = {"decommissioned": "false", **query}
    filterset = EndpointFilterSet(data, queryset=Endpoint.objects.all())
    assert filterset.is_valid()
    expected = {}
    for state in filterset.qs.values_list("compliance", flat=True):
        expected[state] = expected.get(state, 0) + 1
    summary = tallies.list_summary(filterset.form.cleaned_data)
    exactly = "q" in query or query.get("finding") == "Stale" or "version" in query and "finding" in query
    assert summary is None if exactly else summary == expected


def test_the_endpoint_list_shows_the_tallied_counts(client, viewer, pilot, make_endpoints):
    make_endpoints(pilot, 3, "1.407.417.0")
    client.force_login(viewer)
    response = client.get("/groups/endpoints/?group=pilot")
    assert [(row["value"], row["count"]) for row in response.context["summary"]] == [(Compliance.NEW, 3)]
    # A drifted tally shows: the list reads the tallies, not the rows.
    EndpointTally.objects.filter(group=pilot).update(n=7)
    response = client.get("/groups/endpoints/?group=pilot")
    assert response.context["total"] == 7 * EndpointTally.objects.filter(group=pilot).count()


def test_the_dashboard_metrics_and_snapshots_read_the_tallies(client, viewer, pilot, make_endpoints, settings):
    make_endpoints(pilot, 2, "1.407.417.0")
    EndpointTally.objects.filter(group=pilot).update(n=5)  # made wrong on purpose: whoever shows 10 read them
    client.force_login(viewer)
    assert client.get("/").context["compliance"]["total"] == 10
    chores.snapshot_compliance()
    assert pilot.snapshots.get().total == 10
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "a-long-random-metrics-token-for-tests", []
    metrics = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").content.decode()
    assert 'defender_portal_endpoints{compliance="new",group="pilot"} 10.0' in metrics


# --- manage.py check_tallies --------------------------------------------------------------------------


def test_the_check_says_the_tallies_match(pilot, make_endpoints):
    make_endpoints(pilot, 3, "1.407.417.0")
    assert check() == (0, "tallies match: 3 endpoints\n")


def test_the_check_reports_a_drift_and_repair_rebuilds_the_tallies(pilot, make_endpoints):
    make_endpoints(pilot, 3, "1.407.417.0")
    Endpoint.objects.filter(pk=make_endpoints(pilot, 1, "1.407.418.0")[0].pk).update(finding_codes=",stale,")
    with connection.cursor() as cursor:  # around the triggers, as a hand-made UPDATE would
        cursor.execute("UPDATE fleet_endpointtally SET n = n + 2 WHERE definitions_version = '1.407.417.0'")
        cursor.execute("DELETE FROM fleet_findingtally")
    status, output = check()
    assert status == 1
    assert f"endpoints: group_id={pilot.pk} platform='linux' arch='x86_64' definitions_version='1.407.417.0'" in output
    assert "tally 9, actual 3" in output
    assert f"findings: group_id={pilot.pk} code='stale' compliance='new' active=True: tally 0, actual 1" in output
    assert "2 tally key(s) differ from the endpoints; --repair rebuilds them" in output
    assert check()[0] == 1  # a check alone changes nothing

    status, output = check("--repair")
    assert status == 1 and "tallies rebuilt from 4 endpoints" in output
    assert check() == (0, "tallies match: 4 endpoints\n")
    assert EndpointTally.objects.filter(group=pilot).exclude(n=0).count() == 4  # by shard again


def test_the_migrations_leave_every_tally_trigger_in_place(db):
    """SQLite drops a table's triggers when a migration rebuilds the table: a later migration of Endpoint that
    does must install them again."""
    assert tallies.missing_triggers() == []


def test_the_check_says_when_a_trigger_is_missing(pilot):
    name = tallies.TRIGGERS[connection.vendor][0]
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {name}" + (" ON fleet_endpoint" if connection.vendor == "postgresql" else ""))
    status, output = check()
    assert status == 1 and f"tally trigger(s) missing: {name}" in output


def test_a_bad_argument_is_one_line_and_a_non_zero_exit(capsys):
    with pytest.raises(SystemExit) as exited:
        CheckTallies().run_from_argv(["manage.py", "check_tallies", "--repiar"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == "check_tallies: unrecognized arguments: --repiar (see --help)\n"


# --- Flushes and concurrent writers -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_flush_empties_the_tallies_in_any_table_order(store, make_endpoints):
    """Django's flush (TransactionTestCase, manage.py flush) empties every table; on SQLite one DELETE per table,
    in the order of a set. Whatever it is, no tally row survives, and none points at a deleted group."""
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    orders = [
        ["fleet_endpointtally", "fleet_findingtally", "fleet_endpoint", "fleet_endpointgroup"],
        ["fleet_endpointgroup", "fleet_endpoint"],
        ["fleet_endpoint", "fleet_endpointgroup", "fleet_endpointtally"],
    ]
    for first in orders + [[] for _ in range(3)]:
        upstream = Upstream.objects.create(name="microsoft")
        mirror = Mirror.objects.create(name="main", slug="main", upstream=upstream, platforms=["linux"])
        group = EndpointGroup.objects.create(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"])
        make_endpoints(group, 3, "1.407.417.0")
        Endpoint.objects.update(finding_codes=",stale,")
        order = first + random.sample([t for t in tables if t not in first], len(tables) - len(first))
        statements = connection.ops.sql_flush(no_style(), order)
        if connection.vendor == "sqlite":  # one DELETE per table: run them in this order
            statements = sorted(statements, key=lambda sql: next(i for i, t in enumerate(order) if f'"{t}"' in sql))
        connection.ops.execute_sql_flush(statements)
        assert not EndpointTally.objects.exists() and not FindingTally.objects.exists()
        assert not EndpointGroup.objects.exists()


@pytest.mark.skipif("connection.vendor != 'postgresql'", reason="row locks and concurrent writers: PostgreSQL only")
@pytest.mark.django_db(transaction=True)
def test_writers_changing_endpoints_of_the_same_keys_at_once_leave_no_drift(mirror, make_group, make_endpoints):
    pilot, broad = make_group("pilot"), make_group("broad", 20)
    endpoints = make_endpoints(pilot, 8 * TALLY_SHARDS, "1.407.417.0")
    ids = [e.pk for e in endpoints]
    shuffled = random.Random(1).sample(ids, len(ids))  # each writer's share spans every shard
    states = [Compliance.UP_TO_DATE, Compliance.BEHIND, Compliance.STALE]
    barrier = threading.Barrier(8)
    errors = []

    def writer(n):
        rng = random.Random(n)
        try:
            barrier.wait()
            for _ in range(40):
                pk = rng.choice(ids)
                with transaction.atomic():
                    Endpoint.objects.filter(pk=pk).update(
                        compliance=rng.choice(states),
                        definitions_version=rng.choice(["1.407.417.0", "1.407.418.0"]),
                        finding_codes=rng.choice(["", ",stale,", ",stale,url_drift,"]),
                        group=rng.choice([pilot, broad]),
                    )
            barrier.wait()
            # A rollout: everything moves to one key at once, from every writer.
            Endpoint.objects.filter(pk__in=shuffled[n::8]).update(
                compliance=Compliance.UP_TO_DATE, definitions_version="1.407.419.0"
            )
        except Exception as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert tallies.by_version_group() == {"1.407.419.0": dict(_per_group(ids))}
    assert_exact()


def _per_group(ids):
    counts = {}
    for group_id in Endpoint.objects.filter(pk__in=ids).values_list("group_id", flat=True):
        counts[group_id] = counts.get(group_id, 0) + 1
    return counts.items()
