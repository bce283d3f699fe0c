from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from fleet.models import EndpointGroup
from mirror.models import Mirror
from portal.choices import Role, TokenScope
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule, ApiToken, AuditEvent
from portal.roles import has_role, user_role

User = get_user_model()


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = AuditEvent
        fields = ["id", "created", "actor", "action", "target_type", "target_id", "target_label", "details", "ip_address"]
        read_only_fields = fields


class ApiTokenSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="user.username", read_only=True)
    state = serializers.CharField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "owner", "scope", "hint", "state", "created", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=TokenScope.choices, default=TokenScope.READ)
    expires_in_days = serializers.IntegerField(min_value=1, max_value=3650, required=False, allow_null=True, help_text="Omit for a token that never expires.")


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The token itself. Shown only in this response; store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = ApiTokenSerializer.Meta.fields + ["token"]


class UserSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()
    email = serializers.CharField(read_only=True, help_text="E-mail address, or empty.")

    class Meta:
        model = User
        fields = ["id", "username", "email", "role", "is_active", "last_login", "date_joined"]
        read_only_fields = fields

    def get_role(self, user) -> str | None:
        role = user_role(user)
        return role.value if role else None


class MeSerializer(UserSerializer):
    token_scope = serializers.ChoiceField(choices=TokenScope.choices, read_only=True, allow_null=True,
                                          help_text="The scope of the API token used; null when signed in with a session.")

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "token_scope"]
        read_only_fields = fields


class UserCreateSerializer(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=Role.choices)
    password = serializers.CharField(required=False, write_only=True, style={"input_type": "password"}, help_text="Omit to create an account that cannot sign in until a password is set.")

    def validate_username(self, value):
        if User.objects.filter(username__iexact=value).exists():
            raise serializers.ValidationError("A user with that username already exists.")
        return value

    def validate(self, attrs):
        if attrs.get("password"):
            try:
                validate_password(attrs["password"], User(username=attrs["username"], email=attrs.get("email", "")))
            except DjangoValidationError as exc:
                raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class UserUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    is_active = serializers.BooleanField(required=False)


# --- Alerts -------------------------------------------------------------------------------------


class ModelCleanMixin:
    """Run the model's clean() so that API and UI refuse the same input with the same words
    (as mirror.api.serializers.ModelCleanMixin, leaving many-to-many fields aside)."""

    def validate(self, attrs):
        attrs = super().validate(attrs)
        model = self.Meta.model
        instance = self.instance or model()
        many = {f.name for f in model._meta.many_to_many}
        for name, value in attrs.items():
            if name not in many:
                setattr(instance, name, value)
        try:
            instance.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        # clean() may normalise or clear fields (a scope the rule's kind does not use): take its values.
        for name, field in self.fields.items():
            if not field.read_only and name not in many and (name in attrs or not self.partial):
                attrs[name] = getattr(instance, name)
        return attrs


class AlertChannelSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """A place alerts go: a webhook URL or e-mail addresses."""

    recipients = serializers.ListField(child=serializers.CharField(max_length=254), required=False,
                                       help_text="E-mail channels: the addresses (at most 50). Ignored for webhooks.")
    secret = serializers.SerializerMethodField(help_text="A webhook's signing secret (the HMAC-SHA256 key of X-Portal-Signature), only in "
                                                         "the answer that made it: creation, a change to webhook, rotate-secret. "
                                                         "Store it then; it is null everywhere else.")

    class Meta:
        model = AlertChannel
        fields = ["id", "name", "kind", "url", "recipients", "enabled", "secret_hint", "secret", "created"]
        read_only_fields = ["secret_hint", "created"]
        extra_kwargs = {
            "url": {"help_text": "Webhook channels: the http(s) URL alerts are POSTed to. Ignored for e-mail. "
                                 "Only admins read it whole; other roles get its scheme and host followed by /(hidden)."},
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

    mirror = serializers.SlugRelatedField(slug_field="slug", queryset=Mirror.objects.all(), allow_null=True, required=False,
                                          help_text="sync_failed, sync_overdue: the mirror's slug; null: every mirror.")
    group = serializers.SlugRelatedField(slug_field="slug", queryset=EndpointGroup.objects.all(), allow_null=True, required=False,
                                         help_text="group_compliance_below, endpoints_silent, gate_held: the group's slug; null: every group.")
    channels = serializers.PrimaryKeyRelatedField(many=True, queryset=AlertChannel.objects.all(), required=False,
                                                  help_text="Ids of the channels alerted.")
    condition = serializers.CharField(read_only=True, help_text="The rule in words.")
    firing = serializers.SerializerMethodField(help_text="How many of its alerts are open now.")

    class Meta:
        model = AlertRule
        fields = ["id", "name", "kind", "enabled", "mirror", "group", "hours", "days", "threshold_percent", "min_endpoints", "channels",
                  "renotify_hours", "notify_resolved", "condition", "firing", "created"]
        read_only_fields = ["created"]

    def get_firing(self, rule) -> int:
        if hasattr(rule, "firing"):
            return rule.firing
        return rule.events.filter(state="firing").count()


class AlertEventSerializer(serializers.ModelSerializer):
    rule_name = serializers.CharField(source="rule.name", read_only=True)

    class Meta:
        model = AlertEvent
        fields = ["id", "rule", "rule_name", "subject", "subject_label", "severity", "state", "summary", "details", "url", "started_at",
                  "checked_at", "last_notified_at", "resolved_at"]
        read_only_fields = fields


class AlertDeliverySerializer(serializers.ModelSerializer):
    """One message to one channel and how its attempts went."""

    rule = serializers.IntegerField(source="event.rule_id", default=None, read_only=True, allow_null=True,
                                    help_text="The alert's rule; null for a test.")
    subject = serializers.CharField(read_only=True)
    requested_by = serializers.CharField(source="requested_by.username", default=None, read_only=True, allow_null=True,
                                         help_text="Who sent a test message; null for alerts.")

    class Meta:
        model = AlertDelivery
        fields = ["id", "channel", "channel_name", "event", "rule", "reason", "status", "subject", "attempts", "max_attempts",
                  "response_status", "error", "requested_by", "created", "last_attempt_at", "next_attempt_at", "finished_at", "payload"]
        read_only_fields = fields
