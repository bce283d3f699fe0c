"""One's own account: the My account page, the password change (forced or not), the reset by e-mail; and the admin's
page that sets another user's password. The rules are in core.accounts."""

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import NoReverseMatch, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.generic import TemplateView

from core import accounts
from core.account_forms import PasswordChangeForm, SetPasswordForm
from core.choices import AccountSource, Role
from core.errors import ReauthenticationRequired, Refused
from core.roles import RoleRequiredMixin, user_role
from core.views import RecentAuthenticationMixin

User = get_user_model()


def reverse_or_none(name: str, *args) -> str | None:
    """The URL of ``name``, or None where that page is not installed (a part of the portal another change adds)."""
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _safe_next(request) -> str | None:
    url = request.POST.get("next") or request.GET.get("next") or ""
    return url if url and url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure()) else None


class AccountView(LoginRequiredMixin, TemplateView):
    """Who one is in the portal, and where to change how one signs in."""

    template_name = "core/account.html"

    def get_context_data(self, **kwargs):
        account = accounts.account_of(self.request.user)
        return super().get_context_data(
            account=account,
            source_label=AccountSource(account.source).label,
            role=user_role(self.request.user),
            is_local=account.source == AccountSource.LOCAL,
            mfa_url=reverse_or_none("mfa_settings"),
            sessions_url=reverse_or_none("session_list"),
            **kwargs,
        )


class PasswordChangeView(LoginRequiredMixin, TemplateView):
    """Change one's own password: the current one, then the new one twice. Directory accounts are told where theirs
    is kept instead. Someone who must change theirs is sent here from every page (core.password_middleware)."""

    template_name = "registration/password_change_form.html"

    def get_context_data(self, **kwargs):
        account = accounts.account_of(self.request.user)
        if account.source == AccountSource.LOCAL:
            kwargs.setdefault("form", PasswordChangeForm(self.request.user))
        return super().get_context_data(
            account=account,
            source_label=AccountSource(account.source).label,
            next=_safe_next(self.request) or "",
            **kwargs,
        )

    def post(self, request):
        if not accounts.is_local(request.user):
            return self.render_to_response(self.get_context_data(), status=400)
        form = PasswordChangeForm(request.user, request.POST)
        if form.is_valid():
            try:
                accounts.change_own_password(
                    request, form.cleaned_data["old_password"], form.cleaned_data["new_password1"]
                )
            except Refused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            except ValidationError as exc:
                form.add_error("new_password1", exc)
            else:
                messages.success(request, _("Your password is changed; your other sessions are signed out."))
                return redirect(_safe_next(request) or "password_change_done")
        return self.render_to_response(self.get_context_data(form=form), status=400)


class PasswordChangeDoneView(LoginRequiredMixin, TemplateView):
    template_name = "registration/password_change_done.html"


class UserPasswordView(RecentAuthenticationMixin, RoleRequiredMixin, TemplateView):
    """An admin sets or resets another user's password, optionally to be changed at the next sign-in; left empty,
    a generated one is shown here once."""

    template_name = "core/user_password.html"
    required_role = Role.ADMIN
    write_role = Role.ADMIN

    def get_context_data(self, **kwargs):
        target = self.target
        account = accounts.account_of(target)
        if account.source == AccountSource.LOCAL:
            kwargs.setdefault("form", SetPasswordForm(target))
        return super().get_context_data(
            target=target, account=account, source_label=AccountSource(account.source).label, **kwargs
        )

    def dispatch(self, request, *args, pk, **kwargs):
        self.target = get_object_or_404(User, pk=pk)
        return super().dispatch(request, *args, **kwargs)

    def post(self, request):
        form = SetPasswordForm(self.target, request.POST)
        if form.is_valid():
            try:
                generated = accounts.set_password(
                    request.user,
                    self.target,
                    password=form.cleaned_data["new_password1"] or None,
                    must_change_password=form.cleaned_data["must_change_password"],
                    request=request,
                )
            except ReauthenticationRequired:
                raise
            except Refused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            except ValidationError as exc:
                form.add_error("new_password1", exc)
            else:
                if generated:
                    # Rendered in this one response and never again: only its hash is kept.
                    return self.render_to_response(self.get_context_data(new_password=generated, form=None))
                messages.success(request, _("Password of %(username)s set.") % {"username": self.target.get_username()})
                return redirect("user_list")
        return self.render_to_response(self.get_context_data(form=form), status=400)


# --- Reset by e-mail (Django's views, our templates; only where mail is configured) ---------------------------------


class LocalPasswordResetForm(PasswordResetForm):
    """Django's form never says whether an address exists; it already skips accounts without a usable password, and
    directory accounts are left out by name too: their password is the directory's."""

    def get_users(self, email):
        local = {user for user in super().get_users(email) if accounts.account_of(user).source == AccountSource.LOCAL}
        return iter(local)


class MailConfiguredMixin:
    def dispatch(self, request, *args, **kwargs):
        if not accounts.mail_configured():
            raise Http404(_("Password reset by e-mail is not available: the portal has no mail server (EMAIL_HOST)."))
        return super().dispatch(request, *args, **kwargs)


class PasswordResetView(MailConfiguredMixin, auth_views.PasswordResetView):
    form_class = LocalPasswordResetForm

    def form_valid(self, form):
        # The link names the portal's own address (PORTAL_BASE_URL), never the Host header a request brought.
        base = urlsplit(settings.PORTAL_BASE_URL)
        form.save(
            domain_override=base.netloc,
            use_https=base.scheme == "https",
            token_generator=self.token_generator,
            email_template_name=self.email_template_name,
            subject_template_name=self.subject_template_name,
            request=self.request,
        )
        return redirect(self.get_success_url())


class PasswordResetDoneView(MailConfiguredMixin, auth_views.PasswordResetDoneView):
    pass


class PasswordResetConfirmView(MailConfiguredMixin, auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        # One transaction: the new password is never kept without its audit entry.
        with transaction.atomic():
            response = super().form_valid(form)
            accounts.password_was_reset(form.user, self.request)
        return response


class PasswordResetCompleteView(MailConfiguredMixin, auth_views.PasswordResetCompleteView):
    pass
