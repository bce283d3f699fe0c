from django.db import models


class Platform(models.TextChoices):
    LINUX = "linux", "Linux"
    MAC = "mac", "macOS"


class Channel(models.TextChoices):
    PRODUCTION = "production", "Production"
    PREVIEW = "preview", "Preview"


class Arch(models.TextChoices):
    X86_64 = "x86_64", "x86_64"
    ARM64 = "arm64", "arm64"


class UpstreamKind(models.TextChoices):
    MICROSOFT = "microsoft", "Microsoft (fwlink)"
    MIRROR = "mirror", "Another mirror (manifest.json tree)"


class SyncTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    MANUAL = "manual", "Manual (UI)"
    API = "api", "API"
    CLI = "cli", "Command line"


class SyncState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    PARTIAL = "partial", "Partly failed"
    FAILED = "failed", "Failed"


ACTIVE_SYNC_STATES = (SyncState.QUEUED, SyncState.RUNNING)


class TargetOutcome(models.TextChoices):
    NEW = "new", "New version"
    WITHDRAWN = "withdrawn", "Withdrawn upstream (an older version is served again)"
    UNCHANGED = "unchanged", "Unchanged"
    FAILED = "failed", "Failed"


class PackageSource(models.TextChoices):
    DOWNLOAD = "download", "Downloaded"
    IMPORT = "import", "Imported"
