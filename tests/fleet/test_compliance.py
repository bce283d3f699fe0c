"""Honest compliance: endpoints are judged against what their ring serves now (fleet.compliance), at each report
and again at once, set-based, whenever the ring's approval changes."""

import time
from datetime import timedelta

from django.utils import timezone

from fleet.choices import Compliance, FindingCode, RolloutMode
from fleet.models import Endpoint
from fleet.services import enrollment, rings

TARGET = ("linux", "production", "x86_64")


def states(group) -> dict[str, str]:
    return dict(Endpoint.objects.filter(group=group).values_list("hostname", "compliance"))


def test_an_endpoint_whose_ring_serves_nothing_is_unserved_not_up_to_date(
    reporting_endpoint, make_group, api, viewer, client
):
    broad = make_group("broad")
    endpoint = reporting_endpoint(broad, "web-1")
    assert endpoint.compliance == Compliance.UNSERVED
    listed = api.as_user(viewer).get("/api/v1/endpoints/?compliance=up_to_date").json()["results"]
    assert listed == []
    assert api.as_user(viewer).get(f"/api/v1/endpoints/{endpoint.pk}/").json()["compliance"] == "unserved"
    client.force_login(viewer)
    page = client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    assert "Its ring serves no package" in page and "linux/production/arch_x86_64" in page
    assert "arch_x86_64/updates.zip answers 404" in page


def test_an_approval_change_re_judges_the_rings_endpoints_at_once_without_new_reports(
    reporting_endpoint, make_group, make_package, operator
):
    broad, other = make_group("broad"), make_group("other", 20)
    reporting_endpoint(broad, "current", "1.407.417.0")
    reporting_endpoint(broad, "older", "1.407.300.0")
    reporting_endpoint(broad, "failing", "1.407.417.0", definitions_update_fail_reason='"Network error"')
    reporting_endpoint(broad, "stale", "1.407.417.0", definitions_status='"outdated"')
    reporting_endpoint(other, "elsewhere", "1.407.417.0")
    assert states(broad) == {
        "current": Compliance.UNSERVED,
        "older": Compliance.UNSERVED,
        "failing": Compliance.FAILING,
        "stale": Compliance.STALE,
    }

    rings.approve_package(broad, make_package(definition="1.407.417.0"), operator)
    assert states(broad) == {
        "current": Compliance.UP_TO_DATE,
        "older": Compliance.BEHIND,
        "failing": Compliance.FAILING,
        "stale": Compliance.STALE,
    }
    assert states(other) == {"elsewhere": Compliance.UNSERVED}  # another ring's endpoints are left alone

    # The same rule as a report's: reporting again changes nothing.
    before = states(broad)
    reporting_endpoint(broad, "current", "1.407.417.0")
    reporting_endpoint(broad, "older", "1.407.300.0")
    assert states(broad) == before


def test_re_judging_is_two_statements_and_the_ring_lookups_whatever_the_number_of_endpoints(
    make_group, make_package, make_endpoints, django_assert_num_queries
):
    broad = make_group("broad")
    for version in ("1.407.300.0", "1.407.417.0", "1.407.500.0"):
        make_endpoints(broad, 300, version)
    Endpoint.objects.filter(group=broad).update(compliance=Compliance.UNSERVED)  # as judged when reported
    rings.approve_package(broad, make_package(definition="1.407.417.0"))
    # What it serves (approval row, its history), the distinct versions run, one UPDATE.
    with django_assert_num_queries(4):
        assert rings.rejudge_endpoints(broad, "linux", "x86_64") == 0  # already done by the approval
    counts = dict(
        Endpoint.objects.filter(group=broad).values_list("definitions_version", "compliance").distinct().order_by()
    )
    assert counts == {
        "1.407.300.0": Compliance.BEHIND,
        "1.407.417.0": Compliance.UP_TO_DATE,
        "1.407.500.0": Compliance.UP_TO_DATE,
    }


def test_an_endpoint_on_a_version_its_ring_rolled_back_is_rolled_back(
    reporting_endpoint, make_group, make_package, operator, client, viewer
):
    pilot = make_group("pilot")
    good, bad = make_package(definition="1.407.500.0"), make_package(definition="1.407.501.0")
    rings.approve_package(pilot, good, operator)
    rings.approve_package(pilot, bad, operator)
    on_bad = reporting_endpoint(pilot, "on-bad", "1.407.501.0")
    reporting_endpoint(pilot, "on-good", "1.407.500.0")
    assert states(pilot) == {"on-bad": Compliance.UP_TO_DATE, "on-good": Compliance.BEHIND}

    rings.rollback(pilot, TARGET, operator)
    assert states(pilot) == {"on-bad": Compliance.ROLLED_BACK, "on-good": Compliance.UP_TO_DATE}
    # Worse than stale: a version pulled back as bad is the first thing to fix.
    assert (
        reporting_endpoint(pilot, "on-bad", "1.407.501.0", definitions_status='"outdated"').compliance
        == Compliance.ROLLED_BACK
    )
    assert (
        reporting_endpoint(pilot, "on-bad", "1.407.501.0").compliance == Compliance.ROLLED_BACK
    )  # newer, but pulled back
    client.force_login(viewer)
    page = client.get(f"/groups/endpoints/{on_bad.pk}/").content.decode()
    assert "It runs a version its ring rolled back" in page and "it serves 1.407.500.0 instead" in page

    rings.approve_package(pilot, bad, operator)  # approved again by hand: no longer rolled back
    assert states(pilot)["on-bad"] == Compliance.UP_TO_DATE


def test_the_health_gate_counts_only_endpoints_up_to_date_by_the_same_rule(
    mirror, make_group, make_package, make_endpoints
):
    pilot = make_group("pilot", 10)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=90)
    good, bad = make_package(definition="1.407.500.0"), make_package(definition="1.407.501.0")
    since = timezone.now() - timedelta(hours=1)
    # pilot serves nothing: whatever its endpoints run, they show nothing about a version.
    make_endpoints(pilot, 10, "1.407.500.0")
    gate = rings.health_gate(broad, pilot, TARGET, good, since)
    assert not gate.holds and gate.reason == "pilot serves nothing for linux/x86_64: its endpoints cannot show anything"

    rings.approve_package(pilot, good)
    rings.approve_package(pilot, bad)
    rings.rollback(pilot, TARGET)  # back to 1.407.500.0; 1.407.501.0 was pulled
    make_endpoints(pilot, 90, "1.407.501.0")  # newer than good, but on the rolled-back version
    gate = rings.health_gate(broad, pilot, TARGET, good, since)
    assert not gate.holds and gate.reason == "pilot: 10 of 100 endpoints on 1.407.500.0 (10 % < 90 %)"


def test_a_group_that_stops_serving_a_platform_leaves_its_endpoints_there_unserved(
    reporting_endpoint, make_group, make_package, operator
):
    lab = make_group("lab", platforms=("linux", "mac"))
    rings.approve_package(lab, make_package(definition="1.407.417.0"), operator)
    reporting_endpoint(lab, "web-1", "1.407.417.0")
    assert states(lab) == {"web-1": Compliance.UP_TO_DATE}
    lab.platforms = ["mac"]
    rings.save_group(lab)
    assert states(lab) == {"web-1": Compliance.UNSERVED}


def test_the_ring_findings_say_what_is_wrong_and_how_to_fix_it(reporting_endpoint, make_group):
    broad = make_group("broad")
    endpoint = reporting_endpoint(broad, "web-1")
    [finding] = rings.ring_findings(Endpoint.objects.select_related("group__mirror").get(pk=endpoint.pk))
    assert finding.code == FindingCode.RING_SERVES_NOTHING and finding.severity == "critical"
    assert "approve a package for linux/production/arch_x86_64" in finding.fix
    assert finding.code not in endpoint.finding_codes  # not stored: it follows the ring, not the report


def test_a_report_judged_against_another_process_s_stale_cache_is_corrected_by_the_follow_up(
    reporting_endpoint, make_group, make_package, django_capture_on_commit_callbacks
):
    from fleet import tasks

    broad = make_group("broad")
    reporting_endpoint(broad, "web-1", "1.407.417.0")
    before = rings.served(broad, "linux", "x86_64")  # what a web process caches: nothing served
    with django_capture_on_commit_callbacks() as callbacks:
        rings.approve_package(broad, make_package(definition="1.407.417.0"))
    assert states(broad) == {"web-1": Compliance.UP_TO_DATE}
    # Another web process still holds the old entry for a few seconds and judges a report with it.
    rings._SERVED[(broad.pk, "linux", "x86_64")] = (before, time.monotonic() + rings.SERVED_TTL)
    assert reporting_endpoint(broad, "web-1", "1.407.417.0").compliance == Compliance.UNSERVED
    [follow_up] = [c for c in callbacks if getattr(c, "func", None) is rings._follow_up]
    assert follow_up.args == (broad.pk, "linux", "x86_64")
    rings._SERVED.clear()  # the worker's own process: its cache expired
    assert tasks.rejudge_endpoints.apply(args=follow_up.args).get() == 1
    assert states(broad) == {"web-1": Compliance.UP_TO_DATE}


def test_the_group_pages_say_when_a_ring_serves_nothing(make_group, make_package, client, viewer):
    broad = make_group("broad")
    rings.approve_package(broad, make_package(definition="1.407.417.0"))  # x86_64 only; arm64 serves nothing
    client.force_login(viewer)
    listed = client.get("/groups/").content.decode()
    assert listed.count(">serves nothing</span>") == 1 and ">1.407.417.0</strong>" in listed
    page = client.get("/groups/broad/").content.decode()
    assert page.count("nothing approved: the group's URL answers 404") == 1
    assert "its endpoints on linux/production/arch_arm64 count as not up to date (unserved)" in page


def test_a_moved_endpoint_is_judged_at_once_against_what_its_new_ring_serves(
    reporting_endpoint, make_group, make_package, operator
):
    served, empty = make_group("served"), make_group("empty", 20)
    rings.approve_package(served, make_package(definition="1.407.417.0"), operator)
    endpoint = reporting_endpoint(served, "web-1", "1.407.417.0")
    assert endpoint.compliance == Compliance.UP_TO_DATE

    enrollment.move_endpoint(endpoint, empty, operator)
    endpoint.refresh_from_db()
    assert endpoint.compliance == Compliance.UNSERVED  # not "up to date" until its next report

    enrollment.move_endpoint(endpoint, served, operator)
    endpoint.refresh_from_db()
    assert endpoint.compliance == Compliance.UP_TO_DATE


def test_the_ring_findings_filter_lists_the_endpoints_in_that_state(
    reporting_endpoint, make_group, make_package, api, viewer, operator
):
    served, empty = make_group("served"), make_group("empty", 20)
    rings.approve_package(served, make_package(definition="1.407.400.0"), operator)
    rings.approve_package(served, make_package(definition="1.407.417.0"), operator)
    reporting_endpoint(served, "fine", "1.407.417.0")
    reporting_endpoint(empty, "unserved", "1.407.417.0")

    def listed(query):
        return [e["hostname"] for e in api.as_user(viewer).get(f"/api/v1/endpoints/?{query}").json()["results"]]

    assert listed("finding=ring_serves_nothing") == ["unserved"]
    assert listed("finding=rolled_back_version") == []
    rings.rollback(served, TARGET, operator)
    assert listed("finding=rolled_back_version") == ["fine"]
