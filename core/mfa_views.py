"""The sign-in in two steps, and the second-factor pages: one's own (set up, recovery codes, remove) and the admins'
(the security policy, resetting another person's second factor). The rules live in core.mfa."""

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views import View
from django.views.generic import TemplateView
from django_otp import login as otp_login
from django_otp.plugins.otp_static.models import StaticDevice

from core import mfa
from core.choices import Role
from core.errors import ReauthenticationRequired, Refused
from core.mfa_forms import CodeForm, CurrentCodeForm, SecurityPolicyForm, SetupCodeForm
from core.models import SecurityPolicy
from core.roles import RoleRequiredMixin
from core.views import RecentAuthenticationMixin

User = get_user_model()


class SignInView(auth_views.LoginView):
    """The password step, as Django's LoginView (django-axes counts its failures through authenticate()). A person
    with a second factor is not signed in yet: only their id waits in the session until the code step.

    Why not sign in and let a middleware hold the session back until the code is given: then every part of the
    portal that asks "is this request signed in?" (DRF's session authentication, each view's checks, the session
    list, the receivers of user_logged_in, axes' reset on success) would answer yes for a person who has given one
    factor of two, and one path the middleware forgets would let them through. Kept out of the session, such a
    person is anonymous everywhere until both factors are given; the middleware (core.mfa_middleware) remains as a
    second line for sessions signed in by other means and for the set-up a role requires."""

    redirect_authenticated_user = True

    def form_valid(self, form):
        user = form.get_user()
        if not mfa.is_exempt(user) and mfa.has_second_factor(user):
            mfa.begin_code_step(self.request, user, self.get_success_url())
            return redirect("mfa_verify")
        return super().form_valid(form)


class MfaVerifyView(TemplateView):
    """The code step: the authenticator's code or a recovery code. Wrong codes are audited and count towards the
    sign-in lock-out with the password failures (core.mfa.record_failure)."""

    template_name = "registration/mfa_verify.html"

    def waiting(self):
        """(user, backend or None, next URL): the sign-in waiting for its code, or a signed-in session that still
        owes one; None when there is nothing to verify."""
        pending = mfa.pending_sign_in(self.request)
        if pending is not None:
            return pending
        request = self.request
        if request.user.is_authenticated and mfa.session_state(request) == mfa.STATE_VERIFY:
            url = request.POST.get("next") or request.GET.get("next") or ""
            safe = url_has_allowed_host_and_scheme(url, {request.get_host()}, request.is_secure())
            return request.user, None, url if safe else reverse("dashboard")
        return None

    def dispatch(self, request, *args, **kwargs):
        self.who = self.waiting()
        if self.who is None:
            if request.user.is_authenticated:
                return redirect("dashboard")
            messages.info(request, _("Sign in again: the code step lasts five minutes."))
            return redirect("login")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        kwargs.setdefault("form", CodeForm())
        user, backend, next_url = self.who
        return super().get_context_data(signing_in=user, next=next_url if backend is None else "", **kwargs)

    def locked_out(self, request, user):
        mfa.cancel_code_step(request)
        # django-axes' middleware (last in MIDDLEWARE) turns the answer into its lock-out page.
        request.axes_locked_out = True
        request.axes_credentials = {"username": user.get_username()}
        return self.render_to_response(self.get_context_data(), status=429)

    def post(self, request):
        user, backend, next_url = self.who
        if mfa.is_locked_out(request, user):
            return self.locked_out(request, user)
        form = CodeForm(request.POST)
        if form.is_valid():
            try:
                device = mfa.check_code(user, form.cleaned_data["code"])
            except Refused as exc:
                if mfa.record_failure(request, user, "wrong code"):
                    return self.locked_out(request, user)
                form.add_error("code", exc.message)
            else:
                if backend is not None:
                    # django-otp's user_logged_in receiver records the device: the new session is verified.
                    user.otp_device = device
                    auth_login(request, user, backend=backend)
                else:
                    otp_login(request, device)
                    mfa.set_session_state(request, mfa.STATE_OK)
                if isinstance(device, StaticDevice):
                    left = mfa.recovery_codes_left(user)
                    messages.warning(
                        request,
                        ngettext(
                            "You signed in with a recovery code; %(count)s is left. Make new ones on the "
                            "two-factor page if you are running out.",
                            "You signed in with a recovery code; %(count)s are left. Make new ones on the "
                            "two-factor page if you are running out.",
                            left,
                        )
                        % {"count": left},
                    )
                return redirect(next_url)
        return self.render_to_response(self.get_context_data(form=form), status=400)


class MfaSettingsView(LoginRequiredMixin, TemplateView):
    """One's own second factor: whether it is on, recovery codes left, new codes, removal."""

    template_name = "registration/mfa_settings.html"

    def get_context_data(self, **kwargs):
        user = self.request.user
        device = mfa.totp_device(user)
        kwargs.setdefault("form", CurrentCodeForm())
        return super().get_context_data(
            device=device,
            exempt=mfa.is_exempt(user),
            required=mfa.is_required(user),
            codes_left=mfa.recovery_codes_left(user) if device else 0,
            **kwargs,
        )


class MfaSetupView(RecentAuthenticationMixin, LoginRequiredMixin, TemplateView):
    """Set up the authenticator: a new secret as a QR code and as text, confirmed by its first code; then the ten
    recovery codes, shown once."""

    template_name = "registration/mfa_setup.html"

    def dispatch(self, request, *args, **kwargs):
        if request.user.is_authenticated and (mfa.is_exempt(request.user) or mfa.has_second_factor(request.user)):
            return redirect("mfa_settings")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs):
        user = self.request.user
        key = mfa.setup_key(self.request)
        kwargs.setdefault("form", SetupCodeForm())
        return super().get_context_data(
            qr_code=mfa.qr_code_data_url(mfa.provisioning_uri(user, key)),
            secret=mfa.base32_secret(key),
            required=mfa.session_state(self.request) == mfa.STATE_SETUP,
            **kwargs,
        )

    def post(self, request):
        form = SetupCodeForm(request.POST)
        if form.is_valid():
            try:
                _device, codes = mfa.enable(request, form.cleaned_data["code"])
            except ReauthenticationRequired:
                raise
            except Refused as exc:
                form.add_error("code" if exc.field == "code" else None, exc.message)
            else:
                messages.success(request, _("Two-factor authentication is on."))
                return self.response_class(
                    request, "registration/mfa_recovery_codes.html", {"codes": codes, "first": True}
                )
        return self.render_to_response(self.get_context_data(form=form), status=400)


class MfaRecoveryView(RecentAuthenticationMixin, LoginRequiredMixin, View):
    """New recovery codes (the old ones stop working), shown once."""

    http_method_names = ["post"]

    def post(self, request):
        form = CurrentCodeForm(request.POST)
        if form.is_valid():
            try:
                codes = mfa.regenerate_recovery_codes(request, form.cleaned_data["code"])
            except ReauthenticationRequired:
                raise
            except Refused as exc:
                messages.error(request, exc.message)
            else:
                return TemplateView.response_class(
                    request, "registration/mfa_recovery_codes.html", {"codes": codes, "first": False}
                )
        else:
            messages.error(request, _("Enter a current code to make new recovery codes."))
        return redirect("mfa_settings")


class MfaDisableView(RecentAuthenticationMixin, LoginRequiredMixin, View):
    http_method_names = ["post"]

    def post(self, request):
        form = CurrentCodeForm(request.POST)
        if form.is_valid():
            try:
                mfa.disable(request, form.cleaned_data["code"])
            except ReauthenticationRequired:
                raise
            except Refused as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, _("Two-factor authentication is off; your recovery codes no longer work."))
        else:
            messages.error(request, _("Enter a current code to remove two-factor authentication."))
        return redirect("mfa_settings")


class SecurityPolicyView(RecentAuthenticationMixin, RoleRequiredMixin, TemplateView):
    """Admins: which roles must use a second factor."""

    template_name = "core/securitypolicy_form.html"
    required_role = Role.ADMIN
    write_role = Role.ADMIN

    def get_context_data(self, **kwargs):
        policy = SecurityPolicy.current()
        kwargs.setdefault("form", SecurityPolicyForm(initial={"mfa_required_roles": policy.mfa_required_roles}))
        return super().get_context_data(policy=policy, **kwargs)

    def post(self, request):
        form = SecurityPolicyForm(request.POST)
        if form.is_valid():
            try:
                mfa.set_required_roles(request.user, form.cleaned_data["mfa_required_roles"], request=request)
            except ReauthenticationRequired:
                raise
            except Refused as exc:
                form.add_error("mfa_required_roles", exc.message)
            else:
                messages.success(request, _("Security policy saved; it applies from each person's next sign-in."))
                return redirect("security_policy")
        return self.render_to_response(self.get_context_data(form=form), status=400)


class MfaResetView(RecentAuthenticationMixin, RoleRequiredMixin, View):
    """Admins: remove another person's second factor (a lost phone, no recovery code left)."""

    required_role = Role.ADMIN
    write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request, pk):
        user = get_object_or_404(User, pk=pk)
        try:
            mfa.reset(request.user, user, request=request)
        except ReauthenticationRequired:
            raise
        except Refused as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                _("%(user)s's second factor was removed and their sessions ended; they set up a new one at sign-in.")
                % {"user": user.get_username()},
            )
        return redirect("user_list")
