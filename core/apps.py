from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What every app shares: roles, users, API tokens, the audit log, settings helpers, generic views."""

    name = "core"
    verbose_name = "Core"

    def ready(self):
        from core import checks  # noqa: F401  registers the system checks
