"""Sessions that still owe a second factor reach nothing else (issue 16).

Two cases: a person whose role must use a second factor (SecurityPolicy) and who has none is sent to the set-up
page; a session signed in without giving the code (any way other than core.mfa_views.SignInView, which keeps the
person signed out until the code step) is sent to the code step. What a session owes is worked out at sign-in and
kept in it (core.mfa.session_state), so a page costs no query for it.

Requests with an API token are not sessions (request.user is anonymous here; DRF authenticates the token later):
a token is a separate credential, not asked for a code (docs/security.md). Session requests to the API get a 403
in JSON.
"""

from urllib.parse import urlencode

from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _

from core import mfa

# Pages a session that owes a set-up may still open: the set-up itself, the password confirmation it may ask for,
# the forced password change (core.password_middleware, which runs first), the language, signing out.
SETUP_ALLOWED = {
    "mfa_setup",
    "mfa_verify",
    "reauthenticate",
    "password_change",
    "password_change_done",
    "set_language",
    "logout",
}
VERIFY_ALLOWED = {"mfa_verify", "set_language", "logout"}


class MfaRequiredMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated or not hasattr(request, "session"):
            return None
        state = mfa.session_state(request)
        if state == mfa.STATE_OK:
            return None
        allowed = SETUP_ALLOWED if state == mfa.STATE_SETUP else VERIFY_ALLOWED
        if request.resolver_match is not None and request.resolver_match.url_name in allowed:
            return None
        if request.path.startswith("/api/"):
            message = (
                _("Your role must use two-factor authentication: set it up in the browser first.")
                if state == mfa.STATE_SETUP
                else _("This session has not given its second factor: finish signing in in the browser.")
            )
            return JsonResponse({"detail": message}, status=403)
        target = reverse("mfa_setup" if state == mfa.STATE_SETUP else "mfa_verify")
        if request.method == "GET":
            target = f"{target}?{urlencode({'next': request.get_full_path()})}"
        return redirect(target)
