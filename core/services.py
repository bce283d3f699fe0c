"""Workflows every app shares: the audit log, API tokens, users, heartbeats. UI, API, CLI and tasks all call these."""

import socket
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import SESSION_KEY, authenticate, get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core.choices import Role, TokenScope
from core.errors import ReauthenticationRequired, Refused
from core.models import ApiToken, AuditEvent, Heartbeat
from core.roles import has_role, set_role, user_role
from core.secrets import mask_details

User = get_user_model()


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def audit_value(value):
    """A value as audit details can hold it: another object by its name, a list or queryset item by item."""
    if isinstance(value, models.Model):
        return str(value)
    if isinstance(value, (models.QuerySet, list, tuple)):
        return [audit_value(item) for item in value]
    return value


def record_event(actor, action: str, target=None, details: dict | None = None, request=None) -> AuditEvent:
    """Append one entry to the audit log. Every state-changing service calls this.

    ``actor`` is a user, or None for the system (scheduled tasks); ``target`` any
    model instance, or None. Every role reads the log: the target's secret fields in ``details`` are masked
    here (core.secrets), whoever calls, and URL credentials in any other text.
    """
    if actor is not None and actor.is_authenticated:
        label = actor.get_username()
    else:
        actor, label = None, "system"
    model_label = target._meta.label_lower if target is not None else ""
    event = AuditEvent(
        actor=actor,
        actor_label=label,
        action=action,
        details=mask_details(model_label, details or {}),
        ip_address=client_ip(request),
    )
    if target is not None:
        event.target_type = target._meta.label_lower
        event.target_id = str(target.pk)
        event.target_label = str(target)[:255]
    event.save()
    return event


# --- Recent authentication ("sudo mode", issue 14, item 7) --------------------------------------------------------
# Power over accounts and tokens outlives whatever granted it (a new admin account outlives the token that made it;
# a token outlives the session that minted it), so such changes need a password given moments ago, not a session
# cookie or a token that may have leaked. The session remembers when the password was last given: at sign-in and on
# the confirmation page (core.views.ReauthenticateView).

REAUTHENTICATED_AT = "core.reauthenticated_at"


def mark_authenticated(request) -> None:
    """The person behind ``request`` has just given their password (django.contrib.auth's user_logged_in, connected in
    core.apps, and confirm_password)."""
    if request is not None and hasattr(request, "session"):
        request.session[REAUTHENTICATED_AT] = time.time()


def confirm_password(request, password: str) -> None:
    """The confirmation page: the signed-in user gives their password again. A wrong one counts towards the sign-in
    lock-out like a failed sign-in (django-axes sees it through authenticate())."""
    user = request.user
    if not password or authenticate(request, username=user.get_username(), password=password) != user:
        raise Refused(_("That is not your password."), "password")
    mark_authenticated(request)
    record_event(user, "user.reauthenticate", user, request=request)


def require_recent_authentication(request, what: str, token_scope: TokenScope | None = TokenScope.ADMIN) -> None:
    """Refuse ``what`` unless the request's password was given within REAUTH_MINUTES, or it bears an API token of
    ``token_scope`` (None: no token at all may). ``request`` None is the command line or a task: whoever runs those
    holds the machine already."""
    if request is None:
        return
    token = getattr(request, "auth", None)
    if isinstance(token, ApiToken):
        if token_scope is None:
            raise Refused(_("API tokens cannot %(what)s; use a signed-in session.") % {"what": what}, status=403)
        if token.scope != token_scope:
            raise Refused(
                _("To %(what)s with an API token, the token needs the %(scope)s scope; this one is %(this)s.")
                % {
                    "what": what,
                    "scope": TokenScope(token_scope).label.lower(),
                    "this": token.get_scope_display().lower(),
                },
                status=403,
            )
        return
    given = request.session.get(REAUTHENTICATED_AT) if hasattr(request, "session") else None
    minutes = settings.REAUTH_MINUTES
    if given is None or time.time() - given > minutes * 60:
        raise ReauthenticationRequired(
            _(
                "Confirm your password to %(what)s: it must have been given within the last %(minutes)s minutes "
                "(the confirmation page is /reauthenticate/)."
            )
            % {"what": what, "minutes": minutes}
        )


def create_api_token(user, name: str, scope: str = TokenScope.READ, expires_in_days: int | None = None, request=None):
    """Create a token for ``user``; returns (token row, the raw token, which is never stored).

    From a session whose password was just confirmed only: a token that could mint tokens would outlive its own
    revocation, and a stolen session cookie must not turn into a lasting token."""
    # Token holders get their own wording: a token never mints a token, whatever its scope.
    if isinstance(getattr(request, "auth", None), ApiToken):
        raise Refused(_("API tokens can only be created from a signed-in session, not with another token."), status=403)
    require_recent_authentication(request, gettext_lazy("create an API token"), token_scope=None)
    if scope == TokenScope.WRITE and not has_role(user, Role.OPERATOR):
        raise Refused(_("Viewers can only create read-only tokens."), "scope")
    if scope == TokenScope.ADMIN and not has_role(user, Role.ADMIN):
        raise Refused(_("Only admins can create tokens with the admin scope."), "scope")
    raw = ApiToken.generate()
    token = ApiToken(user=user, name=name, scope=scope)
    if expires_in_days:
        token.expires_at = timezone.now() + timedelta(days=expires_in_days)
    token.set_key(raw)
    # One transaction: a token never exists without its audit entry.
    with transaction.atomic():
        token.save()
        record_event(
            user,
            "token.create",
            token,
            {"scope": scope, "expires_at": token.expires_at and token.expires_at.isoformat()},
            request,
        )
    return token, raw


def revoke_api_token(actor, token: ApiToken, request=None) -> ApiToken:
    if token.revoked_at is None:
        with transaction.atomic():
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            record_event(actor, "token.revoke", token, {"owner": token.user.get_username()}, request)
    return token


def create_user(actor, username: str, role: Role, email: str = "", password: str | None = None, request=None):
    """Create an account with one role. ``password`` is validated; None leaves it unusable."""
    require_recent_authentication(request, gettext_lazy("create users"))
    user = User(username=username, email=email)
    if password:
        validate_password(password, user)
        user.set_password(password)
    else:
        user.set_unusable_password()
    with transaction.atomic():
        user.save()
        set_role(user, role)
        record_event(actor, "user.create", user, {"role": role, "email": email}, request)
    return user


def update_user(actor, user, role: Role | None = None, is_active: bool | None = None, request=None):
    """Change a user's role or active state; nobody demotes or deactivates their own account (the last admin
    could lock everyone out). Deactivating ends the user's sessions and revokes their tokens for good: turning the
    account on again does not bring them back."""
    require_recent_authentication(request, gettext_lazy("change users"))
    if user == actor and ((role is not None and role != Role.ADMIN) or is_active is False):
        raise Refused(_("You cannot demote or deactivate your own account; ask another admin."), "role")
    changes = {}
    with transaction.atomic():
        if role is not None and role != user_role(user):
            changes["role"] = {"from": user_role(user), "to": role}
            set_role(user, role)
        if is_active is not None and is_active != user.is_active:
            changes["is_active"] = {"from": user.is_active, "to": is_active}
            user.is_active = is_active
            user.save(update_fields=["is_active"])
            if not is_active:
                changes["tokens_revoked"] = revoke_all_tokens(user)
                changes["sessions_ended"] = end_sessions(user)
        if changes:
            record_event(actor, "user.update", user, changes, request)
    return user


def revoke_all_tokens(user) -> int:
    """Revoke every token of ``user`` that still works; how many."""
    return ApiToken.objects.usable().filter(user=user).update(revoked_at=timezone.now())


def end_sessions(user) -> int:
    """Delete every stored session signed in as ``user`` (the database session engine: Django's default, ours);
    how many. Django would refuse them only while the account is inactive, and take them back on reactivation."""
    from django.contrib.sessions.models import Session

    mine = [
        session.pk
        for session in Session.objects.filter(expire_date__gt=timezone.now())
        if session.get_decoded().get(SESSION_KEY) == str(user.pk)
    ]
    Session.objects.filter(pk__in=mine).delete()
    # Their rows, for the user's session list, marked ended and audited (core.sessions imports this module).
    from core.choices import SessionEnd
    from core.sessions import end_all_sessions

    end_all_sessions(user, SessionEnd.ACCOUNT_CHANGED)
    return len(mine)


def record_heartbeat(name: str) -> Heartbeat:
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"seen_at": timezone.now(), "hostname": socket.gethostname()}
    )
    return heartbeat
