from django.db import models


class AlertChannelKind(models.TextChoices):
    WEBHOOK = "webhook", "Webhook (signed JSON POST)"
    EMAIL = "email", "E-mail"


class AlertRuleKind(models.TextChoices):
    """What an alert rule watches (portal.alerts has one check per kind)."""

    SYNC_FAILED = "sync_failed", "A mirror's last sync failed"
    SYNC_OVERDUE = "sync_overdue", "A mirror has not synced successfully for N hours"
    GROUP_COMPLIANCE_BELOW = "group_compliance_below", "A group's up-to-date share is below a threshold"
    ENDPOINTS_SILENT = "endpoints_silent", "Endpoints have been silent for N days"
    GATE_HELD = "gate_held", "A health gate has held a version back for N hours"
    UPSTREAM_WITHDREW = "upstream_withdrew", "The upstream withdrew a version (served an older one)"
    PACKAGE_CONFLICT = "package_conflict", "A package's bytes differ from the upstream's for the same version"
    ENROLLMENT_SURGE = "enrollment_surge", "Many endpoints enrolled in a ring within a short time"


class AlertSeverity(models.TextChoices):
    INFO = "info", "Info"
    WARNING = "warning", "Warning"
    CRITICAL = "critical", "Critical"


class AlertState(models.TextChoices):
    FIRING = "firing", "Firing"
    RESOLVED = "resolved", "Resolved"


class DeliveryReason(models.TextChoices):
    """Why a message was sent."""

    FIRING = "firing", "Alert started"
    REMINDER = "reminder", "Still firing (reminder)"
    RESOLVED = "resolved", "Alert resolved"
    TEST = "test", "Test message"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending (queued or waiting to retry)"
    SENDING = "sending", "Sending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"
