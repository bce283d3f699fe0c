from django.db import models
from django.utils.translation import gettext_lazy as _


class Platform(models.TextChoices):
    LINUX = "linux", "Linux"
    MAC = "mac", "macOS"


class Channel(models.TextChoices):
    # Microsoft's names for the two rings of offline updates (xplat_offline_updates_download.sh, engRing/sigRing).
    PRODUCTION = "production", _("Production")
    PREVIEW = "preview", _("Preview")


class Arch(models.TextChoices):
    X86_64 = "x86_64", "x86_64"
    ARM64 = "arm64", "arm64"


class UpstreamKind(models.TextChoices):
    MICROSOFT = "microsoft", _("Microsoft (fwlink)")
    MIRROR = "mirror", _("Another mirror (manifest.json tree)")


class SyncTrigger(models.TextChoices):
    SCHEDULE = "schedule", _("Schedule")
    MANUAL = "manual", _("Manual (UI)")
    API = "api", "API"
    CLI = "cli", _("Command line")


class SyncState(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    PARTIAL = "partial", _("Partly failed")
    FAILED = "failed", _("Failed")


ACTIVE_SYNC_STATES = (SyncState.QUEUED, SyncState.RUNNING)


class TargetOutcome(models.TextChoices):
    NEW = "new", _("New version")
    WITHDRAWN = "withdrawn", _("Withdrawn upstream (an older version is served again)")
    UNCHANGED = "unchanged", _("Unchanged")
    FAILED = "failed", _("Failed")


class SyncErrorKind(models.TextChoices):
    """Why a sync (or one of its targets) failed; mirror.errors turns one into a sentence."""

    REFUSED = "refused", _("Connection refused")
    UNREACHABLE = "unreachable", _("Host unreachable")
    DNS = "dns", _("Name does not resolve")
    CONNECT_TIMEOUT = "connect_timeout", _("No answer to the connection")
    TIMEOUT = "timeout", _("Timed out")
    RESET = "reset", _("Connection cut")
    CERTIFICATE = "certificate", _("Certificate not trusted")
    TLS = "tls", _("TLS error")
    POLICY = "policy", _("Refused by the outbound policy")
    PROXY = "proxy", _("Proxy error")
    HTTP = "http", _("HTTP error status")
    HTML = "html", _("Web page instead of a package")
    MANIFEST = "manifest", _("Unreadable manifest")
    INCOMPLETE = "incomplete", _("Download cut short")
    CHECKSUM = "checksum", _("Checksum mismatch")
    ZIP = "zip", _("Not a valid package zip")
    STORE = "store", _("Store not writable")
    STOPPED = "stopped", _("Stopped by the worker's shutdown")
    LOST = "lost", _("Worker lost")
    NOT_TAKEN = "not_taken", _("No worker took it")
    INTERNAL = "internal", _("Internal error")
    OTHER = "other", _("Other failure")


class PackageSource(models.TextChoices):
    DOWNLOAD = "download", _("Downloaded")
    IMPORT = "import", _("Imported")
