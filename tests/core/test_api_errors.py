import pytest

from core.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_malformed_json_gets_a_400_that_says_so_and_writes_nothing(api, admin, django_user_model):
    users_before = django_user_model.objects.count()
    response = api.as_user(admin).generic(
        "POST", "/api/v1/users/", '{"username": "x", "role": ', content_type="application/json"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == 400 and body["code"] == "parse_error"
    assert "JSON parse error" in body["detail"]
    assert django_user_model.objects.count() == users_before
    assert not AuditEvent.objects.exclude(action="user.sign_in").exists()


def test_a_validation_error_names_each_field_in_one_readable_sentence(api, admin):
    response = api.as_user(admin).post("/api/v1/users/", {"role": "superhero"}, format="json")
    body = response.json()
    assert response.status_code == 400 and body["code"] == "invalid"
    assert body["errors"]["username"] == ["This field is required."]
    assert '"superhero" is not a valid choice.' in body["errors"]["role"][0]
    assert "username: This field is required." in body["detail"] and "role: " in body["detail"]


def test_an_unknown_api_url_gets_a_json_404(api, admin):
    response = api.as_user(admin).get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"status": 404, "code": "not_found", "detail": "No API endpoint or object at this URL."}


def test_an_unknown_object_gets_a_json_404(api, admin):
    response = api.as_user(admin).get("/api/v1/audit-events/999999/")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_a_wrong_method_gets_a_json_405(api, admin):
    response = api.as_user(admin).delete("/api/v1/me/")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_the_session_api_refuses_a_write_without_the_csrf_token(admin):
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin)
    response = client.post("/api/v1/users/", {"username": "x", "role": "viewer"}, format="json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_the_openapi_schema_describes_the_api(api, viewer):
    response = api.as_user(viewer).get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {
        "/api/v1/tokens/",
        "/api/v1/tokens/{id}/revoke/",
        "/api/v1/audit-events/",
        "/api/v1/users/",
        "/api/v1/me/",
    } <= set(paths)
    assert "requestBody" in paths["/api/v1/tokens/"]["post"]


def test_a_list_items_error_is_keyed_by_index_as_the_schema_says(api, admin):
    # The schema said errors were always a list of strings; a list field's are an object by index.
    from mirror.models import Upstream

    upstream = Upstream.objects.create(name="microsoft")
    body = {
        "name": "Main",
        "slug": "main",
        "upstream": upstream.pk,
        "platforms": ["linux", "windows"],
        "channels": ["production"],
        "archs": ["x86_64"],
    }
    response = api.as_user(admin).post("/api/v1/mirrors/", body, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"platforms": {"1": ['"windows" is not a valid choice.']}}
    assert response.json()["detail"] == 'platforms.1: "windows" is not a valid choice.'
    errors = api.get("/api/schema/?format=json").json()["components"]["schemas"]["ApiError"]["properties"]["errors"]
    assert {"type": "object"} in [{"type": item["type"]} for item in errors["additionalProperties"]["anyOf"]]


def test_a_conflict_has_the_same_body_with_its_own_code():
    from rest_framework.test import APIRequestFactory

    from core.api.errors import Conflict, exception_handler

    request = APIRequestFactory().delete("/api/v1/upstreams/1/")
    response = exception_handler(Conflict({"non_field_errors": ["microsoft is still in use."]}), {"request": request})
    assert response.status_code == 409
    assert response.data == {
        "status": 409,
        "code": "conflict",
        "detail": "microsoft is still in use.",
        "errors": {"non_field_errors": ["microsoft is still in use."]},
    }
