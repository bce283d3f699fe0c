"""Sessions end at the request that finds them too old, idle too long, or their account changed (core.sessions).

Placed after AuthenticationMiddleware and django-otp's (portal/settings.py MIDDLEWARE), before the middleware that
sends a person to change their password or give their second factor: a session that must end ends before anything
asks more of it. The health-report path never reaches it (fleet.middleware.ReportShortcutMiddleware answers earlier),
and an API token request carries no session: neither pays a query or a write here.
"""

from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.messages.storage import default_storage
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url

from core import sessions


class SessionTimeoutMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if hasattr(request, "session"):
            reason = sessions.check_request(request)
            if reason is not None:
                return self.signed_out(request, reason)
        return self.get_response(request)

    def signed_out(self, request, reason):
        login_url = resolve_url(settings.LOGIN_URL)
        back = request.get_full_path() if request.method == "GET" and request.path != login_url else ""
        logout(request)
        if request.path_info.startswith("/api/"):
            # The API answers an anonymous request itself (401/403 in JSON); a redirect would mean nothing to a script.
            return self.get_response(request)
        # MessageMiddleware comes after this one and never sees this response: the message is stored here.
        storage = request._messages = default_storage(request)
        storage.add(messages.WARNING, sessions.end_message(reason))
        url = f"{login_url}?{urlencode({'next': back}, safe='/')}" if back else login_url
        if request.headers.get("HX-Request"):
            # htmx would draw the sign-in page inside the fragment it asked for: it leaves the page instead.
            response = HttpResponse(status=204, headers={"HX-Redirect": url})
        else:
            response = HttpResponseRedirect(url)
        storage.update(response)
        return response
