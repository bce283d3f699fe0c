"""What import_bundle and import_tree share: running an import service and saying what it did, one line each."""

import sys

from django.core.management.base import BaseCommand, CommandError

from core.errors import Refused
from mirror.models import Mirror
from mirror.store import human_size


class ImportCommand(BaseCommand):
    def mirror_named(self, slug):
        found = Mirror.objects.filter(slug=slug).first()
        if found is None:
            raise CommandError(f"no mirror {slug!r}")
        return found

    def run_import(self, what, service, *args):
        """``service(*args, progress=...)``; a refusal is one readable line and a non-zero exit."""
        try:
            result = service(*args, progress=self.progress if sys.stdout.isatty() else None)
        except Refused as exc:
            raise CommandError(f"{what} refused: {exc.message}") from None
        self.stdout.write(result.summary())
        for package in result.published:
            self.stdout.write(f"  published {package}")
        for package, why in result.not_published:
            self.stdout.write(f"  stored, not published: {package} ({why})")

    def progress(self, done, total, what):
        self.stdout.write(f"  {human_size(done)} of {human_size(total)}: {what}", ending="\r")
