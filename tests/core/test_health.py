import pytest

from tests.processes import clean_env, run_django

pytestmark = pytest.mark.django_db

PROBE = """
from django.test import Client
client = Client(HTTP_HOST="localhost")
result = {path: [r.status_code, r.json()] for path in ("/healthz", "/readyz") for r in [client.get(path)]}
"""


def test_healthz_says_the_process_is_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_the_database_broker_and_cache(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "cache"}
    assert all(check["ok"] for check in body["checks"].values())


@pytest.mark.e2e  # a Django process
def test_readyz_returns_503_when_the_database_is_unreachable(tmp_path):
    # Port 9 (discard) has no PostgreSQL: the connection is refused at once.
    results = run_django(PROBE, clean_env(tmp_path, DATABASE_URL="postgres://portal@127.0.0.1:9/portal"))
    status, body = results["/readyz"]
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["error"]
    assert results["/healthz"][0] == 200


@pytest.mark.e2e  # a Django process
def test_readyz_returns_503_when_the_broker_is_unreachable(tmp_path):
    results = run_django(PROBE, clean_env(tmp_path, CELERY_BROKER_URL="redis://127.0.0.1:9/0"))
    status, body = results["/readyz"]
    assert status == 503
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
