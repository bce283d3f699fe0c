"""The managed configuration of DESIGN §2.3, generated per group and platform, and imported back."""

import json
import plistlib

import jsonschema
import pytest

from fleet.choices import EnforcementLevel
from fleet.services import config

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
