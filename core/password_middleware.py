"""Nothing but the password change for someone who must change their password (Account.must_change_password: the
first-run admin's generated password, one an admin set with "must change at next sign-in")."""

from urllib.parse import urlencode

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect
from django.urls import Resolver404, resolve, reverse
from django.utils.translation import gettext as _

from core.accounts import MUST_CHANGE_SESSION_KEY, must_change_password
from core.api.errors import error_body

# What such a person may still reach: the change itself, signing out, the language of the page; and the second factor
# (core.mfa_middleware, which runs next): a session that still owes its code is sent there first, so that a password
# alone never changes the password.
ALLOWED_URL_NAMES = {
    "password_change",
    "password_change_done",
    "logout",
    "set_language",
    "login",
    "healthz",
    "readyz",
    "mfa_verify",
    "mfa_setup",
}


class PasswordChangeRequiredMiddleware:
    """Every page redirects to the password change page, and the API (with the browser's session) answers 403, until
    the password is changed. Read once per session (see core.accounts.MUST_CHANGE_SESSION_KEY): no query per page."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            required = request.session.get(MUST_CHANGE_SESSION_KEY)
            if required is None:
                required = request.session[MUST_CHANGE_SESSION_KEY] = must_change_password(user)
            if required:
                refusal = self.refusal(request)
                if refusal is not None:
                    return refusal
        return self.get_response(request)

    def refusal(self, request):
        path = request.path_info
        if settings.STATIC_URL and path.startswith(settings.STATIC_URL):
            return None
        if path.startswith("/api/"):
            detail = _(
                "You must change your password before using the API: sign in with a browser and change it at %(url)s."
            ) % {"url": reverse("password_change")}
            return JsonResponse(error_body(403, "password_change_required", detail), status=403)
        try:
            name = resolve(path).url_name
        except Resolver404:
            name = None
        if name in ALLOWED_URL_NAMES:
            return None
        query = urlencode({"next": request.get_full_path()}) if request.method == "GET" else ""
        return redirect(f"{reverse('password_change')}{'?' + query if query else ''}")
