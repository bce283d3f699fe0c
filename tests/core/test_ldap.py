"""Sign-in with LDAP / Active Directory (core.ldap) against a real OpenLDAP server (tests/ldap_server.py), through
the real sign-in form: the mapped group gives the role, a group removed in the directory takes it away, StartTLS and
LDAPS are verified against the test CA, and a directory that is down, untrusted or refusing TLS, a person in no
mapped group and an injection in the username each give a clear refusal and no account."""

import os
import socket
import time

import pytest
from axes.models import AccessAttempt

from core.choices import AccountSource, Role
from core.ldap import LdapBackend, LdapSettings, check_ldap_settings, find_person, user_filter
from core.models import Account, AuditEvent, RoleMapping
from core.roles import user_role
from tests.ldap_server import (
    ADMINS,
    MARKETING,
    OPERATORS,
    PASSWORD,
    SERVICE_DN,
    SERVICE_PASSWORD,
    SUFFIX,
    CertificateAuthority,
    LdapServer,
    slapd_path,
)
from tests.processes import free_port

pytestmark = pytest.mark.django_db

UNREACHABLE = "could not be reached"
UNTRUSTED = "could not be verified over TLS"


@pytest.fixture(scope="module")
def slapd():
    if not slapd_path():
        if os.environ.get("CI"):
            pytest.fail("CI=true but slapd is not installed: .ci/run installs slapd and ldap-utils")
        pytest.skip("LDAP tests skipped: no slapd (apt-get install slapd ldap-utils)")
    with LdapServer() as server:
        yield server


@pytest.fixture
def ldap(settings, slapd):
    """The portal configured for the test server: StartTLS verified against its CA, groups found by a search."""
    settings.LDAP_URL = slapd.url
    settings.LDAP_START_TLS = True
    settings.LDAP_CA_FILE = slapd.ca_file
    settings.LDAP_BIND_DN = SERVICE_DN
    settings.LDAP_BIND_PASSWORD = SERVICE_PASSWORD
    settings.LDAP_USER_SEARCH_BASE = f"ou=people,{SUFFIX}"
    settings.LDAP_USER_FILTER = "(&(objectClass=inetOrgPerson)(uid=%(user)s))"
    settings.LDAP_GROUP_ATTRIBUTE = ""
    settings.LDAP_GROUP_SEARCH_BASE = f"ou=groups,{SUFFIX}"
    settings.LDAP_GROUP_FILTER = "(&(objectClass=groupOfNames)(member=%(dn)s))"
    settings.LDAP_TIMEOUT = 2
    settings.AUTHENTICATION_BACKENDS = [
        "axes.backends.AxesStandaloneBackend",
        "core.ldap.LdapBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]
    # Upper case on purpose: group DNs compare without case.
    RoleMapping.objects.create(source=AccountSource.LDAP, value=OPERATORS.upper(), role=Role.OPERATOR)
    RoleMapping.objects.create(source=AccountSource.LDAP, value=ADMINS, role=Role.ADMIN)
    return settings


def sign_in(client, username, password=PASSWORD):
    return client.post("/login/", {"username": username, "password": password})


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_a_person_in_a_mapped_group_signs_in_through_the_form_and_gets_an_account_with_the_role(
    client, ldap, django_user_model
):
    response = sign_in(client, "ana")
    assert response.status_code == 302 and signed_in(client)
    user = django_user_model.objects.get(username="ana")
    assert user_role(user) == Role.OPERATOR and user.email == "ana@example.org" and not user.has_usable_password()
    account = Account.objects.get(user=user)
    assert account.source == AccountSource.LDAP and len(account.external_id) == 36  # the entry's entryUUID
    assert AuditEvent.objects.filter(action="user.directory_create", target_id=str(user.pk)).exists()


def test_groups_read_from_member_of_as_on_active_directory_and_the_highest_role_wins(client, ldap, django_user_model):
    ldap.LDAP_GROUP_SEARCH_BASE = ""
    ldap.LDAP_GROUP_ATTRIBUTE = "memberOf"  # filled by slapd's memberof overlay, as AD fills it
    assert sign_in(client, "carl").status_code == 302
    assert user_role(django_user_model.objects.get(username="carl")) == Role.ADMIN


def test_ldaps_verified_against_the_test_ca_signs_in(client, ldap, slapd):
    ldap.LDAP_URL, ldap.LDAP_START_TLS = slapd.ldaps_url, False
    assert sign_in(client, "ana").status_code == 302 and signed_in(client)


def test_a_group_removed_in_the_directory_removes_the_role_and_refuses_the_next_sign_in(
    client, ldap, slapd, django_user_model
):
    assert sign_in(client, "dana").status_code == 302
    client.post("/logout/")
    slapd.ldapmodify(f"dn: {OPERATORS}\nchangetype: modify\ndelete: member\nmember: uid=dana,ou=people,{SUFFIX}\n")
    try:
        response = sign_in(client, "dana")
        assert response.status_code == 200 and not signed_in(client)
        assert "none of their groups or roles is mapped" in response.content.decode()
        assert user_role(django_user_model.objects.get(username="dana")) is None
        assert AuditEvent.objects.filter(action="user.role_mapped", details__role__to=None).exists()
    finally:
        slapd.ldapmodify(f"dn: {OPERATORS}\nchangetype: modify\nadd: member\nmember: uid=dana,ou=people,{SUFFIX}\n")


def test_a_wrong_password_is_an_ordinary_failure_that_axes_counts(client, ldap, settings):
    response = sign_in(client, "ana", "not the password")
    assert response.status_code == 200 and not signed_in(client)
    assert "Please enter a correct username and password" in response.content.decode()
    assert AccessAttempt.objects.get(username="ana").failures_since_start == 1
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "ana", "not the password")
    assert sign_in(client, "ana").status_code == 429  # locked out: the right password no longer helps


def test_a_person_in_no_mapped_group_is_refused_and_gets_no_account(client, ldap, django_user_model):
    response = sign_in(client, "bob")
    assert response.status_code == 200 and not signed_in(client)
    assert "none of their groups or roles is mapped" in response.content.decode()
    assert not django_user_model.objects.filter(username="bob").exists() and not Account.objects.exists()
    refusal = AuditEvent.objects.get(action="user.sign_in_refused")
    assert refusal.details["values"] == [MARKETING]


@pytest.mark.parametrize("username", ["*)(uid=*", "an*", "*"])
def test_an_injection_in_the_username_matches_nobody(client, ldap, django_user_model, username):
    # Unescaped, "an*" would find ana alone and sign her password in under another name.
    assert sign_in(client, username).status_code == 200 and not signed_in(client)
    assert not django_user_model.objects.exclude(username="alice").exists()


def test_the_username_is_escaped_as_rfc_4515_says():
    assert user_filter("(uid=%(user)s)", "*)(uid=*") == r"(uid=\2a\29\28uid=\2a)"
    assert user_filter("(uid=%(user)s)", "a\\b\x00") == r"(uid=a\5cb\00)"


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
def test_a_certificate_not_signed_by_the_configured_ca_is_refused(client, ldap, slapd, tmp_path, ldaps, caplog):
    ldap.LDAP_CA_FILE = str(CertificateAuthority(tmp_path, "Another CA").cert_file)
    if ldaps:
        ldap.LDAP_URL, ldap.LDAP_START_TLS = slapd.ldaps_url, False
    response = sign_in(client, "ana")
    assert response.status_code == 200 and not signed_in(client)
    assert UNTRUSTED in response.content.decode()
    assert "certificate verify failed" in caplog.text.lower()
    assert not Account.objects.exists()


def test_a_server_that_refuses_start_tls_is_refused_without_falling_back_to_clear_text(client, ldap):
    with LdapServer(tls=False) as plain:
        ldap.LDAP_URL = plain.url
        response = sign_in(client, "ana")
    assert response.status_code == 200 and not signed_in(client)
    assert UNTRUSTED in response.content.decode()
    assert not Account.objects.exists()


def test_a_directory_that_is_down_is_a_clear_error_and_the_local_admin_still_signs_in(client, ldap, make_user):
    ldap.LDAP_URL = f"ldap://127.0.0.1:{free_port()}"  # nobody listens
    response = sign_in(client, "ana")
    assert response.status_code == 200 and not signed_in(client)
    assert UNREACHABLE in response.content.decode()
    make_user("root", Role.ADMIN, password="break glass password")
    assert sign_in(client, "root", "break glass password").status_code == 302 and signed_in(client)


def test_a_directory_that_does_not_answer_fails_within_the_timeout(client, ldap):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        ldap.LDAP_URL, ldap.LDAP_TIMEOUT = f"ldap://127.0.0.1:{silent.getsockname()[1]}", 1
        started = time.monotonic()
        response = sign_in(client, "ana")
        elapsed = time.monotonic() - started
    assert UNREACHABLE in response.content.decode() and not signed_in(client)
    assert elapsed < 5


def test_an_empty_password_is_never_an_unauthenticated_bind(ldap, rf):
    # The form requires a password; the backend refuses an empty one all the same (other doors may call it).
    assert LdapBackend().authenticate(rf.post("/login/"), username="ana", password="") is None
    assert find_person(LdapSettings.current(), "ana", "") is None
    assert not Account.objects.exists()


def test_the_system_check_warns_on_an_incomplete_configuration(settings):
    settings.LDAP_URL, settings.LDAP_START_TLS, settings.LDAP_USER_SEARCH_BASE = "ldap://dc1.example.org", False, ""
    settings.LDAP_BIND_DN, settings.LDAP_BIND_PASSWORD = "cn=portal,dc=example,dc=org", ""
    problems = " ".join(LdapSettings.current().problems())
    assert "LDAP_USER_SEARCH_BASE is not set" in problems
    assert "clear text" in problems and "LDAP_BIND_PASSWORD" in problems
    warnings = check_ldap_settings(None)
    assert len(warnings) == 3 and {warning.id for warning in warnings} == {"portal.W020"}
    settings.LDAP_URL = ""
    assert check_ldap_settings(None) == []  # LDAP off: nothing to say
