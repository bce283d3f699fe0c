"""The API's own documentation page (Swagger UI, /api/docs/)."""

from django.contrib.auth.views import redirect_to_login
from drf_spectacular.views import SpectacularSwaggerSplitView
from rest_framework.exceptions import NotAuthenticated


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI whose start-up script is served as a file (``?script``), never inline, so that it runs under the
    Content-Security-Policy (core.middleware.ContentSecurityPolicyMiddleware); its stylesheet is a file too
    (templates/core/swagger_ui.html). A person not signed in is sent to the sign-in page and back (issue 14, item 12)."""

    template_name = "core/swagger_ui.html"

    def handle_exception(self, exc):
        if isinstance(exc, NotAuthenticated) and self.request.GET.get("script") is None:
            return redirect_to_login(self.request.get_full_path())
        return super().handle_exception(exc)
