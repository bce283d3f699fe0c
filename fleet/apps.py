from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet"

    def ready(self):
        from fleet.services import rings
        from mirror.services import retention
        from mirror.signals import package_published

        package_published.connect(rings.on_package_published, dispatch_uid="fleet.rollout")
        if rings.referenced_package_ids not in retention.REFERENCE_SOURCES:
            retention.REFERENCE_SOURCES.append(rings.referenced_package_ids)
