"""Findings from one health report and the endpoint's history (fleet.diagnostics, DESIGN §2.5)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from core.versions import parse_version
from fleet.diagnostics import MIN_APP_VERSION, Expectation, Finding, HistoryPoint, diagnose, engine_signature_era
from fleet.health import parse_health
from tests.samples import SEED_SAMPLE, report_of

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
    assert "enabled (seen 2024-03-11 14:00), disabled (seen 2024-03-12 14:00)" in finding.explanation
    assert "known issue" in finding.explanation and "Failed to update definitions" in finding.explanation
    assert finding.values["disabled_at"] == (NOW - timedelta(hours=48)).isoformat()


def test_the_known_issue_states_microsofts_planned_fix_and_invents_no_remedy():
    health = report(definitions_update_fail_reason='"Failed"')
    (finding,) = [f for f in diagnose(health, expect(), history=REENABLED) if f.code == "reenable_known_issue"]
    assert "a fix is planned" in finding.fix and "no workaround" in finding.fix
    for remedy in ("restart", "systemctl", "reboot", "definitions update", "reinstall"):
        assert remedy not in finding.fix.lower() and remedy not in finding.explanation.lower()


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


# --- On what the real CLI prints (fixtures/mdatp/; the agent sends both outputs) ---------------------

PILOT = {
    "linux": "http://mirror.example.lan/mirror/groups/pilot/linux/production/",
    "mac": "http://mirror.example.lan/mirror/groups/pilot/mac/production/",
}
FIXTURES_NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # 47 minutes after the fixtures' update


def judged(health_output, definitions_output=None, platform="linux", history=(), **changes):
    health = parse_health(report_of(health_output, definitions_output))
    expected = expect(**{"group_url": PILOT[platform], "platform": platform, "now": FIXTURES_NOW, **changes})
    return diagnose(health, expected, history=list(history))


@pytest.mark.parametrize("form", ["json", "txt"])
@pytest.mark.parametrize(("prefix", "platform"), [("linux", "linux"), ("mac", "mac"), ("linux-new", "linux")])
def test_a_correctly_configured_endpoint_has_no_finding_in_either_form(prefix, platform, form):
    assert judged(f"{prefix}-health.{form}", f"{prefix}-definitions.{form}", platform) == []


def test_a_correctly_configured_endpoint_reporting_plain_health_only_is_not_called_misconfigured():
    for body in ("linux-health.json", "linux-health.txt"):
        findings = judged(body)
        assert codes(findings) == ["definitions_details_missing"]
        (finding,) = findings
        assert finding.severity == "warning" and finding.values["app_version"] == "101.24082.0004"
        assert "offline_definition_update" in finding.explanation and "too old" in finding.explanation
        assert "mdatp health --details definitions" in finding.fix and "101.24022.0001" in finding.fix


@pytest.mark.parametrize(
    ("health_output", "definitions_output", "changes", "expected"),
    [
        # definitions_update_fail_reason not empty: the update failed, with its reason.
        ("linux-health.txt", "linux-failing-definitions.txt", {}, ["update_failed"]),
        # offline_definition_update / _verify_sig not "enabled", another URL, updated from the cloud.
        (
            "linux-health.txt",
            "linux-misconfigured-definitions.txt",
            {},
            ["offline_update_disabled", "verify_sig_disabled", "not_updated_from_mirror", "url_drift"],
        ),
        # definitions older than the group's threshold.
        ("linux-health.json", "linux-definitions.json", {"now": FIXTURES_NOW + timedelta(days=3)}, ["stale"]),
        # passive mode, real-time protection off: automatic offline updates do not run.
        ("linux-passive-health.json", "linux-definitions.json", {}, ["not_real_time"]),
        # an agent older than the feature, which cannot print --details definitions either.
        ("linux-old-health.txt", None, {}, ["definitions_details_missing", "agent_too_old"]),
        # from 101.26062.0005: engine_signature_verification instead of the deprecated setting.
        ("linux-new-health.txt", "linux-new-engine-sig-off-definitions.txt", {}, ["engine_sig_verification_off"]),
    ],
)
def test_each_troubleshooting_rule_fires_from_what_the_real_cli_prints(
    health_output, definitions_output, changes, expected
):
    findings = judged(health_output, definitions_output, **changes)
    assert sorted(codes(findings)) == sorted(expected)


def test_the_failure_reason_of_the_real_output_is_shown():
    (finding,) = judged("linux-health.txt", "linux-failing-definitions.txt")
    assert "Failed to download the update package from the offline definition url" in finding.explanation


def test_the_misconfigured_endpoint_names_the_other_groups_url_and_the_cloud():
    findings = {f.code: f for f in judged("linux-health.txt", "linux-misconfigured-definitions.txt")}
    assert "/groups/broad/" in findings["url_drift"].explanation
    assert "fallback_to_cloud is true" in findings["not_updated_from_mirror"].explanation


def test_a_new_agent_ignores_verify_sig_and_checks_engine_signature_verification_whatever_the_policy():
    assert judged("linux-new-health.txt", "linux-new-definitions.txt", wants_verify_sig=True) == []
    (finding,) = judged("linux-new-health.txt", "linux-new-engine-sig-off-definitions.txt", wants_verify_sig=False)
    assert finding.code == "engine_sig_verification_off" and finding.severity == "warning"
    assert '"disabled"' in finding.explanation and "101.26062.0005" in finding.explanation
    assert "mdatp health --details features" in finding.fix


def test_an_older_agent_is_judged_on_verify_sig_even_if_it_prints_engine_signature_verification():
    definitions = report_of("linux-definitions.txt").replace(
        'offline_definition_update_verify_sig        : "enabled"',
        'offline_definition_update_verify_sig        : "disabled"',
    )
    assert '"disabled"' in definitions
    assert codes(judged("linux-health.txt", definitions)) == ["verify_sig_disabled"]
    engine_off = definitions.replace(
        "offline_definition_update_fallback_to_cloud",
        'engine_signature_verification : "disabled"\noffline_definition_update_fallback_to_cloud',
    )
    assert codes(judged("linux-health.txt", engine_off)) == ["verify_sig_disabled"]


def test_macos_agents_follow_the_macos_page_and_keep_the_verify_sig_rule():
    definitions = report_of("mac-definitions.txt").replace(
        'verify_sig        : "enabled"', 'verify_sig        : "disabled"'
    )
    health = report_of("mac-health.txt").replace('"101.25042.0002"', '"101.26062.0005"')
    assert codes(judged(health, definitions, platform="mac")) == ["verify_sig_disabled"]


@pytest.mark.parametrize(
    ("app_version", "verify_sig", "platform", "era"),
    [
        ("101.26062.0005", "enabled", "linux", True),
        ("101.26062.0004", "DEPRECATED", "linux", False),  # the version says
        ("101.26100.0001", "DEPRECATED", "linux", True),
        (None, "DEPRECATED", "linux", True),  # no version: the deprecated setting says
        (None, "enabled", "linux", False),
        ("101.26062.0005", "enabled", "mac", False),  # not documented for macOS
    ],
)
def test_the_engine_signature_era_follows_the_agents_version(app_version, verify_sig, platform, era):
    health = report(
        app_version=f'"{app_version}"' if app_version else None,
        offline_definition_update_verify_sig=f'"{verify_sig}"',
    )
    assert engine_signature_era(health, platform) is era


def test_the_known_issue_fires_from_the_history_of_real_reports():
    history = [
        HistoryPoint(FIXTURES_NOW - timedelta(days=3), "enabled", "", None, None),
        HistoryPoint(FIXTURES_NOW - timedelta(days=2), "disabled", "", None, None),
        HistoryPoint(FIXTURES_NOW - timedelta(days=1), "enabled", "", None, None),
    ]
    findings = judged("linux-health.txt", "linux-failing-definitions.txt", history=history)
    assert sorted(codes(findings)) == ["reenable_known_issue", "update_failed"]
    assert judged("linux-health.json", "linux-definitions.json", history=history) == []
    # A report without the offline facts neither completes nor breaks the pattern: it says nothing of them.
    assert codes(judged("linux-health.json", history=history)) == ["definitions_details_missing"]
