"""Reading `mdatp health` reports, text and JSON, as endpoints send them (fleet.health).

The fixtures in fixtures/mdatp/ are what the real CLI prints (their README names the sources); the
agent's report puts `mdatp health` and `mdatp health --details definitions` together, as a JSON
envelope or as text sections.
"""

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet.health import Health, HealthParseError, parse_health
from tests.samples import DESIGN_SAMPLE, MDATP, SEED_SAMPLE, mdatp_fixture, mdatp_fixtures, report_of

FULL_HEALTH = """\
healthy                                     : false
health_issues                               : ["no active event provider", "network event provider not started"]
licensed                                    : true
engine_version                              : "1.1.24020.4"
app_version                                 : "101.24032.0007"
org_id                                      : "5f2e8a1c-3b4d-4e6f-9a0b-1c2d3e4f5a6b"
machine_guid                                : "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59"
release_ring                                : "Production"
product_expiration                          : Nov 29, 2027 at 12:32:36 AM
passive_mode_enabled                        : false
real_time_protection_enabled                : true [managed]
real_time_protection_subsystem              : "fanotify"
full_disk_access_enabled                    : unavailable
automatic_definition_update_enabled         : true [managed]
definitions_updated                         : Mar 14, 2024 at 12:13:17 PM
definitions_updated_minutes_ago             : 2
definitions_version                         : "1.407.417.0"
definitions_status                          : "up_to_date"
definitions_update_source_uri               : "http://mirror.lan:8000/linux/production/"
definitions_update_fail_reason              : ""
offline_definition_url_configured           : "http://mirror.lan:8000/linux/production/" [managed]
offline_definition_update                   : "enabled" [managed]
offline_definition_update_verify_sig        : "DEPRECATED"
offline_definition_update_fallback_to_cloud : false[managed]
engine_signature_verification               : "enabled"
conflicting_applications                    : []
"""

SAMPLE_TIME = datetime(2024, 3, 14, 12, 13, 17, tzinfo=UTC)


def assert_sample_fields(health: Health):
    assert health.definitions_version == "1.407.417.0"
    assert health.definitions_status == "up_to_date"
    assert health.definitions_updated_at == SAMPLE_TIME
    assert health.definitions_updated_minutes_ago == 2
    assert health.update_source_uri == "https://go.microsoft.com/fwlink/?linkid=2144709"
    assert health.fail_reason == ""
    assert health.offline_url_configured == "http://172.XX.XXX.XX:8000/linux/production/"
    assert health.offline_update == "enabled"
    assert health.verify_sig == "enabled"
    assert health.fallback_to_cloud is False
    assert health.automatic_updates is True
    assert health.managed_keys == [
        "automatic_definition_update_enabled",
        "offline_definition_update",
        "offline_definition_update_fallback_to_cloud",
        "offline_definition_url_configured",
    ]
    assert health.extra == {}


# --- Text form --------------------------------------------------------------------------------


def test_it_reads_the_design_sample():
    health = parse_health(DESIGN_SAMPLE)
    assert health.form == "text"
    assert_sample_fields(health)
    assert health.enforcement_level is None  # --details definitions does not say
    assert health.real_time_protection is None and health.app_version is None


def test_it_reads_the_seed_sample_with_its_pasted_prompt():
    assert_sample_fields(parse_health(SEED_SAMPLE))


def test_it_reads_bytes_with_a_bom():
    assert_sample_fields(parse_health(b"\xef\xbb\xbf" + DESIGN_SAMPLE.encode()))


def test_false_managed_without_a_space_is_a_managed_false():
    health = parse_health(
        'definitions_version : "1.2.3.4"\noffline_definition_update_fallback_to_cloud : false[managed]\n'
    )
    assert health.fallback_to_cloud is False
    assert health.managed_keys == ["offline_definition_update_fallback_to_cloud"]
    health = parse_health('definitions_version : "1.2.3.4"\nautomatic_definition_update_enabled : true [managed]\n')
    assert health.automatic_updates is True and health.scopes == {"automatic_definition_update_enabled": "managed"}


def test_it_copes_with_crlf_tabs_blank_lines_and_extra_spaces():
    messy = (
        "\r\n\r\n"
        + "\r\n".join(
            "  " + line.replace("                         : ", "\t:   ") + "   " for line in DESIGN_SAMPLE.splitlines()
        )
        + "\r\n\r\n"
    )
    assert_sample_fields(parse_health(messy))


def test_values_with_colons_are_not_split():
    health = parse_health(DESIGN_SAMPLE)
    assert health.offline_url_configured.startswith("http://172.XX.XXX.XX:8000/")
    assert health.definitions_updated_at.time().isoformat() == "12:13:17"


def test_it_reads_the_full_health_output():
    health = parse_health(FULL_HEALTH)
    assert health.healthy is False
    assert health.health_issues == ["no active event provider", "network event provider not started"]
    assert health.engine_version == "1.1.24020.4"
    assert health.app_version == "101.24032.0007"
    assert health.machine_guid == "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59"
    assert health.real_time_protection is True and health.passive_mode is False
    assert health.enforcement_level == "real_time"
    assert health.update_source_uri == health.offline_url_configured == "http://mirror.lan:8000/linux/production/"
    assert "real_time_protection_enabled" in health.managed_keys


def test_deprecated_verify_sig_and_new_keys_are_kept_not_rejected():
    health = parse_health(FULL_HEALTH)
    assert health.verify_sig == "DEPRECATED"
    assert health.engine_signature_verification == "enabled"


def test_unknown_keys_and_unexpected_values_are_kept():
    health = parse_health(FULL_HEALTH)
    assert health.extra["licensed"] is True
    assert health.extra["org_id"] == "5f2e8a1c-3b4d-4e6f-9a0b-1c2d3e4f5a6b"
    assert health.extra["full_disk_access_enabled"] == "unavailable"
    assert health.extra["conflicting_applications"] == []
    assert health.extra["product_expiration"] == "Nov 29, 2027 at 12:32:36 AM"
    odd = parse_health('definitions_version : "1.2.3.4"\nreal_time_protection_enabled : unavailable\n')
    assert odd.real_time_protection is None and odd.enforcement_level is None
    assert odd.extra == {"real_time_protection_enabled": "unavailable"}


def test_an_unparseable_date_is_kept_raw_without_error():
    health = parse_health('definitions_version : "1.2.3.4"\ndefinitions_updated : sometime last week\n')
    assert health.definitions_updated_at is None
    assert health.extra["definitions_updated"] == "sometime last week"


def test_legacy_camel_case_text_keys_are_mapped():
    health = parse_health(
        'definitionsVersion : "1.2.3.4"\nversionEngine : "1.1.1.1"\ndefinitionsUpdated : 1710418397000\n'
    )
    assert health.definitions_version == "1.2.3.4"
    assert health.engine_version == "1.1.1.1"
    assert health.definitions_updated_at == SAMPLE_TIME


@pytest.mark.parametrize(
    ("passive", "real_time", "level"),
    [
        ("true", "true", "passive"),
        ("true", "false", "passive"),
        ("false", "true", "real_time"),
        ("false", "false", "on_demand"),
        (None, None, None),
        (None, "false", "on_demand"),
    ],
)
def test_it_derives_the_enforcement_level(passive, real_time, level):
    body = 'definitions_version : "1.2.3.4"\n'
    if passive is not None:
        body += f"passive_mode_enabled : {passive}\n"
    if real_time is not None:
        body += f"real_time_protection_enabled : {real_time} [managed]\n"
    assert parse_health(body).enforcement_level == level


def test_to_dict_is_json_ready():
    data = parse_health(FULL_HEALTH).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["definitions_updated_at"] == "2024-03-14T12:13:17+00:00"
    assert data["form"] == "text"


# --- JSON form --------------------------------------------------------------------------------

JSON_SAMPLE = {
    "automaticDefinitionUpdateEnabled": {"value": True, "scope": "managed"},
    "definitionsUpdated": "1710418397000",
    "definitionsUpdatedMinutesAgo": 2,
    "definitionsVersion": "1.407.417.0",
    "definitionsStatus": {"$type": "upToDate"},
    "definitionsUpdateSourceUri": "https://go.microsoft.com/fwlink/?linkid=2144709",
    "definitionsUpdateFailReason": "",
    "offlineDefinitionUrlConfigured": {"value": "http://172.XX.XXX.XX:8000/linux/production/", "scope": "managed"},
    "offlineDefinitionUpdate": {"value": "enabled", "scope": "managed"},
    "offlineDefinitionUpdateVerifySig": {"value": "enabled", "scope": "local"},
    "offlineDefinitionUpdateFallbackToCloud": {"value": False, "scope": "managed"},
}


def test_it_still_reads_the_older_json_form_with_value_and_scope_objects():
    health = parse_health(json.dumps(JSON_SAMPLE, indent=2))
    assert health.form == "json"
    assert_sample_fields(health)
    assert health.scopes["offline_definition_update_verify_sig"] == "local"


def test_json_fields_of_the_full_report():
    health = parse_health(
        json.dumps(
            {
                **JSON_SAMPLE,
                "healthy": True,
                "healthIssues": [],
                "appVersion": "101.24032.0007",
                "engineVersion": "1.1.24020.4",
                "machineGuid": "abc",
                "realTimeProtectionEnabled": {"value": False, "scope": "local"},
                "passiveModeEnabled": {"value": False, "scope": "local"},
                "licensed": True,
                "offlineDefinitionUpdateVerifySig": {"value": "DEPRECATED", "scope": "local"},
                "engineSignatureVerification": {"value": "enabled", "scope": "managed"},
            }
        )
    )
    assert (health.healthy, health.health_issues, health.app_version, health.engine_version) == (
        True,
        [],
        "101.24032.0007",
        "1.1.24020.4",
    )
    assert health.machine_guid == "abc"
    assert health.enforcement_level == "on_demand"
    assert health.verify_sig == "DEPRECATED"
    assert health.engine_signature_verification == "enabled"
    assert health.extra["licensed"] is True
    assert "engine_signature_verification" in health.managed_keys


@pytest.mark.parametrize(
    "value",
    [
        "1710418397000",
        1710418397000,
        1710418397,
        "2024-03-14T12:13:17Z",
        "2024-03-14T13:13:17+01:00",
        "Mar 14, 2024 at 12:13:17 PM",
    ],
)
def test_json_dates_in_epoch_and_iso_forms(value):
    health = parse_health(json.dumps({"definitionsVersion": "1", "definitionsUpdated": value}))
    assert health.definitions_updated_at == SAMPLE_TIME
    assert health.definitions_updated_at.tzinfo is not None


def test_json_unknown_object_members_and_values_are_kept():
    health = parse_health(
        json.dumps(
            {
                "definitionsVersion": "1",
                "definitionsStatus": {"$type": "updateFailed", "reason": "mirror down"},
                "definitionsUpdated": "whenever",
                "newThing": {"nested": [1, 2]},
            }
        )
    )
    assert health.definitions_status == "update_failed"
    assert health.extra["definitions_status.reason"] == "mirror down"
    assert health.extra["definitions_updated"] == "whenever"
    assert health.extra["new_thing"] == {"nested": [1, 2]}


# --- Malformed input --------------------------------------------------------------------------

BAD_LINE_3 = DESIGN_SAMPLE.splitlines()
BAD_LINE_3[2] = "garbage"


@pytest.mark.parametrize(
    ("body", "message", "line", "field"),
    [
        ("", "empty health report", None, None),
        (b"  \r\n\n", "empty health report", None, None),
        ("garbage", "line 1: expected 'key : value', got 'garbage'", 1, None),
        ("\n".join(BAD_LINE_3), "line 3: expected 'key : value', got 'garbage'", 3, None),
        ("Defender says hi\n" + DESIGN_SAMPLE, "line 1: expected 'key : value', got 'Defender says hi'", 1, None),
        (
            DESIGN_SAMPLE + "user@vm:~$ mdatp health\n",
            "line 12: no 'key : value' line after 'user@vm:~$ mdatp health': the output of that command is missing",
            12,
            None,
        ),
        (
            "$ mdatp health\n$ mdatp health --details definitions\n" + DESIGN_SAMPLE,
            "line 1: no 'key : value' line after '$ mdatp health'",
            1,
            None,
        ),
        ("$ mdatp health\n" + DESIGN_SAMPLE + "Defender says hi\n", "line 13: expected 'key : value'", 13, None),
        (
            '{"$type": "mdeOfflineAgentReport", "health": "healthy : true", "definitions": {}}',
            "field 'health': expected the JSON object `mdatp health --output json` prints, got the string",
            None,
            "health",
        ),
        (
            '{"$type": "mdeOfflineAgentReport", "definitions": [1]}',
            "field 'definitions': expected the JSON object `mdatp health --details definitions --output json`",
            None,
            "definitions",
        ),
        ('{"$type": "mdeOfflineAgentReport"}', 'holds neither "health" nor "definitions"', None, None),
        (
            '{"$type": "mdeOfflineAgentReport", "health": {"healthy": true}, "definitions": {}}',
            "no definitions keys in the report",
            None,
            None,
        ),
        (
            '{"$type": "mdeOfflineAgentReport", "health": {}, "definitions": {"definitionsVersion": {"v": 1}}}',
            "field 'definitions.definitionsVersion': expected a single value, got an object",
            None,
            "definitions.definitionsVersion",
        ),
        (
            '{"offlineDefinitionUpdate": {"displayValue": true, "isManaged": "yes", "value": "enabled"}}',
            "field 'offlineDefinitionUpdate': expected \"isManaged\" to be true or false, got the string 'yes'",
            None,
            "offlineDefinitionUpdate",
        ),
        ("definitions_version\n", "line 1: expected 'key : value'", 1, None),
        (' : "1.2.3.4"\n', "line 1: expected 'key : value'", 1, None),
        (
            'definitions_version : "1"\ndefinitions_version : "2"\n',
            "line 2: definitions_version reported twice",
            2,
            None,
        ),
        ('definitions_version : "1"\nbad\x00line : 1\n', "line 2: contains a NUL byte", 2, None),
        ("healthy : true\nlicensed : true\n", "no definitions keys in the report", None, None),
        (b'definitions_version : "\xff"\n', "not UTF-8", None, None),
        ('{"definitionsVersion": "1",\n "healthy": }', "invalid JSON at line 2", 2, None),
        ("[1, 2]", "must be an object of fields, got a list", None, None),
        ('{"healthy": true}', "no definitions keys in the report", None, None),
        (
            '{"definitionsVersion": {"major": 1}}',
            "field 'definitionsVersion': expected a single value, got an object",
            None,
            "definitionsVersion",
        ),
        ('{"definitionsVersion": ["1"]}', "field 'definitionsVersion'", None, "definitionsVersion"),
        ('{"definitionsStatus": {"$type": 3}}', "field 'definitionsStatus'", None, "definitionsStatus"),
        (
            '{"offlineDefinitionUpdate": {"value": "enabled", "scope": 1}}',
            "field 'offlineDefinitionUpdate'",
            None,
            "offlineDefinitionUpdate",
        ),
        ('{"definitionsVersion": "1", "healthIssues": [{"a": 1}]}', "field 'healthIssues'", None, "healthIssues"),
        (
            '{"definitionsVersion": "1", "definitions_version": "2"}',
            "field 'definitions_version': definitions_version reported twice",
            None,
            "definitions_version",
        ),
        (
            '{"definitionsVersion": "1.407.\\u0000417.0"}',
            "field 'definitionsVersion': contains a NUL character",
            None,
            "definitionsVersion",
        ),
        (
            '{"definitionsVersion": "1", "edr": {"tags": ["a\\u0000"]}}',
            "field 'edr': contains a NUL character",
            None,
            "edr",
        ),
        ('{"definitionsVersion": "1", "x\\u0000": 1}', "contains a NUL character", None, "x\x00"),
    ],
)
def test_malformed_input_is_rejected_with_its_place(body, message, line, field):
    with pytest.raises(HealthParseError) as caught:
        parse_health(body)
    assert message in str(caught.value)
    assert (caught.value.line, caught.value.field) == (line, field)


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul():
    assert parse_health('{"definitionsVersion": "1", "note": "C:\\\\u0000"}').extra["note"] == "C:\\u0000"


def test_a_repeated_key_with_the_same_value_is_tolerated():
    health = parse_health(DESIGN_SAMPLE + 'definitions_version : "1.407.417.0"\n')
    assert health.definitions_version == "1.407.417.0"


# --- What the real CLI prints (fixtures/mdatp/) ---------------------------------------------------

SETTINGS_OF_THE_CAPTURES = {  # wrapped as {"displayValue", "isManaged", "value"} in the public captures
    "automaticDefinitionUpdateEnabled",
    "cloudEnabled",
    "passiveModeEnabled",
    "realTimeProtectionEnabled",
    "tamperProtection",
    "telemetryClient",
}


@pytest.mark.parametrize("name", mdatp_fixtures())
def test_every_fixture_parses_and_says_whether_it_holds_the_offline_facts(name):
    health = parse_health(mdatp_fixture(name))

    assert health.form == ("json" if name.endswith(".json") else "text")
    holds_offline_facts = "-definitions" in name or name.endswith("-features.txt")
    assert health.definitions_details is holds_offline_facts
    if name.endswith("-features.txt"):  # the features view: verification states, no definitions status
        assert health.engine_signature_verification == "enabled" and health.definitions_version is None
        return
    assert health.definitions_version and health.definitions_status == "up_to_date"
    if "-definitions" in name:
        assert health.offline_update in ("enabled", "disabled") and health.offline_url_configured
        assert "offline_definition_url_configured" in health.managed_keys
    else:
        assert health.app_version and health.machine_guid and health.healthy is True
        assert health.offline_update is None and health.update_source_uri is None


@pytest.mark.parametrize("stem", ["linux-health", "linux-definitions", "mac-health", "mac-definitions"])
def test_text_and_json_fixtures_of_one_output_give_the_same_facts(stem):
    from_text, from_json = parse_health(mdatp_fixture(f"{stem}.txt")), parse_health(mdatp_fixture(f"{stem}.json"))

    assert {f: getattr(from_text, f) for f in TYPED} == {f: getattr(from_json, f) for f in TYPED}
    # JSON also holds the settings the text form does not print ("displayValue": false).
    assert set(from_text.extra) <= set(from_json.extra)


def test_the_json_form_is_one_line_with_its_type_and_setting_wrappers():
    body = mdatp_fixture("linux-health.json")
    data = json.loads(body)

    assert body.count("\n") == 1 and data["$type"] == "getHealthAllResult"
    assert {k for k, v in data.items() if isinstance(v, dict) and "isManaged" in v} >= SETTINGS_OF_THE_CAPTURES
    assert all(isinstance(v["displayValue"], bool) for v in data.values() if isinstance(v, dict) and "isManaged" in v)


def test_is_managed_gives_the_managed_flag_and_display_value_is_not_kept():
    health = parse_health(mdatp_fixture("linux-health.json"))

    assert health.managed_keys == ["automatic_definition_update_enabled", "real_time_protection_enabled"]
    assert health.scopes["passive_mode_enabled"] == "local"
    assert health.extra["proxy"] == "None" and health.extra["telemetry_client"] == "OneDs"  # JSON-only settings
    assert not [key for key in health.extra if key.endswith(".displayValue")]
    assert "$type" not in health.extra


def test_the_passive_capture_is_on_demand_and_not_managed():
    health = parse_health(mdatp_fixture("linux-passive-health.json"))

    assert (health.passive_mode, health.real_time_protection, health.enforcement_level) == (True, False, "passive")
    assert health.scopes["real_time_protection_enabled"] == "local"


def test_the_macos_flavour_keeps_its_own_keys():
    health = parse_health(mdatp_fixture("mac-health.json"))

    assert health.extra["real_time_protection_subsystem"] == "endpoint_security_extension"
    assert health.extra["network_events_subsystem"] == "network_filter_extension"
    assert health.extra["full_disk_access_enabled"] is True


def test_a_new_agent_reports_deprecated_verify_sig_and_engine_signature_verification():
    for name in ("linux-new-definitions.txt", "linux-new-definitions.json", "linux-new-features.txt"):
        health = parse_health(mdatp_fixture(name))
        assert (health.verify_sig, health.engine_signature_verification) == ("DEPRECATED", "enabled"), name


# --- What the agent sends: both outputs in one report ----------------------------------------------


@pytest.mark.parametrize("form", ["json", "txt"])
@pytest.mark.parametrize("platform", ["linux", "mac", "linux-new"])
def test_the_agents_report_holds_the_general_and_the_offline_facts(platform, form):
    body = report_of(f"{platform}-health.{form}", f"{platform}-definitions.{form}")

    health = parse_health(body)

    assert health.form == ("json" if form == "json" else "text")
    assert health.sections == ["health", "definitions"] and health.definitions_details
    assert health.app_version and health.machine_guid and health.enforcement_level == "real_time"
    assert health.offline_update == "enabled" and health.update_source_uri == health.offline_url_configured
    assert f"/{platform.split('-')[0]}/production/" in health.offline_url_configured
    assert "offline_definition_update" in health.managed_keys and "real_time_protection_enabled" in health.managed_keys


@pytest.mark.parametrize("form", ["json", "txt"])
def test_a_key_in_both_sections_takes_the_definitions_value_without_a_reported_twice_error(form):
    # A minute passed between the two commands: the general output is one minute older.
    health_output = mdatp_fixture(f"linux-health.{form}").replace("47", "46", 1)
    assert "46" in health_output

    health = parse_health(report_of(health_output, f"linux-definitions.{form}"))

    assert health.definitions_updated_minutes_ago == 47


def test_the_plain_health_alone_is_read_and_says_the_offline_facts_are_missing():
    health = parse_health(report_of("linux-old-health.txt"))

    assert health.app_version == "101.23062.0010" and health.definitions_version == "1.421.118.0"
    assert not health.definitions_details and health.offline_update is None and health.fail_reason == ""

    sectioned = parse_health("$ mdatp health\n" + mdatp_fixture("linux-old-health.txt"))
    assert sectioned.sections == ["health"] and not sectioned.definitions_details


def test_unknown_members_of_the_agents_report_are_kept():
    body = report_of("linux-health.json", "linux-definitions.json").replace(
        '"health":', '"agentVersion":"2","health":', 1
    )

    assert parse_health(body).extra["agent_version"] == "2"


# --- The stand-in mdatp answers as the real CLI ----------------------------------------------------


def run_mdatp(*args, state=None, env=None, tmp_path=None):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MDATP_STANDIN_")}
    if state is not None:
        path = tmp_path / "state.json"
        path.write_text(json.dumps(state))
        environ["MDATP_STANDIN_STATE"] = str(path)
    environ.update(env or {})
    return subprocess.run([sys.executable, str(MDATP), *args], capture_output=True, text=True, env=environ, timeout=30)


STATE = {
    "definitions_version": "1.407.500.0",
    "definitions_updated": "Mar 14, 2024 at 12:13:17 PM",
    "definitions_updated_minutes_ago": 75,
    "definitions_status": "up_to_date",
    "definitions_update_source_uri": "https://go.microsoft.com/fwlink/?linkid=2144709",
    "definitions_update_fail_reason": 'Failed to download "updates.zip": connection refused',
    "offline_definition_url_configured": {"value": "http://mirror.lan:8000/linux/production/", "isManaged": True},
    "real_time_protection_enabled": False,
    "passive_mode_enabled": True,
    "health_issues": ["no active event provider"],
    "healthy": False,
    "product_expiration": "2027-01-01T00:00:00Z",
    "app_version": "101.26062.0005",
}

TYPED = [f for f in Health.__dataclass_fields__ if f not in ("form", "scopes", "extra")]


@pytest.mark.parametrize("details", [(), ("--details", "definitions")])
def test_the_stand_in_text_and_json_outputs_parse_to_the_same_facts(tmp_path, details):
    text = run_mdatp("health", *details, state=STATE, tmp_path=tmp_path)
    as_json = run_mdatp("health", *details, "--output", "json", state=STATE, tmp_path=tmp_path)
    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    from_text, from_json = parse_health(text.stdout), parse_health(as_json.stdout)
    assert (from_text.form, from_json.form) == ("text", "json")
    assert {f: getattr(from_text, f) for f in TYPED} == {f: getattr(from_json, f) for f in TYPED}
    assert set(from_text.extra) <= set(from_json.extra)
    assert from_text.definitions_version == "1.407.500.0"
    assert from_text.definitions_updated_at == SAMPLE_TIME
    assert from_text.definitions_updated_minutes_ago == 75
    if details:
        assert from_text.fail_reason == 'Failed to download "updates.zip": connection refused'
        assert (from_text.verify_sig, from_text.engine_signature_verification) == ("DEPRECATED", "enabled")
        assert from_text.fallback_to_cloud is False
        assert "offline_definition_update_fallback_to_cloud" in from_text.managed_keys
        assert "false[managed]" in text.stdout
    else:
        assert not from_text.definitions_details and from_text.update_source_uri is None
        assert from_text.enforcement_level == "passive"
        assert from_text.health_issues == ["no active event provider"]
        assert from_text.app_version == "101.26062.0005"


@pytest.mark.parametrize(("platform", "fixture"), [("linux", "linux-health.json"), ("mac", "mac-health.json")])
def test_the_stand_ins_json_has_the_keys_and_wrappers_of_the_real_capture(platform, fixture):
    printed = json.loads(run_mdatp("health", "--output", "json", env={"MDATP_STANDIN_PLATFORM": platform}).stdout)
    real = json.loads(mdatp_fixture(fixture))

    assert set(printed) == set(real)
    assert {k for k, v in printed.items() if isinstance(v, dict)} == {k for k, v in real.items() if isinstance(v, dict)}
    assert printed["$type"] == "getHealthAllResult"


def test_the_stand_in_prints_the_offline_fields_only_with_details_definitions(tmp_path):
    plain = run_mdatp("health", tmp_path=tmp_path).stdout
    details = run_mdatp("health", "--details", "definitions", tmp_path=tmp_path).stdout

    assert "offline_definition" not in plain and "definitions_update_source_uri" not in plain
    assert "definitions_version" in plain and "app_version" in plain
    assert 'offline_definition_update                   : "enabled" [managed]' in details
    assert "app_version" not in details


def test_the_stand_in_defaults_are_a_healthy_linux_endpoint(tmp_path):
    health = parse_health(
        report_of(run_mdatp("health", tmp_path=tmp_path).stdout, run_mdatp("health", "--details", "definitions").stdout)
    )
    assert (health.healthy, health.definitions_version, health.app_version) == (True, "1.407.417.0", "101.24032.0007")
    assert health.enforcement_level == "real_time" and health.automatic_updates is True
    assert health.update_source_uri == health.offline_url_configured and "/linux/" in health.offline_url_configured
    assert (health.offline_update, health.verify_sig, health.fail_reason, health.definitions_status) == (
        "enabled",
        "enabled",
        "",
        "up_to_date",
    )
    assert health.engine_signature_verification is None


def test_a_new_stand_in_agent_deprecates_verify_sig_whatever_the_state_says():
    env = {
        "MDATP_STANDIN_APP_VERSION": "101.26062.0005",
        "MDATP_STANDIN_OFFLINE_DEFINITION_UPDATE_VERIFY_SIG": "enabled",
    }
    for view in ("definitions", "features"):
        out = run_mdatp("health", "--details", view, env=env).stdout
        assert 'offline_definition_update_verify_sig : "DEPRECATED"' in " ".join(out.split())
        assert parse_health(out).engine_signature_verification == "enabled"
    macos = run_mdatp("health", "--details", "definitions", env={**env, "MDATP_STANDIN_PLATFORM": "mac"}).stdout
    assert parse_health(macos).verify_sig == "enabled" and "engine_signature_verification" not in macos


@pytest.mark.parametrize(("lacks", "args"), [("json", ("--output", "json")), ("details", ("--details", "definitions"))])
def test_an_old_stand_in_agent_refuses_what_it_lacks(lacks, args):
    refused = run_mdatp("health", *args, env={"MDATP_STANDIN_LACKS": lacks})

    assert refused.returncode == 2 and refused.stdout == "" and args[0] in refused.stderr
    assert run_mdatp("health", env={"MDATP_STANDIN_LACKS": lacks}).returncode == 0


def test_the_stand_in_environment_overrides_the_state_file(tmp_path):
    result = run_mdatp(
        "health",
        "--details",
        "definitions",
        "--output",
        "json",
        state=STATE,
        tmp_path=tmp_path,
        env={"MDATP_STANDIN_DEFINITIONS_VERSION": "1.407.600.0", "MDATP_STANDIN_OFFLINE_DEFINITION_UPDATE": "disabled"},
    )
    health = parse_health(result.stdout)
    assert (health.definitions_version, health.offline_update) == ("1.407.600.0", "disabled")


def test_the_stand_in_prints_one_field_the_version_and_updates(tmp_path):
    assert run_mdatp("health", "--field", "definitions_version", tmp_path=tmp_path).stdout == '"1.407.417.0"\n'
    assert run_mdatp("health", "--field", "offline_definition_update_fallback_to_cloud").stdout == "false[managed]\n"
    assert run_mdatp("health", "--field", "nope").returncode != 0
    assert run_mdatp("version").stdout == "Product version: 101.24032.0007\n"
    assert run_mdatp("--version").stdout == "Product version: 101.24032.0007\n"
    update = run_mdatp("definitions", "update")
    assert update.returncode == 0 and update.stdout.strip()
    failed = run_mdatp("definitions", "update", env={"MDATP_STANDIN_UPDATE_FAIL": "1"})
    assert failed.returncode == 1 and "Failed to update definitions" in failed.stderr


def test_the_stand_in_fails_like_mdatp_when_asked():
    result = run_mdatp("health", env={"MDATP_STANDIN_FAIL": "1"})
    assert result.returncode != 0
    assert result.stdout == "" and "daemon" in result.stderr


def test_the_stand_in_is_an_executable_script():
    assert os.access(MDATP, os.X_OK)
    assert MDATP.read_text().startswith("#!/usr/bin/env python3\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MDATP_STANDIN_")}
    environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    result = subprocess.run(
        [str(MDATP), "health", "--details", "definitions"], capture_output=True, text=True, env=environ, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert parse_health(result.stdout).definitions_version == "1.407.417.0"


def test_a_long_run_of_blanks_inside_a_value_is_read_in_linear_time():
    # A lazy pattern before trailing blanks once made this line take minutes.
    health = parse_health("definitions_version : a" + " " * 200_000 + "b [managed]\n")
    assert health.definitions_version == "a" + " " * 200_000 + "b"
    assert health.managed_keys == ["definitions_version"]
