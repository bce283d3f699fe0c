"""Tags for the first-run guidance: the base URL banner (every page, admins only)."""

from django import template
from django.conf import settings

from core.choices import Role
from core.roles import has_role
from portal import base_url

register = template.Library()


@register.simple_tag(takes_context=True)
def base_url_warning(context):
    """For an admin, what is wrong with PORTAL_BASE_URL seen from this request ({"url", "browser", "problems"}), else
    None. No query: the role is cached on the user by the context processor."""
    request = context.get("request")
    if request is None or not has_role(getattr(request, "user", None), Role.ADMIN):
        return None
    found = base_url.problems(request)
    if not found:
        return None
    return {"url": settings.PORTAL_BASE_URL, "browser": request.get_host(), "problems": found}
