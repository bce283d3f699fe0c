"""Findings from one health report and the endpoint's history (fleet.diagnostics, DESIGN §2.5)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.versions import parse_version
from fleet.diagnostics import MIN_APP_VERSION, Expectation, Finding, HistoryPoint, diagnose
from fleet.health import parse_health
from tests.samples import SEED_SAMPLE

MIRROR = "http://portal.lan:8000/mirror/groups/pilot/linux/production/"
NOW = datetime(2024, 3, 14, 14, 0, tzinfo=UTC)
CLOUD = "https://go.microsoft.com/fwlink/?linkid=2144709"

# A healthy endpoint of the group, as `mdatp health` prints it (values as printed, by key).
HEALTHY = {
    "healthy": "true",
    "health_issues": "[]",
    "app_version": '"101.24032.0007"',
    "engine_version": '"1.1.24020.4"',
    "passive_mode_enabled": "false",
    "real_time_protection_enabled": "true [managed]",
    "automatic_definition_update_enabled": "true [managed]",
    "definitions_updated": "Mar 14, 2024 at 12:13:17 PM",
    "definitions_updated_minutes_ago": "2",
    "definitions_version": '"1.407.417.0"',
    "definitions_status": '"up_to_date"',
    "definitions_update_source_uri": f'"{MIRROR}"',
    "definitions_update_fail_reason": '""',
    "offline_definition_url_configured": f'"{MIRROR}" [managed]',
    "offline_definition_update": '"enabled" [managed]',
    "offline_definition_update_verify_sig": '"enabled"',
    "offline_definition_update_fallback_to_cloud": "false[managed]",
}


def report(**changes):
    """The healthy report with some values changed (None drops the key), parsed."""
    values = {**HEALTHY, **changes}
    return parse_health("".join(f"{key} : {value}\n" for key, value in values.items() if value is not None))


def expect(**changes):
    defaults = dict(
        group_url=MIRROR,
        wants_offline_update=True,
        wants_verify_sig=True,
        wants_automatic_updates=True,
        platform="linux",
        staleness_hours=24,
        now=NOW,
    )
    return Expectation(**{**defaults, **changes})


def codes(findings):
    return [f.code for f in findings]


def test_a_healthy_endpoint_has_no_findings():
    assert diagnose(report(), expect()) == []


@pytest.mark.parametrize(
    ("code", "changes", "expectation"),
    [
        ("update_failed", {"definitions_update_fail_reason": '"Failed to download package: 404"'}, {}),
        ("offline_update_disabled", {"offline_definition_update": '"disabled" [managed]'}, {}),
        ("verify_sig_disabled", {"offline_definition_update_verify_sig": '"disabled"'}, {}),
        ("not_updated_from_mirror", {"definitions_update_source_uri": f'"{CLOUD}"'}, {}),
        (
            "url_drift",
            {
                "offline_definition_url_configured": '"http://old.lan/linux/production/" [managed]',
                "definitions_update_source_uri": '"http://old.lan/linux/production/"',
            },
            {},
        ),
        ("stale", {"definitions_status": '"out_of_date"'}, {}),
        ("stale", {}, {"now": NOW + timedelta(hours=30)}),
        ("not_real_time", {"real_time_protection_enabled": "false [managed]"}, {}),
        ("not_real_time", {"passive_mode_enabled": "true"}, {}),
        ("not_real_time", {"automatic_definition_update_enabled": "false[managed]"}, {}),
        ("agent_too_old", {"app_version": '"101.23102.0003"'}, {}),
        ("agent_too_old", {}, {"platform": "mac"}),
    ],
)
def test_each_rule_fires_alone_on_a_crafted_report(code, changes, expectation):
    findings = diagnose(report(**changes), expect(**expectation))
    assert codes(findings) == [code]
    finding = findings[0]
    assert finding.severity in ("critical", "warning", "info")
    assert finding.title and finding.explanation and finding.fix


def test_the_seed_sample_did_not_update_from_the_mirror():
    health = parse_health(SEED_SAMPLE)
    expected = expect(
        group_url="http://172.XX.XXX.XX:8000/linux/production/", now=datetime(2024, 3, 14, 12, 15, tzinfo=UTC)
    )
    findings = diagnose(health, expected)
    assert codes(findings) == ["not_updated_from_mirror"]
    assert CLOUD in findings[0].explanation
    assert "http://172.XX.XXX.XX:8000/linux/production/" in findings[0].explanation
    assert "mdatp definitions update" in findings[0].fix


def test_the_failure_reason_is_shown():
    (finding,) = diagnose(report(definitions_update_fail_reason='"Failed to download package: 404"'), expect())
    assert "Failed to download package: 404" in finding.explanation
    assert finding.severity == "critical"


def test_deprecated_verify_sig_is_not_a_misconfiguration():
    findings = diagnose(
        report(offline_definition_update_verify_sig='"DEPRECATED"', engine_signature_verification='"enabled"'), expect()
    )
    assert codes(findings) == ["verify_sig_not_reported"]
    assert findings[0].severity == "info"
    assert "not reported by this agent version" in findings[0].title
    assert "not a misconfiguration" in findings[0].explanation


def test_settings_the_group_does_not_want_are_not_findings():
    health = report(
        offline_definition_update='"disabled"',
        offline_definition_update_verify_sig='"disabled"',
        automatic_definition_update_enabled="false",
        real_time_protection_enabled="false",
    )
    assert (
        diagnose(health, expect(wants_offline_update=False, wants_verify_sig=False, wants_automatic_updates=False))
        == []
    )


def test_the_cloud_fallback_is_named():
    (finding,) = diagnose(
        report(
            definitions_update_source_uri=f'"{CLOUD}"', offline_definition_update_fallback_to_cloud="true [managed]"
        ),
        expect(),
    )
    assert "fallback_to_cloud is true" in finding.explanation
    assert "offlineDefinitionUpdateFallbackToCloud" in finding.fix


def test_an_endpoint_that_never_updated_from_the_mirror():
    (finding,) = diagnose(report(definitions_update_source_uri='""'), expect())
    assert finding.code == "not_updated_from_mirror" and "never updated" in finding.explanation


def test_urls_compare_by_meaning_not_spelling():
    same = "HTTP://Portal.LAN:8000/mirror/groups/pilot/linux/production"
    health = report(
        offline_definition_url_configured=f'"{same}" [managed]',
        definitions_update_source_uri=f'"{MIRROR}arch_x86_64/updates.zip"',
    )
    assert diagnose(health, expect()) == []


def test_staleness_uses_the_group_threshold():
    health = report()  # updated at 12:13 UTC
    assert diagnose(health, expect(now=NOW + timedelta(hours=20))) == []
    (finding,) = diagnose(health, expect(now=NOW + timedelta(hours=20), staleness_hours=12))
    assert finding.code == "stale" and "12 h threshold" in finding.explanation and finding.severity == "critical"


def test_staleness_falls_back_on_minutes_ago():
    health = report(definitions_updated=None, definitions_updated_minutes_ago="3000")
    assert codes(diagnose(health, expect())) == ["stale"]


def test_the_enforcement_level_is_explained():
    (finding,) = diagnose(report(passive_mode_enabled="true"), expect())
    assert "passive" in finding.explanation and "mdatp definitions update" in finding.explanation
    assert "real_time" in finding.fix


def test_an_unknown_enforcement_level_is_not_a_finding():
    health = report(real_time_protection_enabled=None, passive_mode_enabled=None)
    assert health.enforcement_level is None
    assert diagnose(health, expect()) == []


@pytest.mark.parametrize(
    ("version", "platform", "too_old"),
    [
        ("101.24022.0001", "linux", False),
        ("101.24022.1", "linux", False),
        ("101.24021.9999", "linux", True),
        ("101.100000.0", "linux", False),  # numerically newer, though "1" < "2" as text
        ("101.25012.0003", "mac", False),
        ("101.25012.0002", "mac", True),
        ("101.24032.0007", "mac", True),
        ("101.98.30", "linux", True),
        ("unknown", "linux", False),
    ],
)
def test_the_agent_version_is_compared_part_by_part(version, platform, too_old):
    findings = diagnose(report(app_version=f'"{version}"'), expect(platform=platform))
    assert ("agent_too_old" in codes(findings)) is too_old


def test_minimum_versions():
    assert MIN_APP_VERSION == {"linux": "101.24022.0001", "mac": "101.25012.0003"}
    assert parse_version("101.24022.0001") == (101, 24022, 1)


# --- The re-enable known issue ----------------------------------------------------------------


def point(hours_ago, offline_update, fail_reason="", source=MIRROR):
    return HistoryPoint(NOW - timedelta(hours=hours_ago), offline_update, fail_reason, source, MIRROR)


REENABLED = [point(72, "enabled"), point(48, "disabled", source=CLOUD), point(24, "enabled", source=CLOUD)]


def test_the_reenable_pattern_is_recognised_from_the_history():
    health = report(
        definitions_update_fail_reason='"Failed to update definitions"', definitions_update_source_uri=f'"{CLOUD}"'
    )
    findings = diagnose(health, expect(), history=REENABLED)
    assert set(codes(findings)) == {"reenable_known_issue", "update_failed", "not_updated_from_mirror"}
    finding = next(f for f in findings if f.code == "reenable_known_issue")
    assert finding.severity == "critical"
    assert "sudo systemctl restart mdatp" in finding.fix and "mdatp definitions update" in finding.fix
    assert MIRROR in finding.fix
    assert finding.values["disabled_at"] == (NOW - timedelta(hours=48)).isoformat()


def test_the_reenable_pattern_alone_when_only_the_source_is_wrong():
    health = report(definitions_update_source_uri=f'"{CLOUD}"')
    assert set(codes(diagnose(health, expect(), history=REENABLED))) == {
        "reenable_known_issue",
        "not_updated_from_mirror",
    }


def test_the_reenable_pattern_in_any_order_of_history():
    health = report(definitions_update_fail_reason='"Failed"')
    assert "reenable_known_issue" in codes(diagnose(health, expect(), history=list(reversed(REENABLED))))


@pytest.mark.parametrize(
    "history",
    [
        [point(72, "enabled"), point(24, "enabled")],  # never disabled
        [point(72, "disabled"), point(24, "enabled")],  # enabled once only
        [point(72, "enabled"), point(48, None), point(24, "enabled")],  # a report that did not say is not a disable
        [],
    ],
)
def test_no_reenable_finding_without_the_pattern(history):
    health = report(definitions_update_fail_reason='"Failed"')
    assert codes(diagnose(health, expect(), history=history)) == ["update_failed"]


def test_no_reenable_finding_when_the_endpoint_now_works_or_is_disabled():
    assert diagnose(report(), expect(), history=REENABLED) == []
    health = report(offline_definition_update='"disabled"', definitions_update_fail_reason='"Failed"')
    assert "reenable_known_issue" not in codes(diagnose(health, expect(), history=REENABLED))


def test_the_current_report_completes_the_pattern():
    health = report(definitions_update_fail_reason='"Failed"')
    history = [point(72, "enabled"), point(48, "disabled")]
    assert "reenable_known_issue" in codes(diagnose(health, expect(), history=history))


def test_history_points_from_health():
    health = report(definitions_update_fail_reason='"x"')
    assert HistoryPoint.from_health(health, NOW) == HistoryPoint(NOW, "enabled", "x", MIRROR, MIRROR)


# --- Shape ------------------------------------------------------------------------------------


def test_one_finding_per_rule_when_everything_is_wrong():
    health = report(
        definitions_update_fail_reason='"Failed"',
        offline_definition_update='"disabled"',
        offline_definition_update_verify_sig='"disabled"',
        definitions_update_source_uri=f'"{CLOUD}"',
        offline_definition_url_configured='"http://old.lan/linux/production/"',
        definitions_status='"out_of_date"',
        real_time_protection_enabled="false",
        app_version='"101.23102.0003"',
    )
    findings = diagnose(
        health,
        expect(now=NOW + timedelta(days=3)),
        history=[point(72, "enabled"), point(48, "disabled"), point(30, "enabled")],
    )
    assert sorted(codes(findings)) == sorted(
        [
            "update_failed",
            "offline_update_disabled",
            "verify_sig_disabled",
            "not_updated_from_mirror",
            "url_drift",
            "stale",
            "not_real_time",
            "agent_too_old",
        ]
    )
    severities = [f.severity for f in findings]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)


def test_findings_are_json_ready():
    findings = diagnose(
        report(definitions_update_source_uri=f'"{CLOUD}"', definitions_status='"out_of_date"'), expect()
    )
    data = [f.to_dict() for f in findings]
    assert json.loads(json.dumps(data)) == data
    assert set(data[0]) == {"code", "severity", "title", "explanation", "fix", "values"}
    assert isinstance(findings[0], Finding)


def test_expectations_are_checked():
    with pytest.raises(ValueError, match="platform"):
        expect(platform="windows")
    with pytest.raises(ValueError, match="staleness_hours"):
        expect(staleness_hours=0)
    assert expect(now=datetime(2024, 3, 14)).now.tzinfo is UTC
