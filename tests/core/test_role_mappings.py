"""The role mappings pages (/users/role-mappings/): admins list them by directory, create, edit and delete them,
each change audited and only with a password given moments ago."""

import time

import pytest
from django.test import Client

from core import services
from core.choices import AccountSource, Role
from core.models import AuditEvent, RoleMapping

PASSWORD = "correct horse battery"


@pytest.fixture
def signed_in_admin(admin):
    client = Client()
    assert client.post("/login/", {"username": admin.username, "password": PASSWORD}).status_code == 302
    return client


def test_the_list_shows_the_mappings_of_each_directory(signed_in_admin):
    RoleMapping.objects.create(source=AccountSource.OIDC, value="portal-admins", role=Role.ADMIN)
    RoleMapping.objects.create(source=AccountSource.LDAP, value="CN=Defender,OU=Groups,DC=corp", role=Role.VIEWER)
    page = signed_in_admin.get("/users/role-mappings/").content.decode()
    oidc, ldap = page.split('id="mappings-oidc"')[1].split('id="mappings-ldap"')
    assert "portal-admins" in oidc and "CN=Defender" not in oidc
    assert "CN=Defender,OU=Groups,DC=corp" in ldap
    assert 'href="/users/role-mappings/"' in signed_in_admin.get("/users/").content.decode()


def test_an_admin_creates_a_mapping_with_its_value_trimmed_and_audited(signed_in_admin):
    response = signed_in_admin.post(
        "/users/role-mappings/new/", {"source": "oidc", "value": "  portal-operators \n", "role": "operator"}
    )
    assert response.status_code == 302 and response["Location"] == "/users/role-mappings/"
    mapping = RoleMapping.objects.get()
    assert (mapping.source, mapping.value, mapping.role) == ("oidc", "portal-operators", "operator")
    event = AuditEvent.objects.get(action="rolemapping.create")
    assert event.actor_label == "alice" and event.details["fields"]["value"] == "portal-operators"


def test_a_duplicate_is_refused_with_a_form_error_whatever_its_case(signed_in_admin):
    RoleMapping.objects.create(source=AccountSource.OIDC, value="portal-admins", role=Role.ADMIN)
    response = signed_in_admin.post(
        "/users/role-mappings/new/", {"source": "oidc", "value": " Portal-Admins", "role": "viewer"}
    )
    assert response.status_code == 400
    assert "A mapping for portal-admins already exists (it gives Admin)" in response.content.decode()
    assert RoleMapping.objects.count() == 1
    # The same value for the other directory is another rule.
    signed_in_admin.post("/users/role-mappings/new/", {"source": "ldap", "value": "portal-admins", "role": "viewer"})
    assert RoleMapping.objects.count() == 2


def test_an_empty_value_is_refused(signed_in_admin):
    response = signed_in_admin.post("/users/role-mappings/new/", {"source": "oidc", "value": "   ", "role": "admin"})
    assert response.status_code == 400 and not RoleMapping.objects.exists()


def test_an_admin_edits_and_deletes_a_mapping(signed_in_admin):
    mapping = RoleMapping.objects.create(source=AccountSource.OIDC, value="staff", role=Role.VIEWER)
    assert signed_in_admin.get(f"/users/role-mappings/{mapping.pk}/").status_code == 200
    response = signed_in_admin.post(
        f"/users/role-mappings/{mapping.pk}/", {"source": "oidc", "value": "staff", "role": "operator"}
    )
    assert response.status_code == 302
    mapping.refresh_from_db()
    assert mapping.role == Role.OPERATOR
    assert AuditEvent.objects.get(action="rolemapping.update").details == {"role": {"from": "viewer", "to": "operator"}}

    assert signed_in_admin.get(f"/users/role-mappings/{mapping.pk}/delete/").status_code == 200
    assert signed_in_admin.post(f"/users/role-mappings/{mapping.pk}/delete/").status_code == 302
    assert not RoleMapping.objects.exists()
    assert AuditEvent.objects.get(action="rolemapping.delete").details["value"] == "staff"


def test_changes_need_a_recently_given_password(signed_in_admin):
    session = signed_in_admin.session
    session[services.REAUTHENTICATED_AT] = time.time() - 3600
    session.save()
    response = signed_in_admin.post("/users/role-mappings/new/", {"source": "oidc", "value": "x", "role": "admin"})
    assert response.status_code == 302 and response["Location"].startswith("/reauthenticate/")
    mapping = RoleMapping.objects.create(source=AccountSource.OIDC, value="staff", role=Role.VIEWER)
    response = signed_in_admin.post(f"/users/role-mappings/{mapping.pk}/delete/")
    assert response["Location"].startswith("/reauthenticate/") and RoleMapping.objects.count() == 1
    assert not AuditEvent.objects.filter(action__startswith="rolemapping.").exists()


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER])
def test_only_admins_see_or_change_mappings(make_user, role):
    make_user("someone", role)
    client = Client()
    client.post("/login/", {"username": "someone", "password": PASSWORD})
    assert client.get("/users/role-mappings/").status_code == 403
    response = client.post("/users/role-mappings/new/", {"source": "oidc", "value": "x", "role": "admin"})
    assert response.status_code == 403 and not RoleMapping.objects.exists()
