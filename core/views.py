"""The shared pages: the audit log, one's own API tokens, and users (admins)."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.generic import TemplateView
from django_filters.views import FilterView

from core import services
from core.choices import Role
from core.errors import Refused
from core.filtersets import AuditEventFilterSet
from core.forms import ApiTokenForm, UserCreateForm, UserUpdateForm
from core.models import ApiToken
from core.roles import RoleRequiredMixin, has_role, user_role

User = get_user_model()


class AuditEventListView(RoleRequiredMixin, FilterView):
    filterset_class = AuditEventFilterSet
    template_name = "core/auditevent_list.html"
    paginate_by = 50


class ApiTokenListView(RoleRequiredMixin, TemplateView):
    """The signed-in user's own API tokens: create (shown once) and revoke."""

    template_name = "core/apitoken_list.html"
    write_role = Role.VIEWER

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", ApiTokenForm())
        return super().get_context_data(tokens=ApiToken.objects.filter(user=self.request.user), **kwargs)

    def post(self, request):
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            try:
                token, raw = services.create_api_token(request.user, request=request, **form.cleaned_data)
            except Refused as exc:
                form.add_error(exc.field, exc.message)
            else:
                # Rendered in this one response and never again: only its hash is kept.
                return self.render_to_response(self.get_context_data(new_token=raw, new_token_row=token))
        return self.render_to_response(self.get_context_data(form=form), status=400)


class ApiTokenRevokeView(RoleRequiredMixin, TemplateView):
    write_role = Role.VIEWER
    http_method_names = ["post"]

    def post(self, request, pk):
        tokens = (
            ApiToken.objects.all() if has_role(request.user, Role.ADMIN) else ApiToken.objects.filter(user=request.user)
        )
        token = get_object_or_404(tokens, pk=pk)
        services.revoke_api_token(request.user, token, request=request)
        messages.success(request, f"Token “{token.name}” revoked; it no longer works.")
        return redirect("apitoken_list")


class UserListView(RoleRequiredMixin, TemplateView):
    template_name = "core/user_list.html"
    required_role = Role.ADMIN
    write_role = Role.ADMIN

    def get_context_data(self, **kwargs):
        users = User.objects.prefetch_related("groups").order_by("username")
        rows = [
            (
                user,
                user_role(user),
                UserUpdateForm(initial={"role": user_role(user), "is_active": user.is_active}, prefix=f"u{user.pk}"),
            )
            for user in users
        ]
        kwargs.setdefault("form", UserCreateForm())
        return super().get_context_data(rows=rows, **kwargs)

    def post(self, request):
        form = UserCreateForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form), status=400)
        user = services.create_user(request.user, request=request, **form.cleaned_data)
        messages.success(request, f"User {user.username} created as {form.cleaned_data['role']}.")
        return redirect("user_list")


class UserUpdateView(RoleRequiredMixin, TemplateView):
    required_role = Role.ADMIN
    write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request, pk):
        user = get_object_or_404(User, pk=pk)
        form = UserUpdateForm(request.POST, prefix=f"u{user.pk}")
        if not form.is_valid():
            messages.error(request, f"{user.username}: " + "; ".join(e for errs in form.errors.values() for e in errs))
        else:
            try:
                services.update_user(
                    request.user,
                    user,
                    role=Role(form.cleaned_data["role"]),
                    is_active=form.cleaned_data["is_active"],
                    request=request,
                )
            except Refused as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, f"User {user.username} updated.")
        return redirect(reverse("user_list"))
