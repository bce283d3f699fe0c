"""Accounts from a directory (core.directory): the admin's mappings give the role, no mapping gives none and no
account, a local account is never taken over, and a role removed in the directory goes at the next sign-in."""

import pytest

from core.choices import AccountSource, Role
from core.directory import mapped_role, sign_in_from_directory
from core.errors import Refused
from core.models import Account, AuditEvent, RoleMapping
from core.roles import user_role

pytestmark = pytest.mark.django_db

OIDC = AccountSource.OIDC


@pytest.fixture
def mappings():
    RoleMapping.objects.create(source=OIDC, value="soc-admins", role=Role.ADMIN)
    RoleMapping.objects.create(source=OIDC, value="SOC-Analysts", role=Role.VIEWER)
    RoleMapping.objects.create(
        source=AccountSource.LDAP, value="cn=ops,ou=groups,dc=example,dc=org", role=Role.OPERATOR
    )


def test_the_highest_mapped_role_wins_and_values_compare_without_case(mappings):
    assert mapped_role(OIDC, ["soc-analysts"]) == Role.VIEWER
    assert mapped_role(OIDC, ["SOC-analysts", "soc-admins"]) == Role.ADMIN
    assert mapped_role(OIDC, ["cn=ops,ou=groups,dc=example,dc=org"]) is None  # another source's rule
    assert mapped_role(AccountSource.LDAP, ["CN=ops,OU=groups,DC=example,DC=org"]) == Role.OPERATOR


def test_a_new_person_is_created_with_the_mapped_role_and_audited(mappings):
    user = sign_in_from_directory(OIDC, "https://idp|42", "ana", ["soc-analysts"], email="ana@example.org")
    assert user_role(user) == Role.VIEWER and not user.has_usable_password()
    assert Account.objects.get(user=user).external_id == "https://idp|42"
    assert AuditEvent.objects.filter(action="user.directory_create", target_id=str(user.pk)).exists()


def test_a_person_with_no_mapped_role_gets_no_account_and_the_refusal_is_recorded(mappings, django_user_model):
    with pytest.raises(Refused, match="none of their groups or roles is mapped"):
        sign_in_from_directory(OIDC, "https://idp|7", "bob", ["marketing"])
    assert not django_user_model.objects.filter(username="bob").exists() and not Account.objects.exists()
    refusal = AuditEvent.objects.get(action="user.sign_in_refused")
    assert refusal.details["username"] == "bob" and refusal.details["values"] == ["marketing"]


def test_a_role_removed_in_the_directory_is_removed_at_the_next_sign_in(mappings, django_user_model):
    user = sign_in_from_directory(OIDC, "sub-1", "carl", ["soc-admins"])
    assert user_role(user) == Role.ADMIN
    with pytest.raises(Refused):
        sign_in_from_directory(OIDC, "sub-1", "carl", [])
    assert user_role(django_user_model.objects.get(pk=user.pk)) is None
    change = AuditEvent.objects.get(action="user.role_mapped", details__role__to=None)
    assert change.details["role"] == {"from": "admin", "to": None}


def test_a_local_account_of_the_same_name_is_never_taken_over(mappings, make_user):
    local = make_user("dana", Role.VIEWER)
    with pytest.raises(Refused, match="already exists in the portal"):
        sign_in_from_directory(OIDC, "sub-9", "Dana", ["soc-admins"])
    assert user_role(local) == Role.VIEWER and not Account.objects.filter(source=OIDC).exists()


def test_a_deactivated_account_stays_out(mappings, django_user_model):
    user = sign_in_from_directory(OIDC, "sub-2", "eve", ["soc-admins"])
    django_user_model.objects.filter(pk=user.pk).update(is_active=False)
    with pytest.raises(Refused, match="deactivated"):
        sign_in_from_directory(OIDC, "sub-2", "eve", ["soc-admins"])
