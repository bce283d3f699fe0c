import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.errors import Refused
from mirror.models import Mirror
from mirror.services.bundles import import_tree
from mirror.store import human_size


class Command(BaseCommand):
    help = (
        "Import the tree Microsoft's download script writes (<dir>/<platform>/<channel>[_back]/arch_<arch>/"
        "{updates.zip,manifest.json}, e.g. from a USB stick) into a mirror: each zip is verified, then published."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--mirror", required=True, help="the mirror's slug")

    def handle(self, directory, mirror, **options):
        found = Mirror.objects.filter(slug=mirror).first()
        if found is None:
            raise CommandError(f"no mirror {mirror!r}")
        try:
            result = import_tree(
                Path(directory).resolve(), found, progress=self.progress if sys.stdout.isatty() else None
            )
        except Refused as exc:
            raise CommandError(f"{directory} refused: {exc.message}") from None
        self.stdout.write(result.summary())
        for package in result.published:
            self.stdout.write(f"  published {package}")
        for package, why in result.not_published:
            self.stdout.write(f"  stored, not published: {package} ({why})")

    def progress(self, done, total, what):
        self.stdout.write(f"  {human_size(done)} of {human_size(total)}: {what}", ending="\r")
