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
            services,
        )

        audit_labels.register()

        # A sign-in is a password just given: it opens the "recent authentication" window (issue 14, item 7).
        user_logged_in.connect(
            lambda sender, request, user, **kwargs: services.mark_authenticated(request),
            dispatch_uid="core.mark_authenticated",
            weak=False,
        )
