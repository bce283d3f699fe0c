"""Who may do what: the role of a user, checked on the server for views and the API.

admin: everything; operator: syncs, approvals, endpoints; viewer: read-only.
A user with no role group can log in but sees and changes nothing.
"""

from django.conf import settings
from django.contrib.auth.mixins import AccessMixin
from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import permissions

from core.choices import ROLE_RANK, Role, TokenScope


def user_role(user) -> Role | None:
    """The user's highest role, or None."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Role.ADMIN
    # Cached on the instance: a page asks this many times (navigation, buttons).
    if not hasattr(user, "_portal_role"):
        names = set(user.groups.values_list("name", flat=True))
        held = [role for role in Role if role.value in names]
        user._portal_role = max(held, key=ROLE_RANK.get) if held else None
    return user._portal_role


def has_role(user, required: Role) -> bool:
    role = user_role(user)
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[Role(required)]


def set_role(user, role: Role | None) -> None:
    from django.contrib.auth.models import Group

    user.groups.remove(*Group.objects.filter(name__in=Role.values))
    if role:
        # The data migration creates the three groups; get_or_create keeps a database that
        # lost them (flushed by a test, restored from a partial dump) working.
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    user.__dict__.pop("_portal_role", None)


class HasRole(permissions.BasePermission):
    """API access by role: reads need ``read_role`` (viewer), writes ``write_role`` (operator).

    A view narrows it with ``read_role`` / ``write_role`` attributes; a read-only
    token never writes, whatever its owner's role.
    """

    message = gettext_lazy("You do not have the role this action needs.")

    def has_permission(self, request, view):
        user = request.user
        if not user or not user.is_authenticated:
            return False
        safe = request.method in permissions.SAFE_METHODS
        # @action(write_role=...) sets the attribute on the view instance for that action only.
        required = getattr(view, "read_role", Role.VIEWER) if safe else getattr(view, "write_role", Role.OPERATOR)
        if not has_role(user, required):
            role = user_role(user)
            needed = {"role": Role(required).label.lower()}
            self.message = (
                _("This action needs the %(role)s role; you are a %(yours)s.") % {**needed, "yours": role.label.lower()}
                if role
                else _("This action needs the %(role)s role; your account has no role.") % needed
            )
            return False
        token = request.auth
        if not safe and getattr(token, "scope", None) == TokenScope.READ:
            self.message = _("This API token is read-only; create a read-write token to make changes.")
            return False
        return True


class ApiDocsPermission(HasRole):
    """/api/schema/ and /api/docs/ (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"]): they map every resource, field and
    error of the portal, so they need the viewer role as the API does, unless API_DOCS_REQUIRE_SIGN_IN is off
    (issue 14, item 12). The setting is read at each request."""

    def has_permission(self, request, view):
        return not settings.API_DOCS_REQUIRE_SIGN_IN or super().has_permission(request, view)


class RoleRequiredMixin(AccessMixin):
    """UI views: ``required_role`` for GET, ``write_role`` for POST and other writes."""

    required_role = Role.VIEWER
    write_role = Role.OPERATOR

    def dispatch(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        safe = request.method in ("GET", "HEAD", "OPTIONS")
        if not has_role(request.user, self.required_role if safe else self.write_role):
            raise PermissionDenied(_("Your role does not allow this."))
        return super().dispatch(request, *args, **kwargs)
