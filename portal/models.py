import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.errors import Refused
from core.outbound import check_url
from core.secrets import mask_url
from portal.choices import AlertChannelKind, AlertRuleKind, AlertSeverity, AlertState, DeliveryReason, DeliveryStatus

# --- Alerts (portal.alerts evaluates the rules and sends the messages) ---------------------------

MAX_RECIPIENTS = 50


class AlertChannel(models.Model):
    """Where alerts go: a webhook (JSON POST signed with the channel's secret) or a list of e-mail addresses."""

    SECRET_PREFIX = "whsec_"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=8, choices=AlertChannelKind.choices, default=AlertChannelKind.WEBHOOK)
    url = models.URLField(max_length=500, blank=True, help_text="Webhook: the http(s) URL the portal POSTs to.")
    recipients = models.JSONField(default=list, blank=True, help_text="E-mail: the addresses alerts are sent to.")
    # Kept as given, not hashed: every message is signed with it (HMAC-SHA256). Shown once, on creation or rotation.
    secret = models.CharField(max_length=100, blank=True)
    secret_hint = models.CharField(max_length=16, blank=True)
    enabled = models.BooleanField(
        default=True, help_text="Disabled: alerts are not sent here (a test message still is)."
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        if self.kind == AlertChannelKind.WEBHOOK:
            self.recipients = []
            parts = urlsplit(self.url or "")
            if not self.url:
                errors["url"] = "Give the URL the portal posts alerts to, e.g. https://hooks.example.org/portal."
            elif parts.scheme not in ("http", "https") or not parts.hostname:
                errors["url"] = "Use an http:// or https:// URL with a host name."
            else:
                try:
                    check_url(self.url, "url")  # the outbound policy, at save time too (core.outbound)
                except Refused as refused:
                    errors["url"] = refused.message
        else:
            self.url = ""
            if not isinstance(self.recipients, list) or not self.recipients:
                errors["recipients"] = "Give at least one e-mail address."
            else:
                addresses = [str(item).strip() for item in self.recipients if str(item).strip()]
                bad = []
                for address in addresses:
                    try:
                        validate_email(address)
                    except ValidationError:
                        bad.append(address)
                if bad:
                    errors["recipients"] = f"Not an e-mail address: {', '.join(bad)}."
                elif not addresses:
                    errors["recipients"] = "Give at least one e-mail address."
                elif len(addresses) > MAX_RECIPIENTS:
                    errors["recipients"] = f"At most {MAX_RECIPIENTS} addresses; use a mailing list for more."
                else:
                    self.recipients = list(dict.fromkeys(addresses))  # one order, no duplicates
        if errors:
            raise ValidationError(errors)

    @property
    def target(self) -> str:
        """Where the messages go, in words: the URL or the addresses."""
        return self.url if self.kind == AlertChannelKind.WEBHOOK else ", ".join(self.recipients)

    @property
    def url_redacted(self) -> str:
        """The webhook URL as non-admins see it: scheme and host. Slack- or Teams-style URLs carry
        their credential in the path or query, which only admins (who may change it) see."""
        return mask_url(self.url, secret_path=True)

    @property
    def target_redacted(self) -> str:
        return self.url_redacted if self.kind == AlertChannelKind.WEBHOOK else self.target

    def new_secret(self) -> str:
        """Replace the signing secret; returns it (the caller shows it once)."""
        self.secret = self.SECRET_PREFIX + secrets.token_urlsafe(32)
        self.secret_hint = self.secret[: len(self.SECRET_PREFIX) + 4]
        return self.secret


class AlertRule(models.Model):
    """A condition the portal watches, and the channels told when it starts holding (and when it stops)."""

    # What an admin sets, through the form and the API alike (both list exactly these).
    EDITABLE_FIELDS = (
        "name",
        "kind",
        "enabled",
        "mirror",
        "group",
        "hours",
        "days",
        "threshold_percent",
        "min_endpoints",
        "channels",
        "renotify_hours",
        "notify_resolved",
    )

    # Which of the fields below each kind uses; clean() clears the others.
    FIELDS_BY_KIND = {
        AlertRuleKind.SYNC_FAILED: ("mirror",),
        AlertRuleKind.SYNC_OVERDUE: ("mirror", "hours"),
        AlertRuleKind.GROUP_COMPLIANCE_BELOW: ("group", "threshold_percent"),
        AlertRuleKind.ENDPOINTS_SILENT: ("group", "days", "min_endpoints"),
        AlertRuleKind.GATE_HELD: ("group", "hours"),
        AlertRuleKind.UPSTREAM_WITHDREW: ("mirror",),
        AlertRuleKind.PACKAGE_CONFLICT: ("mirror",),
        AlertRuleKind.ENROLLMENT_SURGE: ("group", "hours", "min_endpoints"),
    }
    REQUIRED = {"hours": "a number of hours", "days": "a number of days", "threshold_percent": "a percentage (0–100)"}

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=24, choices=AlertRuleKind.choices)
    enabled = models.BooleanField(default=True)
    # Empty: every mirror / every group. A watched mirror or group cannot be deleted while a rule
    # names it: its alerting must not disappear without an admin deciding so (and an audit entry).
    mirror = models.ForeignKey(
        "mirror.Mirror",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="alert_rules",
        help_text="Sync rules: the mirror watched; empty: every mirror.",
    )
    group = models.ForeignKey(
        "fleet.EndpointGroup",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="alert_rules",
        help_text="Group rules: the group watched; empty: every group.",
    )
    hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 365)],
        help_text="No successful sync for (sync overdue), or a version held back for (gate held), this many hours.",
    )
    days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text="Endpoints silent: no report for this many days.",
    )
    threshold_percent = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Group compliance: alert below this % of up-to-date endpoints (of those that reported).",
    )
    min_endpoints = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Endpoints silent: alert from this many silent endpoints on.",
    )
    channels = models.ManyToManyField(AlertChannel, blank=True, related_name="rules")
    renotify_hours = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(24 * 30)],
        help_text="While it keeps firing, send a reminder every this many hours; 0: never.",
    )
    notify_resolved = models.BooleanField(default=True, help_text="Send a message when the condition no longer holds.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def clean(self):
        errors = {}
        used = self.FIELDS_BY_KIND.get(self.kind, ())
        # A scope or number the kind does not use is dropped, so the rule says only what it checks.
        if "mirror" not in used:
            self.mirror = None
        if "group" not in used:
            self.group = None
        for name, needed in self.REQUIRED.items():
            if name not in used:
                setattr(self, name, None)
            elif getattr(self, name) is None:
                errors[name] = f"This kind of rule needs {needed}."
        if "min_endpoints" not in used or not self.min_endpoints:
            self.min_endpoints = 1
        if errors:
            raise ValidationError(errors)

    @property
    def condition(self) -> str:
        """The rule in words, e.g. "no successful sync of main for 24 h"."""
        mirror = f"mirror {self.mirror}" if self.mirror_id else "any mirror"
        group = f"group {self.group}" if self.group_id else "any group"
        return {
            AlertRuleKind.SYNC_FAILED: f"the last sync of {mirror} failed",
            AlertRuleKind.SYNC_OVERDUE: f"no successful sync of {mirror} for {self.hours} h",
            AlertRuleKind.GROUP_COMPLIANCE_BELOW: f"fewer than {self.threshold_percent} % of {group}'s endpoints up to date",
            AlertRuleKind.ENDPOINTS_SILENT: f"{self.min_endpoints} or more endpoints of {'the fleet' if not self.group_id else group} "
            f"silent for {self.days} days",
            AlertRuleKind.GATE_HELD: f"a health gate of {group} holds a version back for {self.hours} h",
            AlertRuleKind.UPSTREAM_WITHDREW: f"the upstream of {mirror} withdrew a version it had served",
            AlertRuleKind.ENROLLMENT_SURGE: f"{self.min_endpoints} or more endpoints enrolled in {group} "
            f"within {self.hours} h",
            AlertRuleKind.PACKAGE_CONFLICT: f"an imported package differs from the upstream's of {mirror}, same version",
        }.get(self.kind, self.kind)


class AlertEvent(models.Model):
    """One stretch of time a rule's condition held for one subject (a mirror, a group, a gate): opened once, resolved once."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    # What the condition holds for: "mirror:3", "group:5", "gate:12" (a group target), "fleet".
    subject = models.CharField(max_length=64)
    subject_label = models.CharField(max_length=255)
    severity = models.CharField(max_length=8, choices=AlertSeverity.choices, default=AlertSeverity.WARNING)
    state = models.CharField(max_length=8, choices=AlertState.choices, default=AlertState.FIRING, db_index=True)
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    url = models.CharField(max_length=500, blank=True, help_text="The portal page that shows the problem.")
    started_at = models.DateTimeField(default=timezone.now)
    checked_at = models.DateTimeField(default=timezone.now, help_text="When the condition was last seen holding.")
    last_notified_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # One open alert per rule and subject, even with two evaluators at once (beat and a failed sync).
            models.UniqueConstraint(
                fields=["rule", "subject"],
                condition=Q(state=AlertState.FIRING),
                name="one_firing_alert_per_rule_subject",
            ),
        ]

    def __str__(self):
        return f"{self.rule}: {self.summary}"


class AlertDelivery(models.Model):
    """One message to one channel (an alert starting, a reminder, its end, or a test) and the outcome of every attempt."""

    # Kept when the channel or the rule goes: the delivery log outlives them.
    channel = models.ForeignKey(
        AlertChannel, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries"
    )
    channel_name = models.CharField(max_length=100)
    event = models.ForeignKey(AlertEvent, on_delete=models.SET_NULL, null=True, blank=True, related_name="deliveries")
    reason = models.CharField(max_length=8, choices=DeliveryReason.choices)
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING, db_index=True
    )
    # The message, built once: every attempt sends the same body (receivers can de-duplicate on "delivery").
    payload = models.JSONField(default=dict)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=1)
    response_status = models.PositiveIntegerField(
        null=True, blank=True, help_text="The webhook's HTTP status on the last attempt."
    )
    error = models.TextField(blank=True, help_text="Why the last attempt failed.")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = "alert deliveries"

    def __str__(self):
        return f"{self.get_reason_display()} to {self.channel_name} ({self.status})"

    @property
    def subject(self) -> str:
        return self.payload.get("subject", "")
