"""Issue 14, item 12: /api/schema/ and /api/docs/ map every resource and field, so they need a signed-in user with
a role (or an API token), unless API_DOCS_REQUIRE_SIGN_IN is off; every answer carries the Content-Security-Policy."""

import pytest

from core import services

pytestmark = pytest.mark.django_db

SCHEMA = "/api/schema/?format=json"


def test_an_anonymous_client_cannot_read_the_schema(client):
    response = client.get(SCHEMA)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert b"/api/v1/users/" not in response.content


def test_an_anonymous_person_is_sent_from_the_api_docs_to_the_sign_in_page_and_back(client):
    response = client.get("/api/docs/", HTTP_ACCEPT="text/html")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/api/docs/"
    # Nor does the page's script, which carries the schema's URL and settings.
    assert client.get("/api/docs/?script=").status_code == 401


def test_a_signed_in_viewer_reads_the_docs_and_the_schema(client, viewer):
    client.force_login(viewer)
    assert client.get(SCHEMA).json()["info"]["title"] == "Defender offline update portal API"
    page = client.get("/api/docs/", HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    # Its start-up script is a file, not inline: the Content-Security-Policy runs no inline script.
    assert b'<script src="/api/docs/?script="></script>' in page.content
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")


def test_an_api_token_reads_the_schema(client, viewer):
    _, raw = services.create_api_token(viewer, "ci")
    assert client.get(SCHEMA, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_a_user_without_a_role_cannot_read_the_schema(client, make_user):
    client.force_login(make_user("nobody", role=None))
    response = client.get(SCHEMA)
    assert response.status_code == 403
    assert "needs the viewer role" in response.json()["detail"]


def test_the_docs_can_be_made_public(client, settings):
    settings.API_DOCS_REQUIRE_SIGN_IN = False
    assert client.get(SCHEMA).status_code == 200
    assert client.get("/api/docs/", HTTP_ACCEPT="text/html").status_code == 200


@pytest.mark.parametrize("path", ["/login/", "/api/docs/", "/", SCHEMA])
def test_every_answer_carries_the_content_security_policy(client, admin, path):
    client.force_login(admin)
    policy = client.get(path, HTTP_ACCEPT="text/html")["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
