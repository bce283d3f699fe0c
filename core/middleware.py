"""The client's address behind the reverse proxy.

Behind nginx, gunicorn's peer is nginx: REMOTE_ADDR is nginx's address, and the client's arrives
in X-Real-IP, which the site (deploy/nginx/defender-portal.conf) overwrites on every request.
Put back into REMOTE_ADDR before anything else runs, it is the address every reader sees:
django-axes' sign-in lock-out (per username and address), the audit log
(core.services.client_ip) and METRICS_ALLOWED_IPS. The header is believed only from
TRUSTED_PROXIES: any other peer could have written it itself. (nginx's realip module does the same
with set_real_ip_from and real_ip_header.)
"""

import ipaddress

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.utils import translation

from core.env import address_in
from core.models import UserPreference


class ClientAddressMiddleware:
    def __init__(self, get_response):
        if not settings.TRUSTED_PROXIES:
            # Out of the chain altogether: without a proxy to trust, requests (health reports are
            # most of them) pay nothing for it.
            raise MiddlewareNotUsed
        self.get_response = get_response
        self.proxies = tuple(settings.TRUSTED_PROXIES)

    def __call__(self, request):
        real_ip = request.META.get("HTTP_X_REAL_IP")
        if real_ip and address_in(
            request.META.get("REMOTE_ADDR", ""), self.proxies
        ):  # not an IP (a Unix socket): not trusted
            try:
                request.META["REMOTE_ADDR"] = str(ipaddress.ip_address(real_ip.strip()))
            except ValueError:
                pass  # not an address (nginx always sends one): the proxy's stays
        return self.get_response(request)


class ContentSecurityPolicyMiddleware:
    """``Content-Security-Policy`` on every answer (settings.CONTENT_SECURITY_POLICY): scripts, styles, images,
    fonts and requests from the portal itself only, no inline script or style, no plugin, no framing (issue 14,
    item 12). The pages keep to it: their scripts and styles are files under portal/static/, confirmations are
    ``data-confirm`` attributes (portal/static/portal/confirm.js), and htmx is told not to inject its own style
    (templates/base.html). tests/browser/test_csp.py visits every main page in Chromium and fails on a violation."""

    def __init__(self, get_response):
        if not settings.CONTENT_SECURITY_POLICY:
            raise MiddlewareNotUsed
        self.get_response = get_response
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.policy)
        return response


class UserLanguageMiddleware:
    """A signed-in person's chosen language (core.UserPreference) over the browser's, which LocaleMiddleware set.

    Read once per session and kept in it: one query at sign-in, none per page after. Changing the preference
    (core.views.LanguageView) writes both."""

    SESSION_KEY = "portal_language"

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            chosen = request.session.get(self.SESSION_KEY)
            if chosen is None:
                chosen = UserPreference.objects.filter(user=user).values_list("language", flat=True).first() or ""
                request.session[self.SESSION_KEY] = chosen
            if chosen and chosen in dict(settings.LANGUAGES):
                translation.activate(chosen)
                request.LANGUAGE_CODE = chosen
        return self.get_response(request)
