"""The managed configuration of DESIGN §2.3, generated per group and platform, and imported back."""

import json
import plistlib

import jsonschema
import pytest
from rest_framework.test import APIClient

from core.errors import Refused
from fleet.choices import EnforcementLevel
from fleet.services import config, enrollment
from tests.samples import health_text

SWITCH = {"type": "string", "enum": ["enabled", "disabled"]}
# DESIGN §2.3, written out here so the generator is checked against the table, not against itself.
MDATP_MANAGED_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cloudService", "antivirusEngine", "features"],
    "properties": {
        "cloudService": {
            "type": "object",
            "additionalProperties": False,
            "required": ["automaticDefinitionUpdateEnabled", "definitionUpdatesInterval"],
            "properties": {
                "automaticDefinitionUpdateEnabled": {"type": "boolean"},
                "definitionUpdatesInterval": {"type": "integer", "minimum": 60, "maximum": 86400},
            },
        },
        "antivirusEngine": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "offlineDefinitionUpdateUrl",
                "offlineDefinitionUpdate",
                "offlineDefinitionUpdateFallbackToCloud",
            ],
            "properties": {
                "offlineDefinitionUpdateUrl": {
                    "type": "string",
                    "pattern": r"^https?://.+/(linux|mac)/(production|preview)/$",
                },
                "offlineDefinitionUpdate": SWITCH,
                "offlineDefinitionUpdateFallbackToCloud": {"type": "boolean"},
                "enforcementLevel": {"type": "string", "enum": ["real_time", "on_demand", "passive"]},
            },
        },
        "features": {
            "type": "object",
            "additionalProperties": False,
            "required": ["offlineDefinitionUpdateVerifySig"],
            "properties": {"offlineDefinitionUpdateVerifySig": SWITCH},
        },
    },
}

POLICIES = [
    {},
    {
        "automatic_updates": False,
        "update_interval": 60,
        "offline_update": False,
        "fallback_to_cloud": True,
        "verify_signature": False,
    },
    {"update_interval": 86400, "enforcement_level": EnforcementLevel.REAL_TIME},
    {"enforcement_level": EnforcementLevel.PASSIVE, "fallback_to_cloud": True},
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("channel", ["production", "preview"])
def test_every_generated_managed_json_validates_against_the_design_schema(mirror, make_group, policy, channel):
    mirror.channels = ["production", "preview"]
    mirror.save()
    group = make_group("pilot", platforms=("linux", "mac"), channel=channel, **policy)
    for platform in ("linux", "mac"):
        jsonschema.validate(config.managed_settings(group, platform), MDATP_MANAGED_SCHEMA)
    data = json.loads(config.managed_json(group))
    jsonschema.validate(data, MDATP_MANAGED_SCHEMA)
    assert (
        data["antivirusEngine"]["offlineDefinitionUpdateUrl"]
        == f"https://portal.example.org/mirror/groups/pilot/linux/{channel}/"
    )
    assert "offlineDefintionUpdateFallbackToCloud" not in json.dumps(data)  # never the seed's misspelling


def test_the_linux_file_carries_the_group_policy_exactly(mirror, make_group):
    group = make_group(
        "pilot", update_interval=3600, fallback_to_cloud=True, verify_signature=False, enforcement_level="real_time"
    )
    assert json.loads(config.config_file(group, "linux").body) == {
        "cloudService": {"automaticDefinitionUpdateEnabled": True, "definitionUpdatesInterval": 3600},
        "antivirusEngine": {
            "offlineDefinitionUpdateUrl": "https://portal.example.org/mirror/groups/pilot/linux/production/",
            "offlineDefinitionUpdate": "enabled",
            "offlineDefinitionUpdateFallbackToCloud": True,
            "enforcementLevel": "real_time",
        },
        "features": {"offlineDefinitionUpdateVerifySig": "disabled"},
    }


def test_the_mac_profile_is_a_plist_for_com_microsoft_wdav_with_the_same_settings(mirror, make_group):
    group = make_group("pilot", platforms=("linux", "mac"))
    profile_file = config.config_file(group, "mac")
    assert profile_file.content_type == "application/x-apple-aspen-config"
    assert profile_file.filename == "pilot.mobileconfig"
    profile = plistlib.loads(profile_file.body)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.microsoft.wdav"
    settings_part = {k: v for k, v in payload.items() if not k.startswith("Payload")}
    assert settings_part == config.managed_settings(group, "mac")
    jsonschema.validate(settings_part, MDATP_MANAGED_SCHEMA)
    assert settings_part["antivirusEngine"]["offlineDefinitionUpdateUrl"].endswith("/groups/pilot/mac/production/")
    # Regenerating gives the same identity, so installing it again replaces the profile.
    assert plistlib.loads(config.mobileconfig(group))["PayloadUUID"] == profile["PayloadUUID"]
    assert payload["PayloadUUID"] != profile["PayloadUUID"]


def test_a_platform_the_group_does_not_have_is_refused(mirror, make_group):
    group = make_group("pilot")
    with pytest.raises(ValueError, match="group pilot has no mac endpoints"):
        config.config_file(group, "mac")
    with pytest.raises(ValueError, match="unknown platform 'windows'"):
        config.config_file(group, "windows")


SEED_SAMPLE = """{
  "cloudService": {
    "automaticDefinitionUpdateEnabled": true,
    "definitionUpdatesInterval": 1202
  },
  "antivirusEngine": {
    "offlineDefinitionUpdateUrl": "http://172.22.199.67:8000/linux/production/",
    "offlineDefintionUpdateFallbackToCloud":false,
    "offlineDefinitionUpdate": "enabled"
  },
"features": {
"offlineDefinitionUpdateVerifySig": "enabled"
}
}"""


def test_the_seed_sample_imports_with_a_warning_about_its_misspelling(mirror, make_group, admin):
    group = make_group("pilot", fallback_to_cloud=True, update_interval=28800)
    warnings = config.import_policy(group, SEED_SAMPLE, admin)
    group.refresh_from_db()
    assert (group.update_interval, group.fallback_to_cloud, group.offline_update, group.verify_signature) == (
        1202,
        False,
        True,
        True,
    )
    assert any("offlineDefintionUpdateFallbackToCloud is misspelled" in w for w in warnings)
    assert any(
        "offlineDefinitionUpdateUrl (http://172.22.199.67:8000/linux/production/) ignored" in w for w in warnings
    )
    from core.models import AuditEvent

    event = AuditEvent.objects.get(action="group.update")
    assert event.details["imported"] == {"update_interval": 1202, "fallback_to_cloud": False}


@pytest.mark.parametrize(
    "text, path, words",
    [
        (
            '{"cloudService": {"definitionUpdatesInterval": "1202"}}',
            "cloudService.definitionUpdatesInterval",
            'got the string "1202"',
        ),
        (
            '{"cloudService": {"definitionUpdatesInterval": 30}}',
            "cloudService.definitionUpdatesInterval",
            "30 is outside 60–86400",
        ),
        (
            '{"cloudService": {"definitionUpdatesInterval": 1e400}}',
            "cloudService.definitionUpdatesInterval",
            "expected a whole number of seconds",
        ),
        (
            '{"cloudService": {"definitionUpdatesInterval": NaN}}',
            "cloudService.definitionUpdatesInterval",
            "expected a whole number of seconds",
        ),
        (
            '{"cloudService": {"automaticDefinitionUpdateEnabled": "yes"}}',
            "cloudService.automaticDefinitionUpdateEnabled",
            "expected true or false",
        ),
        (
            '{"antivirusEngine": {"offlineDefinitionUpdate": true}}',
            "antivirusEngine.offlineDefinitionUpdate",
            'expected "enabled" or "disabled", got true',
        ),
        (
            '{"antivirusEngine": {"offlineDefintionUpdateFallbackToCloud": "false"}}',
            "antivirusEngine.offlineDefinitionUpdateFallbackToCloud",
            "expected true or false",
        ),
        ('{"features": []}', "features", "expected an object, got a list"),
        ("[1, 2]", "file", "expected a JSON object at the top"),
        ("{not json", "file", "not valid JSON"),
        ('{"antivirusEngine": {"exclusions": []}}', "file", "none of the offline-update settings"),
    ],
)
def test_wrong_types_are_refused_by_json_path_and_nothing_changes(mirror, make_group, admin, text, path, words):
    group = make_group("pilot")
    before = group.policy
    with pytest.raises(config.ConfigImportError) as refused:
        config.import_policy(group, text, admin)
    assert words in refused.value.errors[path]
    group.refresh_from_db()
    assert group.policy == before


def test_settings_the_portal_does_not_manage_are_named_in_a_warning(mirror, make_group, admin):
    group = make_group("pilot")
    warnings = config.import_policy(
        group,
        json.dumps(
            {
                "cloudService": {"enabled": True, "definitionUpdatesInterval": 600},
                "antivirusEngine": {"exclusions": [], "enforcementLevel": "real_time"},
            }
        ),
        admin,
    )
    group.refresh_from_db()
    assert (group.update_interval, group.enforcement_level) == (600, "real_time")
    assert warnings == ["not managed by the portal, left out: antivirusEngine.exclusions, cloudService.enabled"]


# --- Merging the group's keys into an endpoint's own file (DESIGN §2.3: never replace it) ---------------

# An endpoint's file as an organisation writes it: settings the portal does not own around the few it
# does, in Microsoft's documented structure (defender-docs linux-preferences.md: exclusions,
# tamperProtection, cloudService), numbers written as people write them.
OWN_FILE = """{
  "antivirusEngine": {
    "enforcementLevel": "real_time",
    "exclusions": [
      {"$type": "excludedPath", "isDirectory": true, "path": "/var/lib/postgresql"},
      {"$type": "excludedFileExtension", "extension": ".log"}
    ],
    "offlineDefinitionUpdateUrl": "http://old-mirror.example.org/linux/production/",
    "scanHistoryMaximumItems": 10000,
    "threatTypeSettings": [{"key": "potentially_unwanted_application", "value": "block"}]
  },
  "cloudService": {
    "enabled": true,
    "diagnosticLevel": "required",
    "automaticDefinitionUpdateEnabled": true,
    "definitionUpdatesInterval": 28800,
    "cloudBlockLevel": "high",
    "ratio": 1.10
  },
  "tamperProtection": {"enforcementLevel": "block"},
  "edr": {"tags": [{"key": "GROUP", "value": "Bâtiment 5"}]}
}
"""


def test_a_merge_sets_only_the_groups_keys_and_keeps_every_other_key_in_its_place(mirror, make_group):
    group = make_group("pilot", update_interval=3600)

    merged = config.merge_managed_config(OWN_FILE.encode(), group, "linux")

    data = json.loads(merged.body)
    before = json.loads(OWN_FILE)
    assert list(data) == ["antivirusEngine", "cloudService", "tamperProtection", "edr", "features"]
    assert list(data["antivirusEngine"]) == [
        "enforcementLevel",
        "exclusions",
        "offlineDefinitionUpdateUrl",
        "scanHistoryMaximumItems",
        "threatTypeSettings",
        "offlineDefinitionUpdate",
        "offlineDefinitionUpdateFallbackToCloud",
    ]
    for section in ("tamperProtection", "edr"):
        assert data[section] == before[section]
    for key in ("enforcementLevel", "exclusions", "scanHistoryMaximumItems", "threatTypeSettings"):
        assert data["antivirusEngine"][key] == before["antivirusEngine"][key]
    for key in ("enabled", "diagnosticLevel", "cloudBlockLevel"):
        assert data["cloudService"][key] == before["cloudService"][key]
    assert b'"ratio": 1.10\n' in merged.body  # a number comes back as it was written
    assert '"value": "Bâtiment 5"'.encode() in merged.body  # and text unescaped
    # The group's keys, exactly as the generated file has them.
    owned = config.managed_settings(group, "linux")
    for section, values in owned.items():
        for key, value in values.items():
            assert data[section][key] == value
    assert merged.changes == [
        "cloudService.definitionUpdatesInterval",
        "antivirusEngine.offlineDefinitionUpdateUrl",
        "antivirusEngine.offlineDefinitionUpdate",
        "antivirusEngine.offlineDefinitionUpdateFallbackToCloud",
        "features.offlineDefinitionUpdateVerifySig",
    ]
    # Two-space JSON with a final new line, as the generated file.
    assert merged.body.endswith(b"}\n") and b'\n  "cloudService": {\n    "enabled": true,' in merged.body


def test_merging_again_changes_nothing_and_returns_the_file_byte_for_byte(mirror, make_group):
    group = make_group("pilot")
    once = config.merge_managed_config(OWN_FILE.encode(), group, "linux")

    again = config.merge_managed_config(once.body, group, "linux")

    assert again.changes == [] and again.body == once.body
    # A file that holds the group's keys in its own layout is not rewritten for its spacing either.
    compact = json.dumps(json.loads(once.body), separators=(",", ":")).encode()
    assert config.merge_managed_config(compact, group, "linux").body == compact


@pytest.mark.parametrize("existing", [None, b"", b"  \n"])
def test_an_absent_or_empty_file_becomes_the_groups_generated_file(mirror, make_group, existing):
    group = make_group("pilot", enforcement_level="real_time")

    merged = config.merge_managed_config(existing, group, "linux")

    assert merged.body == config.managed_json(group)
    assert "antivirusEngine.enforcementLevel" in merged.changes


def test_a_key_the_group_does_not_set_is_left_to_the_file(mirror, make_group):
    group = make_group("pilot")  # no enforcement level in its policy
    merged = config.merge_managed_config(b'{"antivirusEngine": {"enforcementLevel": "passive"}}', group, "linux")
    assert json.loads(merged.body)["antivirusEngine"]["enforcementLevel"] == "passive"
    assert "antivirusEngine.enforcementLevel" not in merged.changes


def test_the_seeds_misspelled_fallback_key_is_replaced_in_its_place_and_said(mirror, make_group):
    group = make_group("pilot", fallback_to_cloud=False, update_interval=1202)

    merged = config.merge_managed_config(SEED_SAMPLE.encode(), group, "linux")

    antivirus = json.loads(merged.body)["antivirusEngine"]
    assert list(antivirus) == [
        "offlineDefinitionUpdateUrl",
        "offlineDefinitionUpdateFallbackToCloud",
        "offlineDefinitionUpdate",
    ]
    assert "offlineDefintionUpdateFallbackToCloud" not in merged.body.decode()
    assert merged.changes == [
        "antivirusEngine.offlineDefintionUpdateFallbackToCloud (misspelled) replaced by "
        "antivirusEngine.offlineDefinitionUpdateFallbackToCloud",
        "antivirusEngine.offlineDefinitionUpdateUrl",
    ]
    # Both spellings present: the misspelled one goes, the right one takes the group's value.
    both = b'{"antivirusEngine": {"offlineDefintionUpdateFallbackToCloud": true, "offlineDefinitionUpdateFallbackToCloud": true}}'
    antivirus = json.loads(config.merge_managed_config(both, group, "linux").body)["antivirusEngine"]
    assert antivirus["offlineDefinitionUpdateFallbackToCloud"] is False
    assert "offlineDefintionUpdateFallbackToCloud" not in antivirus


def test_true_is_not_taken_for_one_nor_one_for_true(mirror, make_group):
    group = make_group("pilot")
    merged = config.merge_managed_config(
        b'{"cloudService": {"automaticDefinitionUpdateEnabled": 1, "definitionUpdatesInterval": 28800.0}}',
        group,
        "linux",
    )
    assert merged.changes[0] == "cloudService.automaticDefinitionUpdateEnabled"
    assert "cloudService.definitionUpdatesInterval" not in merged.changes  # 28800.0 is 28800 in JSON
    assert json.loads(merged.body)["cloudService"]["automaticDefinitionUpdateEnabled"] is True


def test_a_string_with_a_lone_surrogate_is_kept_escaped_so_the_file_stays_utf_8(mirror, make_group):
    group = make_group("pilot")
    existing = '{"edr": {"tags": [{"key": "GROUP", "value": "Bâtiment \\ud800 5"}]}}'.encode()

    merged = config.merge_managed_config(existing, group, "linux")

    merged.body.decode("utf-8")  # strict: the file stays UTF-8
    assert b'"value": "B\\u00e2timent \\ud800 5"' in merged.body  # that one string is written all escaped
    assert json.loads(merged.body)["edr"] == json.loads(existing)["edr"]


@pytest.mark.parametrize(
    "existing, status, words",
    [
        (b'{\n  "antivirusEngine": {\n    "exclusions": [\n  }\n}', 400, "not valid JSON at line 4, column 3"),
        (b"exclusions=/var/log", 400, "not valid JSON at line 1, column 1: Expecting value"),
        (
            b'{"antivirusEngine": {"exclusions": [], "exclusions": [{"path": "/srv"}]}}',
            400,
            'the key "antivirusEngine.exclusions" appears twice',
        ),
        (b'{\n "cloudService": {"ratio": "NaN",\n  "x": NaN}}', 400, "at line 3, column 8: NaN is not a JSON number"),
        (b'{"a": -Infinity}', 400, "at line 1, column 7: -Infinity is not a JSON number"),
        (b'["cloudService"]', 400, "the top level is a list; mdatp_managed.json holds one JSON object"),
        (b'{"features": "enabled"}', 400, '"features" is the string "enabled"; it must be an object'),
        (b'{"cloudService": 3}', 400, '"cloudService" is the number 3; it must be an object'),
        (b'{\n  "edr": "B\xe2timent"\n}', 400, "not UTF-8 text: byte 0xe2 at line 2, column 12"),
        (b'\xef\xbb\xbf{"edr": {}}', 400, "byte order mark"),
        (b"{" + b" " * config.MAX_MANAGED_BYTES + b"}", 413, "a managed configuration is at most 1048576 bytes"),
    ],
)
def test_a_file_that_cannot_be_read_strictly_is_refused_with_one_reason(mirror, make_group, existing, status, words):
    group = make_group("pilot")
    with pytest.raises(Refused) as refused:
        config.merge_managed_config(existing, group, "linux")
    assert words in str(refused.value)
    assert (refused.value.status, refused.value.field) == (status, "file")


# --- The agent's door: POST /api/v1/endpoint/managed-config -----------------------------------------------


@pytest.fixture
def enrolled(mirror, make_group):
    group = make_group("pilot", platforms=("linux", "mac"), update_interval=3600)

    def make(platform="linux", machine="machine-1"):
        secret = enrollment.create_enrollment_secret(group, "lab")[1]
        endpoint, token = enrollment.enroll(secret, machine, "host-1", platform, "x86_64")
        return endpoint, APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")

    make.group = group
    return make


URL = "/api/v1/endpoint/managed-config"


def test_the_agent_posts_its_file_and_gets_it_back_merged_with_the_keys_it_changed(enrolled):
    endpoint, client = enrolled()

    response = client.post(URL, OWN_FILE.encode(), content_type="application/json")

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.content == config.merge_managed_config(OWN_FILE.encode(), enrolled.group, "linux").body
    assert response["X-Managed-Config-Changes"] == (
        "cloudService.definitionUpdatesInterval, antivirusEngine.offlineDefinitionUpdateUrl, "
        "antivirusEngine.offlineDefinitionUpdate, antivirusEngine.offlineDefinitionUpdateFallbackToCloud, "
        "features.offlineDefinitionUpdateVerifySig"
    )
    endpoint.refresh_from_db()
    assert endpoint.managed_config_problem == "" and endpoint.managed_config_checked_at is not None

    again = client.post(URL, response.content, content_type="application/json")
    assert again.content == response.content and again["X-Managed-Config-Changes"] == ""

    empty = client.post(URL, b"", content_type="application/json")
    assert empty.content == config.managed_json(enrolled.group)


def test_a_file_the_portal_cannot_read_is_refused_shown_on_the_endpoint_and_cleared_when_fixed(enrolled, api, viewer):
    endpoint, client = enrolled()

    refused = client.post(URL, b'{"antivirusEngine": {"exclusions": [}', content_type="application/json")

    assert refused.status_code == 400
    reason = "not valid JSON at line 1, column 37: Expecting value"
    assert reason in refused.json()["detail"]
    endpoint.refresh_from_db()
    assert reason in endpoint.managed_config_problem
    assert endpoint.finding_codes == ",managed_config_unreadable,"
    shown = api.as_user(viewer).get(f"/api/v1/endpoints/{endpoint.pk}/").json()
    assert reason in shown["managed_config_problem"]
    assert [f["code"] for f in shown["findings"]] == ["managed_config_unreadable"]
    page = api.as_user(viewer).get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    assert "The endpoint&#x27;s managed configuration cannot be read" in page and reason in page

    # A report while the problem stands keeps the finding; judging is otherwise as before.
    report = client.post("/api/v1/reports", health_text(enrolled.group), content_type="text/plain")
    assert report.status_code == 201 and "managed_config_unreadable" in report.json()["findings"]

    fixed = client.post(URL, b'{"antivirusEngine": {"exclusions": []}}', content_type="application/json")

    assert fixed.status_code == 200
    endpoint.refresh_from_db()
    assert endpoint.managed_config_problem == "" and "managed_config" not in endpoint.finding_codes
    assert not [f for f in endpoint.findings if f["code"].startswith("managed_config")]
    report = client.post("/api/v1/reports", health_text(enrolled.group), content_type="text/plain")
    assert report.status_code == 201 and "managed_config_unreadable" not in report.json()["findings"]


def test_a_file_announced_over_one_mib_is_refused_before_it_is_read(enrolled):
    endpoint, client = enrolled()
    response = client.generic(
        "POST", URL, b"{}", content_type="application/json", CONTENT_LENGTH=str(config.MAX_MANAGED_BYTES + 1)
    )
    assert response.status_code == 413 and "at most 1048576 bytes" in response.json()["detail"]
    endpoint.refresh_from_db()
    assert "1048577 bytes" in endpoint.managed_config_problem


def test_without_a_token_nothing_is_merged(enrolled):
    response = APIClient().post(URL, b"{}", content_type="application/json")
    assert response.status_code == 401 and response["WWW-Authenticate"] == 'Bearer realm="endpoint"'


def test_the_get_for_older_agents_and_the_ui_still_answers_the_groups_file(enrolled):
    _, client = enrolled()
    response = client.get(URL)
    assert response.status_code == 200 and response.content == config.managed_json(enrolled.group)


# --- macOS: Microsoft's way is a configuration profile from the MDM; never a second one --------------------


def test_a_mac_without_managed_preferences_gets_the_groups_profile(enrolled):
    endpoint, client = enrolled("mac")

    response = client.post(URL, b"", content_type="application/x-plist")

    assert response.status_code == 200 and response["Content-Type"] == "application/x-apple-aspen-config"
    assert response.content == config.mobileconfig(enrolled.group)
    endpoint.refresh_from_db()
    assert endpoint.managed_config_problem == "" and endpoint.managed_config_checked_at is not None


@pytest.mark.parametrize("fmt", [plistlib.FMT_XML, plistlib.FMT_BINARY])
def test_an_mdm_profile_without_the_groups_keys_is_a_conflict_reported_instead_of_our_profile(enrolled, fmt):
    endpoint, client = enrolled("mac")
    # What `plutil -p "/Library/Managed Preferences/com.microsoft.wdav.plist"` shows in Microsoft's example
    # (defender-docs mac-install-with-other-mdm.md), plus a cloudService of the organisation's own.
    prefs = {
        "antivirusEngine": {"scanHistoryMaximumItems": 10000},
        "cloudService": {"automaticDefinitionUpdateEnabled": True, "definitionUpdatesInterval": 28800},
        "tamperProtection": {"enforcementLevel": "audit"},
    }

    response = client.post(URL, plistlib.dumps(prefs, fmt=fmt), content_type="application/x-plist")

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert detail.startswith("an MDM profile already sets com.microsoft.wdav without the group's settings")
    assert "cloudService.definitionUpdatesInterval is the number 28800" in detail
    assert "antivirusEngine.offlineDefinitionUpdateUrl missing" in detail
    assert "cloudService.automaticDefinitionUpdateEnabled" not in detail  # that one already agrees
    endpoint.refresh_from_db()
    assert endpoint.finding_codes == ",mdm_profile_conflict,"
    assert endpoint.managed_config_problem == detail[:500]

    # The organisation adds the group's keys to its profile: no conflict any more.
    for section, values in config.managed_settings(enrolled.group, "mac").items():
        prefs.setdefault(section, {}).update(values)
    settled = client.post(URL, plistlib.dumps(prefs, fmt=fmt), content_type="application/x-plist")

    assert settled.status_code == 200
    endpoint.refresh_from_db()
    assert endpoint.managed_config_problem == "" and endpoint.finding_codes == ""


@pytest.mark.parametrize(
    "body",
    [
        b"antivirusEngine = {}",
        b'<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>antivirusEngine</key>',
        b"bplist00\xd1\x01\x02",
    ],
)
def test_managed_preferences_that_are_not_a_property_list_are_refused(enrolled, body):
    endpoint, client = enrolled("mac")
    response = client.post(URL, body, content_type="application/x-plist")
    assert response.status_code == 400
    assert "the managed preferences of com.microsoft.wdav are not a property list" in response.json()["detail"]
    endpoint.refresh_from_db()
    assert endpoint.finding_codes == ",managed_config_unreadable,"
