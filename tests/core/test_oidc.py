"""Sign-in with OpenID Connect against a real provider (django-oauth-toolkit in its own process: tests/oidc_provider):
the code flow with PKCE, roles from the admin's mappings at every sign-in, and each bad answer a clear sign-in error
with no account created."""

import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import Client

from core.choices import AccountSource, Role
from core.models import Account, AuditEvent, RoleMapping
from core.roles import user_role
from tests.oidc_provider import process
from tests.processes import free_port

User = get_user_model()

# The provider's fixtures (tests/oidc_provider/process.py), for this module.
oidc_provider = process.oidc_provider
oidc = process.oidc


@pytest.fixture
def mappings(db):
    RoleMapping.objects.create(source=AccountSource.OIDC, value="portal-admins", role=Role.ADMIN)
    RoleMapping.objects.create(source=AccountSource.OIDC, value="portal-operators", role=Role.OPERATOR)
    RoleMapping.objects.create(source=AccountSource.OIDC, value="portal-viewers", role=Role.VIEWER)
    # The same name from LDAP gives nothing here: a rule belongs to one directory.
    RoleMapping.objects.create(source=AccountSource.LDAP, value="unmapped-group", role=Role.ADMIN)


def sign_in(provider, username, client=None):
    """The whole flow: the portal's button, the provider's sign-in page, back to the portal's callback."""
    client = client or Client()
    start = client.get("/oidc/authenticate/")
    assert start.status_code == 302, start.content
    back = provider.sign_in(start["Location"], username)
    parts = urlsplit(back)
    assert parts.path == "/oidc/callback/", back
    response = client.get(f"{parts.path}?{parts.query}")
    return client, response


def error_shown(client, response) -> str:
    assert response.status_code == 302 and response["Location"] == "/login/", response
    page = client.get("/login/")
    assert page.status_code == 200
    return " ".join(str(message) for message in get_messages(page.wsgi_request)) or page.content.decode()


def refusals():
    return list(AuditEvent.objects.filter(action="user.sign_in_refused").values_list("details", flat=True))


def test_the_sign_in_page_offers_the_provider_beside_the_password_form(oidc, client):
    page = client.get("/login/").content.decode()
    assert 'id="sign-in-oidc"' in page and "Sign in with Test provider" in page
    assert 'name="password"' in page


def test_no_button_and_no_oidc_pages_when_it_is_not_configured(db, client):
    assert 'id="sign-in-oidc"' not in client.get("/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


def test_the_request_to_the_provider_carries_pkce_a_nonce_and_a_state(oidc, client):
    location = client.get("/oidc/authenticate/")["Location"]
    assert location.startswith(f"{oidc.issuer}/authorize/")
    query = parse_qs(urlsplit(location).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert query["nonce"][0] and query["state"][0] and query["client_id"] == ["defender-portal"]


def test_a_mapped_person_is_created_on_first_sign_in_with_the_mapped_role(oidc, mappings):
    client, response = sign_in(oidc, "oscar")

    assert response.status_code == 302 and response["Location"] == "/", response
    user = User.objects.get(username="oscar")
    assert user_role(user) == Role.OPERATOR and user.email == "oscar@example.test"
    assert not user.has_usable_password()
    account = Account.objects.get(user=user)
    assert account.source == AccountSource.OIDC and account.external_id.startswith(f"{oidc.issuer}#")
    assert client.get("/").status_code == 200  # signed in
    assert AuditEvent.objects.filter(action="user.directory_create", target_id=str(user.pk)).exists()


def test_the_highest_mapped_role_wins(oidc, mappings):
    oidc.set_groups("alice", "portal-viewers", "portal-admins", "staff")
    sign_in(oidc, "alice")
    assert user_role(User.objects.get(username="alice")) == Role.ADMIN


def test_the_role_follows_the_directory_at_every_sign_in(oidc, mappings):
    def role():
        return user_role(User.objects.get(username="victor"))

    oidc.set_groups("victor", "portal-viewers")
    sign_in(oidc, "victor")
    assert role() == Role.VIEWER

    oidc.set_groups("victor", "portal-operators")
    sign_in(oidc, "victor")
    assert role() == Role.OPERATOR
    assert User.objects.filter(username="victor").count() == 1  # the same person, updated

    oidc.set_groups("victor", "someone-elses-group")
    client, response = sign_in(oidc, "victor")
    assert "none of their groups or roles is mapped" in error_shown(client, response)
    assert role() is None  # removed in the directory: removed here, at once
    assert client.get("/").status_code == 302  # not signed in


def test_someone_with_no_mapped_role_is_refused_and_gets_no_account(oidc, mappings):
    client, response = sign_in(oidc, "nobody")

    assert "none of their groups or roles is mapped" in error_shown(client, response)
    assert not User.objects.filter(username="nobody").exists()
    assert [details["username"] for details in refusals()] == ["nobody"]


def test_a_local_account_of_the_same_name_is_not_taken_over(oidc, mappings, make_user):
    local = make_user("oscar", Role.VIEWER)
    client, response = sign_in(oidc, "oscar")
    assert "already exists in the portal" in error_shown(client, response)
    assert user_role(local) == Role.VIEWER and not Account.objects.filter(source=AccountSource.OIDC).exists()


BAD_TOKENS = {
    "bad_signature": "signature is not Test provider",
    "wrong_audience": "issued for another application",
    "wrong_nonce": "does not belong to this sign-in",
    "expired": "has expired",
}


@pytest.mark.parametrize("mode", BAD_TOKENS)
def test_a_bad_id_token_is_refused_with_a_clear_error_and_no_account(oidc, mappings, mode):
    oidc.set_mode(mode)
    client, response = sign_in(oidc, "oscar")

    assert BAD_TOKENS[mode] in error_shown(client, response)
    assert not User.objects.filter(username="oscar").exists()
    assert not Account.objects.exists()
    [details] = refusals()
    assert BAD_TOKENS[mode] in details["reason"] and details["source"] == AccountSource.OIDC
    assert client.get("/").status_code == 302


def test_a_provider_that_is_down_is_a_sign_in_error_within_seconds(oidc, settings, client):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}/o"  # nothing listens there
    started = time.monotonic()
    response = client.get("/oidc/authenticate/")
    assert time.monotonic() - started < 5
    message = error_shown(client, response)
    assert "Test provider did not answer as it should (it could not be reached)" in message
    assert len(refusals()) == 1


def test_a_token_endpoint_that_is_down_is_a_sign_in_error(oidc, mappings, settings):
    # The provider's sign-in page works, its token endpoint does not answer: the callback, not a 500.
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{oidc.issuer}/authorize/"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"http://127.0.0.1:{free_port()}/o/token/"
    settings.OIDC_OP_USER_ENDPOINT = f"{oidc.issuer}/userinfo/"
    settings.OIDC_OP_JWKS_ENDPOINT = f"{oidc.issuer}/.well-known/jwks.json"
    client, response = sign_in(oidc, "oscar")
    assert "did not answer as it should" in error_shown(client, response)
    assert not User.objects.filter(username="oscar").exists()


def test_the_provider_is_reached_only_where_the_outbound_policy_allows(oidc, settings, client):
    settings.OUTBOUND_ALLOWED_NETWORKS = []  # loopback no longer allowed
    message = error_shown(client, client.get("/oidc/authenticate/"))
    assert "outbound policy" in message


def test_a_callback_this_browser_did_not_start_is_refused(oidc, mappings):
    victim = Client()
    back = urlsplit(oidc.sign_in(victim.get("/oidc/authenticate/")["Location"], "oscar"))
    stranger = Client()
    stranger.get("/oidc/authenticate/")  # a sign-in of its own under way: another state
    response = stranger.get(f"{back.path}?{back.query}")
    assert "was not started in this browser" in error_shown(stranger, response)
    assert not User.objects.filter(username="oscar").exists()


def test_the_provider_refusing_is_a_clear_error(oidc, client):
    client.get("/oidc/authenticate/")
    response = client.get("/oidc/callback/?error=access_denied&state=whatever")
    assert "Test provider did not sign you in (access_denied)" in error_shown(client, response)


def test_a_local_admin_signs_in_with_a_password_whatever_the_provider(oidc, settings, admin):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}/o"  # the provider is down
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": "correct horse battery"})
    assert response.status_code == 302 and response["Location"] == "/"


def test_a_directory_person_cannot_use_the_password_form(oidc, mappings):
    sign_in(oidc, "oscar")
    response = Client().post("/login/", {"username": "oscar", "password": "provider password"})
    assert response.status_code == 200  # the form again, with its error
