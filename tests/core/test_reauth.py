"""Issue 14, item 7: power over accounts and tokens does not outlive what granted it. Users, roles and tokens change
only with a password given in the last REAUTH_MINUTES (a sign-in or /reauthenticate/) or with an admin-scope token
granted separately; deactivating a user ends their sessions and revokes their tokens for good."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from core import services
from core.choices import Role, TokenScope
from core.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
NEW_ADMIN = {"username": "mallory", "role": "admin", "password": "a-long-enough-passphrase"}


def signed_in(username) -> Client:
    """A browser that signed in through the form, as a person does."""
    client = Client()
    response = client.post("/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def age_password(client, minutes):
    """The password was last given ``minutes`` ago: a session left open, or a cookie someone copied."""
    session = client.session
    session[services.REAUTHENTICATED_AT] = time.time() - minutes * 60
    session.save()


def bearer(raw):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_a_read_write_admin_token_cannot_create_an_admin_account(client, admin):
    _, raw = services.create_api_token(admin, "ansible", TokenScope.WRITE)
    response = client.post("/api/v1/users/", NEW_ADMIN, content_type="application/json", **bearer(raw))
    assert response.status_code == 403
    assert response.json()["detail"] == (
        "To create users with an API token, the token needs the read-write and user admin scope; this one is read-write."
    )
    assert not get_user_model().objects.filter(username="mallory").exists()
    assert not AuditEvent.objects.filter(action="user.create").exists()
    # Nor change one: promote itself, or switch off the admin who could revoke it.
    other = get_user_model().objects.create_user("bob", password=PASSWORD)
    response = client.patch(
        f"/api/v1/users/{other.pk}/", {"role": "admin"}, content_type="application/json", **bearer(raw)
    )
    assert response.status_code == 403


def test_an_admin_grants_an_admin_scope_token_from_a_fresh_session_and_it_manages_users(client, admin, operator):
    browser = signed_in("alice")
    created = browser.post("/api/v1/tokens/", {"name": "idm", "scope": "admin"}, content_type="application/json")
    assert created.status_code == 201, created.content
    raw = created.json()["token"]
    response = client.post("/api/v1/users/", NEW_ADMIN, content_type="application/json", **bearer(raw))
    assert response.status_code == 201
    assert AuditEvent.objects.get(action="token.create").details["scope"] == "admin"

    # An operator cannot hold one; and no token mints a token, whatever its scope.
    refused = signed_in("oscar").post(
        "/api/v1/tokens/", {"name": "x", "scope": "admin"}, content_type="application/json"
    )
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"scope": ["Only admins can create tokens with the admin scope."]}
    minted = client.post("/api/v1/tokens/", {"name": "child"}, content_type="application/json", **bearer(raw))
    assert minted.status_code == 403
    assert ApiToken.objects.count() == 1


def test_a_session_whose_password_is_not_recent_must_confirm_it_before_changing_users_or_tokens(admin, settings):
    browser = signed_in("alice")
    age_password(browser, settings.REAUTH_MINUTES + 1)

    for url, body in [("/api/v1/users/", NEW_ADMIN), ("/api/v1/tokens/", {"name": "ci", "scope": "write"})]:
        response = browser.post(url, body, content_type="application/json")
        assert response.status_code == 403, url
        assert response.json()["detail"].startswith("Confirm your password to ")
    assert ApiToken.objects.count() == 0 and get_user_model().objects.count() == 1

    # The UI sends the person to the confirmation page and back to where they were.
    ui = browser.post("/users/", {**NEW_ADMIN, "email": ""}, HTTP_REFERER="http://testserver/users/")
    assert ui.status_code == 302 and ui["Location"] == "/reauthenticate/?next=%2Fusers%2F"
    wrong = browser.post("/reauthenticate/", {"password": "not it", "next": "/users/"})
    assert wrong.status_code == 400 and "That is not your password." in wrong.content.decode()
    right = browser.post("/reauthenticate/", {"password": PASSWORD, "next": "/users/"})
    assert right.status_code == 302 and right["Location"] == "/users/"
    assert AuditEvent.objects.filter(action="user.reauthenticate", actor=admin).count() == 1

    assert browser.post("/api/v1/users/", NEW_ADMIN, content_type="application/json").status_code == 201
    assert browser.post("/tokens/", {"name": "ci", "scope": "write"}).status_code == 200
    assert ApiToken.objects.filter(name="ci", user=admin).exists()


def test_the_confirmation_page_never_sends_anyone_off_the_portal(admin):
    browser = signed_in("alice")
    response = browser.post("/reauthenticate/", {"password": PASSWORD, "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_deactivating_a_user_ends_their_sessions_and_revokes_their_tokens_for_good(admin, make_user):
    make_user("bob", Role.ADMIN)
    bob_browser = signed_in("bob")
    _, bob_token = services.create_api_token(get_user_model().objects.get(username="bob"), "bob's script", "write")
    assert bob_browser.get("/api/v1/me/").json()["username"] == "bob"

    alice = signed_in("alice")
    bob = get_user_model().objects.get(username="bob")
    off = alice.patch(f"/api/v1/users/{bob.pk}/", {"is_active": False}, content_type="application/json")
    assert off.status_code == 200
    on = alice.patch(f"/api/v1/users/{bob.pk}/", {"is_active": True}, content_type="application/json")
    assert on.status_code == 200 and on.json()["is_active"] is True

    # Back on, bob's old session and token stay dead: he signs in anew and makes new tokens.
    assert bob_browser.get("/api/v1/me/").status_code == 401
    revoked = Client().get("/api/v1/me/", **bearer(bob_token))
    assert revoked.status_code == 401 and revoked.json()["detail"] == "This API token has been revoked."
    assert signed_in("bob").get("/api/v1/me/").json()["username"] == "bob"
    change = AuditEvent.objects.filter(action="user.update", target_id=str(bob.pk)).order_by("id").first()
    assert change.details == {
        "is_active": {"from": True, "to": False},
        "tokens_revoked": 1,
        "sessions_ended": 1,
    }


def test_an_account_from_openid_connect_confirms_by_signing_in_again_at_its_provider(client, settings, make_user):
    """It has no portal password to give: the page sends it to its provider, whose sign-in opens the window again."""
    from core.choices import AccountSource
    from core.models import Account

    settings.OIDC_RP_CLIENT_ID, settings.OIDC_ISSUER = "portal", "https://idp.example.org"
    settings.OIDC_PROVIDER_NAME = "Entra ID"
    user = make_user("sso-admin", Role.ADMIN)
    Account.objects.create(user=user, source=AccountSource.OIDC, external_id="https://idp.example.org#1")
    client.force_login(user)
    page = client.get("/reauthenticate/?next=/users/").content.decode()
    assert "Sign in again with Entra ID" in page and "/oidc/authenticate/?next=/users/" in page
    assert 'name="password"' not in page
