"""The agent merges the group's keys into the endpoint's own managed configuration, never replaces it (DESIGN §2.3).

Real processes: the agent script under dash, the stand-in mdatp, a live portal. The files are the ones an
endpoint holds; the portal's answers are checked against the one service that merges them.
"""

import json
import plistlib
import re
import shutil
import stat
from pathlib import Path

import pytest
from django.test import Client

from fleet.models import Endpoint, HealthReport
from fleet.services import enrollment, rings
from fleet.services.config import config_file, managed_settings, merge_managed_config
from tests.fleet.test_agent import Endpoint_, apply, assert_ok, file_id, forget_cached_groups, live

# What an organisation keeps in mdatp_managed.json besides the portal's keys, in the structure Microsoft
# documents for Linux (defender-docs defender-endpoint/linux-preferences.md: antivirusEngine.exclusions,
# threatTypeSettings, cloudService.enabled / diagnosticLevel, tamperProtection, edr.tags).
OWN_FILE = b"""{
  "antivirusEngine": {
    "enforcementLevel": "real_time",
    "exclusions": [
      {"$type": "excludedPath", "isDirectory": true, "path": "/var/lib/postgresql"},
      {"$type": "excludedFileExtension", "extension": ".log"}
    ],
    "threatTypeSettings": [{"key": "potentially_unwanted_application", "value": "block"}]
  },
  "cloudService": {
    "enabled": true,
    "diagnosticLevel": "required",
    "automaticSampleSubmissionConsent": "safe",
    "definitionUpdatesInterval": 28800
  },
  "tamperProtection": {"enforcementLevel": "block"},
  "edr": {"tags": [{"key": "GROUP", "value": "datacenter-2"}]}
}
"""
STAMP = re.compile(r"\.bak-\d{8}T\d{6}Z$")


@pytest.fixture
def group(make_group):
    return make_group("pilot", 10, platforms=("linux", "mac"), update_interval=3600)


@pytest.fixture
def machine(tmp_path, live_server, group):
    secret = enrollment.create_enrollment_secret(group, "lab")[1]
    url = group.definition_url("linux")
    return Endpoint_(
        tmp_path,
        live_server.url,
        secret,
        env={
            "MDATP_STANDIN_OFFLINE_DEFINITION_URL_CONFIGURED": url,
            "MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI": url,
        },
    )


def own_file(machine, mode=0o600) -> Path:
    machine.managed.parent.mkdir(parents=True, exist_ok=True)
    machine.managed.write_bytes(OWN_FILE)
    machine.managed.chmod(mode)
    return machine.managed


def backups(machine) -> list[Path]:
    return sorted(machine.managed.parent.glob("mdatp_managed.json.bak-*"))


def shown(endpoint, viewer) -> tuple[dict, str]:
    """The endpoint as the API and its page show it to a viewer."""
    client = Client()
    client.force_login(viewer)
    return (
        client.get(f"/api/v1/endpoints/{endpoint.pk}/").json(),
        client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode(),
    )


@apply(live)
def test_a_file_with_exclusions_tamper_protection_and_cloud_settings_keeps_them_with_a_backup(machine, group):
    path = own_file(machine)

    run = machine.run()

    assert_ok(run)
    merged = path.read_bytes()
    assert merged == merge_managed_config(OWN_FILE, group, "linux").body
    data, before = json.loads(merged), json.loads(OWN_FILE)
    assert data["tamperProtection"] == before["tamperProtection"] and data["edr"] == before["edr"]
    assert data["antivirusEngine"]["exclusions"] == before["antivirusEngine"]["exclusions"]
    assert data["antivirusEngine"]["threatTypeSettings"] == before["antivirusEngine"]["threatTypeSettings"]
    for key in ("enabled", "diagnosticLevel", "automaticSampleSubmissionConsent"):
        assert data["cloudService"][key] == before["cloudService"][key]
    # Only the portal's keys differ from the file the machine had.
    for section, values in managed_settings(group, "linux").items():
        for key, value in values.items():
            assert data[section][key] == value
    others = {(s, k) for s in before for k in before[s]} - {
        (s, k) for s, v in managed_settings(group, "linux").items() for k in v
    }
    assert all(data[s][k] == before[s][k] for s, k in others)
    # The machine's file is kept beside it, as it was, with its mode; the new file keeps the mode too.
    [backup] = backups(machine)
    assert STAMP.search(backup.name) and backup.read_bytes() == OWN_FILE
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "managed configuration merged into" in run.stderr
    assert "cloudService.definitionUpdatesInterval, antivirusEngine.offlineDefinitionUpdateUrl" in run.stderr
    assert f"the previous file is {backup}" in run.stderr
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left
    endpoint = Endpoint.objects.get()
    assert endpoint.managed_config_problem == "" and endpoint.managed_config_checked_at is not None

    first = file_id(path)
    again = machine.run()

    assert_ok(again)
    assert "managed configuration unchanged" in again.stderr
    assert file_id(path) == first and len(backups(machine)) == 1


@apply(live)
def test_a_policy_change_merges_only_the_changed_key(machine, group):
    own_file(machine, 0o644)
    assert_ok(machine.run())

    group.update_interval = 7200
    rings.save_group(group)
    forget_cached_groups()
    run = machine.run()

    assert_ok(run)
    assert re.search(r"merged into \S+: cloudService\.definitionUpdatesInterval; the previous file", run.stderr)
    assert json.loads(machine.managed.read_bytes())["cloudService"]["definitionUpdatesInterval"] == 7200
    assert stat.S_IMODE(machine.managed.stat().st_mode) == 0o644 and len(backups(machine)) == 2


@apply(live)
def test_a_file_that_is_not_json_is_refused_left_untouched_shown_on_the_endpoint_and_cleared_when_fixed(
    machine, group, viewer
):
    broken = b'{\n  "antivirusEngine": {"exclusions": [\n}\n'
    machine.managed.parent.mkdir(parents=True)
    machine.managed.write_bytes(broken)
    before = file_id(machine.managed)

    run = machine.run()

    assert run.returncode == 8, run.stderr
    assert machine.managed.read_bytes() == broken and file_id(machine.managed) == before
    assert backups(machine) == []
    [line] = [line for line in run.lines if "error:" in line]
    reason = "not valid JSON at line 3, column 1: Expecting value"
    assert f"the portal refused {machine.managed} (HTTP 400), left as it is: {reason}" in line
    assert HealthReport.objects.count() == 1  # the report went through all the same
    endpoint = Endpoint.objects.get()
    assert reason in endpoint.managed_config_problem
    api, page = shown(endpoint, viewer)
    assert reason in api["managed_config_problem"]
    assert "managed_config_unreadable" in [f["code"] for f in api["findings"]]
    assert "managed configuration cannot be read" in page and reason in page

    machine.managed.write_bytes(b'{"antivirusEngine": {"exclusions": []}}\n')
    fixed = machine.run()

    assert_ok(fixed)
    assert json.loads(machine.managed.read_bytes())["antivirusEngine"]["exclusions"] == []
    endpoint.refresh_from_db()
    assert endpoint.managed_config_problem == "" and "managed_config" not in endpoint.finding_codes
    api, page = shown(endpoint, viewer)
    assert api["managed_config_problem"] == "" and "managed configuration cannot be read" not in page


@apply(live)
def test_config_dry_run_prints_the_change_as_a_diff_and_changes_nothing(machine, group):
    refused = machine.run("--config-dry-run")
    assert refused.returncode == 2 and "not enrolled yet" in refused.stderr

    assert_ok(machine.run("--enroll-only"))
    path = own_file(machine)
    before = file_id(path)

    run = machine.run("--config-dry-run")

    assert run.returncode == 0, run.stderr
    assert file_id(path) == before and path.read_bytes() == OWN_FILE and backups(machine) == []
    assert not HealthReport.objects.exists()  # a dry run sends no report
    assert run.stdout.startswith("--- ") and "\n+++ " in run.stdout
    assert '\n-    "definitionUpdatesInterval": 28800\n' in run.stdout
    assert '\n+    "definitionUpdatesInterval": 3600,\n' in run.stdout
    assert f'\n+    "offlineDefinitionUpdateUrl": "{group.definition_url("linux")}",\n' in run.stdout
    assert not [line for line in run.stdout.splitlines() if line.startswith("-") and "exclusions" in line]
    assert "dry run:" in run.stderr and "nothing changed" in run.stderr


@apply(live)
def test_restore_config_puts_the_newest_backup_back(machine, group):
    none = machine.run("--restore-config")
    assert none.returncode == 8 and "no backup of" in none.stderr

    path = own_file(machine)
    assert_ok(machine.run())
    assert path.read_bytes() != OWN_FILE

    run = machine.run("--restore-config")

    assert_ok(run)
    assert path.read_bytes() == OWN_FILE and stat.S_IMODE(path.stat().st_mode) == 0o600
    [backup] = backups(machine)
    assert f"restored {path} from {backup}" in run.stderr
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


@apply(live)
def test_only_the_five_newest_backups_are_kept(machine, group):
    path = own_file(machine)
    old = [path.parent / f"mdatp_managed.json.bak-2026010{n}T000000Z" for n in range(1, 7)]
    for backup in old:
        backup.write_bytes(b"{}")

    assert_ok(machine.run())

    kept = backups(machine)
    assert len(kept) == 5 and kept[:4] == old[2:] and kept[4].read_bytes() == OWN_FILE


@apply(live)
def test_on_a_mac_an_mdm_profile_without_the_groups_keys_is_reported_and_ours_not_saved(machine, group, tmp_path):
    prefs_dir = tmp_path / "Managed Preferences"
    prefs_dir.mkdir()
    # What `plutil -p "/Library/Managed Preferences/com.microsoft.wdav.plist"` shows in Microsoft's example
    # (defender-docs defender-endpoint/mac-install-with-other-mdm.md); real files are binary plists.
    prefs = {"antivirusEngine": {"scanHistoryMaximumItems": 10000}, "tamperProtection": {"enforcementLevel": "audit"}}
    (prefs_dir / "com.microsoft.wdav.plist").write_bytes(plistlib.dumps(prefs, fmt=plistlib.FMT_BINARY))
    profile = machine.state / "managed-config.mobileconfig"

    run = machine.run(PLATFORM="mac", MANAGED_PREFERENCES_DIR=prefs_dir)

    assert run.returncode == 8, run.stderr
    assert not profile.exists()
    [line] = [line for line in run.lines if "error:" in line]
    assert "(HTTP 409), left as it is: an MDM profile already sets com.microsoft.wdav without the group's" in line
    endpoint = Endpoint.objects.get()
    assert endpoint.finding_codes.count(",mdm_profile_conflict,") == 1
    assert "antivirusEngine.offlineDefinitionUpdateUrl missing" in endpoint.managed_config_problem

    # The organisation adds the group's keys to its own profile: the conflict clears.
    for section, values in managed_settings(group, "mac").items():
        prefs.setdefault(section, {}).update(values)
    (prefs_dir / "com.microsoft.wdav.plist").write_bytes(plistlib.dumps(prefs, fmt=plistlib.FMT_BINARY))
    settled = machine.run(PLATFORM="mac", MANAGED_PREFERENCES_DIR=prefs_dir)

    assert_ok(settled)
    endpoint.refresh_from_db()
    assert endpoint.managed_config_problem == "" and "mdm_profile_conflict" not in endpoint.finding_codes
    assert profile.read_bytes() == config_file(group, "mac").body


def test_the_help_names_the_new_options_and_what_the_agent_touches(tmp_path):
    run = Endpoint_(tmp_path, "http://127.0.0.1:9", "mde_enr_x").run("--help")
    assert run.returncode == 0
    for words in ("--config-dry-run", "--restore-config", "MANAGED_PREFERENCES_DIR", "mdatp_managed.json.bak-"):
        assert words in run.stdout


@pytest.mark.django_db
def test_the_group_page_says_which_keys_the_agent_touches_and_how_to_preview_and_undo(viewer, make_group):
    ring = make_group("broad", platforms=("linux", "mac"), enforcement_level="real_time")
    client = Client()
    client.force_login(viewer)

    page = client.get(f"/groups/{ring.slug}/").content.decode()

    for section, values in managed_settings(ring, "linux").items():
        for key in values:
            assert f"<code>{section}.{key}</code>" in page
    assert "Every other setting (exclusions, tamper protection, cloud settings…) is kept" in page
    assert "mdatp_managed.json.bak-" in page and "--config-dry-run" in page and "--restore-config" in page
    assert "/Library/Managed Preferences/com.microsoft.wdav.plist" in page


@apply(live)
def test_without_diff_the_dry_run_says_so_and_prints_the_merged_file(machine, group):
    assert_ok(machine.run("--enroll-only"))
    own_file(machine)
    # A PATH holding every tool the agent uses but diff (a minimal image without diffutils).
    tools = machine.tmp / "no-diff"
    tools.mkdir()
    for name in [
        "curl",
        "date",
        "sed",
        "tr",
        "cut",
        "mktemp",
        "mv",
        "cp",
        "chmod",
        "rm",
        "mkdir",
        "cat",
        "wc",
        "cmp",
        "dirname",
        "basename",
        "find",
        "uname",
        "tail",
        "sort",
        "id",
        "env",
        "python3",
    ]:
        found = shutil.which(name)
        assert found, name
        (tools / name).symlink_to(found)
    (tools / "mdatp").symlink_to(machine.bin / "mdatp")

    run = machine.run("--config-dry-run", PATH=str(tools))

    assert run.returncode == 0, run.stderr
    assert "diff is not installed: the merged file follows in full instead of a diff" in run.stderr
    assert run.stdout.encode() == merge_managed_config(OWN_FILE, group, "linux").body
    assert machine.managed.read_bytes() == OWN_FILE and backups(machine) == []
