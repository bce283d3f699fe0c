"""The second factor (issue 16): a TOTP authenticator app with ten single-use recovery codes, on django-otp.

One confirmed TOTP device per person (``TOTPDevice``) and one ``StaticDevice`` holding their recovery codes
(``StaticToken``). django-otp stores both as they are, not hashed: the TOTP secret must be readable to compute
codes, and recovery codes are kept the way django-otp keeps them (docs/security.md says so). A device is created
only once its first code has been given (the secret waits in the session until then), so an abandoned set-up leaves
nothing behind and nothing unconfirmed can ever satisfy a sign-in.

Who must use one: the roles an admin lists in ``SecurityPolicy.mfa_required_roles``, for local and LDAP accounts.
OpenID Connect accounts are exempt: their identity provider does its own multi-factor authentication, and the
portal never sees a password of theirs to put a second step after.

API tokens are a separate credential and are not asked for a code (docs/security.md).
"""

import base64
import binascii
import time
from urllib.parse import urlencode

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp import login as otp_login
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp.util import random_hex

from core.choices import AccountSource, Role
from core.errors import Refused
from core.models import Account, SecurityPolicy
from core.roles import user_role
from core.services import record_event, require_recent_authentication

User = get_user_model()

RECOVERY_CODE_COUNT = 10
DEVICE_NAME = "authenticator"
# Between the password step and the code step: who gave the right password, through which backend, where to go
# next, and when. Nothing else of the session is signed in until the code is given (core.mfa_views.SignInView).
PENDING = "core.mfa.pending"
PENDING_SECONDS = 5 * 60
# The secret shown on the set-up page, waiting for its first code.
SETUP_KEY = "core.mfa.setup_key"
# What this session still owes (STATE_OK, STATE_SETUP, STATE_VERIFY), worked out at sign-in and kept in the
# session with the user's id, so that pages cost no query for it (core.mfa_middleware).
STATE = "core.mfa.state"
STATE_OK, STATE_SETUP, STATE_VERIFY = "ok", "setup", "verify"


# --- Who has, and who needs, a second factor ----------------------------------------------------------------------


def totp_device(user) -> TOTPDevice | None:
    """The person's confirmed authenticator, or None."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def has_second_factor(user) -> bool:
    return TOTPDevice.objects.filter(user=user, confirmed=True).exists()


def account_source(user) -> str:
    """local, ldap or oidc; a user without an Account row (made before issue 16) is local."""
    return Account.objects.filter(user=user).values_list("source", flat=True).first() or AccountSource.LOCAL


def is_exempt(user) -> bool:
    """OpenID Connect accounts: their identity provider asks for the second factor, not the portal."""
    return account_source(user) == AccountSource.OIDC


def required_roles() -> list[str]:
    return [role for role in SecurityPolicy.current().mfa_required_roles if role in Role.values]


def is_required(user) -> bool:
    """Whether the policy makes ``user`` use a second factor (their role is listed, and they are not exempt)."""
    role = user_role(user)
    return role is not None and role in required_roles() and not is_exempt(user)


def state_for(user, verified: bool) -> str:
    """What a signed-in session of ``user`` still owes: nothing, a set-up (their role requires a second factor and
    they have none), or a code (they have one, but this session did not give it: signed in some other way than
    SignInView, e.g. a password reset that signs in)."""
    if verified or is_exempt(user):
        return STATE_OK
    if has_second_factor(user):
        return STATE_VERIFY
    if is_required(user):
        return STATE_SETUP
    return STATE_OK


def session_state(request) -> str:
    """The session's state, worked out once and kept (a few queries at sign-in, none per page after)."""
    user = request.user
    verified = request.session.get(DEVICE_ID_SESSION_KEY) is not None and user.is_verified()
    kept = request.session.get(STATE)
    if kept and kept[0] == user.pk and (kept[1] != STATE_VERIFY or not verified):
        return kept[1]
    state = state_for(user, verified)
    request.session[STATE] = [user.pk, state]
    return state


def set_session_state(request, state: str) -> None:
    request.session[STATE] = [request.user.pk, state]


def on_sign_in(sender, request, user, **kwargs) -> None:
    """django.contrib.auth's user_logged_in (connected in core.apps): work out what the new session owes now, so
    that its first page costs nothing. django-otp's own receiver, connected before, has already recorded the device
    that verified this sign-in, if any."""
    if request is None or not hasattr(request, "session"):
        return
    request.session.pop(PENDING, None)
    verified = getattr(user, "otp_device", None) is not None
    request.session[STATE] = [user.pk, state_for(user, verified)]


# --- The code step of a sign-in ------------------------------------------------------------------------------------


def begin_code_step(request, user, next_url: str) -> None:
    """The password was right and ``user`` has a second factor: remember them until the code is given."""
    request.session[PENDING] = {
        "user": user.pk,
        "backend": user.backend,
        "next": next_url,
        "at": time.time(),
    }


def pending_sign_in(request):
    """(user, backend, next URL) of the sign-in waiting for its code, or None (none, too old, or the account was
    deactivated meanwhile)."""
    pending = request.session.get(PENDING) if hasattr(request, "session") else None
    if not pending:
        return None
    if time.time() - pending.get("at", 0) > PENDING_SECONDS:
        request.session.pop(PENDING, None)
        return None
    user = User.objects.filter(pk=pending.get("user"), is_active=True).first()
    if user is None or pending.get("backend") not in settings.AUTHENTICATION_BACKENDS:
        request.session.pop(PENDING, None)
        return None
    return user, pending["backend"], pending.get("next") or reverse(settings.LOGIN_REDIRECT_URL)


def cancel_code_step(request) -> None:
    request.session.pop(PENDING, None)


def normalize_recovery_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def check_code(user, code: str):
    """The device that accepts ``code`` (the authenticator's six digits, or one recovery code, which is then used
    up), or raise Refused. django-otp checks the current time step and one either side (``tolerance`` 1: a phone
    up to 30 s off), refuses a code of a step already used (``last_t``: a code seen over a shoulder or replayed is
    worthless), and slows down repeated failures (its throttling: 1, 2, 4… seconds)."""
    code = (code or "").strip()
    digits = "".join(code.split())
    if digits.isdigit() and len(digits) == 6:
        device = TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk")
    else:
        digits = normalize_recovery_code(code)
        device = StaticDevice.objects.filter(user=user, confirmed=True).order_by("pk")
    # One transaction with the device row locked: two requests with the same code cannot both pass (django-otp's
    # replay protection reads and writes last_t, and a recovery code is deleted when used).
    with transaction.atomic():
        device = device.select_for_update().first()
        if device is None:
            raise Refused(_("That code is not right."), "code")
        allowed, why = device.verify_is_allowed()
        if not allowed:
            raise Refused(
                _("Too many wrong codes in a row: wait a few seconds, then try again with a new code."), "code"
            )
        if not device.verify_token(digits):
            raise Refused(_("That code is not right."), "code")
    return device


def record_failure(request, user, reason: str) -> bool:
    """A wrong code at the sign-in: audited, and counted by django-axes with the password failures of the same
    username and address (AXES_FAILURE_LIMIT), so guessing codes locks the sign-in as guessing passwords does.
    Whether the sign-in is now locked out."""
    from axes.handlers.proxy import AxesProxyHandler

    AxesProxyHandler.user_login_failed(
        sender=check_code, credentials={"username": user.get_username()}, request=request
    )
    locked = bool(getattr(request, "axes_locked_out", False))
    record_event(user, "mfa.failure", user, {"reason": reason, "locked_out": locked}, request)
    return locked


def is_locked_out(request, user) -> bool:
    from axes.handlers.proxy import AxesProxyHandler

    return AxesProxyHandler.is_locked(request, {"username": user.get_username()})


# --- Setting up, recovery codes, removing --------------------------------------------------------------------------


def setup_key(request) -> str:
    """The hex secret offered on the set-up page: the same one until it is confirmed or the session ends, so a
    reload does not invalidate what the phone has already scanned."""
    key = request.session.get(SETUP_KEY)
    if not key:
        key = random_hex(20)
        request.session[SETUP_KEY] = key
    return key


def base32_secret(key: str) -> str:
    """The secret as authenticator apps take it typed in: base32, in groups of four."""
    text = base64.b32encode(binascii.unhexlify(key)).decode("ascii").rstrip("=")
    return " ".join(text[i : i + 4] for i in range(0, len(text), 4))


def provisioning_uri(user, key: str) -> str:
    """The otpauth:// URI of the QR code (the Key URI Format authenticator apps read)."""
    device = TOTPDevice(user=user, key=key, name=DEVICE_NAME)
    return device.config_url


def qr_code_data_url(text: str) -> str:
    """An SVG QR code as a data: URL: an <img> the Content-Security-Policy allows (img-src 'self' data:), made by
    qrcode's SVG factory without PIL."""
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    return "data:image/svg+xml;base64," + base64.b64encode(image.to_string()).decode("ascii")


def _new_recovery_codes(user) -> list[str]:
    """Replace the person's recovery codes with ten new ones; the old ones stop working."""
    StaticDevice.objects.filter(user=user).delete()
    device = StaticDevice.objects.create(user=user, name="recovery codes", confirmed=True)
    codes = [StaticToken.random_token() for _ in range(RECOVERY_CODE_COUNT)]
    StaticToken.objects.bulk_create([StaticToken(device=device, token=code) for code in codes])
    return codes


def recovery_codes_left(user) -> int:
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


def enable(request, code: str) -> tuple[TOTPDevice, list[str]]:
    """Confirm the set-up page's secret with a code from the app: the device is created confirmed, with ten recovery
    codes, and this session counts as verified. Returns the device and the codes (shown once)."""
    user = request.user
    require_recent_authentication(request, gettext_lazy("set up two-factor authentication"), token_scope=None)
    if is_exempt(user):
        raise Refused(_("Your organisation's identity provider handles your second factor, not the portal."))
    if has_second_factor(user):
        raise Refused(_("Two-factor authentication is already set up; remove it first to use another phone."))
    key = request.session.get(SETUP_KEY)
    if not key:
        raise Refused(_("The set-up page has expired; scan the new QR code."), "code")
    digits = "".join((code or "").split())
    if not (digits.isdigit() and len(digits) == 6):
        raise Refused(_("Enter the 6-digit code your authenticator app shows."), "code")
    device = TOTPDevice(user=user, key=key, name=DEVICE_NAME, confirmed=True)
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time()
    if not totp.verify(int(digits), device.tolerance):
        raise Refused(_("That code is not right: check the phone's clock, then enter the code it shows now."), "code")
    # The confirming code is used up like any other: it cannot sign in afterwards.
    device.last_t = totp.t()
    device.drift = totp.drift
    device.last_used_at = timezone.now()
    # One transaction: a device never exists without its recovery codes and its audit entry.
    with transaction.atomic():
        device.save()
        codes = _new_recovery_codes(user)
        record_event(user, "mfa.enable", user, {"recovery_codes": len(codes)}, request)
    request.session.pop(SETUP_KEY, None)
    otp_login(request, device)
    set_session_state(request, STATE_OK)
    return device, codes


def regenerate_recovery_codes(request, code: str) -> list[str]:
    """Ten new recovery codes for the signed-in person (the old ones stop working): a lasting way past the second
    factor, so it needs the password given recently and a current code."""
    user = request.user
    require_recent_authentication(request, gettext_lazy("make new recovery codes"), token_scope=None)
    if not has_second_factor(user):
        raise Refused(_("Set up two-factor authentication first."))
    check_code(user, code)
    with transaction.atomic():
        codes = _new_recovery_codes(user)
        record_event(user, "mfa.recovery_regenerate", user, {"recovery_codes": len(codes)}, request)
    return codes


def disable(request, code: str) -> None:
    """The signed-in person removes their second factor (authenticator and recovery codes): password given recently
    and a current code. If their role requires one, the next page asks them to set up a new one."""
    user = request.user
    require_recent_authentication(request, gettext_lazy("remove two-factor authentication"), token_scope=None)
    if not has_second_factor(user):
        raise Refused(_("Two-factor authentication is not set up."))
    check_code(user, code)
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        record_event(user, "mfa.disable", user, {}, request)
    request.session.pop(STATE, None)


def reset(actor, user, request=None) -> int:
    """An admin removes another person's second factor (a lost phone and no recovery code left). Their sessions end:
    a session verified by the lost phone must not outlive it. They set up a new one at their next sign-in if their
    role requires it. How many devices were removed."""
    from core.services import end_sessions

    require_recent_authentication(request, gettext_lazy("change users"))
    with transaction.atomic():
        removed = TOTPDevice.objects.filter(user=user).delete()[0]
        StaticDevice.objects.filter(user=user).delete()
        if not removed:
            raise Refused(_("%(user)s has no second factor to reset.") % {"user": user.get_username()})
        sessions = end_sessions(user)
        record_event(actor, "mfa.reset", user, {"sessions_ended": sessions}, request)
    return removed


def set_required_roles(actor, roles: list[str], request=None) -> SecurityPolicy:
    """The security policy page: which roles must use a second factor."""
    require_recent_authentication(request, gettext_lazy("change the security policy"))
    unknown = [role for role in roles if role not in Role.values]
    if unknown:
        raise Refused(_("Unknown role: %(roles)s.") % {"roles": ", ".join(unknown)}, "mfa_required_roles")
    chosen = [role for role in Role.values if role in roles]  # the roles' own order, each once
    with transaction.atomic():
        policy = SecurityPolicy.objects.select_for_update().get_or_create(pk=1)[0]
        before = list(policy.mfa_required_roles)
        if before != chosen:
            policy.mfa_required_roles = chosen
            policy.updated = timezone.now()
            policy.save(update_fields=["mfa_required_roles", "updated"])
            record_event(
                actor, "security_policy.update", policy, {"mfa_required_roles": {"from": before, "to": chosen}}, request
            )
    return policy


def verify_url(next_url: str = "") -> str:
    url = reverse("mfa_verify")
    return f"{url}?{urlencode({'next': next_url})}" if next_url else url
