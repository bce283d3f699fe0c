"""TRUSTED_PROXIES: behind nginx, the client's address (X-Real-IP) is the one the portal sees.

Django's test client connects from 127.0.0.1 (REMOTE_ADDR), like gunicorn's peer when nginx runs
on the same host (deploy/); X-Real-IP is what nginx would have set.
"""

import ipaddress

import pytest
from axes.models import AccessAttempt
from django.conf import settings as django_settings
from django.core.exceptions import MiddlewareNotUsed
from django.test import RequestFactory

from core.middleware import ClientAddressMiddleware
from core.models import AuditEvent
from fleet.services import enrollment
from tests.processes import clean_env, run_django

PASSWORD = "correct horse battery"
CLIENT, OTHER_CLIENT = "203.0.113.7", "198.51.100.23"


def networks(*items: str) -> list:
    return [ipaddress.ip_network(item) for item in items]


@pytest.fixture
def behind_nginx(settings):
    settings.TRUSTED_PROXIES = networks("127.0.0.1")
    return settings


def address_seen(peer: str, **headers) -> str:
    """REMOTE_ADDR as the rest of the portal sees it, for a request from ``peer`` with these headers."""
    middleware = ClientAddressMiddleware(lambda request: request.META["REMOTE_ADDR"])
    return middleware(RequestFactory().get("/", REMOTE_ADDR=peer, **headers))


# --- The middleware ----------------------------------------------------------------------------


def test_a_trusted_proxy_hands_over_the_clients_address(behind_nginx):
    assert address_seen("127.0.0.1", HTTP_X_REAL_IP=CLIENT) == CLIENT
    assert address_seen("127.0.0.1", HTTP_X_REAL_IP=" 2001:DB8::0:1 ") == "2001:db8::1"


def test_proxies_may_be_networks_and_ipv6(settings):
    settings.TRUSTED_PROXIES = networks("10.20.0.0/16", "::1")
    assert address_seen("10.20.3.4", HTTP_X_REAL_IP=CLIENT) == CLIENT
    assert address_seen("::1", HTTP_X_REAL_IP=CLIENT) == CLIENT
    assert address_seen("10.21.0.1", HTTP_X_REAL_IP=CLIENT) == "10.21.0.1"


def test_anyone_else_cannot_claim_an_address(behind_nginx):
    assert address_seen("192.0.2.99", HTTP_X_REAL_IP=CLIENT) == "192.0.2.99"
    assert address_seen("", HTTP_X_REAL_IP=CLIENT) == ""  # no peer address at all (a Unix socket)


@pytest.mark.parametrize("header", ["", "unknown", f"{CLIENT}, 10.0.0.1", f"{CLIENT}:51234", "203.0.113.300"])
def test_a_header_that_is_not_one_address_leaves_the_proxys(behind_nginx, header):
    assert address_seen("127.0.0.1", HTTP_X_REAL_IP=header) == "127.0.0.1"


def test_a_trusted_proxy_without_the_header_stays_itself(behind_nginx):
    assert address_seen("127.0.0.1") == "127.0.0.1"


def test_x_forwarded_for_is_not_read(behind_nginx):
    assert address_seen("127.0.0.1", HTTP_X_FORWARDED_FOR=CLIENT) == "127.0.0.1"


def test_without_trusted_proxies_it_leaves_the_chain_and_costs_nothing(settings):
    settings.TRUSTED_PROXIES = []
    with pytest.raises(MiddlewareNotUsed):
        ClientAddressMiddleware(lambda request: None)


def test_it_runs_before_any_other_middleware():
    # Health reports leave the chain at ReportShortcutMiddleware: this one still sees them first.
    assert django_settings.MIDDLEWARE[0] == "core.middleware.ClientAddressMiddleware"
    assert django_settings.MIDDLEWARE.index("fleet.middleware.ReportShortcutMiddleware") > 0


# --- What sees the client: the sign-in lock-out, the audit log, the metrics allow-list -------------


def fail_to_sign_in(client, address: str, times: int) -> None:
    statuses = [
        client.post("/login/", {"username": "victor", "password": "wrong"}, HTTP_X_REAL_IP=address).status_code
        for _ in range(times)
    ]
    assert statuses == [200] * (times - 1) + [429]  # the last failure locks out


def test_a_lock_out_through_the_proxy_is_for_the_client_who_failed_only(client, viewer, behind_nginx):
    fail_to_sign_in(client, CLIENT, behind_nginx.AXES_FAILURE_LIMIT)
    locked = client.post("/login/", {"username": "victor", "password": PASSWORD}, HTTP_X_REAL_IP=CLIENT)
    assert locked.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {CLIENT}
    other = client.post("/login/", {"username": "victor", "password": PASSWORD}, HTTP_X_REAL_IP=OTHER_CLIENT)
    assert other.status_code == 302 and other["Location"] == "/"


def test_without_trusted_proxies_a_forged_header_does_not_dodge_the_lock_out(client, viewer, settings):
    settings.TRUSTED_PROXIES = []
    fail_to_sign_in(client, CLIENT, settings.AXES_FAILURE_LIMIT)
    response = client.post("/login/", {"username": "victor", "password": PASSWORD}, HTTP_X_REAL_IP=OTHER_CLIENT)
    assert response.status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"127.0.0.1"}


def enroll(client, group, **headers):
    secret = enrollment.create_enrollment_secret(group, "lab")[1]
    response = client.post(
        "/api/v1/enroll",
        {"secret": secret, "machine_id": "4f0c2b8e-1d3a-4e5f-9a6b-7c8d9e0f1a2b", "platform": "linux"},
        content_type="application/json",
        **headers,
    )
    assert response.status_code == 201, response.content
    return AuditEvent.objects.get(action="endpoint.enroll")


def test_the_audit_log_records_the_client_behind_a_trusted_proxy(client, make_group, behind_nginx):
    assert enroll(client, make_group("pilot"), HTTP_X_REAL_IP=CLIENT).ip_address == CLIENT


def test_the_audit_log_records_the_peer_when_no_proxy_is_trusted(client, make_group, settings):
    settings.TRUSTED_PROXIES = []
    assert enroll(client, make_group("pilot"), HTTP_X_REAL_IP=CLIENT).ip_address == "127.0.0.1"


def test_the_metrics_allow_list_compares_the_client_behind_a_trusted_proxy(client, behind_nginx, db):
    behind_nginx.METRICS_TOKEN = ""
    behind_nginx.METRICS_ALLOWED_IPS = networks("203.0.113.0/24")
    assert client.get("/metrics", HTTP_X_REAL_IP=CLIENT).status_code == 200
    assert client.get("/metrics", HTTP_X_REAL_IP=OTHER_CLIENT).status_code == 403
    assert client.get("/metrics").status_code == 403  # the proxy itself is not on the list


# --- The setting ---------------------------------------------------------------------------------


@pytest.mark.e2e  # Django processes
def test_the_setting_reads_addresses_and_networks_and_trusts_nobody_by_default(tmp_path):
    env = clean_env(tmp_path / "var", TRUSTED_PROXIES="127.0.0.1, 10.0.0.0/8,::1")
    assert run_django("result = [str(n) for n in settings.TRUSTED_PROXIES]", env) == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]
    assert run_django("result = settings.TRUSTED_PROXIES", clean_env(tmp_path / "var")) == []


@pytest.mark.e2e  # a Django process
def test_a_bad_proxy_address_stops_the_portal_naming_the_setting(tmp_path):
    with pytest.raises(AssertionError, match=r"ImproperlyConfigured: TRUSTED_PROXIES: .*127\.0\.0\.300"):
        run_django("result = 1", clean_env(tmp_path / "var", TRUSTED_PROXIES="127.0.0.1,127.0.0.300"))
