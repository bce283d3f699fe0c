"""Two-factor authentication (issue 16): TOTP set-up and sign-in with real codes computed from the secret (pyotp),
clock skew and replay, recovery codes, the lock-out, the roles that must use it, an admin's reset."""

import time

import pyotp
import pytest
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from core import mfa
from core.choices import AccountSource, Role
from core.models import Account, ApiToken, AuditEvent, SecurityPolicy

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"


def steady():
    """Wait, if need be, until at least 4 s remain in the current 30 s step: a code computed now is still of
    this step when the portal checks it."""
    left = 30 - time.time() % 30
    if left < 4:
        time.sleep(left + 0.1)


def secret_of(key_hex: str) -> str:
    return mfa.base32_secret(key_hex).replace(" ", "")


@pytest.fixture
def with_mfa():
    """with_mfa(user): an authenticator set up for ``user`` as the set-up page leaves it; returns (pyotp TOTP,
    recovery codes)."""

    def make(user):
        device = TOTPDevice.objects.create(user=user, name=mfa.DEVICE_NAME, confirmed=True)
        codes = mfa._new_recovery_codes(user)
        return pyotp.TOTP(secret_of(device.key)), codes

    return make


def sign_in(client, user, next_url=None):
    data = {"username": user.username, "password": PASSWORD}
    if next_url:
        data["next"] = next_url
    return client.post("/login/", data)


def signed_in(client):
    return "_auth_user_id" in client.session


# --- Set-up ------------------------------------------------------------------------------------------------------


def test_the_setup_page_shows_a_qr_code_and_the_secret_and_turns_on_only_with_a_right_code(client, viewer):
    client.force_login(viewer)
    page = client.get("/account/mfa/setup/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'src="data:image/svg+xml;base64,' in html
    key = client.session[mfa.SETUP_KEY]
    assert mfa.base32_secret(key) in html
    assert not TOTPDevice.objects.filter(user=viewer).exists()  # nothing stored before the first code

    steady()
    wrong = client.post(
        "/account/mfa/setup/", {"code": "000000" if pyotp.TOTP(secret_of(key)).now() != "000000" else "111111"}
    )
    assert wrong.status_code == 400
    assert "That code is not right" in wrong.content.decode()
    assert not TOTPDevice.objects.filter(user=viewer).exists() and not StaticDevice.objects.filter(user=viewer).exists()

    done = client.post("/account/mfa/setup/", {"code": pyotp.TOTP(secret_of(key)).now()})
    assert done.status_code == 200
    device = TOTPDevice.objects.get(user=viewer)
    assert device.confirmed and device.key == key
    codes = list(StaticToken.objects.filter(device__user=viewer).values_list("token", flat=True))
    assert len(codes) == 10
    assert all(code in done.content.decode() for code in codes)  # shown once, here
    assert AuditEvent.objects.filter(action="mfa.enable", target_id=str(viewer.pk)).exists()
    assert mfa.SETUP_KEY not in client.session
    # Shown only once: the settings page counts them and never lists them.
    settings_page = client.get("/account/mfa/").content.decode()
    assert codes[0] not in settings_page and 'id="codes-left">10<' in settings_page


def test_an_abandoned_setup_leaves_nothing_that_a_sign_in_would_ask_for(client, viewer):
    client.force_login(viewer)
    client.get("/account/mfa/setup/")
    client.post("/logout/")
    response = sign_in(client, viewer)
    assert response.status_code == 302 and response["Location"] == "/"
    assert signed_in(client)


def test_the_code_that_confirmed_the_setup_cannot_sign_in_again(client, viewer):
    client.force_login(viewer)
    client.get("/account/mfa/setup/")
    steady()
    code = pyotp.TOTP(secret_of(client.session[mfa.SETUP_KEY])).now()
    assert client.post("/account/mfa/setup/", {"code": code}).status_code == 200
    client.post("/logout/")
    sign_in(client, viewer)
    response = client.post("/login/code/", {"code": code})
    assert response.status_code == 400 and not signed_in(client)


# --- The code step --------------------------------------------------------------------------------------------------


def test_the_password_alone_signs_nothing_in_until_the_code_is_given(client, viewer, with_mfa):
    totp, _codes = with_mfa(viewer)
    response = sign_in(client, viewer, next_url="/audit/")
    assert response.status_code == 302 and response["Location"] == "/login/code/"
    assert not signed_in(client)
    # Between the two steps, every page and the API treat the person as signed out.
    assert client.get("/").status_code == 302 and client.get("/").url.startswith("/login/")
    assert client.get("/api/v1/me/").status_code in (401, 403)
    page = client.get("/login/code/")
    assert page.status_code == 200 and "victor" in page.content.decode()

    steady()
    response = client.post("/login/code/", {"code": totp.now()})
    assert response.status_code == 302 and response["Location"] == "/audit/"  # the next= of the password step
    assert signed_in(client)
    assert client.get("/audit/").status_code == 200


@pytest.mark.parametrize("offset", [-30, 30])
def test_a_code_one_step_off_is_accepted(client, viewer, with_mfa, offset):
    totp, _codes = with_mfa(viewer)
    sign_in(client, viewer)
    steady()
    response = client.post("/login/code/", {"code": totp.at(time.time() + offset)})
    assert response.status_code == 302 and signed_in(client)


@pytest.mark.parametrize("offset", [-90, 90])
def test_a_code_three_steps_off_is_refused(client, viewer, with_mfa, offset):
    totp, _codes = with_mfa(viewer)
    sign_in(client, viewer)
    steady()
    response = client.post("/login/code/", {"code": totp.at(time.time() + offset)})
    assert response.status_code == 400
    assert "That code is not right" in response.content.decode()
    assert not signed_in(client)
    assert AuditEvent.objects.filter(action="mfa.failure", target_id=str(viewer.pk)).count() == 1


def test_a_code_already_used_is_refused(client, viewer, with_mfa):
    totp, _codes = with_mfa(viewer)
    steady()
    code = totp.now()
    sign_in(client, viewer)
    assert client.post("/login/code/", {"code": code}).status_code == 302
    client.post("/logout/")

    sign_in(client, viewer)
    replay = client.post("/login/code/", {"code": code})
    assert replay.status_code == 400 and not signed_in(client)
    assert TOTPDevice.objects.get(user=viewer).last_t >= int(time.time() // 30)


def test_a_recovery_code_signs_in_once(client, viewer, with_mfa):
    _totp, codes = with_mfa(viewer)
    sign_in(client, viewer)
    response = client.post("/login/code/", {"code": codes[0].upper()}, follow=True)
    assert signed_in(client)
    assert "9 are left" in response.content.decode()
    assert StaticToken.objects.filter(device__user=viewer).count() == 9
    client.post("/logout/")

    sign_in(client, viewer)
    assert client.post("/login/code/", {"code": codes[0]}).status_code == 400
    assert not signed_in(client)


def test_repeated_wrong_codes_lock_the_sign_in_out_even_with_the_right_password_and_code(
    client, viewer, with_mfa, settings
):
    totp, _codes = with_mfa(viewer)
    sign_in(client, viewer)
    statuses = [client.post("/login/code/", {"code": "000001"}).status_code for _ in range(settings.AXES_FAILURE_LIMIT)]
    assert statuses[:-1] == [400] * (settings.AXES_FAILURE_LIMIT - 1)
    assert statuses[-1] == 429  # django-axes' lock-out page
    assert not signed_in(client)
    # The code step is over, and the password step is locked for this username and address.
    locked = sign_in(client, viewer)
    assert locked.status_code == 429
    assert client.post("/login/code/", {"code": totp.now()}).status_code == 302  # nothing waits: back to sign-in
    assert not signed_in(client)
    failures = AuditEvent.objects.filter(action="mfa.failure", target_id=str(viewer.pk))
    assert failures.count() == settings.AXES_FAILURE_LIMIT
    assert failures.order_by("-created").first().details["locked_out"] is True


def test_the_code_step_expires(client, viewer, with_mfa):
    totp, _codes = with_mfa(viewer)
    sign_in(client, viewer)
    session = client.session
    session[mfa.PENDING]["at"] -= mfa.PENDING_SECONDS + 1
    session.save()
    response = client.post("/login/code/", {"code": totp.now()})
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert not signed_in(client)


def test_a_session_signed_in_some_other_way_is_sent_to_the_code_step(client, viewer, with_mfa):
    totp, _codes = with_mfa(viewer)
    client.force_login(viewer)  # as a path that skips SignInView would
    response = client.get("/audit/")
    assert response.status_code == 302 and response["Location"] == "/login/code/?next=%2Faudit%2F"
    assert client.get("/api/v1/me/").status_code == 403
    steady()
    done = client.post("/login/code/?next=/audit/", {"code": totp.now(), "next": "/audit/"})
    assert done.status_code == 302 and done["Location"] == "/audit/"
    assert client.get("/audit/").status_code == 200


# --- Roles that must use it -----------------------------------------------------------------------------------------


def test_a_role_that_must_use_it_sets_it_up_right_after_the_password_and_reaches_nothing_else(client, admin, api):
    SecurityPolicy.objects.create(pk=1, mfa_required_roles=[Role.ADMIN])
    token, raw = ApiToken(user=admin, name="ci", scope="read"), ApiToken.generate()
    token.set_key(raw)
    token.save()

    response = sign_in(client, admin)
    assert response.status_code == 302 and signed_in(client)
    for path in ("/", "/users/", "/audit/", "/account/mfa/"):
        blocked = client.get(path)
        assert blocked.status_code == 302 and blocked["Location"].startswith("/account/mfa/setup/"), path
    assert client.post("/users/security/", {"mfa_required_roles": []}).status_code == 302
    assert SecurityPolicy.current().mfa_required_roles == [Role.ADMIN]  # the admin cannot lift it for themselves
    refused = client.get("/api/v1/me/")
    assert refused.status_code == 403 and "two-factor" in refused.json()["detail"]
    # An API token is a separate credential: not asked for a code.
    assert api.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200

    page = client.get("/account/mfa/setup/")
    assert page.status_code == 200 and "Your role must use two-factor authentication" in page.content.decode()
    steady()
    code = pyotp.TOTP(secret_of(client.session[mfa.SETUP_KEY])).now()
    assert client.post("/account/mfa/setup/", {"code": code}).status_code == 200
    assert client.get("/users/").status_code == 200


def test_roles_not_listed_are_not_asked(client, viewer):
    SecurityPolicy.objects.create(pk=1, mfa_required_roles=[Role.ADMIN])
    sign_in(client, viewer)
    assert client.get("/").status_code == 200


def test_openid_connect_accounts_are_left_to_their_identity_provider(client, admin):
    SecurityPolicy.objects.create(pk=1, mfa_required_roles=[Role.ADMIN])
    Account.objects.create(user=admin, source=AccountSource.OIDC, external_id="https://idp.example|alice")
    client.force_login(admin)
    assert client.get("/").status_code == 200
    assert "identity provider" in client.get("/account/mfa/").content.decode()


def test_an_admin_sets_the_roles_on_the_security_policy_page(client, admin, viewer):
    client.force_login(admin)
    page = client.get("/users/security/").content.decode()
    assert "OpenID Connect" in page and "LDAP" in page
    response = client.post("/users/security/", {"mfa_required_roles": [Role.OPERATOR, Role.ADMIN]})
    assert response.status_code == 302
    assert SecurityPolicy.current().mfa_required_roles == [Role.OPERATOR, Role.ADMIN]
    event = AuditEvent.objects.get(action="security_policy.update")
    assert event.details["mfa_required_roles"] == {"from": [], "to": ["operator", "admin"]}
    bad = client.post("/users/security/", {"mfa_required_roles": ["root"]})
    assert bad.status_code == 400 and SecurityPolicy.current().mfa_required_roles == [Role.OPERATOR, Role.ADMIN]

    client.force_login(viewer)
    assert client.get("/users/security/").status_code == 403
    assert client.post("/users/security/", {"mfa_required_roles": []}).status_code == 403


# --- Changing it, and an admin's reset ------------------------------------------------------------------------------


def test_new_recovery_codes_and_removal_need_a_current_code(client, viewer, with_mfa):
    totp, codes = with_mfa(viewer)
    sign_in(client, viewer)
    steady()
    client.post("/login/code/", {"code": totp.now()})

    refused = client.post("/account/mfa/recovery-codes/", {"code": "123456"}, follow=True)
    assert "That code is not right" in refused.content.decode()
    assert set(StaticToken.objects.filter(device__user=viewer).values_list("token", flat=True)) == set(codes)

    fresh = client.post("/account/mfa/recovery-codes/", {"code": codes[1]})
    assert fresh.status_code == 200
    new = set(StaticToken.objects.filter(device__user=viewer).values_list("token", flat=True))
    assert len(new) == 10 and not new & set(codes)
    assert AuditEvent.objects.filter(action="mfa.recovery_regenerate").exists()

    client.post("/account/mfa/remove/", {"code": "nope"})
    assert TOTPDevice.objects.filter(user=viewer).exists()
    client.post("/account/mfa/remove/", {"code": sorted(new)[0]})
    assert not TOTPDevice.objects.filter(user=viewer).exists() and not StaticDevice.objects.filter(user=viewer).exists()
    assert AuditEvent.objects.filter(action="mfa.disable", target_id=str(viewer.pk)).exists()


def test_removal_needs_a_recent_password(client, viewer, with_mfa, settings):
    _totp, codes = with_mfa(viewer)
    sign_in(client, viewer)
    client.post("/login/code/", {"code": codes[1]})
    session = client.session
    session["core.reauthenticated_at"] = time.time() - settings.REAUTH_MINUTES * 60 - 1
    session.save()
    response = client.post("/account/mfa/remove/", {"code": codes[0]}, HTTP_REFERER="http://testserver/account/mfa/")
    assert response.status_code == 302 and response["Location"].startswith("/reauthenticate/")
    assert TOTPDevice.objects.filter(user=viewer).exists()


def test_an_admin_resets_a_users_second_factor_and_ends_their_sessions(client, admin, viewer, with_mfa):
    from django.test import Client

    totp, _codes = with_mfa(viewer)
    theirs = Client()
    sign_in(theirs, viewer)
    steady()
    theirs.post("/login/code/", {"code": totp.now()})
    assert theirs.get("/").status_code == 200

    client.force_login(admin)
    users = client.get("/users/").content.decode()
    assert f'action="/users/{viewer.pk}/mfa-reset/"' in users and f'action="/users/{admin.pk}/mfa-reset/"' not in users
    response = client.post(f"/users/{viewer.pk}/mfa-reset/")
    assert response.status_code == 302 and response["Location"] == "/users/"
    assert not TOTPDevice.objects.filter(user=viewer).exists() and not StaticDevice.objects.filter(user=viewer).exists()
    event = AuditEvent.objects.get(action="mfa.reset")
    assert event.actor == admin and event.target_id == str(viewer.pk) and event.details["sessions_ended"] == 1
    assert theirs.get("/").status_code == 302  # signed out
    # Signing in again needs only the password (their role is not required to use a second factor).
    assert sign_in(theirs, viewer)["Location"] == "/"


def test_only_admins_reset_a_second_factor(client, operator, viewer, with_mfa):
    with_mfa(viewer)
    client.force_login(operator)
    assert client.post(f"/users/{viewer.pk}/mfa-reset/").status_code == 403
    assert TOTPDevice.objects.filter(user=viewer).exists()
