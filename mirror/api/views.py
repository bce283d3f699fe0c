import shutil
import tempfile
from pathlib import Path

from django.db.models import ProtectedError
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from mirror import services
from mirror.api.serializers import (
    MirrorSerializer,
    PackageImportSerializer,
    SignaturePackageSerializer,
    SyncRunSerializer,
    UpstreamSerializer,
)
from mirror.choices import SyncTrigger
from mirror.filtersets import SignaturePackageFilterSet, SyncRunFilterSet
from mirror.models import Mirror, SignaturePackage, SyncRun, Upstream
from mirror.store import PackageError, tmp_dir
from mirror.upstream import UpstreamError
from portal.choices import Role
from portal.services import record_event


class AuditedModelViewSet(viewsets.ModelViewSet):
    """CRUD whose every change is recorded in the audit log (admin role to change)."""

    write_role = Role.ADMIN
    audit_name = ""

    def perform_create(self, serializer):
        obj = serializer.save()
        record_event(self.request.user, f"{self.audit_name}.create", obj, serializer.data, self.request)

    def perform_update(self, serializer):
        obj = serializer.save()
        record_event(self.request.user, f"{self.audit_name}.update", obj, dict(self.request.data), self.request)

    def perform_destroy(self, instance):
        try:
            record_event(self.request.user, f"{self.audit_name}.delete", instance, {}, self.request)
            instance.delete()
        except ProtectedError:
            raise ValidationError({"non_field_errors": [f"{instance} is still in use and cannot be deleted."]}) from None


class UpstreamViewSet(AuditedModelViewSet):
    queryset = Upstream.objects.all()
    serializer_class = UpstreamSerializer
    audit_name = "upstream"


class MirrorViewSet(AuditedModelViewSet):
    queryset = Mirror.objects.select_related("upstream").prefetch_related("publications__current", "publications__previous")
    serializer_class = MirrorSerializer
    audit_name = "mirror"
    ordering_fields = ["name", "created"]

    def perform_create(self, serializer):
        serializer.instance = services.save_mirror(Mirror(**serializer.validated_data), self.request.user, self.request,
                                                   {"slug": serializer.validated_data["slug"]})

    def perform_update(self, serializer):
        services.save_mirror(serializer.save(), self.request.user, self.request, dict(self.request.data))

    def perform_destroy(self, instance):
        services.delete_mirror(instance, self.request.user, self.request)

    @extend_schema(request=None, responses={202: SyncRunSerializer})
    @action(detail=True, methods=["post"], write_role=Role.OPERATOR)
    def sync(self, request, pk=None):
        """Queue a sync (202); while one is queued or running, that one is returned instead."""
        run, _ = services.request_sync(self.get_object(), SyncTrigger.API, request.user, request)
        return Response(SyncRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class SyncRunViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = SyncRun.objects.select_related("mirror", "requested_by")
    serializer_class = SyncRunSerializer
    filterset_class = SyncRunFilterSet
    ordering_fields = ["created", "finished_at"]


class SignaturePackageViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = SignaturePackage.objects.all()
    serializer_class = SignaturePackageSerializer
    filterset_class = SignaturePackageFilterSet
    ordering_fields = ["downloaded_at", "size"]
    write_role = Role.OPERATOR  # the only write is an import

    @extend_schema(request={"multipart/form-data": PackageImportSerializer}, responses={201: SignaturePackageSerializer})
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser])
    def import_package(self, request):
        """Import an updates.zip carried into an air-gapped site; verified and published like a download."""
        form = PackageImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        # Copied to the store's filesystem first, so that ingesting it is a rename.
        with tempfile.NamedTemporaryFile(dir=tmp_dir(), suffix=".upload", delete=False) as handle:
            shutil.copyfileobj(data["file"], handle)
        upload = Path(handle.name)
        try:
            manifest_text = data["manifest"].read().decode("utf-8", "replace") if data.get("manifest") else ""
            package = services.import_package(data["mirror"], (data["platform"], data["channel"], data["arch"]), upload,
                                              data["engine_version"], data["definition_version"], manifest_text, request.user, request)
        except (PackageError, UpstreamError) as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        finally:
            upload.unlink(missing_ok=True)
        return Response(SignaturePackageSerializer(package).data, status=status.HTTP_201_CREATED)
