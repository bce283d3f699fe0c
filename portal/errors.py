"""The portal's error pages (issue 15): 400, 403, 404 and 500 in the portal's look, with its navigation.

The API (everything under /api/, the endpoints' reports included) keeps its JSON error body; the published trees
answer their own plain 404s before these are reached (mirror.views, fleet.views)."""

from django.http import HttpResponseBadRequest, HttpResponseForbidden, HttpResponseNotFound, HttpResponseServerError
from django.template import loader
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from rest_framework import status

from core.api.errors import api_not_found, api_server_error, json_error_view
from core.choices import Role
from core.roles import user_role

api_bad_request = json_error_view(status.HTTP_400_BAD_REQUEST, "bad_request", "The request could not be understood.")
api_permission_denied = json_error_view(
    status.HTTP_403_FORBIDDEN, "permission_denied", "You do not have permission to perform this action."
)


def is_api(request) -> bool:
    return request.path.startswith("/api/")


def needed_role(request) -> Role | None:
    """The role the refused view asks for this method (RoleRequiredMixin's required_role or write_role), if known."""
    match = getattr(request, "resolver_match", None)
    view_class = getattr(getattr(match, "func", None), "view_class", None)
    if view_class is None:
        return None
    safe = request.method in ("GET", "HEAD", "OPTIONS")
    role = getattr(view_class, "required_role" if safe else "write_role", None)
    return Role(role) if role else None


def bad_request(request, exception=None):
    if is_api(request):
        return api_bad_request(request, exception)
    return HttpResponseBadRequest(loader.render_to_string("400.html", {}, request))


def permission_denied(request, exception=None):
    if is_api(request):
        return api_permission_denied(request, exception)
    context = {"needed_role": needed_role(request), "role": user_role(request.user)}
    return HttpResponseForbidden(loader.render_to_string("403.html", context, request))


def wants_html(request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def page_not_found(request, exception=None):
    if is_api(request):
        return api_not_found(request, exception)
    if not wants_html(request):
        # Endpoints, curl and scripts fetching a file that is not there (a published tree's folder, a wrong name):
        # one plain line, as before, and no page built for nobody.
        return HttpResponseNotFound(f"Not found: {request.path}\n", content_type="text/plain; charset=utf-8")
    return HttpResponseNotFound(loader.render_to_string("404.html", {"request_path": request.path}, request))


def server_error(request):
    """Rendered from a self-contained template without the request's context: what failed may be the database,
    a context processor or the static files' manifest, and this page must still show."""
    if is_api(request):
        return api_server_error(request)
    try:
        stylesheet = static("portal/portal.css")
    except ValueError:  # the manifest does not name it (collectstatic not run)
        stylesheet = "/static/portal/portal.css"
    try:
        dashboard = reverse("dashboard")
    except NoReverseMatch:
        dashboard = "/"
    return HttpResponseServerError(
        loader.render_to_string("500.html", {"stylesheet": stylesheet, "dashboard": dashboard})
    )
