from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.errors import Refused
from mirror.models import Mirror
from mirror.services.bundles import export_bundle, own_public_key
from mirror.store import human_size


class Command(BaseCommand):
    help = (
        "Write a mirror's packages (current and n-1 of every target, or the packages named) as one signed bundle "
        "file, to carry to an air-gapped portal and import there with import_bundle."
    )

    def add_arguments(self, parser):
        parser.add_argument("--mirror", required=True, help="the mirror's slug")
        parser.add_argument("--package", type=int, action="append", help="a package id (repeat); default: all")
        parser.add_argument("-o", "--output", required=True, type=Path, help="the bundle file to write")

    def handle(self, mirror, package, output, **options):
        found = Mirror.objects.filter(slug=mirror).first()
        if found is None:
            known = ", ".join(Mirror.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no mirror {mirror!r} (known: {known})")
        try:
            bundle = export_bundle(found, package)
            bundle.write(output)
        except Refused as exc:
            raise CommandError(exc.message) from None
        except OSError as exc:
            raise CommandError(f"{output}: {exc.strerror or exc}") from None
        key = own_public_key()
        self.stdout.write(
            f"bundle {bundle.id}: {len(bundle.packages)} package(s) of {found.slug}, {human_size(bundle.size)}, "
            f"written to {output}"
        )
        self.stdout.write(f"signed by this portal's key {key.fingerprint} (public key {key.public_key})")
