"""The API keeps the contract its OpenAPI schema publishes: schemathesis generates requests
from the live schema (/api/schema/, served by the app itself) for every operation, good and
bad input alike, and checks every answer: no 5xx, a documented status, content type, body and
headers.

It runs twice: as an admin with a read-write API token (every operation but the agent's), and
as an enrolled endpoint with its own token (enroll, reports, managed config). Each case runs in
a savepoint that is rolled back afterwards, so a DELETE or a revoke never takes the data away
from the cases after it. Every other case gets a real id, slug, secret or report swapped in, so
that success answers are checked too, not only refusals. Operations added later (alert channels,
rules...) are covered as they appear in the schema.
"""

import itertools
import os
from collections import defaultdict

import pytest
import schemathesis
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections, transaction
from django.urls import Resolver404, resolve
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core import services as portal_services
from core.choices import Role, TokenScope
from fleet.choices import RolloutMode
from fleet.models import EndpointGroup
from fleet.services import enrollment, ingest
from fleet.services.rings import approve_package, save_group
from mirror.choices import SyncTrigger
from mirror.models import Mirror, SignaturePackage, Upstream
from mirror.services.mirrors import save_mirror
from mirror.services.sync import request_sync, run_sync
from portal import alerts
from portal.choices import AlertChannelKind, AlertRuleKind
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule
from standins.upstream import StandinUpstream
from tests.samples import DESIGN_SAMPLE

pytestmark = pytest.mark.django_db

# Per operation: the schema's examples, then up to 25 generated cases, valid and invalid input, the
# same ones every run. The coverage phase (every boundary and wrong type the schema implies, some
# 8,000 cases) found nothing more and takes three times as long: enable it when changing the API a lot.
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20240314,
        "suppress-health-check": ["all"],
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "no-shrink": True,
            "database": "none",
            "with-security-parameters": False,
        },
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
AGENT_TAG = "endpoints (agent)"


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    # schemathesis 4.32's from_fixture() reads and rewrites Node._nodeid, which pytest 9.2 no
    # longer has (it keeps the id elsewhere); a plain attribute is enough for its reporting.
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.fixture
def wsgi_app():
    """The portal's WSGI application, called in this thread, inside the test's transaction.

    Django closes "old" connections when a request starts and ends, which inside a test's
    transaction would break it; its own test client turns that off the same way.
    """
    from django.core.wsgi import get_wsgi_application

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(wsgi_app, contract_data):
    # The schema needs a signed-in user or a token like the API itself (issue 14, item 12).
    token = {"Authorization": f"Bearer {contract_data['admin_token']}"}
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", wsgi_app, config=CONFIG, headers=token)


@pytest.fixture
def contract_data(db, make_user, settings, tmp_path):
    """A portal with something behind every URL: two syncs of a mirror, rings with approvals, an enrolled endpoint..."""
    settings.PORTAL_STORE_ROOT = tmp_path / "store"
    settings.MIRROR_RETRY_ATTEMPTS = 1
    admin = make_user("alice", Role.ADMIN)
    make_user("victor", Role.VIEWER)
    _, admin_token = portal_services.create_api_token(admin, "contract", TokenScope.WRITE)
    portal_services.create_api_token(admin, "spare")
    with StandinUpstream(tmp_path / "upstream", package_size=16 * 1024) as standin:
        upstream = Upstream.objects.create(name="standin", base_url=standin.base_url, timeout=5)
        Upstream.objects.create(name="unused", base_url=standin.base_url, timeout=5)
        mirror = save_mirror(
            Mirror(
                name="Main",
                slug="main",
                upstream=upstream,
                platforms=["linux", "mac"],
                channels=["production"],
                archs=["x86_64", "arm64"],
                sync_interval_minutes=0,
            ),
            admin,
        )
        run_sync(request_sync(mirror, SyncTrigger.SCHEDULE)[0].pk)
        standin.release()
        run_sync(request_sync(mirror, SyncTrigger.API, admin)[0].pk)
    save_mirror(
        Mirror(
            name="Spare",
            slug="spare",
            upstream=upstream,
            platforms=["linux"],
            channels=["production"],
            archs=["x86_64"],
            sync_interval_minutes=0,
        )
    )
    request_sync(mirror, SyncTrigger.API, admin)  # stays queued: nothing runs it here
    pilot = save_group(
        EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux", "mac"], ring_order=10), admin
    )
    save_group(
        EndpointGroup(
            name="Broad",
            slug="broad",
            mirror=mirror,
            platforms=["linux"],
            ring_order=20,
            rollout=RolloutMode.AFTER,
            source_group=pilot,
            delay_hours=0,
        )
    )
    save_group(EndpointGroup(name="Spare", slug="spare-ring", mirror=mirror, platforms=["linux"], ring_order=30))
    old, new = SignaturePackage.objects.filter(platform="linux", arch="x86_64").order_by("pk")
    approve_package(pilot, old, admin)
    approve_package(pilot, new, admin)
    secret, secret_text = enrollment.create_enrollment_secret(pilot, "contract", admin)
    enrollment.create_enrollment_secret(pilot, "spare", admin)
    endpoint, endpoint_token = enrollment.enroll(
        secret_text, "contract-machine", "host-1", "linux", "x86_64", "101.24022.0001"
    )
    ingest.ingest_report(endpoint, DESIGN_SAMPLE.encode())
    enrollment.enroll(secret_text, "spare-machine", "host-2", "linux", "arm64")
    # Alerts with something in every list: channels, rules, a firing event, and deliveries (tests and alerts).
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ALERT_WEBHOOK_TIMEOUT = 0.5
    hook = AlertChannel(
        name="SOC hook", kind=AlertChannelKind.WEBHOOK, url="http://127.0.0.1:9/hook"
    )  # refused at once
    mail = AlertChannel(name="SOC mail", kind=AlertChannelKind.EMAIL, recipients=["soc@example.org"])
    alerts.save_channel(hook, admin)
    alerts.save_channel(mail, admin)
    alerts.save_rule(AlertRule(name="Sync failed", kind=AlertRuleKind.SYNC_FAILED), [hook, mail], admin)
    alerts.save_rule(
        AlertRule(
            name="Pilot below 99 %", kind=AlertRuleKind.GROUP_COMPLIANCE_BELOW, group=pilot, threshold_percent=99
        ),
        [mail],
        admin,
    )
    alerts.send_test(mail, admin)
    alerts.send_test(hook, admin)
    alerts.evaluate()
    assert AlertEvent.objects.exists() and AlertDelivery.objects.filter(event__isnull=False).exists()
    return {
        "admin_token": admin_token,
        "endpoint_token": endpoint_token,
        "secret": secret_text,
        "references": {
            "upstream": upstream.pk,
            "mirror": "main",
            "group": "pilot",
            "source_group": "pilot",
            "package": new.pk,
        },
    }


admin_schema = schemathesis.pytest.from_fixture("api_schema").exclude(tag=AGENT_TAG)
agent_schema = schemathesis.pytest.from_fixture("api_schema").include(tag=AGENT_TAG)
_turns = defaultdict(itertools.count)


def real_data_turn(case) -> int | None:
    """Every other case of an operation gets real data swapped in; its rank among those, or None."""
    counter = next(_turns[case.operation.label])
    return counter // 2 if counter % 2 else None


def existing_ids(path: str) -> list[int]:
    """The ids of the objects behind ``path`` ("/api/v1/mirrors/{id}/..."), from its view's model."""
    try:
        view = resolve(path.replace("{id}", "1")).func.cls
    except (Resolver404, AttributeError):
        return []
    queryset = getattr(view, "queryset", None)
    model = (
        queryset.model if queryset is not None else getattr(getattr(view.serializer_class, "Meta", None), "model", None)
    )
    return list(model.objects.order_by("pk").values_list("pk", flat=True)) if model else []


def call_in_savepoint(case, token: str):
    # Rolled back whatever the case did: the next one finds the same portal.
    with transaction.atomic():
        case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
        transaction.set_rollback(True)


@admin_schema.parametrize()
def test_every_operation_keeps_the_contract_for_an_admin_token(case, contract_data):
    turn = real_data_turn(case)
    if turn is not None:
        ids = existing_ids(case.operation.path) if "id" in (case.path_parameters or {}) else []
        if ids:
            case.path_parameters["id"] = ids[turn % len(ids)]
        if isinstance(case.body, dict):
            case.body.update({name: value for name, value in contract_data["references"].items() if name in case.body})
        if "page" in (case.query or {}):
            case.query["page"] = 1
    call_in_savepoint(case, contract_data["admin_token"])


@agent_schema.parametrize()
def test_the_agent_operations_keep_the_contract_for_an_endpoint_token(case, contract_data):
    turn = real_data_turn(case)
    if turn is not None:
        if case.operation.path.startswith("/api/v1/enroll") and isinstance(case.body, dict):
            case.body.update(secret=contract_data["secret"], machine_id=f"contract-{turn}", platform="linux")
        elif case.operation.path.startswith("/api/v1/reports") and case.media_type == "text/plain":
            case.body = DESIGN_SAMPLE
    call_in_savepoint(case, contract_data["endpoint_token"])


def test_a_json_report_with_an_escaped_nul_is_refused_not_a_server_error(client, contract_data):
    response = client.post(
        "/api/v1/reports",
        '{"definitionsVersion": "1.407.\\u0000417.0"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {contract_data['endpoint_token']}",
    )
    assert response.status_code == 400, response.content


# --- The schema itself: the same shapes everywhere -----------------------------------------------------


@pytest.fixture
def published(api, viewer):
    return api.as_user(viewer).get("/api/schema/?format=json").json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def test_the_schema_is_generated_without_a_single_warning():
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", os.devnull)


def test_every_operation_documents_its_refusals_with_the_one_error_body(published):
    for label, operation in operations(published):
        responses = operation["responses"]
        assert "401" in responses, label
        for code, response in responses.items():
            if int(code) >= 400:
                content = response["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ApiError"}, f"{label} {code}"
                assert content["examples"], f"{label} {code}"


def test_every_list_is_paginated_filtered_and_ordered_alike(published):
    lists, unpaginated = [], []
    for label, operation in operations(published):
        body = operation["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if body.get("$ref", "").startswith("#/components/schemas/Paginated"):
            lists.append(label)
            parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
            assert {"page", "page_size", "ordering"} <= set(parameters), label
            assert parameters["ordering"]["schema"]["items"]["enum"], label
        elif body.get("type") == "array":
            unpaginated.append(label)
    assert len(lists) >= 14
    # A group's status is one entry per target it serves (four at most), not a collection.
    assert unpaginated == ["GET /api/v1/groups/{id}/status/"]
