"""The API's doors to air-gapped transfer (mirror/services/bundles.py): export a mirror as a signed bundle (GET
streams it), import one (multipart upload), this portal's public key, and the keys trusted for imports."""

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from core.api.schema import error_response
from core.choices import Role
from mirror.api.serializers import SignaturePackageSerializer
from mirror.models import Mirror, TrustedBundleKey
from mirror.services.bundles import (
    add_trusted_key,
    export_bundle,
    import_bundle,
    import_tree,
    own_public_key,
    remove_trusted_key,
)


class TrustedBundleKeySerializer(serializers.ModelSerializer):
    added_by = serializers.CharField(source="added_by.username", default=None, read_only=True, allow_null=True)
    public_key = serializers.CharField(
        max_length=1000, help_text="The exporting portal's Ed25519 public key: base64 (44 characters) or PEM."
    )

    class Meta:
        model = TrustedBundleKey
        fields = ["id", "name", "note", "public_key", "fingerprint", "added_by", "created"]
        read_only_fields = ["fingerprint", "added_by", "created"]
        # The service says what is wrong with a name or key, in the UI's words.
        extra_kwargs = {"name": {"validators": []}}


class OwnKeySerializer(serializers.Serializer):
    public_key = serializers.CharField(
        help_text="Base64 of the raw Ed25519 public key: add it on the importing portal."
    )
    fingerprint = serializers.CharField(help_text="sha256 of the raw key, hex: the key_id in every bundle.json.")
    pem = serializers.CharField(help_text="The same key as PEM, for openssl pkeyutl -verify.")


class BundleImportSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A bundle written by another portal's export.")
    mirror = serializers.SlugRelatedField(
        slug_field="slug",
        queryset=Mirror.objects.all(),
        required=False,
        help_text="Where to publish; default: the mirror of the bundle's slug.",
    )


class TreeImportSerializer(serializers.Serializer):
    path = serializers.CharField(
        max_length=4096, help_text="Absolute path, on the portal's server, of the folder holding linux/ or mac/."
    )
    mirror = serializers.SlugRelatedField(slug_field="slug", queryset=Mirror.objects.all())


class BundleImportResultSerializer(serializers.Serializer):
    summary = serializers.CharField()
    mirror = serializers.CharField(source="mirror.slug")
    stored = SignaturePackageSerializer(many=True)
    reused = SignaturePackageSerializer(many=True)
    published = SignaturePackageSerializer(many=True)
    bytes = serializers.IntegerField()


class TrustedBundleKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Other portals' public keys: bundles signed with one of them may be imported here (admins add and remove)."""

    queryset = TrustedBundleKey.objects.select_related("added_by")
    serializer_class = TrustedBundleKeySerializer
    write_role = Role.ADMIN
    ordering_fields = ["name", "created"]

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = add_trusted_key(
            data["name"], data["public_key"], data.get("note", ""), self.request.user, self.request
        )

    def perform_destroy(self, instance):
        remove_trusted_key(instance, self.request.user, self.request)

    @extend_schema(responses={200: OwnKeySerializer})
    @action(detail=False, methods=["get"])
    def own(self, request):
        """This portal's own public key, to add on the portals that import its bundles."""
        return Response(OwnKeySerializer(own_public_key()).data)


class BundleViewSet(viewsets.GenericViewSet):
    """Air-gapped transfer: a mirror's packages as one signed file, carried across and imported (operators)."""

    queryset = Mirror.objects.none()
    serializer_class = BundleImportSerializer
    read_role = Role.OPERATOR
    write_role = Role.OPERATOR

    @extend_schema(
        parameters=[
            OpenApiParameter("mirror", str, required=True, description="The mirror's slug."),
            OpenApiParameter(
                "package", int, many=True, description="Package ids (repeat); default: current and n-1 of every target."
            ),
        ],
        responses={
            (200, "application/x-tar"): OpenApiResponse(OpenApiTypes.BINARY, description="The bundle."),
            404: error_response(404, "No mirror with this slug, or no package with one of the ids."),
            409: error_response(409, "A package is missing from the store."),
        },
    )
    @action(detail=False, methods=["get"])
    def export(self, request):
        """Stream a signed bundle of the mirror (an uncompressed tar; Content-Length is known in advance)."""
        mirror = get_object_or_404(Mirror, slug=request.query_params.get("mirror", ""))
        try:
            ids = [int(value) for value in request.query_params.getlist("package")]
        except ValueError:
            raise serializers.ValidationError({"package": ["Give package ids as whole numbers."]}) from None
        bundle = export_bundle(mirror, ids, request.user, request)
        response = StreamingHttpResponse(bundle.chunks(), content_type="application/x-tar")
        response["Content-Length"] = str(bundle.size)
        response["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
        return response

    @extend_schema(
        request={"multipart/form-data": BundleImportSerializer},
        responses={
            201: BundleImportResultSerializer,
            409: error_response(409, "A package of the bundle is already stored here with other content."),
        },
    )
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser])
    def import_(self, request):
        """Import a bundle: its signature first, then every package; stored and published only when all passed."""
        form = BundleImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        result = import_bundle(form.validated_data["file"], form.validated_data.get("mirror"), request.user, request)
        data = BundleImportResultSerializer(result).data
        data["summary"] = result.summary()
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TreeImportSerializer, responses={201: BundleImportResultSerializer})
    @action(detail=False, methods=["post"], url_path="import-tree", write_role=Role.ADMIN)
    def import_tree(self, request):
        """Import a tree written by Microsoft's download script from a folder on the portal's server (admins)."""
        form = TreeImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        result = import_tree(form.validated_data["path"], form.validated_data["mirror"], request.user, request)
        data = BundleImportResultSerializer(result).data
        data["summary"] = result.summary()
        return Response(data, status=status.HTTP_201_CREATED)
