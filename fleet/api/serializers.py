from rest_framework import serializers

from core.api.serializers import ModelCleanMixin
from fleet.choices import ApprovalAction, GateState
from fleet.models import (
    ApprovalEvent,
    Endpoint,
    EndpointChange,
    EndpointGroup,
    EnrollmentSecret,
    HealthReport,
    IdentityConflict,
)
from mirror.choices import Arch, Channel, Platform
from mirror.models import Mirror, SignaturePackage


class GroupSerializer(ModelCleanMixin, serializers.ModelSerializer):
    """An endpoint group (ring): its mirror and platforms, its rollout rule and the policy of its managed configuration."""

    mirror = serializers.SlugRelatedField(
        slug_field="slug", queryset=Mirror.objects.all(), help_text="The mirror's slug."
    )
    platforms = serializers.ListField(
        child=serializers.ChoiceField(choices=Platform.choices),
        allow_empty=False,
        help_text="Platforms of the group's endpoints; each must be synced by the mirror.",
    )
    source_group = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=EndpointGroup.objects.all(),
        allow_null=True,
        required=False,
        help_text="For rollout 'after': the slug of the ring this one follows.",
    )
    urls = serializers.SerializerMethodField(help_text="offlineDefinitionUpdateUrl per platform.")
    tree_path = serializers.CharField(read_only=True, help_text="The group's tree on the portal's disk.")

    class Meta:
        model = EndpointGroup
        fields = ["id", *EndpointGroup.EDITABLE_FIELDS, "urls", "tree_path", "created", "updated"]
        read_only_fields = ["created", "updated"]

    def get_urls(self, group) -> dict[str, str]:
        return {platform: group.definition_url(platform) for platform in group.platforms}


class PackageBriefSerializer(serializers.ModelSerializer):
    class Meta:
        model = SignaturePackage
        fields = ["id", "definition_version", "engine_version", "sha256", "size"]
        read_only_fields = fields


class TargetStatusSerializer(serializers.Serializer):
    """One entry of rings.group_status: what the group serves for a target, n-1 and the rollout verdict."""

    platform = serializers.ChoiceField(choices=Platform.choices)
    channel = serializers.ChoiceField(choices=Channel.choices)
    arch = serializers.ChoiceField(choices=Arch.choices)
    url = serializers.CharField(help_text="offlineDefinitionUpdateUrl of the group for this platform.")
    current = PackageBriefSerializer(allow_null=True, help_text="The approved package the group serves, or null.")
    previous = PackageBriefSerializer(allow_null=True, help_text="n-1: the package a rollback returns to, or null.")
    approved_at = serializers.DateTimeField(allow_null=True)
    approved_by = serializers.CharField(allow_null=True, help_text="Username, or null for the rollout rule.")
    gate_state = serializers.ChoiceField(choices=GateState.choices)
    gate_reason = serializers.CharField(allow_blank=True, help_text="Why the rollout rule waits, or what it last did.")
    candidate = PackageBriefSerializer(
        allow_null=True, help_text="The package the rollout rule waits to approve, or null."
    )
    checked_at = serializers.DateTimeField(allow_null=True)
    withdrawn = serializers.CharField(
        allow_blank=True,
        help_text="When the upstream withdrew the version the group serves: what happened and what to do; else ''.",
    )


class PromoteResultSerializer(TargetStatusSerializer):
    """The next ring's slug and its status entry for the promoted target."""

    group = serializers.CharField(help_text="Slug of the next ring, which now serves the package.")


class ApproveSerializer(serializers.Serializer):
    package = serializers.PrimaryKeyRelatedField(
        queryset=SignaturePackage.objects.all(), help_text="Id of the package to serve."
    )
    expected_current = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Id of the package you saw approved (null: none). When given and the "
        "group now serves something else, the request is refused with 409.",
    )


class TargetActionSerializer(serializers.Serializer):
    """Promote or roll back one target of the group (the channel is the group's)."""

    platform = serializers.ChoiceField(choices=Platform.choices)
    arch = serializers.ChoiceField(choices=Arch.choices)
    expected_current = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text="Id of the package you saw approved in the ring being changed (null: none); "
        "a mismatch is refused with 409.",
    )


class ConfigImportSerializer(serializers.Serializer):
    content = serializers.CharField(
        required=False, trim_whitespace=False, help_text="The text of an mdatp_managed.json."
    )
    file = serializers.FileField(required=False, help_text="An mdatp_managed.json, instead of content.")

    def validate(self, attrs):
        if bool(attrs.get("content")) == bool(attrs.get("file")):
            raise serializers.ValidationError(
                {"content": ["Give the file's text as content, or upload it as file (one of the two)."]}
            )
        if attrs.get("file"):
            raw = attrs["file"].read(1_000_001)
            if len(raw) > 1_000_000:
                raise serializers.ValidationError(
                    {"file": ["An mdatp_managed.json is a few hundred bytes; this file is over 1 MB."]}
                )
            try:
                attrs["content"] = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise serializers.ValidationError({"file": ["The file is not UTF-8 text."]}) from None
        return attrs


class ConfigImportFileSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="An mdatp_managed.json.")


class ConfigImportTextSerializer(serializers.Serializer):
    content = serializers.CharField(help_text="The text of an mdatp_managed.json.")


class ConfigImportResultSerializer(serializers.Serializer):
    warnings = serializers.ListField(
        child=serializers.CharField(), help_text="What was not taken as is (misspelled or unmanaged keys)."
    )
    group = GroupSerializer(help_text="The group with the imported policy.")


class ApprovalEventSerializer(serializers.ModelSerializer):
    group = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    action = serializers.ChoiceField(choices=ApprovalAction.choices, read_only=True)
    actor = serializers.CharField(source="actor_label", read_only=True)

    class Meta:
        model = ApprovalEvent
        fields = [
            "id",
            "group",
            "platform",
            "channel",
            "arch",
            "action",
            "package",
            "definition_version",
            "engine_version",
            "replaced_version",
            "actor",
            "reason",
            "created",
        ]
        read_only_fields = fields


class EndpointSerializer(serializers.ModelSerializer):
    group = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Endpoint
        fields = [
            "id",
            "machine_id",
            "hostname",
            "group",
            "platform",
            "arch",
            "enrolled_at",
            "decommissioned_at",
            "last_seen",
            "app_version",
            "engine_version",
            "definitions_version",
            "definitions_status",
            "definitions_updated_at",
            "update_source_uri",
            "offline_url_configured",
            "fail_reason",
            "offline_update",
            "verify_sig",
            "fallback_to_cloud",
            "automatic_updates",
            "enforcement_level",
            "healthy",
            "compliance",
            "findings",
            "reports_received",
            "managed_config_problem",
            "managed_config_checked_at",
        ]
        read_only_fields = fields


class EndpointMoveSerializer(serializers.Serializer):
    group = serializers.SlugRelatedField(slug_field="slug", queryset=EndpointGroup.objects.select_related("mirror"))


class EndpointBulkSerializer(serializers.Serializer):
    """Several endpoints at once, as the list's checkboxes: all of them or none (fleet.services.endpoints)."""

    action = serializers.ChoiceField(choices=["move", "decommission"])
    endpoints = serializers.ListField(child=serializers.IntegerField(min_value=1), allow_empty=False, max_length=500)
    group = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=EndpointGroup.objects.select_related("mirror"),
        required=False,
        help_text="The group to move them to (action move).",
    )


class HealthReportSerializer(serializers.ModelSerializer):
    parsed = serializers.DictField(read_only=True, help_text="The raw body read again by the current parser.")
    raw = serializers.CharField(read_only=True, help_text="The body as the endpoint sent it.")

    class Meta:
        model = HealthReport
        fields = ["id", "received_at", "form", "definitions_version", "compliance", "finding_codes", "parsed", "raw"]
        read_only_fields = fields


class EndpointChangeSerializer(serializers.ModelSerializer):
    changes = serializers.DictField(
        read_only=True, help_text="What changed, {field: [before, after]}; before is null for a first report."
    )

    class Meta:
        model = EndpointChange
        fields = ["id", "at", "changes"]
        read_only_fields = fields


class EnrollmentSecretSerializer(serializers.ModelSerializer):
    group = serializers.SlugRelatedField(slug_field="slug", queryset=EndpointGroup.objects.all())
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True, allow_null=True)

    class Meta:
        model = EnrollmentSecret
        fields = [
            "id",
            "group",
            "name",
            "hint",
            "created",
            "created_by",
            "expires_at",
            "revoked_at",
            "last_used_at",
            "enrollments",
            "max_enrollments",
        ]
        read_only_fields = ["hint", "created", "created_by", "revoked_at", "last_used_at", "enrollments"]


class IdentityConflictSerializer(serializers.ModelSerializer):
    endpoint = serializers.PrimaryKeyRelatedField(read_only=True)
    machine_id = serializers.CharField(source="endpoint.machine_id", read_only=True)
    endpoint_hostname = serializers.CharField(source="endpoint.hostname", read_only=True)
    endpoint_group = serializers.CharField(source="endpoint.group.slug", read_only=True)
    group = serializers.SlugRelatedField(slug_field="slug", read_only=True, help_text="The group of the secret used.")
    decided_by = serializers.CharField(source="decided_by.username", default=None, read_only=True, allow_null=True)

    class Meta:
        model = IdentityConflict
        fields = [
            "id",
            "endpoint",
            "machine_id",
            "endpoint_hostname",
            "endpoint_group",
            "group",
            "secret_hint",
            "hostname",
            "platform",
            "arch",
            "app_version",
            "client_address",
            "was_decommissioned",
            "state",
            "created",
            "decided_at",
            "decided_by",
            "note",
        ]
        read_only_fields = fields


class EnrollmentSecretCreatedSerializer(EnrollmentSecretSerializer):
    secret = serializers.CharField(read_only=True, help_text="Shown once: only its hash is stored.")

    class Meta(EnrollmentSecretSerializer.Meta):
        fields = [*EnrollmentSecretSerializer.Meta.fields, "secret"]
