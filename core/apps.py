from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app shares: roles, users, API tokens, the audit log, settings helpers, generic views."""

    name = "core"
    verbose_name = "Core"

    def ready(self):
        from django.contrib.auth.signals import user_logged_in

        from core import (
            audit_labels,
            checks,  # noqa: F401  registers the system checks
            ldap,  # noqa: F401  registers the LDAP settings check
            services,
        )

        audit_labels.register()

        # A sign-in is a password just given: it opens the "recent authentication" window (issue 14, item 7).
        user_logged_in.connect(
            lambda sender, request, user, **kwargs: services.mark_authenticated(request),
            dispatch_uid="core.mark_authenticated",
            weak=False,
        )
        # Each signed-in session a row, and every sign-in, failure and sign-out in the audit log (core.sessions).
        from django.contrib.auth.signals import user_logged_out, user_login_failed

        from core import sessions

        user_logged_in.connect(sessions.on_signed_in, dispatch_uid="core.sessions.signed_in")
        user_logged_out.connect(sessions.on_signed_out, dispatch_uid="core.sessions.signed_out")
        user_login_failed.connect(sessions.on_sign_in_failed, dispatch_uid="core.sessions.sign_in_failed")
        # What the new session owes for the second factor, worked out once (core.mfa, core.mfa_middleware).
        from core import mfa

        user_logged_in.connect(mfa.on_sign_in, dispatch_uid="core.mfa_on_sign_in")
