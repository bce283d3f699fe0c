"""Signed-in sessions: each one a core.UserSession row from its sign-in to its end, so a person sees and ends their
own, an admin ends anyone's, and the idle and absolute timeouts (SESSION_IDLE_MINUTES, SESSION_ABSOLUTE_HOURS) apply.

The row's id travels inside the Django session (ROW_KEY): the session key changes (``cycle_key`` at sign-in and at a
password change through ``update_session_auth_hash``) but the row stays the same, and ``check_request`` (called by
core.session_middleware on every signed-in request) brings the row's key up to date.

Ending a session marks its row (a conditional update: two ends at once record one) and deletes Django's session
through the session engine. The database engine (ours: SESSION_ENGINE is Django's default) and the cache engines
delete it on the server, so its cookie is worth nothing from then on. The signed-cookie engine keeps nothing on the
server to delete: there the ended row is what signs the cookie out, at its next request (``check_request`` reads the
row on every request).

Every sign-in, failed sign-in and session end is in the audit log: ``user.sign_in`` (with the method),
``user.sign_in_failed`` (the username tried, never the password), ``session.end`` (with the reason).
"""

import re
import secrets
from datetime import timedelta
from importlib import import_module

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.checks import Error, register
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_otp import DEVICE_ID_SESSION_KEY

from core.choices import SessionEnd
from core.models import UserSession
from core.roles import user_role
from core.services import client_ip, record_event, require_recent_authentication
from core.text import clean_text

ROW_KEY = "core.user_session"  # the UserSession row's id, in the Django session
HAD_ROLE_KEY = "core.session_had_role"  # whether the person had a role at sign-in: losing it ends the session

# last_seen is written at most this often per session: one UPDATE a minute, not one per request.
SEEN_EVERY = timedelta(minutes=1)
USERNAME_MAX = 150  # as long as Django's usernames: what a failed sign-in tried is kept no longer


def idle_limit() -> timedelta:
    return timedelta(minutes=settings.SESSION_IDLE_MINUTES)


def absolute_limit() -> timedelta:
    return timedelta(hours=settings.SESSION_ABSOLUTE_HOURS)


@register()
def check_session_limits(app_configs, **kwargs):
    """Both timeouts at least 1: zero would end every session at its first request."""
    wrong = [name for name in ("SESSION_IDLE_MINUTES", "SESSION_ABSOLUTE_HOURS") if getattr(settings, name) < 1]
    return [
        Error(f"{name} must be at least 1.", hint="Unset it for the default (30 minutes, 12 hours).", id="portal.E030")
        for name in wrong
    ]


def _session_store():
    return import_module(settings.SESSION_ENGINE).SessionStore


def _keys_are_tracked() -> bool:
    # A signed cookie's "key" is the whole cookie, new at every change: nothing a row can hold or delete.
    return "signed_cookies" not in settings.SESSION_ENGINE


# --- Sign-in, sign-out and failures (django.contrib.auth's signals, connected in core.apps) -------------------------


def sign_in_method(request, user) -> str:
    """How the person proved who they are: their password, their password and a second factor (django-otp keeps the
    verified device on the user, or in the session, at sign-in), or their directory (the backend that accepted
    them: OpenID Connect or LDAP)."""
    backend = (getattr(user, "backend", "") or "").lower()
    if "oidc" in backend:
        return "oidc"
    method = "ldap" if "ldap" in backend else "password"

    session = getattr(request, "session", None)
    if getattr(user, "otp_device", None) is not None or (session is not None and session.get(DEVICE_ID_SESSION_KEY)):
        method += "+mfa"
    return method


def user_agent_of(request) -> str:
    agent = request.META.get("HTTP_USER_AGENT", "") if request is not None else ""
    return clean_text(agent)[: UserSession._meta.get_field("user_agent").max_length]


def start_session(request, user) -> UserSession | None:
    """A sign-in (django.contrib.auth's user_logged_in, sent after ``login()`` rotated the session key): the new
    session's row, and the audit entry, in one transaction."""
    session = getattr(request, "session", None)
    if session is None:
        return None
    if _keys_are_tracked():
        if session.session_key is None:
            session.save()
        key = session.session_key
    else:
        key = f"signed:{secrets.token_hex(16)}"
    now = timezone.now()
    with transaction.atomic():
        row, _created = UserSession.objects.update_or_create(
            session_key=key,
            defaults={
                "user": user,
                "created": now,
                "last_seen": now,
                "ip_address": client_ip(request),
                "user_agent": user_agent_of(request),
                "ended_at": None,
                "end_reason": "",
            },
        )
        record_event(user, "user.sign_in", user, {"method": sign_in_method(request, user)}, request)
    session[ROW_KEY] = row.pk
    session[HAD_ROLE_KEY] = user_role(user) is not None
    return row


def on_signed_in(sender, request, user, **kwargs):
    start_session(request, user)


def on_signed_out(sender, request, user, **kwargs):
    """Sign-out (``logout()``, sent before the session is flushed). A session already ended (a timeout signs out
    through here too) stays ended for its first reason."""
    session = getattr(request, "session", None)
    row_id = session.get(ROW_KEY) if session is not None else None
    row = UserSession.objects.filter(pk=row_id).select_related("user").first() if row_id else None
    if row is not None:
        end_session(row, SessionEnd.SIGNED_OUT, actor=user, request=request, delete=False)


def on_sign_in_failed(sender, credentials, request=None, **kwargs):
    """A failed sign-in: the username tried (Django has already masked the password in ``credentials``; it is never
    read here). django-axes listens to the same signal for its lock-out; nothing here raises for it."""
    username = clean_text(str(credentials.get("username") or ""))[:USERNAME_MAX]
    record_event(None, "user.sign_in_failed", None, {"username": username}, request)


# --- Ending sessions -------------------------------------------------------------------------------------------------


def delete_django_session(session_key: str) -> None:
    """Delete the stored Django session (database or cache engine); the signed-cookie engine has nothing to delete."""
    if session_key and _keys_are_tracked():
        _session_store()(session_key=session_key).delete()


def end_session(row: UserSession, reason: SessionEnd, actor=None, request=None, delete: bool = True) -> bool:
    """End one session for ``reason``: the row marked, the audit entry written, Django's session deleted (unless the
    caller flushes it itself: sign-out). False when it had already ended."""
    now = timezone.now()
    # One transaction: a row never ends without its audit entry. The update is conditional on the row being open, so
    # of two ends at once (a sign-out while an admin ends it) exactly one is recorded.
    with transaction.atomic():
        if not UserSession.objects.filter(pk=row.pk, ended_at__isnull=True).update(ended_at=now, end_reason=reason):
            return False
        row.ended_at, row.end_reason = now, reason
        record_event(
            actor,
            "session.end",
            row,
            {"reason": str(reason), "user": row.user.get_username(), "ip_address": row.ip_address},
            request,
        )
    if delete:
        delete_django_session(row.session_key)
    return True


def _row_of(session_key: str | None) -> int | None:
    """The row id a stored session carries (its key may be newer than the row's after a password change rotated it)."""
    if not session_key:
        return None
    try:
        return _session_store()(session_key=session_key).get(ROW_KEY)
    except Exception:  # an undecodable session: no row to keep
        return None


def end_other_sessions(user, keep_session_key: str | None, reason: SessionEnd, actor=None, request=None) -> int:
    """End every open session of ``user`` but the one whose Django session key is ``keep_session_key`` (None: all of
    them); how many. A password change calls it with the changing session's key (reason password_changed):
    Django would refuse the others at their next request anyway (their auth hash no longer matches), this records
    them as ended now, and deletes them."""
    keep_row = _row_of(keep_session_key)
    others = UserSession.objects.filter(user=user, ended_at__isnull=True).select_related("user")
    if keep_session_key:
        others = others.exclude(session_key=keep_session_key)
    if keep_row:
        others = others.exclude(pk=keep_row)
        if _keys_are_tracked():
            # The key may have rotated (update_session_auth_hash): the row follows it now, not at its next request.
            UserSession.objects.filter(pk=keep_row).exclude(session_key=keep_session_key).update(
                session_key=keep_session_key
            )
    return sum(end_session(row, reason, actor=actor, request=request) for row in others)


def end_all_sessions(user, reason: SessionEnd, actor=None, request=None) -> int:
    return end_other_sessions(user, None, reason, actor=actor, request=request)


def end_by_admin(actor, user, row: UserSession | None = None, request=None) -> int:
    """An admin ends one of ``user``'s sessions (``row``), or all of them; how many. Like every other change to
    someone's account, it needs a password given within REAUTH_MINUTES (core.services)."""
    require_recent_authentication(request, gettext_lazy("end other people's sessions"))
    if row is None:
        return end_all_sessions(user, SessionEnd.ENDED_BY_ADMIN, actor=actor, request=request)
    return int(end_session(row, SessionEnd.ENDED_BY_ADMIN, actor=actor, request=request))


def end_stale_sessions(user=None) -> int:
    """End the rows whose session went quiet without a request to end it (idle or past its absolute limit: the next
    request would have ended it); how many. Run before a list is shown, so that "open" means open."""
    now = timezone.now()
    rows = UserSession.objects.filter(ended_at__isnull=True).select_related("user")
    if user is not None:
        rows = rows.filter(user=user)
    ended = 0
    for row in rows.filter(created__lt=now - absolute_limit()):
        ended += end_session(row, SessionEnd.EXPIRED)
    for row in rows.filter(last_seen__lt=now - idle_limit()):
        ended += end_session(row, SessionEnd.IDLE)
    return ended


# --- Every signed-in request (core.session_middleware) --------------------------------------------------------------


def check_request(request) -> SessionEnd | None:
    """Why this signed-in request's session must end now, having ended its row; None when it goes on (its last_seen
    refreshed at most once a minute). A request without a signed-in session (API tokens, the sign-in page) costs
    nothing here: no query, no write."""
    session = request.session
    if SESSION_KEY not in session:
        return None
    row_id, had_role = session.get(ROW_KEY), session.get(HAD_ROLE_KEY, False)
    # Django's own check: it flushes a session whose password hash no longer matches (the password was changed
    # elsewhere), and turns away an inactive user's without flushing it.
    user = request.user
    if not user.is_authenticated:
        flushed = SESSION_KEY not in session
        row = UserSession.objects.filter(pk=row_id).select_related("user").first() if row_id else None
        if row is not None and row.ended_at is not None:
            return SessionEnd(row.end_reason or SessionEnd.SIGNED_OUT)
        reason = SessionEnd.PASSWORD_CHANGED if flushed else SessionEnd.ACCOUNT_CHANGED
        if row is not None:
            end_session(row, reason, request=request, delete=False)
        return reason
    if row_id is None:
        # Signed in before sessions had rows: this session gets one now, once.
        start_tracking(request, user)
        return None
    row = UserSession.objects.filter(pk=row_id).first()  # the one query a signed-in request pays here
    if row is None or row.user_id != user.pk:
        return SessionEnd.SIGNED_OUT  # its row is gone (the user was deleted, the database restored): ended
    row.user = user
    if row.ended_at is not None:
        # Only the signed-cookie engine gets here: with the others, ending the row deleted the session.
        return SessionEnd(row.end_reason or SessionEnd.SIGNED_OUT)
    now = timezone.now()
    reason = None
    if now - row.created > absolute_limit():
        reason = SessionEnd.EXPIRED
    elif now - row.last_seen > idle_limit():
        reason = SessionEnd.IDLE
    elif had_role and user_role(user) is None:
        reason = SessionEnd.ACCOUNT_CHANGED
    if reason is not None:
        end_session(row, reason, request=request, delete=False)
        return reason
    changes = {}
    if now - row.last_seen >= SEEN_EVERY:
        changes["last_seen"] = now
    if _keys_are_tracked() and session.session_key and row.session_key != session.session_key:
        changes["session_key"] = session.session_key
    if changes:
        UserSession.objects.filter(pk=row.pk, ended_at__isnull=True).update(**changes)
    return None


def start_tracking(request, user) -> UserSession:
    """A row for a session that was signed in before rows existed (no sign-in entry: it was not one)."""
    session = request.session
    key = session.session_key if _keys_are_tracked() else f"signed:{secrets.token_hex(16)}"
    row, _created = UserSession.objects.get_or_create(
        session_key=key,
        defaults={"user": user, "ip_address": client_ip(request), "user_agent": user_agent_of(request)},
    )
    session[ROW_KEY] = row.pk
    session[HAD_ROLE_KEY] = user_role(user) is not None
    return row


def end_message(reason: SessionEnd) -> str:
    """What the sign-in page tells someone whose session just ended, and why."""
    if reason == SessionEnd.IDLE:
        return _("You were signed out after %(minutes)s minutes without activity. Sign in again.") % {
            "minutes": settings.SESSION_IDLE_MINUTES
        }
    if reason == SessionEnd.EXPIRED:
        return _("Your session reached its limit of %(hours)s hours. Sign in again.") % {
            "hours": settings.SESSION_ABSOLUTE_HOURS
        }
    if reason == SessionEnd.PASSWORD_CHANGED:
        return _("Your password was changed, so this session was ended. Sign in with the new password.")
    if reason == SessionEnd.ACCOUNT_CHANGED:
        return _("Your account was deactivated or lost its role, so this session was ended.")
    if reason == SessionEnd.ENDED_BY_ADMIN:
        return _("An admin ended this session. Sign in again.")
    return _("This session was ended. Sign in again.")


# --- Lists -----------------------------------------------------------------------------------------------------------

RECENT_ENDED = 10

_BROWSERS = (
    ("Edge", re.compile(r"Edg(?:e|A|iOS)?/(\d+)")),
    ("Opera", re.compile(r"OPR/(\d+)")),
    ("Firefox", re.compile(r"(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome", re.compile(r"(?:Chrome|CriOS)/(\d+)")),
    ("Safari", re.compile(r"Version/(\d+)[\d.]* .*Safari/")),
)
_SYSTEMS = (
    ("Android", re.compile(r"Android")),
    ("iOS", re.compile(r"iPhone|iPad|iPod")),
    ("Windows", re.compile(r"Windows")),
    ("macOS", re.compile(r"Mac OS X|Macintosh")),
    ("ChromeOS", re.compile(r"CrOS")),
    ("Linux", re.compile(r"Linux|X11")),
)


def browser_of(user_agent: str) -> str:
    """A short name for a User-Agent ("Firefox 133 on Windows"), or the text itself when it names no known browser.
    Only a hint: a browser says what it likes."""
    browser = next(
        (f"{name} {match.group(1)}" for name, pattern in _BROWSERS if (match := pattern.search(user_agent))), ""
    )
    system = next((name for name, pattern in _SYSTEMS if pattern.search(user_agent)), "")
    if browser and system:
        return _("%(browser)s on %(system)s") % {"browser": browser, "system": system}
    return browser or system or user_agent[:60]


def sessions_of(user):
    """(open sessions, the last few ended ones) of ``user``, newest first; stale ones ended first."""
    end_stale_sessions(user)
    rows = UserSession.objects.filter(user=user)
    return (
        list(rows.filter(ended_at__isnull=True).order_by("-last_seen")),
        list(rows.filter(ended_at__isnull=False).order_by("-ended_at")[:RECENT_ENDED]),
    )
