from mirror.management.importing import ImportCommand
from mirror.services.bundles import import_bundle


class Command(ImportCommand):
    help = (
        "Import a bundle written by export_bundle on another portal: its signature is checked against the trusted "
        "keys, every package against bundle.json, then they are stored and published. Nothing is kept on refusal."
    )

    def add_arguments(self, parser):
        parser.add_argument("file")
        parser.add_argument("--mirror", help="the mirror to publish on; default: the one of the bundle's slug")

    def handle(self, file, mirror, **options):
        self.run_import(file, import_bundle, file, self.mirror_named(mirror) if mirror else None)
