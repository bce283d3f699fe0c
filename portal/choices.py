from django.db import models
from django.utils.translation import gettext_lazy as _


class AlertChannelKind(models.TextChoices):
    WEBHOOK = "webhook", _("Webhook (signed JSON POST)")
    EMAIL = "email", _("E-mail")


class AlertRuleKind(models.TextChoices):
    """What an alert rule watches (portal.alerts has one check per kind)."""

    SYNC_FAILED = "sync_failed", _("A mirror's last sync failed")
    SYNC_OVERDUE = "sync_overdue", _("A mirror has not synced successfully for N hours")
    GROUP_COMPLIANCE_BELOW = "group_compliance_below", _("A group's up-to-date share is below a threshold")
    ENDPOINTS_SILENT = "endpoints_silent", _("Endpoints have been silent for N days")
    GATE_HELD = "gate_held", _("A health gate has held a version back for N hours")
    UPSTREAM_WITHDREW = "upstream_withdrew", _("The upstream withdrew a version (served an older one)")
    PACKAGE_CONFLICT = "package_conflict", _("A package's bytes differ from the upstream's for the same version")
    ENROLLMENT_SURGE = "enrollment_surge", _("Many endpoints enrolled in a ring within a short time")


class AlertSeverity(models.TextChoices):
    INFO = "info", _("Info")
    WARNING = "warning", _("Warning")
    CRITICAL = "critical", _("Critical")


class AlertState(models.TextChoices):
    FIRING = "firing", _("Firing")
    RESOLVED = "resolved", _("Resolved")


class DeliveryReason(models.TextChoices):
    """Why a message was sent."""

    FIRING = "firing", _("Alert started")
    REMINDER = "reminder", _("Still firing (reminder)")
    RESOLVED = "resolved", _("Alert resolved")
    TEST = "test", _("Test message")


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending (queued or waiting to retry)")
    SENDING = "sending", _("Sending")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")
