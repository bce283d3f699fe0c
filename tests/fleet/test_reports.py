"""Enrollment and health reports over the API, as endpoints meet them; compliance; the fleet chores."""

import json
import subprocess
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from core.errors import Refused
from core.models import AuditEvent
from fleet.choices import Compliance, RolloutMode
from fleet.models import ComplianceSnapshot, Endpoint, EnrollmentSecret, HealthReport
from fleet.services import chores, enrollment, ingest, rings
from tests.samples import MDATP, SEED_SAMPLE, health_text

GUID_A = "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59"
GUID_B = "9f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"


@pytest.fixture
def secret(pilot):
    return enrollment.create_enrollment_secret(pilot, "lab")[1]


@pytest.fixture
def agent():
    return APIClient()


def enroll(agent, secret, machine_id=GUID_A, **extra):
    headers = {key: extra.pop(key) for key in list(extra) if key.startswith("HTTP_")}
    return agent.post(
        "/api/v1/enroll",
        {
            "secret": secret,
            "machine_id": machine_id,
            "hostname": extra.pop("hostname", "web-1"),
            "platform": extra.pop("platform", "linux"),
            "arch": "x86_64",
            "app_version": "101.24032.0007",
            **extra,
        },
        format="json",
        **headers,
    )


def post_report(agent, token, body, content_type="text/plain"):
    return agent.generic(
        "POST",
        "/api/v1/reports",
        body.encode() if isinstance(body, str) else body,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.fixture
def enrolled(agent, secret):
    response = enroll(agent, secret)
    assert response.status_code == 201, response.content
    return Endpoint.objects.get(pk=response.json()["endpoint"]), response.json()["token"]


# --- Enrollment ------------------------------------------------------------------------------------


def test_enrolling_returns_a_token_shown_once_and_stored_hashed(agent, secret, pilot):
    response = enroll(agent, secret)
    assert response.status_code == 201
    data = response.json()
    assert data["token"].startswith("mde_ep_") and data["group"] == "pilot"
    assert data["definition_url"] == "https://portal.example.org/mirror/groups/pilot/linux/production/"
    endpoint = Endpoint.objects.get()
    assert endpoint.token_hash != data["token"] and data["token"] not in json.dumps(
        list(Endpoint.objects.values()), default=str
    )
    assert (endpoint.machine_id, endpoint.hostname, endpoint.group, endpoint.compliance) == (
        GUID_A,
        "web-1",
        pilot,
        Compliance.NEW,
    )
    assert EnrollmentSecret.objects.get().enrollments == 1
    assert AuditEvent.objects.filter(action="endpoint.enroll").exists()


def test_re_enrolling_a_machine_with_its_current_token_reissues_its_token_for_the_same_endpoint(agent, secret):
    # Without its token the secret alone gets nothing (issue 14: tests/fleet/test_enrollment_trust.py).
    first = enroll(agent, secret).json()
    second = enroll(agent, secret, hostname="web-1-renamed", HTTP_AUTHORIZATION=f"Bearer {first['token']}").json()
    assert first["endpoint"] == second["endpoint"] and Endpoint.objects.count() == 1
    assert post_report(agent, first["token"], SEED_SAMPLE).status_code == 401
    assert post_report(agent, second["token"], SEED_SAMPLE).status_code == 201
    assert Endpoint.objects.get().hostname == "web-1-renamed"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"machine_id": "has spaces"}, "machine_id"),
        ({"machine_id": ""}, "machine_id"),
        ({"platform": "windows"}, "platform"),
        ({"platform": "mac"}, "platform"),  # pilot has no mac endpoints
        ({"arch": "sparc"}, "arch"),
    ],
)
def test_bad_enrollment_input_is_a_field_error_and_enrolls_nothing(agent, secret, change, field):
    response = enroll(agent, secret, **change)
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Endpoint.objects.exists()


def test_a_revoked_or_unknown_secret_cannot_enroll(agent, secret, pilot):
    enrollment.revoke_enrollment_secret(EnrollmentSecret.objects.get())
    for value in (secret, "mde_enr_nope", ""):
        response = enroll(agent, value)
        assert response.status_code in (400, 401) and not Endpoint.objects.exists()
    assert enroll(agent, secret).json()["detail"] == "invalid, expired or revoked enrollment secret"


def test_a_rotated_secret_stops_working_and_its_replacement_works(agent, secret, pilot):
    old = EnrollmentSecret.objects.get()
    new, plaintext = enrollment.rotate_enrollment_secret(old)
    assert enroll(agent, secret).status_code == 401
    assert enroll(agent, plaintext).status_code == 201


# --- Reports ------------------------------------------------------------------------------------------


def test_the_seed_sample_is_stored_parsed_and_says_it_did_not_update_from_the_mirror(agent, enrolled):
    endpoint, token = enrolled
    response = post_report(agent, token, SEED_SAMPLE)
    assert response.status_code == 201, response.content
    assert "not_updated_from_mirror" in response.json()["findings"]
    endpoint.refresh_from_db()
    assert endpoint.definitions_version == "1.407.417.0"
    assert endpoint.definitions_status == "up_to_date"
    assert endpoint.update_source_uri == "https://go.microsoft.com/fwlink/?linkid=2144709"
    assert endpoint.offline_url_configured == "http://172.XX.XXX.XX:8000/linux/production/"
    assert (endpoint.offline_update, endpoint.verify_sig, endpoint.fallback_to_cloud, endpoint.automatic_updates) == (
        "enabled",
        "enabled",
        False,
        True,
    )
    assert endpoint.compliance == Compliance.MISCONFIGURED  # its URL is not the group's: drift
    assert ",url_drift," in endpoint.finding_codes and ",not_updated_from_mirror," in endpoint.finding_codes
    finding = next(f for f in endpoint.findings if f["code"] == "not_updated_from_mirror")
    assert finding["explanation"] and finding["fix"]
    report = HealthReport.objects.get()
    assert report.raw == SEED_SAMPLE and report.form == "text" and report.parsed["definitions_version"] == "1.407.417.0"


def test_the_json_form_is_accepted_too(agent, enrolled, pilot):
    _, token = enrolled
    url = pilot.definition_url("linux")
    body = json.dumps(
        {
            "definitionsVersion": "1.407.418.0",
            "definitionsStatus": {"$type": "upToDate"},
            "definitionsUpdateSourceUri": url,
            "offlineDefinitionUrlConfigured": {"value": url, "scope": "managed"},
            "offlineDefinitionUpdate": {"value": "enabled", "scope": "managed"},
            "offlineDefinitionUpdateVerifySig": "enabled",
            "offlineDefinitionUpdateFallbackToCloud": {"value": False, "scope": "managed"},
            "automaticDefinitionUpdateEnabled": True,
            "definitionsUpdatedMinutesAgo": 3,
            "definitionsUpdateFailReason": "",
            "appVersion": "101.24032.0007",
            "engineVersion": "1.1.24020.4",
            "realTimeProtectionEnabled": {"value": True, "scope": "managed"},
            "passiveModeEnabled": False,
            "healthy": True,
            "someNewKey": "kept",
        }
    )
    response = post_report(agent, token, body, "application/json")
    assert response.status_code == 201, response.content
    assert response.json() == {"report": HealthReport.objects.get().pk, "compliance": "up_to_date", "findings": []}
    endpoint = Endpoint.objects.get()
    assert (endpoint.definitions_version, endpoint.engine_version, endpoint.enforcement_level) == (
        "1.407.418.0",
        "1.1.24020.4",
        "real_time",
    )
    assert HealthReport.objects.get().parsed["extra"]["some_new_key"] == "kept"


@pytest.mark.parametrize(
    "body, where",
    [
        ('definitions_version : "1.407.417.0"\nthis line has no separator\n', "line 2"),
        ("", "body"),
        ('{"definitionsVersion": ', "body"),
        ('["not", "an", "object"]', "body"),
        ("healthy : true\n", "body"),  # no definitions keys at all
    ],
)
def test_malformed_reports_are_refused_naming_the_fault_and_store_nothing(agent, enrolled, body, where):
    endpoint, token = enrolled
    response = post_report(agent, token, body)
    assert response.status_code == 400, response.content
    data = response.json()
    assert data["status"] == 400 and data["detail"]
    if where.startswith("line"):
        assert where in data["detail"]
    assert not HealthReport.objects.exists()
    endpoint.refresh_from_db()
    assert endpoint.last_seen is None and endpoint.compliance == Compliance.NEW


def test_a_report_over_the_size_cap_is_a_413(agent, enrolled, settings):
    settings.FLEET_REPORT_MAX_BYTES = 1000
    _, token = enrolled
    response = post_report(agent, token, SEED_SAMPLE + "x" * 1000)
    assert response.status_code == 413 and response.json()["code"] == "too_large"
    assert not HealthReport.objects.exists()


def test_wrong_revoked_and_decommissioned_tokens_get_the_same_401(agent, enrolled):
    endpoint, token = enrolled
    bodies = [
        post_report(agent, "mde_ep_" + "x" * 43, SEED_SAMPLE).json(),
        post_report(agent, "nonsense", SEED_SAMPLE).json(),
    ]
    enrollment.decommission_endpoint(endpoint)
    response = post_report(agent, token, SEED_SAMPLE)
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    bodies.append(response.json())
    assert all(body == bodies[0] for body in bodies)  # nothing tells an unknown token from a retired endpoint
    assert bodies[0]["detail"] == "missing, invalid or revoked endpoint token"
    assert not HealthReport.objects.exists()


def test_a_burst_from_one_endpoint_is_throttled(agent, enrolled, settings):
    settings.FLEET_REPORT_BURST = 2
    endpoint, token = enrolled
    statuses = [post_report(agent, token, SEED_SAMPLE).status_code for _ in range(4)]
    assert statuses == [201, 201, 429, 429]
    assert HealthReport.objects.count() == 2
    endpoint.refresh_from_db()
    assert (endpoint.reports_received, endpoint.burst_count) == (2, 2)  # a refused report changes nothing


def test_the_burst_window_is_one_minute(enrolled, settings):
    settings.FLEET_REPORT_BURST = 1
    endpoint, _ = enrolled
    body = SEED_SAMPLE.encode()
    ingest.ingest_report(ingest.endpoint_for_token(f"Bearer {enrolled[1]}"), body, minute=1000)
    with pytest.raises(Refused) as refused:
        ingest.ingest_report(ingest.endpoint_for_token(f"Bearer {enrolled[1]}"), body, minute=1000)
    assert refused.value.status == 429
    ingest.ingest_report(ingest.endpoint_for_token(f"Bearer {enrolled[1]}"), body, minute=1001)
    assert HealthReport.objects.filter(endpoint=endpoint).count() == 2


def test_a_report_from_an_endpoint_decommissioned_while_it_was_read_is_refused_and_not_kept(enrolled):
    endpoint, token = enrolled
    loaded = ingest.endpoint_for_token(f"Bearer {token}")
    enrollment.decommission_endpoint(endpoint)
    with pytest.raises(Refused) as refused:
        ingest.ingest_report(loaded, SEED_SAMPLE.encode())
    assert refused.value.status == 401
    assert not HealthReport.objects.exists()
    assert Endpoint.objects.get(pk=endpoint.pk).reports_received == 0


@pytest.mark.django_db(transaction=True)
def test_reports_arriving_together_from_one_endpoint_cannot_pass_its_burst_limit(enrolled, settings):
    """Every request reads the counter before any writes it: only the store statement's condition can hold the limit."""
    settings.FLEET_REPORT_BURST = 3
    _, token = enrolled
    loaded, outcomes = threading.Barrier(8), []

    def report():
        try:
            endpoint = ingest.endpoint_for_token(f"Bearer {token}")
            ingest.check_burst(endpoint, 5000)
            loaded.wait(10)
            try:
                ingest.ingest_report(endpoint, SEED_SAMPLE.encode(), minute=5000)
                outcomes.append(201)
            except Refused as exc:
                outcomes.append(exc.status)
        finally:
            connection.close()

    threads = [threading.Thread(target=report) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == [201] * 3 + [429] * 5
    assert HealthReport.objects.count() == 3
    assert Endpoint.objects.get().reports_received == 3


def test_the_report_statements_are_prepared_on_postgresql(agent, enrolled):
    """Parsing and planning them for every report was most of PostgreSQL's CPU per report (bench/ingest.py)."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    _, token = enrolled
    assert post_report(agent, token, SEED_SAMPLE).status_code == 201
    assert post_report(agent, token, SEED_SAMPLE).status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        statements = [row[0] for row in cursor.fetchall()]
    assert any(s.startswith("SELECT id, machine_id") and "token_hash = $1" in s for s in statements), statements
    assert any("INSERT INTO fleet_healthreport" in s for s in statements), statements


def test_endpoint_a_cannot_post_the_report_of_machine_b(agent, secret):
    token_a = enroll(agent, secret, machine_id=GUID_A).json()["token"]
    enroll(agent, secret, machine_id=GUID_B, hostname="web-2")
    body_of_b = SEED_SAMPLE + f'machine_guid                                : "{GUID_B}"\n'
    response = post_report(agent, token_a, body_of_b)
    assert response.status_code == 403
    assert not HealthReport.objects.exists()
    assert post_report(agent, token_a, SEED_SAMPLE + f'machine_guid : "{GUID_A.upper()}"\n').status_code == 201


# --- Compliance -----------------------------------------------------------------------------------------


def test_compliance_follows_what_the_endpoint_reports_against_its_group(agent, enrolled, pilot, make_package, operator):
    endpoint, token = enrolled

    def state(**overrides):
        assert post_report(agent, token, health_text(pilot, **overrides)).status_code == 201
        endpoint.refresh_from_db()
        return endpoint.compliance

    assert state() == Compliance.UP_TO_DATE
    rings.approve_package(pilot, make_package(definition="1.407.500.0"), operator)
    ingest._APPROVED.clear()
    assert state() == Compliance.BEHIND
    assert state(version="1.407.500.0") == Compliance.UP_TO_DATE
    assert state(version="1.407.501.0") == Compliance.UP_TO_DATE  # newer than approved is fine
    assert state(version="1.407.500.0", definitions_update_fail_reason='"Network error"') == Compliance.FAILING
    assert endpoint.last_update_failure_at is not None
    assert state(version="1.407.500.0", definitions_status='"outdated"') == Compliance.STALE
    assert state(version="1.407.500.0", offline_definition_update='"disabled"') == Compliance.MISCONFIGURED
    assert state(version="1.407.500.0", offline_definition_update_fallback_to_cloud="true") == Compliance.MISCONFIGURED
    assert ",settings_drift," in endpoint.finding_codes


def test_the_ring_gate_opens_and_closes_from_real_reports(agent, mirror, make_group, make_package):
    from mirror.services.publish import publish

    pilot = make_group("pilot", 10, RolloutMode.LATEST)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=50)
    secret = enrollment.create_enrollment_secret(pilot, "lab")[1]
    tokens = [enroll(agent, secret, machine_id=f"pilot-{i}").json()["token"] for i in range(4)]
    package = make_package(definition="1.407.700.0")
    publish(mirror, package)

    def served():
        return broad.approvals.get(platform="linux", arch="x86_64").current

    for token in tokens[:1]:
        post_report(agent, token, health_text(pilot, version="1.407.700.0"))
    for token in tokens[1:]:
        post_report(agent, token, health_text(pilot, version="1.407.600.0"))
    rings.evaluate_rollouts()
    assert served() is None  # 1 of 4: 25 % < 50 %
    post_report(
        agent,
        tokens[1],
        health_text(pilot, version="1.407.700.0", definitions_update_fail_reason='"Signature verification failed"'),
    )
    rings.evaluate_rollouts()
    assert served() is None
    assert "reported a definitions update failure" in broad.approvals.get(platform="linux", arch="x86_64").gate_reason

    # A second version: the earlier failure predates its approval, and pilot moves onto it.
    newer = make_package(definition="1.407.701.0")
    publish(mirror, newer)
    for token in tokens[:3]:
        post_report(agent, token, health_text(pilot, version="1.407.701.0"))
    rings.evaluate_rollouts()
    assert served() == newer


# --- Endpoint config -----------------------------------------------------------------------------------------


def test_an_endpoint_reads_its_own_groups_config_with_an_etag(agent, enrolled, pilot):
    _, token = enrolled
    response = agent.get("/api/v1/endpoint/managed-config", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    config = json.loads(response.content)
    assert config["antivirusEngine"]["offlineDefinitionUpdateUrl"] == pilot.definition_url("linux")
    again = agent.get(
        "/api/v1/endpoint/managed-config", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_IF_NONE_MATCH=response["ETag"]
    )
    assert again.status_code == 304
    assert agent.get("/api/v1/endpoint/managed-config", HTTP_AUTHORIZATION="Bearer mde_ep_wrong").status_code == 401


# --- Operators -----------------------------------------------------------------------------------------------


def test_operators_move_and_decommission_endpoints_and_viewers_cannot(
    api, enrolled, make_group, operator, viewer, agent
):
    endpoint, token = enrolled
    broad = make_group("broad", 20)
    assert (
        api.as_user(viewer)
        .post(f"/api/v1/endpoints/{endpoint.pk}/move/", {"group": "broad"}, format="json")
        .status_code
        == 403
    )
    response = api.as_user(operator).post(f"/api/v1/endpoints/{endpoint.pk}/move/", {"group": "broad"}, format="json")
    assert response.status_code == 200 and response.json()["group"] == "broad"
    endpoint.refresh_from_db()
    assert endpoint.group == broad
    assert api.as_user(operator).post(f"/api/v1/endpoints/{endpoint.pk}/decommission/").status_code == 200
    assert post_report(agent, token, SEED_SAMPLE).status_code == 401
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="endpoint.").order_by("id")] == [
        "endpoint.enroll",
        "endpoint.move",
        "endpoint.decommission",
    ]


def test_endpoints_are_listed_and_filtered_by_compliance_and_finding(api, agent, secret, pilot, viewer):
    tokens = [enroll(agent, secret, machine_id=f"m-{i}", hostname=f"host-{i}").json()["token"] for i in range(3)]
    post_report(agent, tokens[0], health_text(pilot))
    post_report(agent, tokens[1], SEED_SAMPLE)
    client = api.as_user(viewer)
    assert [e["hostname"] for e in client.get("/api/v1/endpoints/?compliance=up_to_date").json()["results"]] == [
        "host-0"
    ]
    assert [e["hostname"] for e in client.get("/api/v1/endpoints/?finding=url_drift").json()["results"]] == ["host-1"]
    assert [e["hostname"] for e in client.get("/api/v1/endpoints/?compliance=new").json()["results"]] == ["host-2"]
    reports_of_1 = client.get(f"/api/v1/endpoints/{Endpoint.objects.get(hostname='host-1').pk}/reports/").json()[
        "results"
    ]
    assert len(reports_of_1) == 1 and reports_of_1[0]["raw"] == SEED_SAMPLE


def test_enrollment_secrets_are_shown_once_rotated_and_revoked_by_operators(api, pilot, operator, viewer, agent):
    client = api.as_user(operator)
    created = client.post("/api/v1/enrollment-secrets/", {"group": "pilot", "name": "datacenter"}, format="json")
    assert created.status_code == 201
    plaintext = created.json()["secret"]
    assert (
        plaintext.startswith("mde_enr_")
        and "secret" not in client.get(f"/api/v1/enrollment-secrets/{created.json()['id']}/").json()
    )
    rotated = client.post(f"/api/v1/enrollment-secrets/{created.json()['id']}/rotate/")
    assert rotated.status_code == 201 and rotated.json()["secret"] != plaintext
    assert enroll(agent, plaintext).status_code == 401
    assert client.post(f"/api/v1/enrollment-secrets/{rotated.json()['id']}/revoke/").status_code == 200
    assert enroll(agent, rotated.json()["secret"]).status_code == 401
    assert (
        api.as_user(viewer)
        .post("/api/v1/enrollment-secrets/", {"group": "pilot", "name": "x"}, format="json")
        .status_code
        == 403
    )


def test_the_api_refuses_to_rotate_a_revoked_or_expired_secret_and_the_secret_stays_as_it_was(
    api, pilot, operator, agent
):
    revoked, plaintext = enrollment.create_enrollment_secret(pilot, "datacenter")
    enrollment.revoke_enrollment_secret(revoked)
    expired, _ = enrollment.create_enrollment_secret(pilot, "lab")
    EnrollmentSecret.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    before = list(EnrollmentSecret.objects.values())
    client = api.as_user(operator)
    response = client.post(f"/api/v1/enrollment-secrets/{revoked.pk}/rotate/")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "conflict"
    assert body["errors"] == {
        "revoked_at": [f"Enrollment secret datacenter ({revoked.hint}…) is revoked: create a new one instead."]
    }
    response = client.post(f"/api/v1/enrollment-secrets/{expired.pk}/rotate/")
    assert response.status_code == 409 and list(response.json()["errors"]) == ["expires_at"]
    assert list(EnrollmentSecret.objects.values()) == before
    assert enroll(agent, plaintext).status_code == 401


def test_the_api_refuses_a_secret_that_would_expire_in_the_past(api, pilot, operator):
    response = api.as_user(operator).post(
        "/api/v1/enrollment-secrets/",
        {"group": "pilot", "name": "x", "expires_at": "2001-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["errors"] == {"expires_at": ["Choose a moment in the future, or leave it empty."]}
    assert not EnrollmentSecret.objects.exists()


def test_moving_an_endpoint_to_its_own_group_changes_nothing_and_is_not_audited(api, enrolled, operator):
    endpoint, _ = enrolled
    response = api.as_user(operator).post(f"/api/v1/endpoints/{endpoint.pk}/move/", {"group": "pilot"}, format="json")
    assert response.status_code == 200 and response.json()["group"] == "pilot"
    assert not AuditEvent.objects.filter(action="endpoint.move").exists()


# --- Chores ---------------------------------------------------------------------------------------------------


def test_silent_endpoints_are_marked_and_counted_in_snapshots(agent, secret, pilot):
    tokens = [enroll(agent, secret, machine_id=f"m-{i}").json()["token"] for i in range(3)]
    for token in tokens:
        post_report(agent, token, health_text(pilot))
    Endpoint.objects.filter(machine_id="m-0").update(
        last_seen=timezone.now() - timedelta(seconds=3 * pilot.update_interval + 60)
    )
    assert chores.mark_silent() == 1
    assert Endpoint.objects.get(machine_id="m-0").compliance == Compliance.SILENT
    chores.snapshot_compliance()
    snapshot = ComplianceSnapshot.objects.get(group=pilot)
    assert snapshot.counts == {"silent": 1, "up_to_date": 2} and snapshot.total == 3


def test_old_reports_are_pruned_and_the_endpoint_keeps_its_state(agent, enrolled, pilot):
    endpoint, token = enrolled
    post_report(agent, token, health_text(pilot))
    post_report(agent, token, health_text(pilot))
    HealthReport.objects.filter(pk=HealthReport.objects.order_by("id").first().pk).update(
        received_at=timezone.now() - timedelta(days=31)
    )
    assert chores.prune_reports() == 1
    endpoint.refresh_from_db()
    assert (
        HealthReport.objects.count() == 1
        and endpoint.compliance == Compliance.UP_TO_DATE
        and endpoint.reports_received == 2
    )


def test_the_stand_in_mdatp_output_is_accepted_in_both_forms(agent, enrolled, pilot, tmp_path):
    _, token = enrolled
    env = {
        "PATH": "/usr/bin:/bin",
        "MDATP_STANDIN_MACHINE_GUID": GUID_A,
        "MDATP_STANDIN_OFFLINE_DEFINITION_URL_CONFIGURED": pilot.definition_url("linux"),
        "MDATP_STANDIN_DEFINITIONS_UPDATE_SOURCE_URI": pilot.definition_url("linux"),
    }
    for args, content_type in ((["health"], "text/plain"), (["health", "--output", "json"], "application/json")):
        output = subprocess.run([str(MDATP), *args], env=env, capture_output=True, check=True).stdout
        response = post_report(agent, token, output, content_type)
        assert response.status_code == 201, response.content
    assert HealthReport.objects.count() == 2


def test_the_enable_disable_reenable_pattern_is_found_from_the_endpoints_own_history(agent, enrolled, pilot):
    endpoint, token = enrolled
    for switch in ('"enabled" [managed]', '"enabled" [managed]', '"disabled"', '"enabled" [managed]'):
        failing = '"Network error"' if switch.startswith('"enabled"') and endpoint.reports_received >= 3 else '""'
        response = post_report(
            agent, token, health_text(pilot, offline_definition_update=switch, definitions_update_fail_reason=failing)
        )
        assert response.status_code == 201
        endpoint.refresh_from_db()
    assert "reenable_known_issue" in response.json()["findings"]
    # The change records hold the switch's history: enabled, disabled, enabled.
    assert [
        c.changes["offline_update"][1] for c in endpoint.changes.order_by("at", "id") if "offline_update" in c.changes
    ] == ["enabled", "disabled", "enabled"]


def test_the_report_url_only_takes_post_and_says_so_in_json(agent, enrolled):
    response = agent.get("/api/v1/reports")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json()["code"] == "method_not_allowed"
