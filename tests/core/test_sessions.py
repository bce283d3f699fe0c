"""Issue 16, sessions: each signed-in browser a row (core.UserSession) that its person sees and ends, an admin ends
anyone's, idle and absolute timeouts end it, and so does the account's deactivation, role loss or new password;
every sign-in, failure and session end is in the audit log. Clocks are moved by setting the row's times back in the
database, then making a real request."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.core.checks import run_checks
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import services, sessions
from core.choices import Role, SessionEnd, TokenScope
from core.models import AuditEvent, UserSession
from core.roles import set_role

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


def signed_in(username, agent=FIREFOX, address="203.0.113.9") -> Client:
    """A browser that signed in through the form, as a person does."""
    client = Client(HTTP_USER_AGENT=agent, REMOTE_ADDR=address)
    response = client.post("/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def row_of(client) -> UserSession:
    return UserSession.objects.get(pk=client.session[sessions.ROW_KEY])


def move_back(row, **times):
    """The row's created/last_seen set back by these timedeltas, as if that long had passed."""
    now = timezone.now()
    UserSession.objects.filter(pk=row.pk).update(**{field: now - delta for field, delta in times.items()})


def signed_out_to_login(response, client, path="/audit/") -> str:
    """The request was sent to the sign-in page (back to ``path`` after it); the page's text, with the message."""
    assert response.status_code == 302, response.content
    assert response["Location"] == f"/login/?next={path}"
    assert "_auth_user_id" not in client.session
    return client.get(response["Location"]).content.decode()


def ends(reason):
    return list(AuditEvent.objects.filter(action="session.end", details__reason=reason))


# --- Sign-in, failure, sign-out ----------------------------------------------------------------------------------


def test_a_sign_in_records_its_session_after_the_key_rotated_with_its_address_and_cleaned_browser(viewer):
    before = Client()
    before.get("/login/")  # a session cookie from before the sign-in: login() gives it a new key
    client = signed_in("victor", agent=FIREFOX + "\x1b[31m\u202e", address="198.51.100.7")
    row = UserSession.objects.get(user=viewer)
    assert row.session_key == client.session.session_key
    assert Session.objects.filter(session_key=row.session_key).exists()
    assert row.ip_address == "198.51.100.7"
    assert row.user_agent == FIREFOX + "[31m"  # the escape sequence's ESC and the bidi override removed
    assert row.ended_at is None and row.end_reason == ""
    event = AuditEvent.objects.get(action="user.sign_in")
    assert (event.actor, event.target_id, event.details, event.ip_address) == (
        viewer,
        str(viewer.pk),
        {"method": "password"},
        "198.51.100.7",
    )


def test_a_failed_sign_in_is_audited_with_the_username_tried_but_never_the_password(viewer):
    client = Client(REMOTE_ADDR="198.51.100.8")
    response = client.post("/login/", {"username": "victor\x1b[2J", "password": "hunter2-wrong"})
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="user.sign_in_failed")
    assert event.details == {"username": "victor[2J"} and event.actor is None and event.ip_address == "198.51.100.8"
    recorded = [(e.details, e.target_label, e.actor_label) for e in AuditEvent.objects.all()]
    assert "hunter2" not in str(recorded)
    assert not UserSession.objects.exists()


def test_django_axes_still_locks_out_after_the_failures_the_audit_log_records(viewer, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/login/", {"username": "victor", "password": "wrong"})
    response = client.post("/login/", {"username": "victor", "password": PASSWORD})
    assert response.status_code == 429
    assert AuditEvent.objects.filter(action="user.sign_in_failed").count() == settings.AXES_FAILURE_LIMIT + 1
    assert not UserSession.objects.exists() and not AuditEvent.objects.filter(action="user.sign_in").exists()


def test_signing_out_ends_the_session_and_is_audited(viewer):
    client = signed_in("victor")
    row = row_of(client)
    client.post("/logout/")
    row.refresh_from_db()
    assert row.ended_at is not None and row.end_reason == SessionEnd.SIGNED_OUT
    (event,) = ends("signed_out")
    assert event.actor == viewer and event.target_id == str(row.pk) and event.details["user"] == "victor"
    assert row.session_key not in str(event.details) + event.target_label


def test_a_sign_in_with_a_directory_backend_records_it_as_the_method(viewer, rf):
    request = rf.get("/")
    request.session = Client().session
    viewer.backend = "core.oidc.OIDCBackend"
    assert sessions.sign_in_method(request, viewer) == "oidc"
    viewer.backend = "core.ldap.LdapBackend"
    assert sessions.sign_in_method(request, viewer) == "ldap"
    viewer.backend = "django.contrib.auth.backends.ModelBackend"
    viewer.otp_device = object()  # what django-otp leaves on a user a second factor verified
    assert sessions.sign_in_method(request, viewer) == "password+mfa"


# --- last_seen, idle and absolute timeouts -----------------------------------------------------------------------


def usersession_updates(queries):
    return [q["sql"] for q in queries if q["sql"].startswith("UPDATE") and "core_usersession" in q["sql"]]


def test_last_seen_is_written_at_most_once_a_minute_in_one_update(viewer):
    client = signed_in("victor")
    row = row_of(client)
    move_back(row, last_seen=timedelta(seconds=30))
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            assert client.get("/audit/").status_code == 200
    assert usersession_updates(queries) == []
    move_back(row, last_seen=timedelta(seconds=90))
    with CaptureQueriesContext(connection) as queries:
        client.get("/audit/")
        client.get("/audit/")
    assert len(usersession_updates(queries)) == 1
    row.refresh_from_db()
    assert timezone.now() - row.last_seen < timedelta(seconds=5)


def test_a_session_idle_too_long_is_signed_out_with_a_message_that_says_why(viewer, settings):
    settings.SESSION_IDLE_MINUTES = 20
    client = signed_in("victor")
    row = row_of(client)
    move_back(row, last_seen=timedelta(minutes=21))
    page = signed_out_to_login(client.get("/audit/"), client)
    assert "You were signed out after 20 minutes without activity. Sign in again." in page
    row.refresh_from_db()
    assert row.end_reason == SessionEnd.IDLE and row.ended_at is not None
    (event,) = ends("idle")
    assert event.actor is None and event.details["user"] == "victor"
    assert not Session.objects.filter(session_key=row.session_key).exists()
    assert not ends("signed_out")  # ended once, for its first reason


def test_a_session_idle_a_little_less_than_the_limit_goes_on(viewer):
    client = signed_in("victor")
    move_back(row_of(client), last_seen=timedelta(minutes=29))
    assert client.get("/audit/").status_code == 200
    assert row_of(client).ended_at is None


def test_a_session_past_its_absolute_limit_is_signed_out_however_busy(viewer, settings):
    settings.SESSION_ABSOLUTE_HOURS = 12
    client = signed_in("victor")
    row = row_of(client)
    move_back(row, created=timedelta(hours=12, minutes=1), last_seen=timedelta(seconds=5))
    page = signed_out_to_login(client.get("/audit/"), client)
    assert "Your session reached its limit of 12 hours. Sign in again." in page
    row.refresh_from_db()
    assert row.end_reason == SessionEnd.EXPIRED
    assert len(ends("expired")) == 1


def test_signing_in_again_after_a_timeout_goes_back_to_the_page(viewer):
    client = signed_in("victor")
    move_back(row_of(client), last_seen=timedelta(hours=1))
    response = client.get("/audit/?action=user")
    assert response["Location"] == "/login/?next=/audit/%3Faction%3Duser"
    again = client.post(response["Location"], {"username": "victor", "password": PASSWORD})
    assert again.status_code == 302 and again["Location"] == "/audit/?action=user"
    assert UserSession.objects.filter(user=viewer, ended_at__isnull=True).count() == 1


def test_an_htmx_request_on_an_ended_session_leaves_the_page_for_the_sign_in(viewer):
    client = signed_in("victor")
    move_back(row_of(client), last_seen=timedelta(hours=1))
    response = client.get("/audit/", HTTP_HX_REQUEST="true")
    assert response.status_code == 204 and response["HX-Redirect"] == "/login/?next=/audit/"


def test_an_api_request_on_an_idle_session_is_refused_as_anonymous_not_redirected(viewer):
    client = signed_in("victor")
    move_back(row_of(client), last_seen=timedelta(hours=1))
    response = client.get("/api/v1/audit-events/")
    assert response.status_code in (401, 403) and response["Content-Type"].startswith("application/json")
    assert row_of_pk_reason(viewer) == SessionEnd.IDLE


def row_of_pk_reason(user):
    return UserSession.objects.get(user=user).end_reason


def test_the_timeouts_must_be_at_least_one(settings):
    settings.SESSION_IDLE_MINUTES = 0
    errors = [m for m in run_checks() if m.id == "portal.E030"]
    assert [m.msg for m in errors] == ["SESSION_IDLE_MINUTES must be at least 1."]


def test_the_session_cookie_lives_as_long_as_the_absolute_limit():
    from django.conf import settings

    assert settings.SESSION_COOKIE_AGE == settings.SESSION_ABSOLUTE_HOURS * 3600 == 12 * 3600
    assert settings.SESSION_IDLE_MINUTES == 30


# --- Deactivation, role loss, password change ----------------------------------------------------------------------


def test_a_user_deactivated_elsewhere_is_signed_out_at_the_next_request(viewer):
    client = signed_in("victor")
    row = row_of(client)
    get_user_model().objects.filter(pk=viewer.pk).update(is_active=False)  # as a directory sync or the shell would
    page = signed_out_to_login(client.get("/audit/"), client)
    assert "Your account was deactivated or lost its role, so this session was ended." in page
    row.refresh_from_db()
    assert row.end_reason == SessionEnd.ACCOUNT_CHANGED
    assert not Session.objects.filter(session_key=row.session_key).exists()


def test_an_admin_deactivating_a_user_ends_their_session_rows_too(admin, viewer):
    client = signed_in("victor")
    row = row_of(client)
    services.update_user(admin, viewer, is_active=False)
    row.refresh_from_db()
    assert row.end_reason == SessionEnd.ACCOUNT_CHANGED
    assert client.get("/audit/").status_code == 302
    assert len(ends("account_changed")) == 1


def test_a_user_who_lost_every_role_is_signed_out_at_the_next_request(viewer):
    client = signed_in("victor")
    assert client.get("/audit/").status_code == 200
    set_role(viewer, None)
    page = signed_out_to_login(client.get("/audit/"), client)
    assert "lost its role" in page
    assert row_of_pk_reason(viewer) == SessionEnd.ACCOUNT_CHANGED


def test_a_user_who_never_had_a_role_stays_signed_in_as_before(make_user):
    make_user("nobody", role=None)
    client = signed_in("nobody")
    assert client.get("/account/sessions/").status_code == 200
    assert client.get("/account/sessions/").status_code == 200
    assert UserSession.objects.get(user__username="nobody").ended_at is None


def test_a_password_changed_elsewhere_ends_this_session_at_its_next_request(viewer):
    client = signed_in("victor")
    viewer.set_password("another long passphrase")
    viewer.save()
    page = signed_out_to_login(client.get("/audit/"), client)
    assert "Your password was changed, so this session was ended." in page
    assert row_of_pk_reason(viewer) == SessionEnd.PASSWORD_CHANGED


def test_end_other_sessions_keeps_the_changing_one_even_after_its_key_rotated(viewer):
    here, there = signed_in("victor"), signed_in("victor", agent=CHROME)
    mine, other = row_of(here), row_of(there)
    # update_session_auth_hash rotates the key of the session that changed the password
    store = here.session
    store.cycle_key()
    here.cookies["sessionid"] = store.session_key

    assert sessions.end_other_sessions(viewer, store.session_key, SessionEnd.PASSWORD_CHANGED, actor=viewer) == 1
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.ended_at is None and mine.session_key == store.session_key
    assert other.end_reason == SessionEnd.PASSWORD_CHANGED
    assert not Session.objects.filter(session_key=other.session_key).exists()
    assert here.get("/audit/").status_code == 200
    assert there.get("/audit/").status_code == 302
    (event,) = ends("password_changed")
    assert event.actor == viewer


# --- One's own sessions ----------------------------------------------------------------------------------------------


def test_a_person_sees_their_sessions_with_this_one_marked(viewer, operator):
    here = signed_in("victor")
    signed_in("victor", agent=CHROME, address="192.0.2.44")
    signed_in("oscar", address="192.0.2.99")
    page = here.get("/account/sessions/").content.decode()
    assert "Firefox 133 on Windows" in page and "Chrome 131 on Linux" in page
    assert "192.0.2.44" in page and "203.0.113.9" in page and "192.0.2.99" not in page
    badge = '<span class="badge">this session</span>'
    assert page.count(badge) == 1
    assert badge in page.split(f'data-session="{row_of(here).pk}"')[1].split("</tr>")[0]
    assert "End all other sessions" in page


def test_a_person_ends_another_of_their_sessions_and_that_browser_is_signed_out(viewer):
    here, there = signed_in("victor"), signed_in("victor", agent=CHROME)
    other = row_of(there)
    response = here.post(f"/account/sessions/{other.pk}/end/")
    assert response.status_code == 302 and response["Location"] == "/account/sessions/"
    other.refresh_from_db()
    assert other.end_reason == SessionEnd.ENDED_BY_USER
    assert there.get("/audit/").status_code == 302
    assert here.get("/audit/").status_code == 200
    (event,) = ends("ended_by_user")
    assert event.actor == viewer
    page = here.get("/account/sessions/").content.decode()
    assert "Ended by its user" in page.split('id="ended-sessions"')[1]


def test_ending_this_session_from_the_list_signs_out(viewer):
    client = signed_in("victor")
    row = row_of(client)
    response = client.post(f"/account/sessions/{row.pk}/end/")
    assert response["Location"] == "/login/"
    row.refresh_from_db()
    assert row.end_reason == SessionEnd.ENDED_BY_USER and len(ends("ended_by_user")) == 1
    assert client.get("/audit/").status_code == 302


def test_a_person_cannot_end_someone_elses_session_from_their_own_list(viewer, operator):
    mine, theirs = signed_in("victor"), signed_in("oscar")
    assert mine.post(f"/account/sessions/{row_of(theirs).pk}/end/").status_code == 404
    assert theirs.get("/audit/").status_code == 200
    assert not ends("ended_by_user")


def test_a_person_ends_all_their_other_sessions(viewer):
    here = signed_in("victor")
    others = [signed_in("victor", agent=CHROME) for _ in range(2)]
    here.post("/account/sessions/end-others/")
    assert [c.get("/audit/").status_code for c in others] == [302, 302]
    assert here.get("/audit/").status_code == 200
    assert list(UserSession.objects.filter(ended_at__isnull=True)) == [row_of(here)]


def test_ending_a_session_needs_a_post_with_the_csrf_token(viewer):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(viewer)
    other = signed_in("victor")
    assert browser.get(f"/account/sessions/{row_of(other).pk}/end/").status_code == 405
    assert browser.post(f"/account/sessions/{row_of(other).pk}/end/").status_code == 403
    assert other.get("/audit/").status_code == 200


def test_a_session_gone_quiet_shows_as_ended_for_being_idle(viewer):
    here, there = signed_in("victor"), signed_in("victor", agent=CHROME)
    quiet = row_of(there)
    move_back(quiet, last_seen=timedelta(hours=2))
    page = here.get("/account/sessions/").content.decode()
    quiet.refresh_from_db()
    assert quiet.end_reason == SessionEnd.IDLE
    assert "Idle timeout" in page.split('id="ended-sessions"')[1]


# --- An admin and someone else's sessions ------------------------------------------------------------------------


def test_an_admin_sees_and_ends_one_of_someone_elses_sessions(admin, viewer):
    boss = signed_in("alice")  # a sign-in is a password just given: the recent-authentication window is open
    victim, other = signed_in("victor"), signed_in("victor", agent=CHROME)
    page = boss.get(f"/users/{viewer.pk}/sessions/").content.decode()
    assert "Sessions of victor" in page and "Firefox 133 on Windows" in page and "Chrome 131 on Linux" in page
    assert f'href="/users/{viewer.pk}/sessions/"' in boss.get("/users/").content.decode()

    response = boss.post(f"/users/{viewer.pk}/sessions/{row_of(victim).pk}/end/")
    assert response.status_code == 302 and response["Location"] == f"/users/{viewer.pk}/sessions/"
    assert victim.get("/audit/").status_code == 302
    assert other.get("/audit/").status_code == 200
    (event,) = ends("ended_by_admin")
    assert event.actor == admin and event.details["user"] == "victor"


def test_an_admin_ends_all_of_someones_sessions(admin, viewer):
    boss = signed_in("alice")
    victims = [signed_in("victor"), signed_in("victor", agent=CHROME)]
    boss.post(f"/users/{viewer.pk}/sessions/end-all/")
    assert [c.get("/audit/").status_code for c in victims] == [302, 302]
    assert not UserSession.objects.filter(user=viewer, ended_at__isnull=True).exists()
    assert boss.get("/audit/").status_code == 200


def test_an_admin_whose_password_is_not_recent_confirms_it_before_ending_sessions(admin, viewer, settings):
    boss = signed_in("alice")
    session = boss.session
    session[services.REAUTHENTICATED_AT] -= (settings.REAUTH_MINUTES + 1) * 60
    session.save()
    victim = signed_in("victor")
    url = f"/users/{viewer.pk}/sessions/"
    response = boss.post(f"{url}{row_of(victim).pk}/end/", HTTP_REFERER=f"http://testserver{url}")
    assert response.status_code == 302 and response["Location"] == f"/reauthenticate/?next={url.replace('/', '%2F')}"
    assert victim.get("/audit/").status_code == 200
    assert not ends("ended_by_admin")


def test_only_admins_see_or_end_other_peoples_sessions(operator, viewer):
    nosy, victim = signed_in("oscar"), signed_in("victor")
    assert nosy.get(f"/users/{viewer.pk}/sessions/").status_code == 403
    assert nosy.post(f"/users/{viewer.pk}/sessions/end-all/").status_code == 403
    assert victim.get("/audit/").status_code == 200


# --- What is not a session ---------------------------------------------------------------------------------------


def session_queries(queries):
    return [q["sql"] for q in queries if "core_usersession" in q["sql"] or "django_session" in q["sql"]]


def test_an_api_token_request_makes_no_session_row_and_touches_no_session(admin):
    _, raw = services.create_api_token(admin, "ci", TokenScope.READ)
    client = Client()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            response = client.get("/api/v1/audit-events/", HTTP_AUTHORIZATION=f"Bearer {raw}")
            assert response.status_code == 200
    assert session_queries(queries) == []
    assert not UserSession.objects.exists() and not Session.objects.exists()


def test_a_health_report_touches_no_session_even_from_a_signed_in_browser(viewer, make_group):
    from fleet.services import enrollment
    from tests.samples import health_text

    group = make_group("pilot")
    secret = enrollment.create_enrollment_secret(group, "lab")[1]
    _endpoint, token = enrollment.enroll(secret, "web-1", "web-1", "linux", "x86_64")
    client = signed_in("victor")
    move_back(row_of(client), last_seen=timedelta(hours=5))  # would be ended, were it looked at
    with CaptureQueriesContext(connection) as queries:
        response = client.generic(
            "POST",
            "/api/v1/reports",
            health_text(group).encode(),
            content_type="text/plain",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    assert response.status_code == 201, response.content
    assert session_queries(queries) == []
    assert row_of(client).ended_at is None


def test_a_session_signed_in_before_rows_existed_gets_one_at_its_next_request(viewer):
    client = signed_in("victor")
    UserSession.objects.all().delete()
    session = client.session
    del session[sessions.ROW_KEY]
    session.save()
    assert client.get("/audit/").status_code == 200
    row = UserSession.objects.get(user=viewer)
    assert row.session_key == client.session.session_key and client.session[sessions.ROW_KEY] == row.pk


def test_the_browser_names_are_short_and_unknown_ones_kept_as_sent():
    assert sessions.browser_of(FIREFOX) == "Firefox 133 on Windows"
    assert sessions.browser_of(CHROME) == "Chrome 131 on Linux"
    edge = CHROME.replace("Linux x86_64", "Windows NT 10.0") + " Edg/131.0.2903.86"
    assert sessions.browser_of(edge) == "Edge 131 on Windows"
    assert sessions.browser_of("curl/8.5.0") == "curl/8.5.0"


def test_an_operator_role_change_keeps_the_session(operator):
    client = signed_in("oscar")
    set_role(operator, Role.VIEWER)
    assert client.get("/audit/").status_code == 200
    assert row_of(client).ended_at is None
