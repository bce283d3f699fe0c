from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self):
        from mirror.signals import sync_finished
        from portal import alerts, checks, labels  # noqa: F401 - checks registers the start-up checks

        labels.register()

        sync_finished.connect(alerts.on_sync_finished, dispatch_uid="portal.alerts.sync_finished")
