import pytest
from django.contrib.auth.models import Group

from core.choices import Role
from core.models import AuditEvent
from core.roles import user_role

pytestmark = pytest.mark.django_db


def test_the_three_roles_exist_after_migrating():
    assert set(Group.objects.values_list("name", flat=True)) >= {"admin", "operator", "viewer"}


def test_a_user_has_the_highest_of_their_roles(make_user):
    user = make_user("both", Role.VIEWER)
    user.groups.add(Group.objects.get(name="operator"))
    user.__dict__.pop("_portal_role", None)
    assert user_role(user) == Role.OPERATOR


def test_a_viewer_gets_403_on_a_write(api, viewer):
    response = api.as_user(viewer).post("/api/v1/users/", {"username": "new", "role": "viewer"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "admin role" in response.json()["detail"]
    assert not AuditEvent.objects.filter(action="user.create").exists()


def test_an_operator_cannot_manage_users(api, operator):
    assert api.as_user(operator).get("/api/v1/users/").status_code == 403
    assert api.post("/api/v1/users/", {"username": "new", "role": "viewer"}, format="json").status_code == 403


def test_a_viewer_can_read_the_audit_log(api, viewer):
    assert api.as_user(viewer).get("/api/v1/audit-events/").status_code == 200


def test_an_account_without_a_role_sees_nothing(api, make_user):
    nobody = make_user("nobody", role=None)
    response = api.as_user(nobody).get("/api/v1/audit-events/")
    assert response.status_code == 403
    assert "no role" in response.json()["detail"]
    assert api.get("/audit/").status_code == 403


def test_an_anonymous_caller_gets_401_with_a_json_body(api):
    response = api.get("/api/v1/audit-events/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_an_admin_creates_a_user_with_a_role_and_it_is_audited(api, admin):
    response = api.as_user(admin).post(
        "/api/v1/users/",
        {"username": "olga", "role": "operator", "password": "a long enough passphrase"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["role"] == "operator"
    event = AuditEvent.objects.get(action="user.create", target_label="olga")
    assert event.actor_label == "alice"
    assert event.details["role"] == "operator"


def test_a_weak_password_is_refused_with_a_field_error_and_no_user_is_created(api, admin, django_user_model):
    response = api.as_user(admin).post(
        "/api/v1/users/", {"username": "weak", "role": "viewer", "password": "123"}, format="json"
    )
    assert response.status_code == 400
    assert "password" in response.json()["errors"]
    assert not django_user_model.objects.filter(username="weak").exists()


def test_an_admin_changes_a_role_and_the_change_is_audited(api, admin, viewer):
    response = api.as_user(admin).patch(f"/api/v1/users/{viewer.pk}/", {"role": "operator"}, format="json")
    assert response.status_code == 200
    assert response.json()["role"] == "operator"
    event = AuditEvent.objects.get(action="user.update")
    assert event.details["role"] == {"from": "viewer", "to": "operator"}


def test_an_admin_cannot_demote_themselves(api, admin):
    response = api.as_user(admin).patch(f"/api/v1/users/{admin.pk}/", {"role": "viewer"}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "role": ["You cannot demote or deactivate your own account; ask another admin."]
    }
    assert user_role(admin) == Role.ADMIN
    assert not AuditEvent.objects.filter(action="user.update").exists()


def test_an_admin_cannot_deactivate_themselves_through_the_api(api, admin):
    response = api.as_user(admin).patch(f"/api/v1/users/{admin.pk}/", {"is_active": False}, format="json")
    assert response.status_code == 400
    admin.refresh_from_db()
    assert admin.is_active


def test_the_users_page_refuses_self_demotion_with_the_apis_words(client, admin):
    client.force_login(admin)
    response = client.post(
        f"/users/{admin.pk}/", {f"u{admin.pk}-role": "viewer", f"u{admin.pk}-is_active": "on"}, follow=True
    )
    assert "You cannot demote or deactivate your own account; ask another admin." in response.content.decode()
    admin.__dict__.pop("_portal_role", None)
    assert user_role(admin) == Role.ADMIN
    assert not AuditEvent.objects.filter(action="user.update").exists()


def test_the_services_refuse_self_demotion_for_every_door(admin):
    from core import services
    from core.errors import Refused

    with pytest.raises(Refused):
        services.update_user(admin, admin, is_active=False)


def test_users_are_never_deleted_through_the_api(api, admin, viewer):
    assert api.as_user(admin).delete(f"/api/v1/users/{viewer.pk}/").status_code == 405


def test_the_users_page_is_for_admins_only(client, admin, operator):
    client.force_login(operator)
    assert client.get("/users/").status_code == 403
    client.force_login(admin)
    assert client.get("/users/").status_code == 200


def test_the_users_page_creates_a_user_and_shows_form_errors(client, admin, django_user_model):
    client.force_login(admin)
    response = client.post("/users/", {"username": "bad name!", "role": "viewer"})
    assert response.status_code == 400
    assert "Letters, digits" in response.content.decode()
    response = client.post("/users/", {"username": "vera", "role": "viewer", "password": "a long enough passphrase"})
    assert response.status_code == 302
    assert user_role(django_user_model.objects.get(username="vera")) == Role.VIEWER
