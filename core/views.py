"""The shared pages: the audit log, one's own API tokens, and users (admins)."""

from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views import View
from django.views.generic import TemplateView
from django_filters.views import FilterView

from core import accounts, services
from core.choices import Role
from core.errors import ReauthenticationRequired, Refused
from core.filtersets import AuditEventFilterSet
from core.forms import ApiTokenForm, ReauthenticateForm, UserCreateForm, UserUpdateForm
from core.middleware import UserLanguageMiddleware
from core.models import ApiToken, AuditEvent, UserPreference
from core.roles import RoleRequiredMixin, has_role, user_role
from core.sorting import ordered

User = get_user_model()


class ReauthenticateView(LoginRequiredMixin, TemplateView):
    """Give one's password again before changing users or tokens ("sudo mode"; core.services, issue 14, item 7)."""

    template_name = "registration/reauthenticate.html"

    def next_url(self):
        url = self.request.POST.get("next") or self.request.GET.get("next") or ""
        safe = url_has_allowed_host_and_scheme(url, {self.request.get_host()}, self.request.is_secure())
        return url if safe else reverse("dashboard")

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", ReauthenticateForm())
        return super().get_context_data(next=self.next_url(), **kwargs)

    def post(self, request):
        form = ReauthenticateForm(request.POST)
        if form.is_valid():
            try:
                services.confirm_password(request, form.cleaned_data["password"])
            except Refused as exc:
                form.add_error("password", exc.message)
            else:
                messages.success(request, _("Password confirmed: you can change users and tokens for a few minutes."))
                return redirect(self.next_url())
        return self.render_to_response(self.get_context_data(form=form), status=400)


class RecentAuthenticationMixin:
    """A change the service refuses for want of a recently given password sends the person to the confirmation
    page, which brings them back here."""

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        except ReauthenticationRequired:
            messages.info(request, _("Confirm your password to change users or tokens, then do it again."))
            # Back to the page the form was on (a user's row posts to /users/<pk>/, which has no page of its own).
            referer = request.META.get("HTTP_REFERER", "")
            safe = url_has_allowed_host_and_scheme(referer, {request.get_host()}, request.is_secure())
            back = urlsplit(referer).path if referer and safe else request.path
            return redirect(f"{reverse('reauthenticate')}?{urlencode({'next': back})}")


class AuditEventListView(RoleRequiredMixin, FilterView):
    filterset_class = AuditEventFilterSet
    template_name = "core/auditevent_list.html"
    paginate_by = 50
    # The columns people sort by, named as the API's ``ordering`` names them (core.api.views).
    SORTING = {"created": "created", "actor_label": "actor_label", "action": "action"}

    def get_queryset(self):
        return ordered(AuditEvent.objects.all(), self.request, self.SORTING, "-created")


class ApiTokenListView(RecentAuthenticationMixin, RoleRequiredMixin, TemplateView):
    """The signed-in user's own API tokens: create (shown once) and revoke."""

    template_name = "core/apitoken_list.html"
    write_role = Role.VIEWER
    SORTING = {"name": "name", "created": "created", "expires_at": "expires_at", "last_used_at": "last_used_at"}

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", ApiTokenForm())
        tokens = ordered(ApiToken.objects.filter(user=self.request.user), self.request, self.SORTING, "-created")
        return super().get_context_data(tokens=tokens, **kwargs)

    def post(self, request):
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            try:
                token, raw = services.create_api_token(request.user, request=request, **form.cleaned_data)
            except ReauthenticationRequired:
                raise
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
        messages.success(request, _("Token “%(name)s” revoked; it no longer works.") % {"name": token.name})
        return redirect("apitoken_list")


class UserListView(RecentAuthenticationMixin, RoleRequiredMixin, TemplateView):
    template_name = "core/user_list.html"
    required_role = Role.ADMIN
    write_role = Role.ADMIN
    SORTING = {"username": "username", "email": "email", "last_login": "last_login", "date_joined": "date_joined"}

    def get_context_data(self, **kwargs):
        users = ordered(
            User.objects.select_related("account").prefetch_related("groups"), self.request, self.SORTING, "username"
        )
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
        # Without a password, one is generated and must be changed at the first sign-in (core.accounts).
        user, generated = accounts.create_local_user(request.user, request=request, **form.cleaned_data)
        created = _("User %(username)s created as %(role)s.") % {
            "username": user.username,
            "role": Role(form.cleaned_data["role"]).label,
        }
        if generated:
            # Rendered in this one response and never again: only its hash is kept.
            return self.render_to_response(
                self.get_context_data(new_password=generated, new_user=user, created_message=created)
            )
        messages.success(request, created)
        return redirect("user_list")


class UserUpdateView(RecentAuthenticationMixin, RoleRequiredMixin, TemplateView):
    required_role = Role.ADMIN
    write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request, pk):
        user = get_object_or_404(User, pk=pk)
        form = UserUpdateForm(request.POST, prefix=f"u{user.pk}")
        if not form.is_valid():
            errors = "; ".join(str(e) for errs in form.errors.values() for e in errs)
            messages.error(request, _("%(username)s: %(errors)s") % {"username": user.username, "errors": errors})
        else:
            try:
                services.update_user(
                    request.user,
                    user,
                    role=Role(form.cleaned_data["role"]),
                    is_active=form.cleaned_data["is_active"],
                    request=request,
                )
            except ReauthenticationRequired:
                raise
            except Refused as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, _("User %(username)s updated.") % {"username": user.username})
        return redirect(reverse("user_list"))


class LanguageView(View):
    """Choose the portal's language: kept for the signed-in person (core.UserPreference) and in the language
    cookie, so the sign-in page speaks it too. An empty choice goes back to following the browser."""

    def post(self, request):
        language = request.POST.get("language", "")
        if language not in {"", *dict(settings.LANGUAGES)}:
            # Plain text: what was sent is quoted back, never drawn as HTML.
            return HttpResponseBadRequest(
                _("Unknown language %(language)r: choose one of %(choices)s.")
                % {"language": language[:16], "choices": ", ".join(dict(settings.LANGUAGES))},
                content_type="text/plain; charset=utf-8",
            )
        url = request.POST.get("next") or ""
        if not url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure()):
            url = reverse("dashboard")
        response = redirect(url)
        if request.user.is_authenticated:
            UserPreference.objects.update_or_create(user=request.user, defaults={"language": language})
            request.session[UserLanguageMiddleware.SESSION_KEY] = language
        if language:
            response.set_cookie(
                settings.LANGUAGE_COOKIE_NAME,
                language,
                max_age=365 * 24 * 3600,
                samesite="Lax",
                secure=request.is_secure(),
            )
        else:
            response.delete_cookie(settings.LANGUAGE_COOKIE_NAME)
        return response
