import sys

from django.core.management.base import BaseCommand, CommandError

from core.errors import Refused
from mirror.models import Mirror
from mirror.services.bundles import import_bundle
from mirror.store import human_size


class Command(BaseCommand):
    help = (
        "Import a bundle written by export_bundle on another portal: its signature is checked against the trusted "
        "keys, every package against bundle.json, then they are stored and published. Nothing is kept on refusal."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--mirror", help="the mirror to publish on; default: the one of the bundle's slug")

    def handle(self, file, mirror, **options):
        target = None
        if mirror:
            target = Mirror.objects.filter(slug=mirror).first()
            if target is None:
                raise CommandError(f"no mirror {mirror!r}")
        try:
            result = import_bundle(file, target, progress=self.progress if sys.stdout.isatty() else None)
        except Refused as exc:
            raise CommandError(f"{file} refused: {exc.message}") from None
        self.stdout.write(result.summary())
        for package in result.published:
            self.stdout.write(f"  published {package}")
        for package, why in result.not_published:
            self.stdout.write(f"  stored, not published: {package} ({why})")

    def progress(self, done, total, what):
        self.stdout.write(f"  {human_size(done)} of {human_size(total)}: {what}", ending="\r")
