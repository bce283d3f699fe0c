"""The second factor's pages (core.mfa_views); the sign-in itself keeps its name ``login`` in core/urls.py."""

from django.urls import path

from core import mfa_views

urlpatterns = [
    path("login/code/", mfa_views.MfaVerifyView.as_view(), name="mfa_verify"),
    path("account/mfa/", mfa_views.MfaSettingsView.as_view(), name="mfa_settings"),
    path("account/mfa/setup/", mfa_views.MfaSetupView.as_view(), name="mfa_setup"),
    path("account/mfa/recovery-codes/", mfa_views.MfaRecoveryView.as_view(), name="mfa_recovery"),
    path("account/mfa/remove/", mfa_views.MfaDisableView.as_view(), name="mfa_disable"),
    path("users/security/", mfa_views.SecurityPolicyView.as_view(), name="security_policy"),
    path("users/<int:pk>/mfa-reset/", mfa_views.MfaResetView.as_view(), name="mfa_reset"),
]
