from rest_framework import serializers

from core.api.serializers import ModelCleanMixin
from core.choices import Role
from core.roles import has_role
from fleet.models import EndpointGroup
from mirror.models import Mirror
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule

# --- Alerts -------------------------------------------------------------------------------------


class AlertChannelSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """A place alerts go: a webhook URL or e-mail addresses."""

    recipients = serializers.ListField(
        child=serializers.CharField(max_length=254),
        required=False,
        help_text="E-mail channels: the addresses (at most 50). Ignored for webhooks.",
    )
    secret = serializers.SerializerMethodField(
        help_text="A webhook's signing secret (the HMAC-SHA256 key of X-Portal-Signature), only in "
        "the answer that made it: creation, a change to webhook, rotate-secret. "
        "Store it then; it is null everywhere else."
    )

    class Meta:
        model = AlertChannel
        fields = ["id", "name", "kind", "url", "recipients", "enabled", "secret_hint", "secret", "created"]
        read_only_fields = ["secret_hint", "created"]
        extra_kwargs = {
            "url": {
                "help_text": "Webhook channels: the http(s) URL alerts are POSTed to. Ignored for e-mail. "
                "Only admins read it whole; other roles get its scheme and host followed by /(hidden)."
            },
            "secret_hint": {"help_text": "The first characters of the webhook's signing secret."},
        }

    def get_secret(self, channel) -> str | None:
        # Set by the view on the one answer that may show it; the stored secret is never read back here.
        return getattr(channel, "shown_secret", None)

    def to_representation(self, channel):
        data = super().to_representation(channel)
        request = self.context.get("request")
        if data.get("url") and not (request is not None and has_role(request.user, Role.ADMIN)):
            data["url"] = channel.url_redacted  # a webhook URL may hold its credential: only admins read it whole
        return data


class AlertRuleSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """A condition the portal watches and the channels it alerts. Fields a kind does not use are cleared."""

    mirror = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Mirror.objects.all(),
        allow_null=True,
        required=False,
        help_text="sync_failed, sync_overdue, upstream_withdrew, package_conflict: the mirror's slug; null: every mirror.",
    )
    group = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=EndpointGroup.objects.all(),
        allow_null=True,
        required=False,
        help_text="group_compliance_below, endpoints_silent, gate_held, enrollment_surge: the group's slug; null: every group.",
    )
    channels = serializers.PrimaryKeyRelatedField(
        many=True, queryset=AlertChannel.objects.all(), required=False, help_text="Ids of the channels alerted."
    )
    condition = serializers.CharField(read_only=True, help_text="The rule in words.")
    firing = serializers.SerializerMethodField(help_text="How many of its alerts are open now.")

    class Meta:
        model = AlertRule
        fields = ["id", *AlertRule.EDITABLE_FIELDS, "condition", "firing", "created"]
        read_only_fields = ["created"]

    def get_firing(self, rule) -> int:
        if hasattr(rule, "firing"):
            return rule.firing
        return rule.events.filter(state="firing").count()


class AlertEventSerializer(serializers.ModelSerializer):
    rule_name = serializers.CharField(source="rule.name", read_only=True)

    class Meta:
        model = AlertEvent
        fields = [
            "id",
            "rule",
            "rule_name",
            "subject",
            "subject_label",
            "severity",
            "state",
            "summary",
            "details",
            "url",
            "started_at",
            "checked_at",
            "last_notified_at",
            "resolved_at",
        ]
        read_only_fields = fields


class AlertDeliverySerializer(serializers.ModelSerializer):
    """One message to one channel and how its attempts went."""

    rule = serializers.IntegerField(
        source="event.rule_id",
        default=None,
        read_only=True,
        allow_null=True,
        help_text="The alert's rule; null for a test.",
    )
    subject = serializers.CharField(read_only=True)
    requested_by = serializers.CharField(
        source="requested_by.username",
        default=None,
        read_only=True,
        allow_null=True,
        help_text="Who sent a test message; null for alerts.",
    )

    class Meta:
        model = AlertDelivery
        fields = [
            "id",
            "channel",
            "channel_name",
            "event",
            "rule",
            "reason",
            "status",
            "subject",
            "attempts",
            "max_attempts",
            "response_status",
            "error",
            "requested_by",
            "created",
            "last_attempt_at",
            "next_attempt_at",
            "finished_at",
            "payload",
        ]
        read_only_fields = fields
