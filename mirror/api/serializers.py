from rest_framework import serializers

from core.api.serializers import ModelCleanMixin
from core.secrets import mask_field
from mirror.choices import Arch, Channel, Platform
from mirror.models import Mirror, Publication, SignaturePackage, SyncRun, Upstream


class UpstreamSerializer(ModelCleanMixin, serializers.ModelSerializer):
    class Meta:
        model = Upstream
        fields = ["id", *Upstream.EDITABLE_FIELDS]
        extra_kwargs = {
            "base_url": {
                "help_text": "Microsoft: the fwlink URL. Mirror: the URL above <platform>/<channel>/arch_<arch>/. "
                "A user, password or query-string value in it is kept but shown as ***; send it back as shown to "
                "keep it."
            },
            "proxy_url": {"help_text": "Credentials in it are kept but never shown again (***).", "write_only": False},
        }

    def to_representation(self, instance):
        data = super().to_representation(instance)
        for name in ("base_url", "proxy_url"):  # core.secrets: the one masking rule, for every role
            data[name] = mask_field("mirror.upstream", name, data.get(name) or "")
        return data


class PublicationSerializer(serializers.ModelSerializer):
    current = serializers.CharField(source="current.definition_version")
    current_engine = serializers.CharField(source="current.engine_version")
    previous = serializers.CharField(
        source="previous.definition_version", default=None, allow_null=True, help_text="n-1, or null."
    )

    class Meta:
        model = Publication
        fields = ["platform", "channel", "arch", "current", "current_engine", "previous", "published_at"]


class MirrorSerializer(ModelCleanMixin, serializers.ModelSerializer):
    platforms = serializers.ListField(child=serializers.ChoiceField(choices=Platform.choices), allow_empty=False)
    channels = serializers.ListField(child=serializers.ChoiceField(choices=Channel.choices), allow_empty=False)
    archs = serializers.ListField(child=serializers.ChoiceField(choices=Arch.choices), allow_empty=False)
    publications = PublicationSerializer(many=True, read_only=True)
    urls = serializers.SerializerMethodField(help_text="offlineDefinitionUpdateUrl per platform/channel.")

    class Meta:
        model = Mirror
        fields = ["id", *Mirror.EDITABLE_FIELDS, "created", "urls", "publications"]
        read_only_fields = ["created"]

    def get_urls(self, mirror) -> dict[str, str]:
        return {f"{p}/{c}": mirror.definition_url(p, c) for p in mirror.platforms for c in mirror.channels}


class SyncRunSerializer(serializers.ModelSerializer):
    mirror = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    requested_by = serializers.CharField(
        source="requested_by.username",
        default=None,
        read_only=True,
        allow_null=True,
        help_text="Username, or null for a scheduled sync.",
    )
    error_summary = serializers.CharField(
        read_only=True,
        help_text="Why the run failed, in one line in the request's language (error keeps the whole text); "
        "empty when it did not fail.",
    )

    class Meta:
        model = SyncRun
        fields = [
            "id",
            "mirror",
            "trigger",
            "requested_by",
            "state",
            "created",
            "started_at",
            "finished_at",
            "current_target",
            "bytes_done",
            "bytes_expected",
            "results",
            "error",
            "error_summary",
            "log",
        ]
        read_only_fields = fields


class SignaturePackageSerializer(serializers.ModelSerializer):
    class Meta:
        model = SignaturePackage
        fields = [
            "id",
            "platform",
            "channel",
            "arch",
            "engine_version",
            "definition_version",
            "signatures_date",
            "size",
            "sha256",
            "source",
            "source_url",
            "upstream",
            "provenance",
            "conflicts_with",
            "downloaded_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "conflicts_with": {
                "help_text": "On an imported package: the upstream's package of the same version with other bytes, "
                "published instead."
            }
        }

    provenance = serializers.CharField(read_only=True, help_text="Where the bytes came from, in words.")

    def to_representation(self, package):
        data = super().to_representation(package)
        # Built from the upstream's base_url: its credentials are masked like the upstream's (core.secrets).
        data["source_url"] = mask_field("mirror.signaturepackage", "source_url", data.get("source_url") or "")
        return data


class PackageImportSerializer(serializers.Serializer):
    mirror = serializers.SlugRelatedField(slug_field="slug", queryset=Mirror.objects.all())
    platform = serializers.ChoiceField(choices=Platform.choices)
    channel = serializers.ChoiceField(choices=Channel.choices)
    arch = serializers.ChoiceField(choices=Arch.choices)
    file = serializers.FileField(help_text="updates.zip")
    engine_version = serializers.CharField(required=False, allow_blank=True, default="")
    definition_version = serializers.CharField(required=False, allow_blank=True, default="")
    manifest = serializers.FileField(
        required=False, help_text="manifest.json written by Microsoft's script, instead of the two versions."
    )

    def validate(self, attrs):
        if not attrs.get("manifest") and not (attrs["engine_version"] and attrs["definition_version"]):
            raise serializers.ValidationError(
                {"definition_version": ["Give engine_version and definition_version, or a manifest.json."]}
            )
        return attrs
