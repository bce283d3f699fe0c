import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from django.db.models import ProtectedError
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response

from core.api.errors import Conflict
from core.api.schema import error_response
from core.choices import Role
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
from mirror.services.imports import import_package
from mirror.services.mirrors import delete_mirror, delete_upstream, save_mirror, save_upstream
from mirror.services.sync import request_sync
from mirror.store import PackageError, tmp_dir
from mirror.upstream import UpstreamError


class AuditedModelViewSet(viewsets.ModelViewSet):
    """CRUD whose every change goes through the app's service, which records it in the audit log (admin role to change).

    A subclass saves and deletes through its service in perform_create, perform_update and perform_destroy:
    the defaults refuse, so that no change skips the service's rules and its audit entry.
    """

    write_role = Role.ADMIN

    def perform_create(self, serializer):
        raise NotImplementedError(f"{type(self).__name__} creates through its service")

    def perform_update(self, serializer):
        raise NotImplementedError(f"{type(self).__name__} changes through its service")

    def perform_destroy(self, instance):
        raise NotImplementedError(f"{type(self).__name__} deletes through its service")

    @staticmethod
    def stored(instance):
        # Validation (ModelCleanMixin) has already set the new values on the instance.
        return type(instance).objects.get(pk=instance.pk)

    @staticmethod
    def unsaved(serializer):
        """The object with the validated input set on it, not saved: its service saves and audits it in one transaction."""
        instance = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(instance, name, value)
        return instance

    def audited_fields(self, instance) -> dict:
        """An object as the audit log keeps it: its writable fields as the API shows them (proxy credentials masked)."""
        serializer = self.get_serializer(instance)
        return {name: value for name, value in serializer.data.items() if not serializer.fields[name].read_only}

    def changes(self, before: dict, instance) -> dict:
        """{field: {"from": …, "to": …}}, as the UI records a change. Not the request's body: it may hold credentials,
        or characters that PostgreSQL's jsonb refuses (NUL), in fields the serializer ignores."""
        after = self.audited_fields(instance)
        return {
            name: {"from": before.get(name), "to": value} for name, value in after.items() if before.get(name) != value
        }

    @extend_schema(
        responses={204: None, 409: error_response(409, "Still in use (mirrors use the upstream, groups the mirror).")}
    )
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)


@contextmanager
def in_use_is_a_conflict(instance):
    try:
        yield
    except ProtectedError:
        raise Conflict({"non_field_errors": [f"{instance} is still in use and cannot be deleted."]}) from None


@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "Microsoft's download service",
                request_only=True,
                value={
                    "name": "microsoft",
                    "kind": "microsoft",
                    "base_url": "https://go.microsoft.com/fwlink/",
                    "proxy_url": "http://proxy.example.org:3128",
                    "timeout": 60,
                },
            )
        ]
    )
)
class UpstreamViewSet(AuditedModelViewSet):
    """Where mirrors download packages from: Microsoft's fwlink service, or another portal's published tree (admins change them)."""

    queryset = Upstream.objects.all()
    serializer_class = UpstreamSerializer
    filterset_fields = ["name", "kind"]
    ordering_fields = ["name", "id"]

    def perform_create(self, serializer):
        upstream = Upstream(**serializer.validated_data)
        serializer.instance = save_upstream(upstream, self.request.user, self.request, self.audited_fields(upstream))

    def perform_update(self, serializer):
        before = self.audited_fields(self.stored(serializer.instance))
        upstream = self.unsaved(serializer)
        serializer.instance = save_upstream(upstream, self.request.user, self.request, self.changes(before, upstream))

    def perform_destroy(self, instance):
        with in_use_is_a_conflict(instance):
            delete_upstream(instance, self.request.user, self.request)


@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "Linux and macOS, both architectures",
                request_only=True,
                value={
                    "name": "Main",
                    "slug": "main",
                    "upstream": 1,
                    "platforms": ["linux", "mac"],
                    "channels": ["production"],
                    "archs": ["x86_64", "arm64"],
                    "sync_interval_minutes": 60,
                },
            )
        ]
    )
)
class MirrorViewSet(AuditedModelViewSet):
    """Mirrors: what to sync from an upstream, how often, and where the tree is published (admins change them; operators sync)."""

    queryset = Mirror.objects.select_related("upstream").prefetch_related(
        "publications__current", "publications__previous"
    )
    serializer_class = MirrorSerializer
    filterset_fields = ["slug", "enabled", "upstream"]
    ordering_fields = ["name", "created"]

    def perform_create(self, serializer):
        serializer.instance = save_mirror(
            Mirror(**serializer.validated_data),
            self.request.user,
            self.request,
            {"slug": serializer.validated_data["slug"]},
        )

    def perform_update(self, serializer):
        before = self.audited_fields(self.stored(serializer.instance))
        mirror = self.unsaved(serializer)
        serializer.instance = save_mirror(mirror, self.request.user, self.request, self.changes(before, mirror))

    def perform_destroy(self, instance):
        with in_use_is_a_conflict(instance):
            delete_mirror(instance, self.request.user, self.request)

    @extend_schema(
        request=None,
        responses={202: SyncRunSerializer},
        examples=[
            OpenApiExample(
                "Queued",
                response_only=True,
                status_codes=["202"],
                value={
                    "id": 7,
                    "mirror": "main",
                    "trigger": "api",
                    "requested_by": "alice",
                    "state": "queued",
                    "created": "2024-03-14T12:00:00Z",
                    "started_at": None,
                    "finished_at": None,
                    "current_target": "",
                    "bytes_done": 0,
                    "bytes_expected": 0,
                    "results": [],
                    "error": "",
                    "error_summary": "",
                    "log": [],
                },
            )
        ],
    )
    @action(detail=True, methods=["post"], write_role=Role.OPERATOR)
    def sync(self, request, pk=None):
        """Queue a sync (202); while one is queued or running, that one is returned instead."""
        run, _ = request_sync(self.get_object(), SyncTrigger.API, request.user, request)
        return Response(SyncRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class SyncRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Every sync is a run: queued, running, then succeeded or failed with a readable error. Poll one until it is finished."""

    queryset = SyncRun.objects.select_related("mirror", "requested_by")
    serializer_class = SyncRunSerializer
    filterset_class = SyncRunFilterSet
    # ``ordering`` is the FilterSet's, the same columns and names as the Syncs page (mirror.filtersets).
    filter_backends = [DjangoFilterBackend]


class SignaturePackageViewSet(viewsets.ReadOnlyModelViewSet):
    """Verified signature packages (updates.zip) in the store, one per target and version, downloaded or imported."""

    queryset = SignaturePackage.objects.all()
    serializer_class = SignaturePackageSerializer
    filterset_class = SignaturePackageFilterSet
    filter_backends = [DjangoFilterBackend]  # ``ordering`` is the FilterSet's, as on the Packages page
    write_role = Role.ADMIN  # the only write is an import: an admin's act, like bundle and tree imports

    @extend_schema(
        request={"multipart/form-data": PackageImportSerializer}, responses={201: SignaturePackageSerializer}
    )
    @action(detail=False, methods=["post"], url_path="import", parser_classes=[MultiPartParser])
    def import_package(self, request):
        """Import an updates.zip carried into an air-gapped site (admins); verified and published like a download.

        Never in place of a version stored with other bytes (a 400 on ``file``); a later sync that finds other
        bytes upstream publishes the upstream's and flags the import (``conflicts_with``)."""
        form = PackageImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        # Copied to the store's filesystem first, so that ingesting it is a rename.
        with tempfile.NamedTemporaryFile(dir=tmp_dir(), suffix=".upload", delete=False) as handle:
            shutil.copyfileobj(data["file"], handle)
        upload = Path(handle.name)
        try:
            manifest_text = data["manifest"].read().decode("utf-8", "replace") if data.get("manifest") else ""
            package = import_package(
                data["mirror"],
                (data["platform"], data["channel"], data["arch"]),
                upload,
                data["engine_version"],
                data["definition_version"],
                manifest_text,
                request.user,
                request,
                filename=getattr(data["file"], "name", ""),
            )
        except (PackageError, UpstreamError) as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        finally:
            upload.unlink(missing_ok=True)
        return Response(SignaturePackageSerializer(package).data, status=status.HTTP_201_CREATED)
