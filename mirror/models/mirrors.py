import os
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from core.errors import Refused
from core.outbound import PROXY_SCHEMES, check_url
from core.secrets import mask_url
from mirror.choices import Arch, Channel, Platform, UpstreamKind
from mirror.targets import Target

MICROSOFT_BASE_URL = "https://go.microsoft.com/fwlink/"
LINK_IDS = {Platform.LINUX: "2144709", Platform.MAC: "2120136"}
# /mirror/<these>/ are the mirror pages (mirror/urls.py), so no mirror may be named so.
RESERVED_SLUGS = ("groups", "new", "runs", "packages", "upstreams", "bundles")


class Upstream(models.Model):
    """Where packages come from: Microsoft's fwlink endpoint, or another mirror's tree."""

    # What an admin sets, through the form and the API alike (both list exactly these).
    EDITABLE_FIELDS = (
        "name",
        "kind",
        "base_url",
        "linux_link_id",
        "mac_link_id",
        "proxy_url",
        "verify_tls",
        "ca_bundle",
        "timeout",
    )

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=12, choices=UpstreamKind.choices, default=UpstreamKind.MICROSOFT)
    base_url = models.URLField(
        max_length=500,
        default=MICROSOFT_BASE_URL,
        help_text=_("Microsoft: the fwlink URL. Mirror: the URL above <platform>/<channel>/arch_<arch>/."),
    )
    linux_link_id = models.CharField(max_length=16, default=LINK_IDS[Platform.LINUX])
    mac_link_id = models.CharField(max_length=16, default=LINK_IDS[Platform.MAC])
    proxy_url = models.CharField(max_length=500, blank=True, help_text=_("e.g. http://user:password@proxy:3128"))
    verify_tls = models.BooleanField(default=True)
    ca_bundle = models.CharField(
        max_length=500, blank=True, help_text=_("Path of a PEM bundle to trust instead of the system's.")
    )
    timeout = models.PositiveIntegerField(
        default=60, help_text=_("Seconds without data before a request is abandoned.")
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if self.proxy_url and self.proxy_url.split("://", 1)[0] not in PROXY_SCHEMES:
            errors["proxy_url"] = _("Use http://, https:// or socks5:// followed by host:port.")
        if self.ca_bundle and not self.ca_bundle.startswith("/"):
            errors["ca_bundle"] = _("Give an absolute path to a PEM file.")
        # The outbound policy at save time (it is checked again on every connection): http(s) only, so ftp:// is
        # refused like file://, and no address the policy refuses (OUTBOUND_ALLOWED_NETWORKS).
        for field, schemes in (("base_url", ("http", "https")), ("proxy_url", PROXY_SCHEMES)):
            if field not in errors and getattr(self, field):
                try:
                    check_url(getattr(self, field), field, schemes)
                except Refused as refused:
                    errors[field] = refused.message
        if errors:
            raise ValidationError(errors)

    @property
    def masked_base_url(self) -> str:
        return mask_url(self.base_url)

    @property
    def masked_proxy_url(self) -> str:
        return mask_url(self.proxy_url)

    def link_id(self, platform: str) -> str:
        return self.linux_link_id if platform == Platform.LINUX else self.mac_link_id


class Mirror(models.Model):
    """A hosted tree in Microsoft's layout, synced from an upstream on a schedule."""

    # What an admin sets, through the form and the API alike (both list exactly these).
    EDITABLE_FIELDS = (
        "name",
        "slug",
        "upstream",
        "platforms",
        "channels",
        "archs",
        "keep_previous",
        "enabled",
        "sync_interval_minutes",
        "retention",
        "publish_root",
        "public_base_url",
    )

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=50, unique=True)
    upstream = models.ForeignKey(Upstream, on_delete=models.PROTECT, related_name="mirrors")
    platforms = models.JSONField(default=list)
    channels = models.JSONField(default=list)
    archs = models.JSONField(default=list)
    keep_previous = models.BooleanField(
        default=True, help_text=_("Publish the previous package under <channel>_back/ (n-1).")
    )
    enabled = models.BooleanField(default=True)
    sync_interval_minutes = models.PositiveIntegerField(default=60, help_text=_("0: sync only when asked."))
    retention = models.PositiveIntegerField(
        default=5, help_text=_("Packages kept per target (referenced ones are always kept).")
    )
    publish_root = models.CharField(
        max_length=500, blank=True, help_text=_("Directory of the published tree; empty: <store>/published/<slug>.")
    )
    public_base_url = models.URLField(
        max_length=500, blank=True, help_text=_("URL of the published tree for endpoints; empty: served by the portal.")
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if self.slug == "groups":
            errors["slug"] = _("'groups' is reserved: /mirror/groups/ serves the rings' trees.")
        elif self.slug in RESERVED_SLUGS:
            errors["slug"] = _(
                "'%(slug)s' is reserved: /mirror/%(slug)s/ is one of the portal's pages; choose another."
            ) % {"slug": self.slug}
        for field, valid in (("platforms", Platform.values), ("channels", Channel.values), ("archs", Arch.values)):
            value = getattr(self, field)
            if not isinstance(value, list) or not value:
                errors[field] = _("Choose at least one of %(valid)s.") % {"valid": ", ".join(valid)}
            elif unknown := [item for item in value if item not in valid]:
                errors[field] = _("Unknown %(what)s %(unknown)s; choose from %(valid)s.") % {
                    "what": field[:-1],
                    "unknown": ", ".join(map(str, unknown)),
                    "valid": ", ".join(valid),
                }
            else:
                setattr(self, field, [item for item in valid if item in value])  # one order, no duplicates
        if self.publish_root:
            root = Path(self.publish_root)
            if not root.is_absolute():
                errors["publish_root"] = _("Give an absolute path.")
            else:
                existing = next((parent for parent in (root, *root.parents) if parent.exists()), None)
                if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
                    errors["publish_root"] = _("%(path)s cannot be created or written by the portal.") % {"path": root}
        if errors:
            raise ValidationError(errors)

    def targets(self) -> list[Target]:
        return [Target(p, c, a) for p in self.platforms for c in self.channels for a in self.archs]

    @property
    def publish_path(self) -> Path:
        return Path(self.publish_root) if self.publish_root else settings.PORTAL_STORE_ROOT / "published" / self.slug

    @property
    def base_url(self) -> str:
        """The URL above <platform>/<channel>/ that endpoints are given."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/") + "/"
        return f"{settings.PORTAL_BASE_URL}/mirror/{self.slug}/"

    def definition_url(self, platform: str, channel: str) -> str:
        """The value of offlineDefinitionUpdateUrl for this mirror (DESIGN §2.2: ends in '/', no arch_)."""
        return f"{self.base_url}{platform}/{channel}/"


class Publication(models.Model):
    """What a mirror serves for one target right now: the current package and the previous one (n-1)."""

    mirror = models.ForeignKey(Mirror, on_delete=models.CASCADE, related_name="publications")
    platform = models.CharField(max_length=8, choices=Platform.choices)
    channel = models.CharField(max_length=12, choices=Channel.choices)
    arch = models.CharField(max_length=8, choices=Arch.choices)
    current = models.ForeignKey("mirror.SignaturePackage", on_delete=models.PROTECT, related_name="+")
    previous = models.ForeignKey(
        "mirror.SignaturePackage", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    published_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["mirror", "platform", "channel", "arch"]
        constraints = [
            models.UniqueConstraint(
                fields=["mirror", "platform", "channel", "arch"], name="one_publication_per_mirror_target"
            )
        ]

    def __str__(self):
        return f"{self.mirror.slug}/{self.platform}/{self.channel}/arch_{self.arch}"
