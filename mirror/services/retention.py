"""Retention: old packages leave the store, except those something serves or may roll back to."""

from django.db.models import Max

from core.services import record_event
from mirror import tree
from mirror.models import Mirror, Publication, SignaturePackage
from mirror.signals import collect_package_references


def referenced_package_ids() -> set[int]:
    """Packages that something serves or may serve again: never pruned."""
    ids = set()
    for current, previous in Publication.objects.values_list("current_id", "previous_id"):
        ids.update(filter(None, (current, previous)))
    # The other apps answer with what they serve (fleet: the packages approved for rings), so that
    # retention never removes a package someone serves or may roll back to.
    for _receiver, referenced in collect_package_references.send(sender=SignaturePackage):
        ids.update(referenced or ())
    return ids


def prune_packages(actor=None) -> dict:
    """Keep the newest N packages per target (N: the largest retention of the mirrors holding it)."""
    keep_ids = referenced_package_ids()
    retention = Mirror.objects.aggregate(n=Max("retention"))["n"] or 5
    removed, freed = [], 0
    targets = SignaturePackage.objects.values_list("platform", "channel", "arch").distinct()
    for platform, channel, arch in targets:
        packages = list(
            SignaturePackage.objects.filter(platform=platform, channel=channel, arch=arch).order_by(
                "-downloaded_at", "-id"
            )
        )
        for package in packages[retention:]:
            if package.pk in keep_ids:
                continue
            path = package.path
            sha256 = package.sha256
            package.delete()
            if not SignaturePackage.objects.filter(sha256=sha256).exists() and path.exists():
                freed += path.stat().st_size
                path.unlink()
            removed.append(str(package))
    for mirror in Mirror.objects.all():
        tree.collect_garbage(mirror.publish_path)
    summary = {"removed": len(removed), "bytes_freed": freed, "packages": removed}
    if removed:
        record_event(actor, "package.prune", None, {"removed": len(removed), "bytes_freed": freed})
    return summary
