"""The endpoint agent (agent/mde-offline-agent.sh) run under dash against a live portal, with the stand-in mdatp.

Each run is a real process: the agent enrolls, posts `mdatp health`, and keeps the group's
managed configuration installed in a temporary directory, as it would on an endpoint.
"""

import configparser
import json
import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.test import Client

from fleet.models import Endpoint, HealthReport, IdentityConflict
from fleet.services import enrollment, ingest, rings
from fleet.services.config import config_file, managed_json
from tests.samples import report_of

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "agent"
SCRIPT = AGENT / "mde-offline-agent.sh"
MDATP = AGENT / "testing" / "mdatp"
SHELL = shutil.which("dash") or shutil.which("sh")
STANDIN_GUID = "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59"  # the stand-in's default machine_guid
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ mde-offline-agent: ")

live = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def apply(marks):
    def decorate(test):
        for mark in reversed(marks):
            test = mark(test)
        return test

    return decorate


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


@dataclass
class Endpoint_:
    """One simulated machine: its configuration file, state directory and managed config path."""

    tmp: Path
    url: str
    secret: str
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        self.bin = self.tmp / "bin"
        self.bin.mkdir()
        (self.bin / "mdatp").symlink_to(MDATP)
        self.state = self.tmp / "state"
        self.managed = self.tmp / "etc" / "mdatp" / "managed" / "mdatp_managed.json"
        self.secret_file = self.tmp / "enroll-secret"
        self.secret_file.write_text(self.secret + "\n")
        self.secret_file.chmod(0o600)
        self.calls = self.tmp / "mdatp-calls.log"
        self.conf = self.tmp / "agent.conf"
        self.write_conf(
            PORTAL_URL=self.url + "/",
            ENROLL_SECRET_FILE=str(self.secret_file),
            STATE_DIR=str(self.state),
            INSTALL_CONFIG="yes",
            MANAGED_CONFIG_PATH=str(self.managed),
        )

    def write_conf(self, **values):
        lines = ["# written by the test", ""] + [f'{key}="{value}"' for key, value in values.items()]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def token_file(self) -> Path:
        return self.state / "token"

    def run(self, *args, **env) -> Run:
        environ = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.tmp),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "MDE_AGENT_CONF": str(self.conf),
            "MDATP_STANDIN_LOG": str(self.calls),
            **self.env,
        }
        environ.update({key: str(value) for key, value in env.items() if value is not None})
        for key in [key for key, value in env.items() if value is None]:
            environ.pop(key, None)
        done = subprocess.run([SHELL, str(SCRIPT), *args], env=environ, capture_output=True, text=True, timeout=60)
        return Run(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def group(make_group):
    return make_group("pilot", 10, platforms=("linux", "mac"))


@pytest.fixture
def machine(tmp_path, live_server, group):
    secret = enrollment.create_enrollment_secret(group, "lab")[1]
    url = group.definition_url("linux")
    # A well configured endpoint of the group, so that its reports are judged against the right URL.
    return Endpoint_(
        tmp_path,
        live_server.url,
        secret,
        env={
            "MDATP_STANDIN_OFFLINE_DEFINITION_URL_CONFIGURED": url,
            "MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI": url,
        },
    )


def assert_ok(run: Run):
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    assert run.lines and all(STAMP.match(line) for line in run.lines), run.stderr


def forget_cached_groups():
    """The portal keeps groups a few seconds per process (fleet.services.ingest); the live server is this process."""
    ingest._GROUPS.clear()


def file_id(path: Path) -> tuple:
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


# --- End to end ------------------------------------------------------------------------------------


@apply(live)
def test_the_first_run_enrolls_reports_and_installs_the_groups_config(machine, group):
    run = machine.run()

    assert_ok(run)
    endpoint = Endpoint.objects.get()
    assert (endpoint.machine_id, endpoint.group, endpoint.platform) == (STANDIN_GUID, group, "linux")
    assert endpoint.hostname == os.uname().nodename
    assert endpoint.arch in ("x86_64", "arm64")
    report = HealthReport.objects.get()
    assert report.endpoint == endpoint and report.form == "json"
    assert report.definitions_version == "1.407.417.0"
    assert (endpoint.app_version, endpoint.definitions_version) == ("101.24032.0007", "1.407.417.0")
    assert endpoint.last_seen is not None and endpoint.reports_received == 1
    assert endpoint.compliance != "new"
    assert f"enrolled as endpoint {endpoint.pk} in group pilot" in run.stderr
    assert f"report {report.pk} accepted (HTTP 201, json form): compliance {endpoint.compliance}" in run.stderr

    # The managed configuration, exactly the group's, world-readable as mdatp expects.
    assert machine.managed.read_bytes() == managed_json(group)
    assert stat.S_IMODE(machine.managed.stat().st_mode) == 0o644
    assert "managed configuration merged into" in run.stderr

    # The token: in a root-only file, never in the log; the secret neither.
    token = machine.token_file.read_text().strip()
    assert token.startswith("mde_ep_") and ingest.endpoint_for_token(f"Bearer {token}") == endpoint
    assert stat.S_IMODE(machine.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(machine.state.stat().st_mode) == 0o700
    assert token not in run.stderr and machine.secret not in run.stderr
    # No temporary file is left behind, next to the config or in TMPDIR.
    assert sorted(p.name for p in machine.managed.parent.iterdir()) == ["mdatp_managed.json"]
    assert not list(machine.tmp.glob("mde-offline-agent.*"))
    # The machine id came from `mdatp health --field machine_guid`; the report holds both JSON outputs.
    calls = machine.calls.read_text().splitlines()
    assert "health --field machine_guid" in calls and "health" not in calls
    assert "health --output json" in calls and "health --details definitions --output json" in calls


@apply(live)
def test_the_config_is_rewritten_only_when_the_groups_policy_changes(machine, group):
    assert_ok(machine.run())
    first = file_id(machine.managed)

    again = machine.run()

    assert_ok(again)
    assert HealthReport.objects.count() == 2 and Endpoint.objects.get().reports_received == 2
    assert "enrolled" not in again.stderr  # the stored token is used
    assert "managed configuration unchanged: " in again.stderr
    assert file_id(machine.managed) == first

    group.fallback_to_cloud = not group.fallback_to_cloud
    group.update_interval = 3600
    rings.save_group(group)
    forget_cached_groups()  # as the portal's per-process cache would after its few seconds
    third = machine.run()

    assert_ok(third)
    assert "managed configuration merged into" in third.stderr
    assert machine.managed.read_bytes() == managed_json(group)
    assert b'"definitionUpdatesInterval": 3600' in machine.managed.read_bytes()
    assert file_id(machine.managed) != first
    assert HealthReport.objects.count() == 3


@apply(live)
def test_a_deleted_config_file_is_installed_again(machine, group):
    assert_ok(machine.run())
    machine.managed.unlink()

    run = machine.run()

    assert_ok(run)
    assert machine.managed.read_bytes() == managed_json(group)


@apply(live)
def test_a_decommissioned_endpoint_stays_out_claims_once_and_reports_again_only_when_an_operator_accepts(machine):
    assert_ok(machine.run())
    endpoint = Endpoint.objects.get()
    enrollment.decommission_endpoint(endpoint)

    refused = machine.run()

    assert refused.returncode == 6
    assert not machine.token_file.exists()
    assert HealthReport.objects.count() == 1
    [line] = [line for line in refused.lines if "error:" in line]
    assert "HTTP 401: missing, invalid or revoked endpoint token" in line
    assert "decommissioned" in line and "the next run asks to enroll again once" in line

    claimed = machine.run()  # the one enrollment after the 401: held for an operator, not a way back in

    assert claimed.returncode == 9, claimed.stderr
    [conflict] = IdentityConflict.objects.all()
    assert f"held as identity conflict {conflict.pk} until an operator accepts it" in claimed.stderr
    endpoint.refresh_from_db()
    assert endpoint.decommissioned_at is not None and endpoint.token_hash is None

    for _ in range(2):  # waiting: no new claim, no report, a clear line
        waiting = machine.run()
        assert waiting.returncode == 9
        assert f"enrollment claim {conflict.pk} waits for an operator" in waiting.stderr
        assert "not enrolling again" in waiting.stderr
    assert IdentityConflict.objects.count() == 1 and HealthReport.objects.count() == 1

    enrollment.accept_conflict(conflict)
    back = machine.run()

    assert_ok(back)
    assert f"enrollment claim {conflict.pk} was accepted by an operator" in back.stderr
    endpoint.refresh_from_db()
    assert endpoint.decommissioned_at is None and HealthReport.objects.count() == 2
    assert "was accepted by an operator" not in machine.run().stderr  # said once


@apply(live)
def test_a_rejected_claim_keeps_the_agent_waiting_without_claiming_again(machine):
    assert_ok(machine.run())
    endpoint = Endpoint.objects.get()
    machine.token_file.unlink()  # a reinstalled machine, or someone else with its machine id

    assert machine.run().returncode == 9
    enrollment.reject_conflict(IdentityConflict.objects.get())
    again = machine.run()

    assert again.returncode == 9 and "or was rejected; not enrolling again" in again.stderr
    assert IdentityConflict.objects.count() == 1
    endpoint.refresh_from_db()
    assert endpoint.reports_received == 1 and endpoint.token_hash is not None


@apply(live)
def test_when_the_json_form_fails_the_text_form_is_sent(machine):
    wrapper = machine.bin / "mdatp"
    wrapper.unlink()
    # An older agent without --output json: the stand-in has no knob for it, so a wrapper refuses it.
    wrapper.write_text(f"""#!/bin/sh
for arg in "$@"; do
    if [ "$arg" = --output ]; then echo "mdatp: unknown option '--output'" >&2; exit 2; fi
done
exec {shlex.quote(str(MDATP))} "$@"
""")
    wrapper.chmod(0o755)

    run = machine.run()

    assert_ok(run)
    report = HealthReport.objects.get()
    assert report.form == "text" and report.definitions_version == "1.407.417.0"
    assert "failed (mdatp: unknown option '--output'): sending the text form" in run.stderr
    assert "(HTTP 201, text form)" in run.stderr
    assert Endpoint.objects.get().app_version == "101.24032.0007"
    # Both outputs, each after its command line; the offline facts came with the second one.
    assert report.raw.startswith("$ mdatp health\n") and "\n$ mdatp health --details definitions\n" in report.raw
    assert "definitions_details_missing" not in report.finding_codes
    assert Endpoint.objects.get().offline_update == "enabled"


@pytest.fixture
def served(group, make_package):
    """The ring serves a package older than the stand-in's definitions, so its endpoints can be up to date."""
    rings.approve_package(group, make_package(definition="1.407.400.0"))
    forget_cached_groups()


@apply(live)
def test_a_correctly_configured_endpoint_sends_both_outputs_and_is_up_to_date(machine, served):
    run = machine.run(ARCH="x86_64")

    assert_ok(run)
    report = HealthReport.objects.get()
    envelope = json.loads(report.raw)
    assert envelope["$type"] == "mdeOfflineAgentReport"
    assert envelope["health"]["$type"] == "getHealthAllResult" and "appVersion" in envelope["health"]
    assert envelope["definitions"]["offlineDefinitionUpdate"] == {
        "displayValue": True,
        "isManaged": True,
        "value": "enabled",
    }
    endpoint = Endpoint.objects.get()
    assert endpoint.compliance == "up_to_date" and endpoint.findings == [], endpoint.findings
    assert (endpoint.offline_update, endpoint.verify_sig, endpoint.enforcement_level) == (
        "enabled",
        "enabled",
        "real_time",
    )
    assert "(HTTP 201, json form): compliance up_to_date" in run.stderr


@apply(live)
def test_a_correctly_configured_mac_is_up_to_date_from_the_macos_output(machine, group, make_package):
    rings.approve_package(group, make_package(platform="mac", definition="1.407.400.0"))
    forget_cached_groups()
    url = group.definition_url("mac")

    run = machine.run(
        ARCH="x86_64",
        PLATFORM="mac",
        MDATP_STANDIN_PLATFORM="mac",
        MDATP_STANDIN_OFFLINE_DEFINITION_URL_CONFIGURED=url,
        MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI=url,
    )

    assert_ok(run)
    endpoint = Endpoint.objects.get()
    assert (endpoint.platform, endpoint.compliance, endpoint.findings) == ("mac", "up_to_date", [])
    health = json.loads(HealthReport.objects.get().raw)["health"]
    assert health["realTimeProtectionSubsystem"] == "endpoint_security_extension"


@apply(live)
@pytest.mark.parametrize("lacks", ["json,details", "details"])
def test_an_agent_too_old_for_details_sends_plain_health_and_is_told_what_is_missing(machine, served, lacks):
    run = machine.run(ARCH="x86_64", MDATP_STANDIN_LACKS=lacks, MDATP_STANDIN_APP_VERSION="101.23062.0010")

    assert_ok(run)
    assert "`mdatp health --details definitions` failed (mdatp: unrecognised option '--details')" in run.stderr
    assert "sending the general health only (this Defender may be too old for it)" in run.stderr
    endpoint = Endpoint.objects.get()
    codes = [f["code"] for f in endpoint.findings]
    assert "definitions_details_missing" in codes and "agent_too_old" in codes
    assert "offline_update_disabled" not in codes and endpoint.compliance != "misconfigured"
    report = HealthReport.objects.get()
    assert report.form == ("text" if "json" in lacks else "json") and "offline_definition" not in report.raw


@apply(live)
def test_the_known_issue_is_named_after_enable_disable_and_re_enable_reports_with_a_failure(machine, served):
    cloud = "https://go.microsoft.com/fwlink/?linkid=2144709"
    assert_ok(machine.run(ARCH="x86_64"))
    assert_ok(
        machine.run(
            ARCH="x86_64",
            MDATP_STANDIN_OFFLINE_DEFINITION_UPDATE="disabled",
            MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI=cloud,
        )
    )
    failing = machine.run(
        ARCH="x86_64",
        MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI=cloud,
        MDATP_STANDIN_DEFINITIONS_UPDATE_FAIL_REASON="Failed to download the update package",
    )

    assert failing.returncode == 0, failing.stderr
    endpoint = Endpoint.objects.get()
    assert [
        c.changes["offline_update"][1] for c in endpoint.changes.order_by("at", "id") if "offline_update" in c.changes
    ] == ["enabled", "disabled", "enabled"]
    findings = {f["code"]: f for f in endpoint.findings}
    assert "reenable_known_issue" in findings and "update_failed" in findings
    assert "a fix is planned" in findings["reenable_known_issue"]["fix"]
    assert "restart" not in findings["reenable_known_issue"]["fix"].lower()
    assert "reenable_known_issue" in failing.stderr  # the agent logs the findings the portal answered


@apply(live)
def test_a_new_agent_with_engine_signature_verification_disabled_gets_that_finding(machine, served):
    run = machine.run(
        ARCH="x86_64",
        MDATP_STANDIN_APP_VERSION="101.26062.0005",
        MDATP_STANDIN_ENGINE_SIGNATURE_VERIFICATION="disabled",
    )

    assert_ok(run)
    endpoint = Endpoint.objects.get()
    assert [f["code"] for f in endpoint.findings] == ["engine_sig_verification_off"]
    assert endpoint.verify_sig == "DEPRECATED"
    definitions = json.loads(HealthReport.objects.get().raw)["definitions"]
    assert definitions["engineSignatureVerification"] == "disabled"
    assert definitions["offlineDefinitionUpdateVerifySig"]["value"] == "DEPRECATED"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        # The envelope cut short (a full disk while the agent wrote it).
        (lambda full: full[: len(full) // 2], "invalid JSON at line 1"),
        # Only the first command's line and its output, the second's command line and nothing after.
        (
            lambda full: (
                '$ mdatp health\nhealthy : true\ndefinitions_version : "1.407.417.0"\n'
                "$ mdatp health --details definitions\n"
            ),
            "line 4: no 'key : value' line after '$ mdatp health --details definitions'",
        ),
        (lambda full: '{"$type":"mdeOfflineAgentReport","health":"not json"}', "field 'health': expected the JSON"),
    ],
)
def test_a_partial_report_is_refused_with_one_clear_message(group, body, detail):
    _, token = enrollment.enroll(enrollment.create_enrollment_secret(group, "lab")[1], STANDIN_GUID, "web-1", "linux")
    full = report_of("linux-health.json", "linux-definitions.json")

    response = Client().post(
        "/api/v1/reports", body(full), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )

    assert response.status_code == 400, response.content
    assert detail in response.json()["detail"]
    assert not HealthReport.objects.exists()


@apply(live)
def test_neither_the_secret_nor_the_token_is_on_curls_command_line(machine):
    argv_log = machine.tmp / "curl-argv.log"
    curl = machine.bin / "curl"
    curl.write_text(f"""#!/bin/sh
printf '%s\\n' "$*" >> {shlex.quote(str(argv_log))}
exec {shlex.quote(shutil.which("curl"))} "$@"
""")
    curl.chmod(0o755)

    assert_ok(machine.run())
    assert_ok(machine.run())

    command_lines = argv_log.read_text()
    assert command_lines.count("\n") == 5  # enroll, report, config, report, config
    token = machine.token_file.read_text().strip()
    assert machine.secret not in command_lines and token not in command_lines and "Bearer" not in command_lines


@apply(live)
def test_a_refused_report_exits_non_zero_with_the_portals_reason_and_keeps_the_token(machine):
    assert_ok(machine.run())

    # The same token now carries another machine's report: the portal answers 403.
    run = machine.run(MDATP_STANDIN_MACHINE_GUID="9f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")

    assert run.returncode == 7
    assert (
        "report refused (HTTP 403): this report is from another machine (its machine_guid is not the one this token was enrolled for)"
        in run.stderr
    )
    assert machine.token_file.exists() and HealthReport.objects.count() == 1
    assert "managed configuration unchanged" in run.stderr  # the config is still kept


@apply(live)
def test_a_wrong_secret_enrolls_nothing(machine):
    machine.secret_file.write_text("mde_enr_not-the-secret\n")

    run = machine.run()

    assert run.returncode == 5
    assert "enrollment refused (HTTP 401): invalid, expired or revoked enrollment secret" in run.stderr
    assert not machine.token_file.exists() and not Endpoint.objects.exists()


@apply(live)
def test_mdatp_failing_is_a_readable_error_and_sends_nothing(machine):
    run = machine.run(MDATP_STANDIN_FAIL="1")

    assert run.returncode == 3
    assert "cannot read the machine id" in run.stderr and "Could not connect to the daemon" in run.stderr
    assert not Endpoint.objects.exists()

    assert_ok(machine.run("--enroll-only"))
    failing = machine.run(MDATP_STANDIN_FAIL="1")

    assert failing.returncode == 3
    assert "`mdatp health` failed, no report sent: ATTENTION: Could not connect to the daemon" in failing.stderr
    assert not HealthReport.objects.exists()


@apply(live)
def test_enroll_only_enrolls_once_and_sends_nothing(machine):
    first = machine.run("--enroll-only")

    assert_ok(first)
    assert Endpoint.objects.count() == 1 and not HealthReport.objects.exists() and not machine.managed.exists()
    token = machine.token_file.read_text()

    second = machine.run("--enroll-only")

    assert_ok(second)
    assert "already enrolled" in second.stderr and machine.token_file.read_text() == token


@apply(live)
def test_without_install_config_the_managed_file_is_left_alone(machine):
    # The file says yes; the environment wins.
    run = machine.run(INSTALL_CONFIG="no")

    assert_ok(run)
    assert HealthReport.objects.count() == 1 and not machine.managed.exists()


@apply(live)
def test_on_a_mac_the_profile_is_saved_for_mdm_and_nothing_is_installed(machine, group):
    run = machine.run(PLATFORM="mac")

    assert_ok(run)
    assert Endpoint.objects.get().platform == "mac"
    profile = machine.state / "managed-config.mobileconfig"
    assert profile.read_bytes() == config_file(group, "mac").body
    assert plistlib.loads(profile.read_bytes())["PayloadContent"][0]["PayloadType"] == "com.microsoft.wdav"
    assert not machine.managed.exists()
    assert "install it through your MDM" in run.stderr

    again = machine.run(PLATFORM="mac")

    assert_ok(again)
    assert "the group's profile is unchanged" in again.stderr and "MDM" not in again.stderr


@apply(live)
def test_an_unreachable_portal_is_a_readable_error(machine):
    run = machine.run(PORTAL_URL="http://127.0.0.1:9")

    assert run.returncode == 4
    [line] = [line for line in run.lines if "error:" in line]
    assert "the portal cannot be reached for enrollment: curl: (7)" in line
    assert not machine.token_file.exists()


# --- Configuration and usage (no portal needed) ------------------------------------------------------


@pytest.fixture
def offline(tmp_path):
    return Endpoint_(tmp_path, "http://127.0.0.1:9", "mde_enr_x")


def test_help_documents_the_options_and_exit_codes(offline):
    run = offline.run("--help")

    assert run.returncode == 0 and run.stderr == ""
    for words in (
        "--once",
        "--enroll-only",
        "Exit codes:",
        "PORTAL_URL",
        "ENROLL_SECRET_FILE",
        "STATE_DIR",
        "INSTALL_CONFIG",
        "MANAGED_CONFIG_PATH",
        "CURL_OPTS",
        "MDATP",
    ):
        assert words in run.stdout
    codes = re.findall(r"^  (\d)  ", run.stdout, re.M)
    assert codes == [str(n) for n in range(10)]


@pytest.mark.parametrize(
    "args, conf, expected",
    [
        (["--bogus"], None, "unknown argument: --bogus"),
        ([], "PORTAL_URL=\n", "PORTAL_URL is not set"),
        ([], "PORTAL_URL=ftp://portal\n", "PORTAL_URL must be an http(s) URL"),
        ([], "PORTAL_URL=http://portal\nINSTAL_CONFIG=yes\n", "line 2: unknown key INSTAL_CONFIG"),
        ([], "PORTAL_URL=http://portal\njust words\n", "line 2: expected KEY=value"),
        ([], "PORTAL_URL=http://portal\nINSTALL_CONFIG=maybe\n", "INSTALL_CONFIG must be yes or no"),
        ([], "PORTAL_URL=http://portal\nARCH=sparc\n", "unsupported architecture sparc"),
        (
            [],
            "PORTAL_URL=http://portal\nENROLL_SECRET_FILE=/nonexistent/secret\nSTATE_DIR={state}\n",
            "cannot read the enrollment secret file",
        ),
    ],
)
def test_configuration_errors_exit_2_with_one_readable_line(offline, args, conf, expected):
    if conf is not None:
        offline.conf.write_text(conf.format(state=offline.state))

    run = offline.run(*args)

    assert run.returncode == 2, run.stderr
    assert expected in run.lines[-1] and STAMP.match(run.lines[-1])


def test_the_example_configuration_is_read_and_the_environment_wins_over_it(offline):
    # Only an unreachable portal stops this run: the example's keys were all understood.
    run = offline.run(
        MDE_AGENT_CONF=AGENT / "agent.conf.example",
        PORTAL_URL=offline.url,
        STATE_DIR=offline.state,
        ENROLL_SECRET_FILE=offline.secret_file,
    )

    assert run.returncode == 4, run.stderr
    assert "cannot be reached for enrollment" in run.stderr


def test_the_script_is_posix_sh():
    for shell in ("dash", "sh", "bash"):
        if shutil.which(shell):
            done = subprocess.run([shell, "-n", str(SCRIPT)], capture_output=True, text=True)
            assert done.returncode == 0, (shell, done.stderr)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert os.access(SCRIPT, os.X_OK)
    if shutil.which("checkbashisms"):
        done = subprocess.run(["checkbashisms", "--posix", "--extra", str(SCRIPT)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    if shutil.which("shellcheck"):
        done = subprocess.run(["shellcheck", "--shell=sh", str(SCRIPT)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


# --- The files that run it -----------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str
    parser.read_string((AGENT / "systemd" / name).read_text())
    return parser


def installed_path() -> str:
    """Where the README installs the script."""
    readme = (AGENT / "README.md").read_text()
    [path] = set(re.findall(r"install -m 755 agent/mde-offline-agent\.sh (\S+)", readme))
    return path


def test_the_service_runs_the_script_where_the_readme_installs_it():
    service = unit("mde-offline-agent.service")["Service"]
    command = shlex.split(service["ExecStart"])

    assert command == [installed_path(), "--once"]
    assert service["Type"] == "oneshot"
    assert service.get("User", "root") == "root"
    assert service["StateDirectory"] == "mde-offline-agent" and service["StateDirectoryMode"] == "0700"
    # Hardening must leave the default managed config path writable.
    if service.get("ProtectSystem") in ("full", "strict"):
        writable = [p.lstrip("-") for p in service.get("ReadWritePaths", "").split()]
        assert any("/etc/opt/microsoft/mdatp/managed/mdatp_managed.json".startswith(p + "/") for p in writable)
    assert service.get("ProtectSystem") != "strict" or "/var/lib/mde-offline-agent" in service.get("ReadWritePaths", "")
    assert service["Environment"] == "MDE_AGENT_CONF=/etc/mde-offline-agent/agent.conf"


def test_the_timer_runs_the_service_hourly_with_a_random_delay():
    timer = unit("mde-offline-agent.timer")

    assert timer["Timer"]["Unit"] == "mde-offline-agent.service"
    assert timer["Timer"]["OnBootSec"] == "5min" and timer["Timer"]["OnUnitActiveSec"] == "1h"
    assert timer["Timer"]["RandomizedDelaySec"] == "15min"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_cron_line_sleeps_a_random_while_then_runs_the_script():
    lines = [
        line
        for line in (AGENT / "cron" / "mde-offline-agent").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    [entry] = [line for line in lines if "=" not in line.split()[0]]
    minute, hour, dom, month, dow, user, command = entry.split(None, 6)

    assert (hour, dom, month, dow, user) == ("*", "*", "*", "*", "root") and 0 <= int(minute) < 60
    assert "%" not in command.replace("\\%", "")  # cron turns a bare % into a new line
    shell_command = command.replace("\\%", "%")
    assert f"{installed_path()} --once" in shell_command and "/dev/urandom" in shell_command
    assert subprocess.run([SHELL, "-n", "-c", shell_command]).returncode == 0
    delay = subprocess.run(
        [SHELL, "-c", shell_command.split("&&")[0].replace("sleep", "echo", 1)], capture_output=True, text=True
    )
    assert 0 <= int(delay.stdout) < 900


def test_the_launchd_job_runs_the_script_hourly():
    job = plistlib.loads((AGENT / "launchd" / "local.mde-offline-agent.plist").read_bytes())

    assert job["ProgramArguments"] == [installed_path(), "--once"]
    assert job["StartInterval"] == 3600


# --- The group page -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_group_page_tells_how_to_install_the_agent_with_this_portals_url(viewer, make_group):
    pilot = make_group("pilot", 10, platforms=("linux", "mac"))
    client = Client()
    client.force_login(viewer)

    page = client.get(f"/groups/{pilot.slug}/").content.decode()

    assert "Install the agent" in page
    assert "PORTAL_URL=https://portal.example.org" in page
    assert "https://portal.example.org/api/v1/enrollment-secrets/" in page and '{"group": "pilot"' in page
    assert f"install -m 755 agent/mde-offline-agent.sh {installed_path()}" in page
    assert "systemctl enable --now mde-offline-agent.timer" in page
    assert "local.mde-offline-agent.plist" in page  # the group has macOS endpoints
