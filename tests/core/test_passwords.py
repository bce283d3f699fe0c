"""Issue 16, local accounts: change one's own password, an admin sets or resets another's (and may force a change at
the next sign-in), nothing else opens until a forced change is done, reset by e-mail where mail is configured, and
the first-run admin's generated password must be changed. Every password given passes the validators."""

import re
import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from core import services
from core.choices import AccountSource, Role
from core.management.commands.ensure_admin import create_first_admin
from core.models import Account, AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
NEW = "a-brand-new-passphrase"
User = get_user_model()


def signed_in(username, password=PASSWORD) -> Client:
    """A browser that signed in through the form, as a person does."""
    client = Client()
    response = client.post("/login/", {"username": username, "password": password})
    assert response.status_code == 302, response.content
    return client


def change(client, old, new1, new2=None, **extra):
    return client.post(
        "/account/password/",
        {"old_password": old, "new_password1": new1, "new_password2": new1 if new2 is None else new2, **extra},
    )


def errors(response) -> str:
    return " ".join(re.findall(r'class="(?:field-error|form-error)"[^>]*>([^<]*)<', response.content.decode()))


def directory_user(username="dora", source=AccountSource.LDAP):
    user = User(username=username)
    user.set_unusable_password()
    user.save()
    Account.objects.create(user=user, source=source, external_id=f"uid={username},dc=example,dc=org")
    return user


# --- One's own password ------------------------------------------------------------------------------------------


def test_a_user_changes_their_password_and_stays_signed_in(viewer):
    browser = signed_in("victor")
    other = signed_in("victor")
    response = change(browser, PASSWORD, NEW)
    assert response.status_code == 302 and response["Location"] == "/account/password/done/"
    assert browser.get("/").status_code == 200, "the session that changed it stays signed in"
    assert other.get("/").status_code == 302, "another session that knew the old password is signed out"
    viewer.refresh_from_db()
    assert viewer.check_password(NEW)
    assert viewer.account.password_changed_at is not None and not viewer.account.must_change_password
    event = AuditEvent.objects.get(action="user.password_change")
    assert (event.actor, event.target_label, event.details) == (viewer, "victor", {})
    # The change is a password just given: users and tokens can be changed right away.
    assert time.time() - browser.session[services.REAUTHENTICATED_AT] < 5
    assert Client().post("/login/", {"username": "victor", "password": NEW}).status_code == 302


def test_a_wrong_current_password_changes_nothing(viewer):
    browser = signed_in("victor")
    response = change(browser, "not my password", NEW)
    assert response.status_code == 400
    assert "That is not your current password." in errors(response)
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="user.password_change").exists()


@pytest.mark.parametrize(
    "new, new2, message",
    [
        ("short1", None, "This password is too short. It must contain at least 10 characters."),
        ("password123", None, "This password is too common."),
        ("8491027365018", None, "This password is entirely numeric."),
        ("victor1234", None, "The password is too similar to the username."),
        (NEW, "something-else-entirely", "The two passwords differ."),
        (PASSWORD, None, "The new password must differ from the current one."),
    ],
)
def test_the_validators_refuse_a_weak_new_password_with_their_words(viewer, new, new2, message):
    browser = signed_in("victor")
    response = change(browser, PASSWORD, new, new2)
    assert response.status_code == 400
    assert message in errors(response)
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="user.password_change").exists()


def test_a_directory_account_is_told_its_password_is_the_directorys(client):
    dora = directory_user()
    client.force_login(dora)
    page = client.get("/account/password/").content.decode()
    assert 'id="directory-account"' in page and "LDAP / Active Directory" in page
    assert 'name="old_password"' not in page
    assert change(client, "anything", NEW).status_code == 400
    dora.refresh_from_db()
    assert not dora.has_usable_password()


def test_my_account_shows_who_one_is_and_links_only_to_pages_that_exist(client, operator):
    client.force_login(operator)
    page = client.get("/account/").content.decode()
    assert 'id="account-username">oscar<' in page
    assert 'id="account-role">Operator<' in page
    assert 'id="account-source">Local password<' in page
    assert 'href="/account/password/"' in page
    assert 'href="/account/"' in client.get("/").content.decode(), "the user menu links to it"
    from django.urls import NoReverseMatch, reverse

    for name, words in (("mfa_settings", "Two-factor authentication"), ("session_list", "Your sessions")):
        try:
            url = reverse(name)
        except NoReverseMatch:
            assert words not in page
        else:
            assert f'href="{url}"' in page


# --- An admin sets another user's password ---------------------------------------------------------------------


def test_an_admin_resets_a_password_with_a_forced_change_and_only_the_change_breaks_the_loop(admin, viewer):
    victor = signed_in("victor")
    response = signed_in("alice").post(
        f"/users/{viewer.pk}/password/",
        {
            "new_password1": "given-by-the-helpdesk",
            "new_password2": "given-by-the-helpdesk",
            "must_change_password": "on",
        },
    )
    assert response.status_code == 302 and response["Location"] == "/users/"
    assert victor.get("/").status_code == 302 and "/login/" in victor.get("/")["Location"], "old sessions end"
    event = AuditEvent.objects.get(action="user.password_set")
    assert (event.actor, event.target_label) == (admin, "victor")
    assert event.details == {"must_change_password": True, "generated": False}

    victor = signed_in("victor", "given-by-the-helpdesk")
    for page in ("/", "/audit/", "/tokens/", "/account/", "/mirror/"):
        response = victor.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith("/account/password/?next="), page
    form = victor.get("/account/password/?next=/audit/")
    assert form.status_code == 200 and 'id="must-change"' in form.content.decode()
    api = victor.get("/api/v1/me/")
    assert api.status_code == 403
    assert api.json()["code"] == "password_change_required"
    assert "change it at /account/password/" in api.json()["detail"]
    # A failed change does not open the rest.
    assert change(victor, "given-by-the-helpdesk", "short").status_code == 400
    assert victor.get("/").status_code == 302
    # The change itself does.
    response = change(victor, "given-by-the-helpdesk", NEW, next="/audit/")
    assert response.status_code == 302 and response["Location"] == "/audit/"
    assert victor.get("/audit/").status_code == 200
    assert victor.get("/api/v1/me/").status_code == 200
    viewer.refresh_from_db()
    assert not viewer.account.must_change_password


def test_a_user_who_must_change_can_still_sign_out(make_user):
    user = make_user("una")
    Account.objects.create(user=user, must_change_password=True)
    browser = signed_in("una")
    assert browser.post("/logout/").status_code == 302
    assert "_auth_user_id" not in browser.session


def test_an_admin_resets_a_password_to_a_generated_one_shown_once(admin, viewer):
    response = signed_in("alice").post(f"/users/{viewer.pk}/password/", {})
    assert response.status_code == 200
    generated = re.search(r'<pre class="secret" id="new-password">([^<]+)</pre>', response.content.decode()).group(1)
    viewer.refresh_from_db()
    assert viewer.check_password(generated) and viewer.account.must_change_password
    assert generated not in str(AuditEvent.objects.get(action="user.password_set").details)
    victor = signed_in("victor", generated)
    assert victor.get("/")["Location"] == "/account/password/?next=%2F"


def test_an_admin_reset_follows_the_validators_and_needs_a_recent_password(admin, viewer, settings):
    alice = signed_in("alice")
    response = alice.post(f"/users/{viewer.pk}/password/", {"new_password1": "victor123", "new_password2": "victor123"})
    assert response.status_code == 400
    assert "This password is too short." in errors(response)
    session = alice.session
    session[services.REAUTHENTICATED_AT] = time.time() - (settings.REAUTH_MINUTES + 1) * 60
    session.save()
    response = alice.post(
        f"/users/{viewer.pk}/password/",
        {"new_password1": "given-by-the-helpdesk", "new_password2": "given-by-the-helpdesk"},
        HTTP_REFERER=f"http://testserver/users/{viewer.pk}/password/",
    )
    assert response.status_code == 302 and response["Location"].startswith("/reauthenticate/")
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="user.password_set").exists()


def test_an_admin_cannot_set_a_directory_accounts_password_nor_their_own_here(admin):
    dora = directory_user()
    alice = signed_in("alice")
    page = alice.get(f"/users/{dora.pk}/password/").content.decode()
    assert 'id="directory-account"' in page
    response = alice.post(f"/users/{dora.pk}/password/", {})
    assert response.status_code == 400
    assert "dora signs in through LDAP / Active Directory" in errors(response)
    response = alice.post(f"/users/{admin.pk}/password/", {})
    assert response.status_code == 400
    assert "Change your own password on the My account page" in errors(response)
    dora.refresh_from_db()
    admin.refresh_from_db()
    assert not dora.has_usable_password() and admin.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="user.password_set").exists()


def test_a_user_created_without_a_password_gets_a_generated_one_and_must_change_it(admin):
    response = signed_in("alice").post("/users/", {"username": "nina", "role": "viewer"})
    assert response.status_code == 200
    page = response.content.decode()
    assert "User nina created as Viewer." in page
    generated = re.search(r'id="new-password">([^<]+)<', page).group(1)
    nina = User.objects.get(username="nina")
    assert nina.check_password(generated) and nina.account.must_change_password
    assert signed_in("nina", generated).get("/")["Location"] == "/account/password/?next=%2F"


def test_a_user_created_with_a_weak_password_is_not_created(admin):
    response = signed_in("alice").post("/users/", {"username": "nina", "role": "viewer", "password": "nina"})
    assert response.status_code == 400
    assert "This password is too short." in errors(response)
    assert not User.objects.filter(username="nina").exists()


# --- The API ---------------------------------------------------------------------------------------------------


def test_the_api_sets_a_password_with_a_forced_change(admin, viewer):
    alice = signed_in("alice")
    url = f"/api/v1/users/{viewer.pk}/set-password/"
    response = alice.post(
        url, {"password": "given-by-the-helpdesk", "must_change_password": True}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["password"] is None and body["must_change_password"] is True and body["source"] == "local"
    assert "pbkdf2" not in response.content.decode() and "md5" not in response.content.decode()
    assert signed_in("victor", "given-by-the-helpdesk").get("/api/v1/me/").status_code == 403

    # Without a password: a generated one, returned once.
    response = alice.post(url, {}, content_type="application/json")
    generated = response.json()["password"]
    viewer.refresh_from_db()
    assert viewer.check_password(generated) and viewer.account.must_change_password
    assert alice.get(f"/api/v1/users/{viewer.pk}/").json().get("password") is None
    assert AuditEvent.objects.filter(action="user.password_set").count() == 2


@pytest.mark.parametrize(
    "body, errors_",
    [
        ({"password": "short"}, {"password": ["This password is too short. It must contain at least 10 characters."]}),
        ({"password": "password123"}, {"password": ["This password is too common."]}),
        ({"password": ""}, {"password": ["This field may not be blank."]}),
        ({"must_change_password": "perhaps"}, {"must_change_password": ["Must be a valid boolean."]}),
    ],
)
def test_the_api_refuses_bad_passwords_with_a_clear_400(admin, viewer, body, errors_):
    response = signed_in("alice").post(
        f"/api/v1/users/{viewer.pk}/set-password/", body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["errors"] == errors_
    viewer.refresh_from_db()
    assert viewer.check_password(PASSWORD)
    assert not AuditEvent.objects.filter(action="user.password_set").exists()


def test_the_api_refuses_a_directory_account_and_a_read_write_token(admin, client):
    dora = directory_user()
    response = signed_in("alice").post(f"/api/v1/users/{dora.pk}/set-password/", {}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"] == {
        "password": ["dora signs in through LDAP / Active Directory: the portal keeps no password for this account."]
    }
    _, raw = services.create_api_token(admin, "ansible", "write")
    response = client.post(
        f"/api/v1/users/{dora.pk}/set-password/",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="user.password_set").exists()


def test_the_api_creates_a_user_without_a_password_with_a_generated_one(admin):
    alice = signed_in("alice")
    response = alice.post("/api/v1/users/", {"username": "nina", "role": "viewer"}, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["must_change_password"] is True and len(body["password"]) >= 20
    assert User.objects.get(username="nina").check_password(body["password"])
    response = alice.post(
        "/api/v1/users/",
        {"username": "nora", "role": "viewer", "password": "chosen-by-the-admin"},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.json()["password"] is None and response.json()["must_change_password"] is False


# --- Reset by e-mail ---------------------------------------------------------------------------------------------


def test_without_mail_there_is_no_reset(client, settings):
    settings.EMAIL_HOST = ""
    assert "Forgot your password?" not in client.get("/login/").content.decode()
    assert client.get("/account/password/reset/").status_code == 404


def test_a_password_is_reset_by_e_mail_end_to_end_and_the_link_works_once(client, viewer, settings, mailoutbox):
    settings.EMAIL_HOST = "mail.example.org"
    settings.PORTAL_BASE_URL = "https://portal.example.org"
    settings.ALLOWED_HOSTS = ["testserver", "portal.example.org"]
    viewer.email = "victor@example.org"
    viewer.save()
    login_page = client.get("/login/").content.decode()
    assert 'href="/account/password/reset/"' in login_page and "Forgot your password?" in login_page

    response = client.post("/account/password/reset/", {"email": "VICTOR@example.org"})
    assert response.status_code == 302 and response["Location"] == "/account/password/reset/sent/"
    assert len(mailoutbox) == 1 and mailoutbox[0].to == ["victor@example.org"]
    link = re.search(r"https://portal\.example\.org(/account/password/reset/\S+/)", mailoutbox[0].body).group(1)

    # The link leads to the form (Django moves the token into the session), which takes the validators.
    form = client.get(link, follow=True)
    assert form.status_code == 200 and 'name="new_password1"' in form.content.decode()
    form_url = form.redirect_chain[-1][0]
    weak = client.post(form_url, {"new_password1": "victor", "new_password2": "victor"})
    assert "This password is too short." in weak.content.decode()
    done = client.post(form_url, {"new_password1": NEW, "new_password2": NEW})
    assert done.status_code == 302 and done["Location"] == "/account/password/reset/done/"
    viewer.refresh_from_db()
    assert viewer.check_password(NEW) and viewer.account.password_changed_at is not None
    event = AuditEvent.objects.get(action="user.password_reset")
    assert (event.actor, event.target_label) == (viewer, "victor")

    # Single use: the same link fails now, in any browser.
    again = Client().get(link, follow=True).content.decode()
    assert 'id="reset-invalid"' in again
    assert AuditEvent.objects.filter(action="user.password_reset").count() == 1


def test_a_reset_never_says_whether_an_address_exists_and_skips_directory_accounts(client, settings, mailoutbox):
    settings.EMAIL_HOST = "mail.example.org"
    dora = directory_user()
    dora.email = "dora@example.org"
    dora.save()
    known = client.post("/account/password/reset/", {"email": "dora@example.org"})
    unknown = client.post("/account/password/reset/", {"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 302 and known["Location"] == unknown["Location"]
    assert mailoutbox == []


# --- The first-run admin ------------------------------------------------------------------------------------------


def test_the_first_run_admin_must_change_the_generated_password(db, monkeypatch, capsys):
    for name in ("PORTAL_ADMIN_USERNAME", "PORTAL_ADMIN_PASSWORD", "PORTAL_ADMIN_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    call_command("ensure_admin")
    printed = capsys.readouterr().out
    assert "Change it after signing in." in printed
    password = re.search(r"password: (\S+)", printed).group(1)
    admin = User.objects.get(username="admin")
    assert admin.account.must_change_password
    assert AuditEvent.objects.get(action="user.create").details["must_change_password"] is True

    browser = signed_in("admin", password)
    assert browser.get("/")["Location"] == "/account/password/?next=%2F"
    assert browser.get("/users/")["Location"] == "/account/password/?next=%2Fusers%2F"
    response = change(browser, password, NEW)
    assert response.status_code == 302
    assert browser.get("/").status_code == 200
    assert User.objects.get(username="admin").account.must_change_password is False


def test_a_first_admin_with_a_chosen_password_is_not_forced(db, monkeypatch):
    monkeypatch.setenv("PORTAL_ADMIN_PASSWORD", "a-chosen-admin-passphrase")
    first = create_first_admin()
    assert first.password is None
    assert not User.objects.get(username="admin").account.must_change_password


def test_a_password_change_ends_the_person_s_other_sessions(client, make_user):
    """Another browser signed in with the old password is recorded as ended and signed out (core.sessions)."""
    from core.choices import SessionEnd
    from core.models import UserSession

    user = make_user("olga", Role.VIEWER)
    elsewhere = Client()
    elsewhere.post("/login/", {"username": "olga", "password": "correct horse battery"})
    client.post("/login/", {"username": "olga", "password": "correct horse battery"})
    assert UserSession.objects.filter(user=user, ended_at__isnull=True).count() == 2
    response = client.post(
        "/account/password/",
        {
            "old_password": "correct horse battery",
            "new_password1": "a new long passphrase",
            "new_password2": "a new long passphrase",
        },
    )
    assert response.status_code == 302
    ended = UserSession.objects.get(user=user, ended_at__isnull=False)
    assert ended.end_reason == SessionEnd.PASSWORD_CHANGED
    assert UserSession.objects.filter(user=user, ended_at__isnull=True).count() == 1
    assert elsewhere.get("/").status_code == 302  # sent to sign in
    assert client.get("/").status_code == 200
