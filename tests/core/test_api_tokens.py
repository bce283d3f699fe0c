from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core import services
from core.choices import TokenScope
from core.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db


def bearer(raw):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_a_token_is_shown_once_and_stored_only_as_a_hash(api, operator):
    response = api.as_user(operator).post("/api/v1/tokens/", {"name": "ansible", "scope": "write"}, format="json")
    assert response.status_code == 201, response.json()
    raw = response.json()["token"]
    assert raw.startswith("mdo_") and len(raw) > 40
    # Nowhere in the table, in any column.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM core_apitoken")
        rows = cursor.fetchall()
    assert rows and not any(raw in str(value) for row in rows for value in row)
    listed = api.get("/api/v1/tokens/").json()["results"][0]
    assert "token" not in listed and listed["hint"] == raw[:10]
    assert AuditEvent.objects.filter(action="token.create", actor_label="oscar").exists()


def test_a_token_authenticates_with_its_owners_role(api, operator):
    _, raw = services.create_api_token(operator, "ci", TokenScope.WRITE)
    api.credentials(**bearer(raw))
    response = api.get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "oscar"
    assert response.json()["token_scope"] == "write"
    assert ApiToken.objects.get().last_used_at is not None


def test_an_expired_token_is_refused(api, operator):
    token, raw = services.create_api_token(operator, "old", expires_in_days=1)
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.get("/api/v1/me/", **bearer(raw))
    assert response.status_code == 401
    assert response.json()["detail"] == "This API token has expired."
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_is_refused(api, operator):
    token, raw = services.create_api_token(operator, "gone")
    api.as_user(operator).post(f"/api/v1/tokens/{token.pk}/revoke/")
    api.logout()
    response = api.get("/api/v1/me/", **bearer(raw))
    assert response.status_code == 401
    assert response.json()["detail"] == "This API token has been revoked."
    assert AuditEvent.objects.filter(action="token.revoke").count() == 1


def test_an_unknown_or_malformed_token_is_refused(api):
    assert api.get("/api/v1/me/", **bearer("mdo_nope")).json()["detail"] == "Invalid API token."
    response = api.get("/api/v1/me/", HTTP_AUTHORIZATION="Bearer two words")
    assert response.status_code == 401
    assert "Malformed" in response.json()["detail"]


def test_a_read_only_token_cannot_write_even_for_an_admin(api, admin):
    _, raw = services.create_api_token(admin, "reader", TokenScope.READ)
    response = api.post("/api/v1/users/", {"username": "x", "role": "viewer"}, format="json", **bearer(raw))
    assert response.status_code == 403
    assert "read-only" in response.json()["detail"]
    assert api.get("/api/v1/users/", **bearer(raw)).status_code == 200


def test_a_token_of_a_disabled_account_is_refused(api, operator):
    _, raw = services.create_api_token(operator, "ci")
    operator.is_active = False
    operator.save()
    assert api.get("/api/v1/me/", **bearer(raw)).status_code == 401


def test_a_viewer_may_only_create_read_only_tokens(api, viewer):
    response = api.as_user(viewer).post("/api/v1/tokens/", {"name": "x", "scope": "write"}, format="json")
    assert response.status_code == 400
    assert "read-only" in response.json()["errors"]["scope"][0]
    assert not ApiToken.objects.exists()
    assert api.post("/api/v1/tokens/", {"name": "x"}, format="json").status_code == 201


def test_a_token_cannot_create_another_token(api, operator):
    _, raw = services.create_api_token(operator, "ci", TokenScope.WRITE)
    response = api.post("/api/v1/tokens/", {"name": "more"}, format="json", **bearer(raw))
    assert response.status_code == 403
    assert ApiToken.objects.count() == 1


def test_users_see_and_revoke_only_their_own_tokens(api, operator, viewer, admin):
    token, _ = services.create_api_token(operator, "mine")
    assert api.as_user(viewer).get("/api/v1/tokens/").json()["count"] == 0
    assert api.post(f"/api/v1/tokens/{token.pk}/revoke/").status_code == 404
    assert api.as_user(admin).get("/api/v1/tokens/").json()["count"] == 1
    assert api.post(f"/api/v1/tokens/{token.pk}/revoke/").json()["state"] == "revoked"


def test_the_tokens_page_shows_a_new_token_once(client, operator):
    client.force_login(operator)
    response = client.post("/tokens/", {"name": "nightly", "scope": "read", "expires_in_days": "30"})
    assert response.status_code == 200
    token = ApiToken.objects.get()
    raw = response.context["new_token"]
    assert raw in response.content.decode()
    assert token.key_hash != raw and token.expires_at is not None
    assert raw not in client.get("/tokens/").content.decode()


def test_the_tokens_page_refuses_a_viewer_a_read_write_token_with_the_apis_words(client, viewer):
    client.force_login(viewer)
    response = client.post("/tokens/", {"name": "x", "scope": "write"})
    assert response.status_code == 400
    assert "Viewers can only create read-only tokens." in response.content.decode()
    assert not ApiToken.objects.exists()


def test_the_tokens_page_shows_field_errors(client, operator):
    client.force_login(operator)
    response = client.post("/tokens/", {"name": "", "expires_in_days": "0"})
    assert response.status_code == 400
    assert not ApiToken.objects.exists()
    assert "This field is required." in response.content.decode()
    assert "greater than or equal to 1" in response.content.decode()


def test_me_says_the_token_scope_and_the_schema_describes_the_answer(api, operator):
    # The schema left token_scope out, and promised an e-mail format that an empty address breaks.
    _, raw = services.create_api_token(operator, "ci", TokenScope.WRITE)
    body = api.get("/api/v1/me/", **bearer(raw)).json()
    assert body["token_scope"] == "write" and body["email"] == ""
    assert api.as_user(operator).get("/api/v1/me/").json()["token_scope"] is None
    schema = api.get("/api/schema/?format=json").json()
    answer = schema["paths"]["/api/v1/me/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    properties = schema["components"]["schemas"][answer.rsplit("/", 1)[1]]["properties"]
    assert set(body) == set(properties)
    assert "format" not in properties["email"]
