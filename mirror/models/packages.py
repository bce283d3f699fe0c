import json

from django.db import models
from django.utils import timezone

from core.secrets import mask_url
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
    # Provenance (DESIGN §4.8): a download names its upstream and the URL its bytes came from; an import says what
    # was imported and by whom ("upload updates.zip, imported by alice", "bundle … signed by …").
    source = models.CharField(max_length=8, choices=PackageSource.choices, default=PackageSource.DOWNLOAD)
    source_url = models.CharField(max_length=1000, blank=True)
    upstream = models.ForeignKey("mirror.Upstream", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # On an imported package whose version the upstream served with other bytes: the upstream's package of that
    # version, which the sync published instead. Both stay, for the record.
    conflicts_with = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    downloaded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-downloaded_at", "-id"]
        constraints = [
            # One downloaded and at most one imported package per version: an import never takes the upstream's
            # place, and a sync that finds other bytes upstream keeps both (mirror.services.sync).
            models.UniqueConstraint(
                fields=["platform", "channel", "arch", "engine_version", "definition_version", "source"],
                name="one_package_per_target_version_source",
            ),
        ]

    def __str__(self):
        return f"{self.platform}/{self.channel}/{self.arch} {self.definition_version} (engine {self.engine_version})"

    @property
    def provenance(self) -> str:
        """Where the bytes came from, for a person: the upstream and URL, or who imported what."""
        if self.source == PackageSource.IMPORT:
            return f"imported: {self.source_url or 'unknown'}"
        upstream = f"upstream {self.upstream.name}" if self.upstream_id else "upstream"
        # Masked (core.secrets): the URL is the upstream's base_url's, credentials and all.
        return f"downloaded from {upstream}: {mask_url(self.source_url) or 'unknown URL'}"

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
