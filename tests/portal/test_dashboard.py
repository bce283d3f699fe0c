"""The dashboard: fleet compliance, versions, trend, mirror syncs and diagnostics, at a bounded query cost."""

import json
from datetime import timedelta
from html import unescape

import pytest
from django.contrib.staticfiles import finders
from django.utils import timezone

from fleet.choices import Compliance, FindingCode
from fleet.models import ComplianceSnapshot, Endpoint
from mirror.choices import SyncState, SyncTrigger
from mirror.models import Mirror, SyncRun, Upstream
from portal.views import TOP_VERSIONS
from tests.web import external_urls

pytestmark = pytest.mark.django_db


def page(client, user, path="/"):
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200
    return response, unescape(response.content.decode())


def data_of(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="dashboard-data" type="application/json">') + len(
        '<script id="dashboard-data" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


@pytest.fixture
def fleet(make_group, make_endpoints, make_package):
    """Two rings serving 1.407.500.0: pilot (3 up to date, 1 failing with update_failed) and broad (2 behind with
    url_drift + stale)."""
    from fleet.services.rings import approve_package

    pilot, broad = make_group("pilot", ring_order=10), make_group("broad", ring_order=20)
    package = make_package(definition="1.407.500.0")
    approve_package(pilot, package)
    approve_package(broad, package)
    make_endpoints(pilot, 3, "1.407.500.0")
    failing = make_endpoints(pilot, 1, "1.407.499.0")
    behind = make_endpoints(broad, 2, "1.407.499.0")
    Endpoint.objects.filter(group=pilot).update(compliance=Compliance.UP_TO_DATE)
    Endpoint.objects.filter(pk=failing[0].pk).update(compliance=Compliance.FAILING, finding_codes=",update_failed,")
    Endpoint.objects.filter(pk__in=[e.pk for e in behind]).update(
        compliance=Compliance.BEHIND, finding_codes=",url_drift,stale,"
    )
    # Decommissioned machines count nowhere.
    gone = make_endpoints(broad, 5, "1.407.1.0")
    Endpoint.objects.filter(pk__in=[e.pk for e in gone]).update(
        decommissioned_at=timezone.now(), compliance=Compliance.FAILING, finding_codes=",update_failed,"
    )
    return pilot, broad


# --- Fleet compliance ----------------------------------------------------------------------------


def test_compliance_counts_and_percentages_link_to_the_filtered_list(client, viewer, fleet):
    response, html = page(client, viewer)
    compliance = response.context["compliance"]
    assert compliance["total"] == 6 and compliance["reported"] == 6
    overall = {
        s["value"]: cell["n"] for s, cell in zip(compliance["states"], compliance["overall"]["cells"], strict=True)
    }
    assert overall == {
        "failing": 1,
        "misconfigured": 0,
        "rolled_back": 0,
        "stale": 0,
        "behind": 2,
        "unserved": 0,
        "up_to_date": 3,
        "silent": 0,
        "new": 0,
    }
    pilot = next(row for row in compliance["groups"] if row["group"].slug == "pilot")
    cells = {s["value"]: cell for s, cell in zip(compliance["states"], pilot["cells"], strict=True)}
    assert (cells["up_to_date"]["n"], cells["up_to_date"]["percent"]) == (3, 75.0)
    assert (
        '<a href="/groups/endpoints/?group=pilot&compliance=up_to_date">3</a> <span class="muted">75.0%</span>' in html
    )
    assert '<a href="/groups/endpoints/?group=broad&compliance=behind">2</a>' in html
    assert '<a href="/groups/endpoints/?compliance=behind">2</a> <span class="muted">33.3%</span>' in html
    # The links lead to the endpoint list, which accepts the filters.
    listed = client.get("/groups/endpoints/?group=pilot&compliance=up_to_date")
    assert listed.status_code == 200


def test_a_ring_that_serves_nothing_is_named_in_a_banner_and_its_endpoints_are_not_up_to_date(
    client, viewer, make_group, make_package, reporting_endpoint
):
    from fleet.services.rings import approve_package

    broad = make_group("broad", ring_order=20)
    for name in ("web-1", "web-2"):
        reporting_endpoint(broad, name, "1.407.417.0")  # healthy reports, but broad's URL answers 404
    response, html = page(client, viewer)
    compliance = response.context["compliance"]
    overall = {s["value"]: c["n"] for s, c in zip(compliance["states"], compliance["overall"]["cells"], strict=True)}
    assert (overall["unserved"], overall["up_to_date"]) == (2, 0)
    banner = html[html.index('id="unserved-rings"') : html.index("</div>", html.index('id="unserved-rings"'))]
    assert "A ring serves nothing for some of its targets" in banner
    assert '<a href="/groups/broad/#target-linux-x86_64"><code>linux/production/arch_x86_64</code></a>' in banner
    assert '<a href="/groups/endpoints/?group=broad&compliance=unserved">2 endpoints unserved</a>' in banner
    assert client.get("/groups/endpoints/?group=broad&compliance=unserved").context["total"] == 2

    approve_package(broad, make_package(definition="1.407.417.0"))
    response, html = page(client, viewer)
    compliance = response.context["compliance"]
    overall = {s["value"]: c["n"] for s, c in zip(compliance["states"], compliance["overall"]["cells"], strict=True)}
    assert (overall["unserved"], overall["up_to_date"]) == (0, 2)
    banner = html[html.index('id="unserved-rings"') : html.index("</div>", html.index('id="unserved-rings"'))]
    assert "arch_x86_64" not in banner and "<code>linux/production/arch_arm64</code>" in banner  # no arm64 package
    assert "unserved</a>" not in banner  # none of its endpoints is on arm64


def test_groups_without_endpoints_are_listed_with_zero(client, viewer, fleet, make_group):
    make_group("empty", ring_order=30)
    response, _ = page(client, viewer)
    empty = next(row for row in response.context["compliance"]["groups"] if row["group"].slug == "empty")
    assert empty["total"] == 0 and all(cell["n"] == 0 and cell["percent"] == 0 for cell in empty["cells"])


# --- Versions ------------------------------------------------------------------------------------


def test_version_distribution_per_group(client, viewer, fleet):
    response, html = page(client, viewer)
    versions = response.context["versions"]
    assert [g.slug for g in versions["groups"]] == ["pilot", "broad"]
    assert [(row["version"], row["total"], [c["n"] for c in row["cells"]]) for row in versions["rows"]] == [
        ("1.407.499.0", 3, [1, 2]),
        ("1.407.500.0", 3, [3, 0]),
    ]
    assert "1.407.1.0" not in html  # decommissioned only
    assert '<a href="/groups/endpoints/?group=broad&version=1.407.499.0">2</a>' in html
    data = data_of(response)
    assert data["versions"] == {
        "labels": ["1.407.499.0", "1.407.500.0"],
        "series": [{"label": "Pilot", "data": [1, 3]}, {"label": "Broad", "data": [2, 0]}],
    }


def test_only_the_top_versions_are_listed(client, viewer, make_group, make_endpoints):
    group = make_group("pilot")
    for i in range(TOP_VERSIONS + 3):
        make_endpoints(group, 1 + i, f"1.407.{i}.0")
    response, html = page(client, viewer)
    versions = response.context["versions"]
    assert len(versions["rows"]) == TOP_VERSIONS
    assert versions["rows"][0]["version"] == f"1.407.{TOP_VERSIONS + 2}.0"
    assert (versions["other_versions"], versions["other_endpoints"]) == (3, 1 + 2 + 3)
    assert "And 6 endpoints on 3 other versions." in html


# --- Trend ---------------------------------------------------------------------------------------


def test_trend_sums_the_last_snapshot_of_each_day_over_groups(client, viewer, fleet):
    pilot, broad = fleet
    now = timezone.now()
    # Yesterday's snapshots at fixed hours of that day (days are the portal's local days): "now - 1 day - 30 min"
    # fell on the day before when the test ran in the first half hour after midnight.
    yesterday = timezone.localtime(now).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=1)
    ComplianceSnapshot.objects.create(group=pilot, taken_at=yesterday, counts={"behind": 9}, total=9)
    ComplianceSnapshot.objects.create(
        group=pilot, taken_at=yesterday + timedelta(minutes=30), counts={"up_to_date": 4}, total=4
    )
    ComplianceSnapshot.objects.create(
        group=broad, taken_at=yesterday + timedelta(minutes=30), counts={"up_to_date": 1, "failing": 2}, total=3
    )
    ComplianceSnapshot.objects.create(group=pilot, taken_at=now, counts={"up_to_date": 3, "failing": 1}, total=4)
    ComplianceSnapshot.objects.create(
        group=pilot, taken_at=now - timedelta(days=30), counts={"stale": 99}, total=99
    )  # too old
    response, _ = page(client, viewer)
    rows = response.context["trend"]["rows"]
    assert [row["total"] for row in rows] == [7, 4]
    assert dict(zip(Compliance.values, rows[0]["counts"], strict=True)) == {
        **dict.fromkeys(Compliance.values, 0),
        "up_to_date": 5,
        "failing": 2,
    }
    series = data_of(response)["trend"]["series"]
    assert series["up_to_date"] == [5, 3] and series["failing"] == [2, 1] and series["stale"] == [0, 0]

    response, html = page(client, viewer, "/?group=broad")
    assert response.context["trend"]["selected"] == broad
    assert [row["total"] for row in response.context["trend"]["rows"]] == [3]
    assert '<option value="broad" selected>' in html


def test_an_unknown_group_shows_the_whole_fleet(client, viewer, fleet):
    response, _ = page(client, viewer, "/?group=nope")
    assert response.context["trend"]["selected"] is None


# --- Mirrors -------------------------------------------------------------------------------------


def test_every_mirror_shows_its_last_run_next_run_and_failures(client, viewer, mirror):
    now = timezone.now()
    other = Mirror.objects.create(
        name="second",
        slug="second",
        upstream=Upstream.objects.create(name="up2"),
        platforms=["linux"],
        channels=["production"],
        archs=["x86_64"],
        sync_interval_minutes=60,
    )
    SyncRun.objects.create(
        mirror=other,
        trigger=SyncTrigger.SCHEDULE,
        state=SyncState.SUCCEEDED,
        created=now - timedelta(hours=3),
        started_at=now - timedelta(hours=3),
        finished_at=now - timedelta(hours=3),
    )
    for hours in (2, 1):
        last = SyncRun.objects.create(
            mirror=other,
            trigger=SyncTrigger.SCHEDULE,
            state=SyncState.FAILED,
            created=now - timedelta(hours=hours),
            started_at=now - timedelta(hours=hours),
            finished_at=now - timedelta(hours=hours),
            error="linux/production/x86_64: connection refused",
        )
    response, html = page(client, viewer)
    rows = {row["mirror"].slug: row for row in response.context["mirrors"]}
    assert rows["main"]["last"] is None and rows["main"]["next_words"] == "not scheduled"  # sync_interval_minutes=0
    assert "never synced" in html
    assert rows["second"]["last"] == last and rows["second"]["failures"] == 2
    assert rows["second"]["next_at"] == last.started_at + timedelta(minutes=60)
    assert f'href="/mirror/runs/{last.pk}/"' in html and 'href="/mirror/second/"' in html
    assert "connection refused" in html


def test_no_mirror_invites_an_admin_to_add_one(client, admin, viewer):
    _, html = page(client, admin)
    assert 'No mirror yet — <a href="/mirror/new/">add one</a>' in html
    _, html = page(client, viewer)
    assert "No mirror yet — ask an admin to add one" in html and 'href="/mirror/new/"' not in html


# --- Diagnostics and empty states ----------------------------------------------------------------


def test_findings_are_counted_most_common_first(client, viewer, fleet):
    response, html = page(client, viewer)
    assert [(row["code"], row["n"]) for row in response.context["findings"]] == [
        ("url_drift", 2),
        ("stale", 2),
        ("update_failed", 1),
    ]
    assert '<a href="/groups/endpoints/?finding=url_drift">2</a>' in html
    assert "settings_drift" in FindingCode.values


def test_an_empty_fleet_says_what_to_do_next(client, viewer, mirror):
    _, html = page(client, viewer)
    assert "No endpoint has enrolled yet: follow the setup steps above" in html
    assert "create an enrollment secret on a" not in html  # the checklist says what comes first (issue 15)
    assert "No compliance snapshot in the last 14 days" in html
    assert 'id="chart-compliance"' not in html and 'id="chart-versions"' not in html and 'id="chart-trend"' not in html


def test_enrolled_endpoints_without_a_report_are_waiting(client, viewer, make_group, make_endpoints):
    make_endpoints(make_group("pilot"), 2, "")
    response, html = page(client, viewer)
    assert response.context["compliance"]["reported"] == 0
    assert "No endpoint has reported yet: 2 enrolled" in html
    assert "No endpoint has reported a definitions version yet." in html


# --- Charts, assets and cost ---------------------------------------------------------------------


def test_the_charts_are_vendored_and_load_nothing_from_outside(client, admin, fleet):
    ComplianceSnapshot.objects.create(group=fleet[0], counts={"up_to_date": 3}, total=3)
    _, html = page(client, admin)
    assert external_urls(html) == []
    assert '<script src="/static/vendor/chart.umd-4.6.1.min.js" defer></script>' in html
    assert '<script src="/static/portal/dashboard.js" defer></script>' in html
    for canvas in ("chart-compliance", "chart-versions", "chart-trend"):
        assert f'id="{canvas}"' in html
    assert " on" + "click=" not in html.lower()
    assert finders.find("vendor/chart.umd-4.6.1.min.js") and finders.find("vendor/chart.js-LICENSE.md")
    script = open(finders.find("portal/dashboard.js")).read()
    assert "http" not in script and 'getElementById("dashboard-data")' in script


@pytest.mark.parametrize("size", [5, 200])
def test_the_query_count_does_not_grow_with_the_fleet(
    client, admin, make_group, make_endpoints, mirror, size, django_assert_max_num_queries
):
    groups = [make_group(f"ring{i}", ring_order=i) for i in range(3)]
    for i in range(size):
        group = groups[i % 3]
        make_endpoints(group, 1, f"1.407.{i % 15}.0", prefix=f"ep{i}")
    states = Compliance.values
    for i, endpoint in enumerate(Endpoint.objects.all()):
        Endpoint.objects.filter(pk=endpoint.pk).update(
            compliance=states[i % len(states)], finding_codes=f",{FindingCode.values[i % len(FindingCode.values)]},"
        )
    for day in range(14):
        for group in groups:
            ComplianceSnapshot.objects.create(
                group=group, taken_at=timezone.now() - timedelta(days=day), counts={"up_to_date": size}, total=size
            )
    SyncRun.objects.create(
        mirror=mirror, trigger=SyncTrigger.SCHEDULE, state=SyncState.FAILED, started_at=timezone.now()
    )
    client.force_login(admin)
    client.get("/")
    # session, user, the session's row (core.sessions), role + 9, + 2 for the rings that serve nothing, + 1 for the
    # first-run checklist (all its steps in one query); the same at 5 and at 200 endpoints
    with django_assert_max_num_queries(16):
        response = client.get("/")
    assert response.status_code == 200
    assert response.context["compliance"]["total"] == size
