"""Local passwords: one's own change, an admin's set or reset, the reset by e-mail, the change forced at the next
sign-in. The UI (core.account_views, core.views), the API (core.api.views) and the first-run admin
(core.management.commands.ensure_admin) call these.

A directory account (Account.source oidc or ldap) has no portal password: the directory keeps it, so none of these
sets one. Every password given is checked by settings.AUTH_PASSWORD_VALIDATORS. Changing a password signs out the
person's other sessions (Django's session hash follows the password hash); the session that changed it stays.
"""

import secrets

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model, update_session_auth_hash
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from core import services, sessions
from core.choices import AccountSource, Role, SessionEnd
from core.errors import Refused
from core.models import Account

User = get_user_model()

# Set once per session by PasswordChangeRequiredMiddleware (core.password_middleware): whether this user must change
# their password before anything else. It only turns on with a new password, which ends the sessions that held the
# old one, so a session never needs to read it twice.
MUST_CHANGE_SESSION_KEY = "core.must_change_password"


def account_of(user) -> Account:
    """The user's Account, or an unsaved local one for users created before accounts were recorded."""
    try:
        return user.account
    except Account.DoesNotExist:
        return Account(user=user)


def is_local(user) -> bool:
    return account_of(user).source == AccountSource.LOCAL


def mail_configured() -> bool:
    """Password reset by e-mail is offered only where mail leaves the machine (EMAIL_HOST): without it, the reset
    link would go to the worker's console."""
    return bool(settings.EMAIL_HOST)


def generate_password() -> str:
    """A password for someone else to type once and change: 24 characters from 144 random bits."""
    return secrets.token_urlsafe(18)


def _save_account(user, must_change_password: bool) -> Account:
    account, _created = Account.objects.select_for_update().get_or_create(user=user)
    account.must_change_password = must_change_password
    account.password_changed_at = timezone.now()
    account.save(update_fields=["must_change_password", "password_changed_at"])
    user.account = account  # what the caller reads next (an API answer, a page) sees the change
    return account


def _refuse_directory_account(user) -> None:
    source = account_of(user).source
    if source != AccountSource.LOCAL:
        raise Refused(
            _("%(username)s signs in through %(source)s: the portal keeps no password for this account.")
            % {"username": user.get_username(), "source": AccountSource(source).label},
            "password",
        )


def change_own_password(request, old_password: str, new_password: str) -> None:
    """The signed-in person changes their password: the current one first (a wrong one counts towards the sign-in
    lock-out, as on the confirmation page), then the validators. The session stays signed in, and counts as having
    just given its password."""
    user = request.user
    _refuse_directory_account(user)
    # authenticate(), not check_password(): django-axes counts a wrong guess from a stolen session cookie.
    if not old_password or authenticate(request, username=user.get_username(), password=old_password) != user:
        raise Refused(_("That is not your current password."), "old_password")
    if old_password == new_password:
        raise Refused(_("The new password must differ from the current one."), "new_password1")
    validate_password(new_password, user)
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        _save_account(user, must_change_password=False)
        services.record_event(user, "user.password_change", user, {}, request)
    update_session_auth_hash(request, user)
    # The other browsers signed in as this person end now, and are recorded as ended (core.sessions).
    sessions.end_other_sessions(
        user, request.session.session_key, SessionEnd.PASSWORD_CHANGED, actor=user, request=request
    )
    services.mark_authenticated(request)
    request.session[MUST_CHANGE_SESSION_KEY] = False


def set_password(actor, user, password: str | None = None, must_change_password: bool = False, request=None):
    """An admin sets another user's password; without one, a password is generated, and must be changed at the next
    sign-in. Returns the generated password (shown once to the admin, never stored in plaintext), or None."""
    services.require_recent_authentication(request, gettext_lazy("set passwords"))
    if actor is not None and user.pk == actor.pk:
        raise Refused(_("Change your own password on the My account page: it asks for the current one."), "password")
    _refuse_directory_account(user)
    generated = None
    if not password:
        generated = password = generate_password()
        must_change_password = True
    validate_password(password, user)
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        _save_account(user, must_change_password=must_change_password)
        services.record_event(
            actor,
            "user.password_set",
            user,
            {"must_change_password": must_change_password, "generated": generated is not None},
            request,
        )
    # Whoever was signed in with the old password is signed out: a reset is often because it leaked.
    sessions.end_other_sessions(user, None, SessionEnd.PASSWORD_CHANGED, actor=actor, request=request)
    return generated


def create_local_user(
    actor,
    username: str,
    role: Role,
    email: str = "",
    password: str | None = None,
    must_change_password=False,
    request=None,
):
    """A new account with a portal password, created by an admin (the users page and the API). Without a password,
    one is generated and must be changed at the first sign-in: an account nobody can sign in to is never created.
    Returns (user, the generated password or None)."""
    generated = None
    if not password:
        generated = password = generate_password()
        must_change_password = True
    with transaction.atomic():
        user = services.create_user(actor, username, role, email=email, password=password, request=request)
        Account.objects.create(
            user=user,
            source=AccountSource.LOCAL,
            must_change_password=must_change_password,
            password_changed_at=timezone.now(),
        )
    return user, generated


def password_was_reset(user, request=None) -> None:
    """A password set through the link mailed to the user (Django's PasswordResetConfirmView saved it)."""
    with transaction.atomic():
        _save_account(user, must_change_password=False)
        services.record_event(user, "user.password_reset", user, {}, request)


def must_change_password(user) -> bool:
    return Account.objects.filter(user=user, must_change_password=True).exists()
