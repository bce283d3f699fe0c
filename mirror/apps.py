from django.apps import AppConfig


class MirrorConfig(AppConfig):
    name = "mirror"
    verbose_name = "Mirror"

    def ready(self):
        from mirror import audit_labels, labels

        audit_labels.register()
        labels.register()
