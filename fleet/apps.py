from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet"

    def ready(self):
        from fleet import labels, receivers
        from fleet.services import rings
        from mirror.signals import collect_package_references, package_published, package_usage, package_withdrawn

        labels.register()
        # mirror tells and asks through its signals; it never imports fleet.
        package_published.connect(rings.on_package_published, dispatch_uid="fleet.rollout")
        package_withdrawn.connect(rings.on_package_withdrawn, dispatch_uid="fleet.withdrawal")
        collect_package_references.connect(receivers.package_references, dispatch_uid="fleet.package_references")
        package_usage.connect(receivers.package_usage, dispatch_uid="fleet.package_usage")
        package_usage.connect(receivers.package_approval, dispatch_uid="fleet.package_approval")
