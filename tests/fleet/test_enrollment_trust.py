"""Issue 14, items 1 and 6: what an enrollment secret can do, driven as the attacker did, over the HTTP API.

A secret creates endpoints; it never moves, renames, re-keys or revives one (DESIGN §4.7). A known machine id
proves itself with its current token or waits as an identity conflict for an operator; a decommissioned machine
stays out until an operator lets it back. Health gates count only endpoints enrolled before the version reached
the source ring, and a burst of enrollments in a ring is an alert.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import AuditEvent
from fleet.choices import ConflictState, GateState, RolloutMode
from fleet.models import Endpoint, GroupTarget, IdentityConflict
from fleet.services import enrollment, rings
from mirror.services.publish import publish
from portal import alerts
from portal.choices import AlertState
from portal.models import AlertEvent, AlertRule
from tests.samples import health_text

VICTIM = "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59"


@pytest.fixture
def pilot(make_group):
    return make_group("pilot", 10)


@pytest.fixture
def broad(make_group):
    return make_group("broad", 20)


@pytest.fixture
def agent():
    return APIClient()


def secret_of(group, **extra) -> str:
    return enrollment.create_enrollment_secret(group, "lab", **extra)[1]


def enroll(agent, secret, machine_id=VICTIM, hostname="web-1", token=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return agent.post(
        "/api/v1/enroll",
        {"secret": secret, "machine_id": machine_id, "hostname": hostname, "platform": "linux", "arch": "x86_64"},
        format="json",
        **headers,
    )


def report(agent, token, group, version="1.407.417.0", **overrides):
    return agent.generic(
        "POST",
        "/api/v1/reports",
        health_text(group, version, **overrides).encode(),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.fixture
def victim(agent, pilot):
    """A machine enrolled in pilot that reports: the endpoint and its token."""
    response = enroll(agent, secret_of(pilot))
    assert response.status_code == 201, response.content
    token = response.json()["token"]
    assert report(agent, token, pilot).status_code == 201
    return Endpoint.objects.get(machine_id=VICTIM), token


# --- Item 1: no takeover with any secret ---------------------------------------------------------------


def test_another_rings_secret_and_a_victims_machine_id_take_nothing_over(agent, victim, pilot, broad):
    endpoint, token = victim

    attack = enroll(agent, secret_of(broad), hostname="attacker-box")

    assert attack.status_code == 202, attack.content
    body = attack.json()
    assert body["status"] == "pending" and "endpoint" not in body and "group" not in body
    assert f"held as identity conflict {body['conflict']} until an operator accepts it" in body["detail"]
    endpoint.refresh_from_db()
    assert (endpoint.group, endpoint.hostname) == (pilot, "web-1")  # not moved, not renamed
    assert report(agent, token, pilot).status_code == 201  # not re-keyed: the real machine still reports
    assert report(agent, body["token"], pilot).status_code == 401  # the claimant's token opens nothing
    conflict = IdentityConflict.objects.get()
    assert (conflict.state, conflict.group, conflict.hostname) == (ConflictState.PENDING, broad, "attacker-box")
    assert AuditEvent.objects.filter(action="endpoint.conflict", target_id=str(endpoint.pk)).exists()


def test_the_same_rings_secret_cannot_re_key_an_endpoint_either(agent, victim, pilot):
    endpoint, token = victim

    assert enroll(agent, secret_of(pilot), hostname="web-1").status_code == 202

    assert report(agent, token, pilot).status_code == 201
    assert Endpoint.objects.count() == 1 and IdentityConflict.objects.count() == 1


def test_a_machine_proving_itself_with_its_current_token_gets_a_new_one_and_stays_in_its_ring(
    agent, victim, pilot, broad
):
    endpoint, token = victim

    again = enroll(agent, secret_of(broad), hostname="web-1b", token=token)

    assert again.status_code == 200, again.content
    assert again.json()["status"] == "rekeyed" and again.json()["group"] == "pilot"
    assert report(agent, token, pilot).status_code == 401
    assert report(agent, again.json()["token"], pilot).status_code == 201
    endpoint.refresh_from_db()
    assert endpoint.group == pilot and endpoint.hostname == "web-1b"
    assert not IdentityConflict.objects.exists()
    assert AuditEvent.objects.filter(action="endpoint.rekey").count() == 1


def test_another_endpoints_token_proves_nothing(agent, victim, pilot):
    other = enroll(agent, secret_of(pilot), machine_id="other-machine").json()["token"]

    assert enroll(agent, secret_of(pilot), hostname="attacker-box", token=other).status_code == 202
    assert report(agent, victim[1], pilot).status_code == 201


def test_a_decommissioned_endpoint_stays_out_until_an_operator_accepts_its_claim(
    agent, api, operator, victim, pilot, broad
):
    endpoint, _ = victim
    staff = api.as_user(operator)
    assert staff.post(f"/api/v1/endpoints/{endpoint.pk}/decommission/").status_code == 200

    claim = enroll(agent, secret_of(broad), hostname="web-1-reinstalled")

    assert claim.status_code == 202
    assert "and was decommissioned" in claim.json()["detail"]
    endpoint.refresh_from_db()
    assert endpoint.decommissioned_at is not None and endpoint.token_hash is None
    assert report(agent, claim.json()["token"], broad).status_code == 401

    listed = staff.get("/api/v1/identity-conflicts/", {"state": "pending"}).json()["results"]
    assert [(c["id"], c["machine_id"], c["was_decommissioned"], c["group"]) for c in listed] == [
        (claim.json()["conflict"], VICTIM, True, "broad")
    ]
    accepted = staff.post(f"/api/v1/identity-conflicts/{claim.json()['conflict']}/accept/")

    assert accepted.status_code == 200, accepted.content
    assert accepted.json()["group"] == "broad" and accepted.json()["decommissioned_at"] is None
    assert report(agent, claim.json()["token"], broad).status_code == 201
    event = AuditEvent.objects.get(action="endpoint.conflict_accept")
    assert event.actor == operator and event.details["before"]["decommissioned"] is True
    assert event.details["before"]["group"] == "pilot" and event.details["after"]["group"] == "broad"


def test_rejecting_a_claim_leaves_the_endpoint_as_it_was_and_the_claimants_token_useless(
    agent, api, operator, victim, pilot, broad
):
    endpoint, token = victim
    claim = enroll(agent, secret_of(broad), hostname="attacker-box").json()

    rejected = api.as_user(operator).post(f"/api/v1/identity-conflicts/{claim['conflict']}/reject/")

    assert rejected.status_code == 200 and rejected.json()["state"] == "rejected"
    assert rejected.json()["decided_by"] == operator.username
    assert report(agent, token, pilot).status_code == 201
    assert report(agent, claim["token"], pilot).status_code == 401
    endpoint.refresh_from_db()
    assert (endpoint.group, endpoint.hostname) == (pilot, "web-1")
    assert AuditEvent.objects.filter(action="endpoint.conflict_reject", actor=operator).count() == 1


def test_a_claim_is_decided_once_and_accepting_one_rejects_the_others(agent, api, operator, victim, broad):
    first = enroll(agent, secret_of(broad), hostname="one").json()
    second = enroll(agent, secret_of(broad), hostname="two").json()
    staff = api.as_user(operator)

    assert staff.post(f"/api/v1/identity-conflicts/{second['conflict']}/accept/").status_code == 200
    again = staff.post(f"/api/v1/identity-conflicts/{first['conflict']}/accept/")

    assert again.status_code == 409
    assert again.json()["detail"].endswith(f"identity conflict {first['conflict']} was already rejected")
    assert (
        IdentityConflict.objects.get(pk=first["conflict"]).note == f"another claim ({second['conflict']}) was accepted"
    )
    assert report(agent, first["token"], broad).status_code == 401
    assert report(agent, second["token"], broad).status_code == 201
    assert report(agent, victim[1], broad).status_code == 401


def test_viewers_read_claims_but_cannot_decide_them(agent, api, viewer, victim, broad):
    claim = enroll(agent, secret_of(broad), hostname="attacker-box").json()
    client = api.as_user(viewer)

    assert client.get("/api/v1/identity-conflicts/").json()["count"] == 1
    assert client.post(f"/api/v1/identity-conflicts/{claim['conflict']}/accept/").status_code == 403
    assert IdentityConflict.objects.get().state == ConflictState.PENDING


def test_a_looping_claimant_cannot_pile_up_claims_on_one_machine(agent, victim, broad):
    secret = secret_of(broad)
    for _ in range(enrollment.MAX_PENDING_CONFLICTS):
        assert enroll(agent, secret, hostname="loop").status_code == 202

    refused = enroll(agent, secret, hostname="loop")

    assert refused.status_code == 429
    assert "claims waiting for an operator" in refused.json()["detail"]
    assert IdentityConflict.objects.count() == enrollment.MAX_PENDING_CONFLICTS


def test_operators_see_and_decide_claims_in_the_ui(agent, client, operator, viewer, victim, broad):
    claim = enroll(agent, secret_of(broad), hostname="attacker-box").json()
    client.force_login(viewer)
    assert "1 enrollment claim</strong>" in client.get("/groups/endpoints/").content.decode()
    page = client.get("/groups/endpoints/claims/").content.decode()
    assert "attacker-box" in page and VICTIM in page and "/accept/" not in page  # viewers: no controls
    assert client.post(f"/groups/endpoints/claims/{claim['conflict']}/accept/").status_code == 403

    client.force_login(operator)
    assert (
        f"/groups/endpoints/claims/{claim['conflict']}/reject/"
        in client.get("/groups/endpoints/claims/").content.decode()
    )
    response = client.post(f"/groups/endpoints/claims/{claim['conflict']}/reject/", follow=True)

    assert f"Claim {claim['conflict']} rejected: web-1 keeps its identity." in response.content.decode()
    again = client.post(f"/groups/endpoints/claims/{claim['conflict']}/accept/", follow=True).content.decode()
    assert "not decided: identity conflict" in again and "was already rejected" in again
    assert IdentityConflict.objects.get().state == ConflictState.REJECTED


# --- Item 1: caps and the rate limit ---------------------------------------------------------------------


def test_a_capped_secret_enrolls_at_most_its_cap_and_a_cap_starts_at_one(agent, api, operator, pilot):
    staff = api.as_user(operator)
    zero = staff.post(
        "/api/v1/enrollment-secrets/", {"group": "pilot", "name": "x", "max_enrollments": 0}, format="json"
    )
    assert zero.status_code == 400 and "max_enrollments" in zero.json()["errors"]
    created = staff.post(
        "/api/v1/enrollment-secrets/", {"group": "pilot", "name": "two", "max_enrollments": 2}, format="json"
    )
    assert created.status_code == 201 and created.json()["max_enrollments"] == 2
    secret = created.json()["secret"]

    assert enroll(agent, secret, machine_id="m-1").status_code == 201
    assert enroll(agent, secret, machine_id="m-2").status_code == 201
    third = enroll(agent, secret, machine_id="m-3")

    assert third.status_code == 403
    assert third.json()["detail"].startswith("enrollment secret two (")
    assert "has enrolled all the 2 endpoints it may" in third.json()["detail"]
    assert not Endpoint.objects.filter(machine_id="m-3").exists()
    assert staff.get(f"/api/v1/enrollment-secrets/{created.json()['id']}/").json()["enrollments"] == 2


def test_rotating_a_capped_secret_carries_over_only_what_is_left(agent, pilot):
    secret, plaintext = enrollment.create_enrollment_secret(pilot, "three", max_enrollments=3)
    enroll(agent, plaintext, machine_id="m-1")

    new, new_plaintext = enrollment.rotate_enrollment_secret(secret)

    assert new.max_enrollments == 2
    assert enroll(agent, new_plaintext, machine_id="m-2").status_code == 201
    assert enroll(agent, new_plaintext, machine_id="m-3").status_code == 201
    assert enroll(agent, new_plaintext, machine_id="m-4").status_code == 403


def test_a_secret_enrolls_at_most_FLEET_ENROLL_BURST_machines_a_minute(agent, pilot, settings):
    settings.FLEET_ENROLL_BURST = 3
    secret = secret_of(pilot)
    assert [enroll(agent, secret, machine_id=f"m-{i}").status_code for i in range(3)] == [201, 201, 201]

    fourth = enroll(agent, secret, machine_id="m-3")

    assert fourth.status_code == 429
    assert fourth.json()["detail"] == "too many enrollments with this secret: at most 3 a minute; try again in a minute"
    assert Endpoint.objects.count() == 3
    assert enroll(agent, secret_of(pilot), machine_id="m-3").status_code == 201  # per secret


def test_a_secret_form_offers_the_cap_and_refuses_zero(client, operator, pilot):
    client.force_login(operator)
    refused = client.post("/groups/pilot/secrets/new/", {"name": "zero", "max_enrollments": "0"})
    assert refused.status_code == 400 and "greater than or equal to 1" in refused.content.decode()

    created = client.post("/groups/pilot/secrets/new/", {"name": "ten", "max_enrollments": "10"})

    assert created.status_code == 200
    assert pilot.enrollment_secrets.get().max_enrollments == 10


# --- Item 6: fake endpoints cannot steer a health gate -----------------------------------------------------------


@pytest.fixture
def ring_pair(make_group):
    pilot = make_group("pilot", 10, RolloutMode.LATEST)
    broad = make_group("broad", 20, RolloutMode.AFTER, source_group=pilot, delay_hours=0, gate_percent=90)
    return pilot, broad


def broad_row(broad) -> GroupTarget:
    return GroupTarget.objects.select_related("current").get(group=broad, platform="linux", arch="x86_64")


def enroll_fleet(agent, group, prefix, count) -> list[str]:
    secret = secret_of(group)
    tokens = []
    for i in range(count):
        response = enroll(agent, secret, machine_id=f"{prefix}-{i}", hostname=f"{prefix}-{i}")
        assert response.status_code == 201, response.content
        tokens.append(response.json()["token"])
    return tokens


def test_fake_endpoints_enrolled_after_the_approval_do_not_carry_the_gate(
    agent, mirror, ring_pair, make_package, settings
):
    settings.FLEET_ENROLL_BURST = 1000
    pilot, broad = ring_pair
    real = enroll_fleet(agent, pilot, "real", 10)
    package = make_package()
    publish(mirror, package)
    for i, token in enumerate(real):
        assert report(agent, token, pilot, package.definition_version if i < 4 else "1.407.400.0").status_code == 201

    for token in enroll_fleet(agent, pilot, "fake", 60):  # a leaked pilot secret: 60 machines on the new version
        assert report(agent, token, pilot, package.definition_version).status_code == 201
    rings.evaluate_rollouts()

    row = broad_row(broad)
    assert row.current is None and row.gate_state == GateState.WAITING
    assert row.gate_reason == f"pilot: 4 of 10 endpoints on {package.definition_version} (40 % < 90 %)"


def test_one_fake_failure_report_does_not_hold_the_gate(agent, mirror, ring_pair, make_package):
    pilot, broad = ring_pair
    real = enroll_fleet(agent, pilot, "real", 10)
    package = make_package()
    publish(mirror, package)
    for token in real:
        assert report(agent, token, pilot, package.definition_version).status_code == 201

    [fake] = enroll_fleet(agent, pilot, "fake", 1)
    failed = report(agent, fake, pilot, package.definition_version, definitions_update_fail_reason='"network error"')
    assert failed.status_code == 201 and Endpoint.objects.get(machine_id="fake-0").last_update_failure_at
    rings.evaluate_rollouts()

    row = broad_row(broad)
    assert row.current == package, row.gate_reason
    assert row.gate_reason.startswith(f"serves {package.definition_version}: pilot: 10 of 10 endpoints")


def test_the_gate_counts_only_endpoints_older_than_the_rings_minimum_enrollment_age(
    agent, mirror, ring_pair, make_package
):
    pilot, broad = ring_pair
    broad.gate_min_enrollment_hours = 24
    broad.save()
    real = enroll_fleet(agent, pilot, "real", 10)
    package = make_package()
    publish(mirror, package)
    for token in real:
        assert report(agent, token, pilot, package.definition_version).status_code == 201
    rings.evaluate_rollouts()

    row = broad_row(broad)
    assert row.current is None
    assert row.gate_reason == (
        f"pilot: the 10 linux/x86_64 endpoints that reported were all enrolled after {package.definition_version} "
        "was approved there or less than 24 h ago: they do not count"
    )

    Endpoint.objects.update(enrolled_at=timezone.now() - timedelta(hours=25))
    rings.evaluate_rollouts()
    assert broad_row(broad).current == package


def test_the_minimum_enrollment_age_is_a_ring_setting_in_the_api(api, admin, ring_pair):
    _, broad = ring_pair
    client = api.as_user(admin)

    changed = client.patch(f"/api/v1/groups/{broad.pk}/", {"gate_min_enrollment_hours": 72}, format="json")

    assert changed.status_code == 200, changed.content
    assert changed.json()["gate_min_enrollment_hours"] == 72
    broad.refresh_from_db()
    assert broad.gate_min_enrollment_hours == 72


# --- Item 6: a surge of enrollments is an alert ---------------------------------------------------------------


def test_a_surge_of_enrollments_in_a_ring_fires_an_enrollment_surge_alert(agent, api, admin, pilot, broad, settings):
    settings.FLEET_ENROLL_BURST = 1000
    created = api.as_user(admin).post(
        "/api/v1/alert-rules/",
        {"name": "surge", "kind": "enrollment_surge", "hours": 1, "min_endpoints": 5},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["condition"] == "5 or more endpoints enrolled in any group within 1 h"
    rule = AlertRule.objects.get()
    enroll_fleet(agent, pilot, "pilot", 4)
    enroll_fleet(agent, broad, "broad", 3)
    assert alerts.evaluate_rule(rule)["fired"] == 0

    enroll_fleet(agent, pilot, "more", 1)

    assert alerts.evaluate_rule(rule)["fired"] == 1
    event = AlertEvent.objects.get()
    assert event.subject == f"group:{pilot.pk}" and event.state == AlertState.FIRING
    assert event.summary == f"5 endpoints enrolled in group {pilot.name} within 1 h"
    assert (
        event.details["examples"][0] == "more-0"
        and "an enrollment secret of the ring has leaked" in event.details["text"]
    )

    Endpoint.objects.update(enrolled_at=timezone.now() - timedelta(hours=2))
    assert alerts.evaluate_rule(rule)["resolved"] == 1


def test_an_enrollment_surge_rule_needs_its_hours(api, admin):
    refused = api.as_user(admin).post(
        "/api/v1/alert-rules/", {"name": "surge", "kind": "enrollment_surge", "min_endpoints": 5}, format="json"
    )

    assert refused.status_code == 400
    assert refused.json()["errors"]["hours"] == ["This kind of rule needs a number of hours."]
