from pathlib import Path

from mirror.management.importing import ImportCommand
from mirror.services.bundles import import_tree


class Command(ImportCommand):
    help = (
        "Import the tree Microsoft's download script writes (<dir>/<platform>/<channel>[_back]/arch_<arch>/"
        "{updates.zip,manifest.json}, e.g. from a USB stick) into a mirror: each zip is verified, then published."
    )

    def add_arguments(self, parser):
        parser.add_argument("directory")
        parser.add_argument("--mirror", required=True, help="the mirror's slug")

    def handle(self, directory, mirror, **options):
        self.run_import(directory, import_tree, Path(directory).resolve(), self.mirror_named(mirror))
