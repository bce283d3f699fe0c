from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from core.choices import Role, TokenScope
from core.models import ApiToken, AuditEvent
from core.roles import user_role

User = get_user_model()


class ModelCleanMixin:
    """Run the model's clean() so that the API and the UI refuse the same input with the same words.

    Many-to-many fields are left aside (they are set after the save); clean() sees the rest and may
    normalise or clear fields (a scope a rule's kind does not use), and the serializer takes its values.
    """

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
        # Every writable field on a full create or replace, the given ones on a partial update.
        for name, field in self.fields.items():
            if not field.read_only and name not in many and (name in attrs or not self.partial):
                attrs[name] = getattr(instance, name)
        return attrs


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_label", read_only=True)
    details = serializers.JSONField(
        source="shown_details", read_only=True, help_text="What changed; secrets masked (docs/security.md)."
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created",
            "actor",
            "action",
            "target_type",
            "target_id",
            "target_label",
            "details",
            "ip_address",
        ]
        read_only_fields = fields


class ApiTokenSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="user.username", read_only=True)
    state = serializers.CharField(read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "owner",
            "scope",
            "hint",
            "state",
            "created",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = fields


class ApiTokenCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=TokenScope.choices, default=TokenScope.READ)
    expires_in_days = serializers.IntegerField(
        min_value=1, max_value=3650, required=False, allow_null=True, help_text="Omit for a token that never expires."
    )


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.CharField(
        read_only=True, help_text="The token itself. Shown only in this response; store it now."
    )

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
    token_scope = serializers.ChoiceField(
        choices=TokenScope.choices,
        read_only=True,
        allow_null=True,
        help_text="The scope of the API token used; null when signed in with a session.",
    )

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "token_scope"]
        read_only_fields = fields


class UserCreateSerializer(serializers.Serializer):
    username = serializers.RegexField(r"^[\w.@+-]+\Z", max_length=150)
    email = serializers.EmailField(required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=Role.choices)
    password = serializers.CharField(
        required=False,
        write_only=True,
        style={"input_type": "password"},
        help_text="Omit to create an account that cannot sign in until a password is set.",
    )

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
