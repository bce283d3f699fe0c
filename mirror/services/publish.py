"""Publishing: a package becomes a mirror's current one for its target, the one it replaces n-1.

The rows say what is served; mirror.tree writes the tree on disk that endpoints read.
"""

from django.db import transaction
from django.utils import timezone

from mirror import tree
from mirror.models import Mirror, Publication, SignaturePackage
from mirror.signals import package_published


def publish(mirror: Mirror, package: SignaturePackage) -> Publication:
    """Make ``package`` the mirror's current one for its target; the one it replaces becomes n-1."""
    platform, channel, arch = package.target
    # The row lock serialises two publishers of one target (a sync and an import).
    with transaction.atomic():
        publication = (
            Publication.objects.select_for_update()
            .filter(mirror=mirror, platform=platform, channel=channel, arch=arch)
            .first()
        )
        if publication and publication.current_id == package.pk:
            return publication
        previous = publication.current if publication else None
        if previous is not None and previous.manifest() == package.manifest():
            # The same version from another source (the upstream's in place of an import): n-1 stays what it was.
            previous = publication.previous
        if not mirror.keep_previous:
            previous = None
        # Disk first: if the swap fails, the database still describes what is served.
        tree.publish_target(mirror.publish_path, package.target, package, previous, keep_back=mirror.keep_previous)
        if publication is None:
            publication = Publication(mirror=mirror, platform=platform, channel=channel, arch=arch)
        publication.current, publication.previous, publication.published_at = package, previous, timezone.now()
        publication.save()
    # The rings' trees below the mirror's too: crash leftovers, and trees of earlier versions converted.
    tree.collect_garbage(mirror.publish_path)
    package_published.send(sender=Mirror, mirror=mirror, package=package)
    return publication


def rebuild_tree(mirror: Mirror) -> int:
    """Write the mirror's tree again from its publications (what the rows say it serves); returns how many targets.

    A tree written by an earlier version (symlinks into ``.packages/``) comes out as plain folders; a target
    already right is left as it is.
    """
    count = 0
    for pk in Publication.objects.filter(mirror=mirror).values_list("pk", flat=True):
        # The same row lock as publish(): a rebuild never interleaves with a publication of the target.
        with transaction.atomic():
            row = Publication.objects.select_for_update(of=("self",)).select_related("current", "previous").get(pk=pk)
            tree.publish_target(
                mirror.publish_path, row.current.target, row.current, row.previous, keep_back=mirror.keep_previous
            )
        count += 1
    tree.collect_garbage(mirror.publish_path)
    return count
