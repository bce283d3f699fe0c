import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

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
    url = models.URLField(
        max_length=500, blank=True, help_text=gettext_lazy("Webhook: the http(s) URL the portal POSTs to.")
    )
    recipients = models.JSONField(
        default=list, blank=True, help_text=gettext_lazy("E-mail: the addresses alerts are sent to.")
    )
    # Kept as given, not hashed: every message is signed with it (HMAC-SHA256). Shown once, on creation or rotation.
    secret = models.CharField(max_length=100, blank=True)
    secret_hint = models.CharField(max_length=16, blank=True)
    enabled = models.BooleanField(
        default=True, help_text=gettext_lazy("Disabled: alerts are not sent here (a test message still is).")
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
                errors["url"] = _("Give the URL the portal posts alerts to, e.g. https://hooks.example.org/portal.")
            elif parts.scheme not in ("http", "https") or not parts.hostname:
                errors["url"] = _("Use an http:// or https:// URL with a host name.")
            else:
                try:
                    check_url(self.url, "url")  # the outbound policy, at save time too (core.outbound)
                except Refused as refused:
                    errors["url"] = refused.message
        else:
            self.url = ""
            if not isinstance(self.recipients, list) or not self.recipients:
                errors["recipients"] = _("Give at least one e-mail address.")
            else:
                addresses = [str(item).strip() for item in self.recipients if str(item).strip()]
                bad = []
                for address in addresses:
                    try:
                        validate_email(address)
                    except ValidationError:
                        bad.append(address)
                if bad:
                    errors["recipients"] = _("Not an e-mail address: %(addresses)s.") % {"addresses": ", ".join(bad)}
                elif not addresses:
                    errors["recipients"] = _("Give at least one e-mail address.")
                elif len(addresses) > MAX_RECIPIENTS:
                    errors["recipients"] = _("At most %(count)d addresses; use a mailing list for more.") % {
                        "count": MAX_RECIPIENTS
                    }
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
    REQUIRED = {
        "hours": gettext_lazy("a number of hours"),
        "days": gettext_lazy("a number of days"),
        "threshold_percent": gettext_lazy("a percentage (0–100)"),
    }

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
        help_text=gettext_lazy("Sync rules: the mirror watched; empty: every mirror."),
    )
    group = models.ForeignKey(
        "fleet.EndpointGroup",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="alert_rules",
        help_text=gettext_lazy("Group rules: the group watched; empty: every group."),
    )
    hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 365)],
        help_text=gettext_lazy(
            "No successful sync for (sync overdue), or a version held back for (gate held), this many hours."
        ),
    )
    days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text=gettext_lazy("Endpoints silent: no report for this many days."),
    )
    threshold_percent = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text=gettext_lazy(
            # xgettext:no-python-format ("% of" is a percent sign, not a placeholder)
            "Group compliance: alert below this % of up-to-date endpoints (of those that reported)."
        ),
    )
    min_endpoints = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text=gettext_lazy("Endpoints silent: alert from this many silent endpoints on."),
    )
    channels = models.ManyToManyField(AlertChannel, blank=True, related_name="rules")
    renotify_hours = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(24 * 30)],
        help_text=gettext_lazy("While it keeps firing, send a reminder every this many hours; 0: never."),
    )
    notify_resolved = models.BooleanField(
        default=True, help_text=gettext_lazy("Send a message when the condition no longer holds.")
    )
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
                errors[name] = _("This kind of rule needs %(what)s.") % {"what": needed}
        if "min_endpoints" not in used or not self.min_endpoints:
            self.min_endpoints = 1
        if errors:
            raise ValidationError(errors)

    @property
    def condition(self) -> str:
        """The rule in words, e.g. "no successful sync of mirror main for 24 h", in the active language (messages
        to channels are built in the portal's own: portal.alerts.build_payload)."""
        words = {
            "mirror": _("mirror %(name)s") % {"name": self.mirror} if self.mirror_id else _("any mirror"),
            "group": _("group %(name)s") % {"name": self.group} if self.group_id else _("any group"),
            "hours": self.hours,
            "days": self.days,
            "percent": self.threshold_percent,
            "count": self.min_endpoints,
        }
        if self.kind == AlertRuleKind.ENDPOINTS_SILENT and not self.group_id:
            words["group"] = _("the fleet")
        sentence = {
            AlertRuleKind.SYNC_FAILED: _("the last sync of %(mirror)s failed"),
            AlertRuleKind.SYNC_OVERDUE: _("no successful sync of %(mirror)s for %(hours)s h"),
            AlertRuleKind.GROUP_COMPLIANCE_BELOW: _(
                "fewer than %(percent)s %% of the endpoints of %(group)s up to date"
            ),
            AlertRuleKind.ENDPOINTS_SILENT: _("%(count)s or more endpoints of %(group)s silent for %(days)s days"),
            AlertRuleKind.GATE_HELD: _("a health gate of %(group)s holds a version back for %(hours)s h"),
            AlertRuleKind.UPSTREAM_WITHDREW: _("the upstream of %(mirror)s withdrew a version it had served"),
            AlertRuleKind.ENROLLMENT_SURGE: _("%(count)s or more endpoints enrolled in %(group)s within %(hours)s h"),
            AlertRuleKind.PACKAGE_CONFLICT: _(
                "an imported package differs from the upstream's of %(mirror)s, same version"
            ),
        }.get(self.kind)
        return sentence % words if sentence else self.kind


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
    url = models.CharField(
        max_length=500, blank=True, help_text=gettext_lazy("The portal page that shows the problem.")
    )
    started_at = models.DateTimeField(default=timezone.now)
    checked_at = models.DateTimeField(
        default=timezone.now, help_text=gettext_lazy("When the condition was last seen holding.")
    )
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
        null=True, blank=True, help_text=gettext_lazy("The webhook's HTTP status on the last attempt.")
    )
    error = models.TextField(blank=True, help_text=gettext_lazy("Why the last attempt failed."))
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now, db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        verbose_name_plural = gettext_lazy("alert deliveries")

    def __str__(self):
        return f"{self.get_reason_display()} to {self.channel_name} ({self.status})"

    @property
    def subject(self) -> str:
        return self.payload.get("subject", "")
