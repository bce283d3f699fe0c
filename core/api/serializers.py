from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.accounts import account_of
from core.choices import AccountSource, Role, TokenScope
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
    source = serializers.SerializerMethodField(
        help_text="Where the identity comes from: local (a portal password), oidc or ldap (a directory)."
    )
    must_change_password = serializers.SerializerMethodField(
        help_text="The user must change their password before anything else (set by an admin, or generated)."
    )

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "role",
            "is_active",
            "last_login",
            "date_joined",
            "source",
            "must_change_password",
        ]
        read_only_fields = fields

    def get_role(self, user) -> str | None:
        role = user_role(user)
        return role.value if role else None

    @extend_schema_field(serializers.ChoiceField(choices=AccountSource.choices))
    def get_source(self, user) -> str:
        return account_of(user).source

    def get_must_change_password(self, user) -> bool:
        return account_of(user).must_change_password


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
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Omit to have one generated: it is returned once in the response (`password`), and must be "
        "changed at the first sign-in.",
    )
    must_change_password = serializers.BooleanField(
        default=False, help_text="The user must change the given password at the first sign-in."
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


class UserCreatedSerializer(UserSerializer):
    # Not the model's ``password`` (its hash): the plaintext the service generated, set on the instance by the view.
    password = serializers.CharField(
        source="generated_password",
        read_only=True,
        allow_null=True,
        default=None,
        help_text="The generated password when none was given: shown only in this response. Null otherwise.",
    )

    class Meta(UserSerializer.Meta):
        fields = [*UserSerializer.Meta.fields, "password"]
        read_only_fields = fields


class SetPasswordSerializer(serializers.Serializer):
    """An admin sets another user's password (POST /api/v1/users/{id}/set-password/)."""

    password = serializers.CharField(
        required=False,
        write_only=True,
        trim_whitespace=False,
        style={"input_type": "password"},
        help_text="Omit to have one generated: returned once in the response, and to be changed at the next sign-in.",
    )
    must_change_password = serializers.BooleanField(
        default=False, help_text="The user must change it at the next sign-in (always so for a generated one)."
    )

    def validate_password(self, value):
        try:
            validate_password(value, self.context["user"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError(list(exc.messages)) from None
        return value


class UserUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices, required=False)
    is_active = serializers.BooleanField(required=False)
