from django.core.management.base import BaseCommand, CommandError

from fleet.models import EndpointGroup
from fleet.services.rings import rebuild_group_tree
from mirror.models import Mirror
from mirror.services.publish import rebuild_tree


class Command(BaseCommand):
    help = (
        "Write every mirror's published tree and its rings' trees again from the database, as plain folders and "
        "files (trees of earlier versions, symlinks into .packages/, are converted)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--mirror", dest="slugs", action="append", help="mirror slug (repeat; default: every one)")

    def handle(self, slugs, **options):
        mirrors = Mirror.objects.order_by("slug")
        if slugs:
            mirrors = mirrors.filter(slug__in=slugs)
            missing = sorted(set(slugs) - set(mirrors.values_list("slug", flat=True)))
            if missing:
                known = ", ".join(Mirror.objects.order_by("slug").values_list("slug", flat=True)) or "none"
                raise CommandError(f"no mirror {', '.join(missing)} (known: {known})")
        for mirror in mirrors:
            targets = rebuild_tree(mirror)
            self.stdout.write(f"{mirror.slug}: {targets} target(s) in {mirror.publish_path}")
            for group in EndpointGroup.objects.filter(mirror=mirror).order_by("slug"):
                rebuild_group_tree(group)
                self.stdout.write(f"  ring {group.slug}: {group.tree_path}")
