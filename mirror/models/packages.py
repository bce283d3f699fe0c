import json

from django.db import models
from django.utils import timezone

from mirror.choices import Arch, Channel, PackageSource, Platform
from mirror.targets import Target


class SignaturePackage(models.Model):
    """One verified signature package (updates.zip) for one target; its file is stored once by sha256 and never changed."""

    platform = models.CharField(max_length=8, choices=Platform.choices)
    channel = models.CharField(max_length=12, choices=Channel.choices)
    arch = models.CharField(max_length=8, choices=Arch.choices)
    engine_version = models.CharField(max_length=32)
    definition_version = models.CharField(max_length=32)
    signatures_date = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    source = models.CharField(max_length=8, choices=PackageSource.choices, default=PackageSource.DOWNLOAD)
    source_url = models.CharField(max_length=1000, blank=True)
    downloaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-downloaded_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "channel", "arch", "engine_version", "definition_version"],
                name="one_package_per_target_version",
            ),
        ]

    def __str__(self):
        return f"{self.platform}/{self.channel}/{self.arch} {self.definition_version} (engine {self.engine_version})"

    @property
    def target(self) -> Target:
        return Target(self.platform, self.channel, self.arch)

    @property
    def path(self):
        from mirror.store import blob_path

        return blob_path(self.sha256)

    def manifest(self) -> dict:
        # Exactly the two keys of the layout Microsoft's script and endpoints read.
        return {"EngineVersion": self.engine_version, "DefinitionVersion": self.definition_version}

    def manifest_bytes(self) -> bytes:
        """manifest.json byte for byte as Microsoft's download script writes it (DESIGN §4.11): ``jq -n`` prints the
        object with a 2-space indent, and ``echo "$json_data" >`` adds one newline (microsoft/mdatp-xplat,
        linux/definition_downloader/xplat_offline_updates_download.sh)."""
        return (json.dumps(self.manifest(), indent=2, ensure_ascii=False) + "\n").encode()
