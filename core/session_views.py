"""Signed-in sessions (core.sessions): one's own at /account/sessions/, anyone's for an admin at /users/<pk>/sessions/.
Ending them is a POST (CSRF-checked like every form)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, logout
from django.contrib.auth.mixins import LoginRequiredMixin
from django.shortcuts import get_object_or_404, redirect
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views import View
from django.views.generic import TemplateView

from core import sessions
from core.choices import Role, SessionEnd
from core.models import UserSession
from core.roles import RoleRequiredMixin
from core.views import RecentAuthenticationMixin

User = get_user_model()


def session_rows(request, user) -> dict:
    """The lists' context: open and recently ended sessions, each with its browser named, this one marked."""
    open_rows, ended_rows = sessions.sessions_of(user)
    current = request.session.get(sessions.ROW_KEY)
    for row in (*open_rows, *ended_rows):
        row.browser = sessions.browser_of(row.user_agent)
        row.is_current = row.pk == current
    return {
        "open_sessions": open_rows,
        "ended_sessions": ended_rows,
        "person": user,
        "idle_minutes": settings.SESSION_IDLE_MINUTES,
        "absolute_hours": settings.SESSION_ABSOLUTE_HOURS,
    }


class SessionListView(LoginRequiredMixin, TemplateView):
    """Everyone's own sessions, whatever their role: seeing where one is signed in needs none."""

    template_name = "core/session_list.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(**session_rows(self.request, self.request.user), **kwargs)


class SessionEndView(LoginRequiredMixin, View):
    """End one of one's own sessions; this one is a sign-out."""

    http_method_names = ["post"]

    def post(self, request, pk):
        row = get_object_or_404(UserSession, pk=pk, user=request.user)
        if row.pk == request.session.get(sessions.ROW_KEY):
            sessions.end_session(row, SessionEnd.ENDED_BY_USER, actor=request.user, request=request, delete=False)
            logout(request)
            return redirect("login")
        if sessions.end_session(row, SessionEnd.ENDED_BY_USER, actor=request.user, request=request):
            messages.success(request, _("Session ended: that browser is signed out."))
        return redirect("session_list")


class SessionEndOthersView(LoginRequiredMixin, View):
    http_method_names = ["post"]

    def post(self, request):
        ended = sessions.end_other_sessions(
            request.user, request.session.session_key, SessionEnd.ENDED_BY_USER, actor=request.user, request=request
        )
        messages.success(
            request,
            ngettext("%(count)s other session ended.", "%(count)s other sessions ended.", ended) % {"count": ended},
        )
        return redirect("session_list")


class UserSessionListView(RecentAuthenticationMixin, RoleRequiredMixin, TemplateView):
    """An admin's view of one person's sessions, and the buttons that end them."""

    template_name = "core/user_sessions.html"
    required_role = Role.ADMIN
    write_role = Role.ADMIN

    def get_context_data(self, **kwargs):
        person = get_object_or_404(User, pk=self.kwargs["pk"])
        return super().get_context_data(**session_rows(self.request, person), **kwargs)

    def post(self, request, pk, session_pk=None):
        """End one session (``session_pk``) or all of them."""
        person = get_object_or_404(User, pk=pk)
        row = get_object_or_404(UserSession, pk=session_pk, user=person) if session_pk is not None else None
        ended = sessions.end_by_admin(request.user, person, row, request=request)
        messages.success(
            request,
            ngettext("%(count)s session of %(username)s ended.", "%(count)s sessions of %(username)s ended.", ended)
            % {"count": ended, "username": person.get_username()},
        )
        return redirect("user_sessions", pk=person.pk)
