"""The rings over the API: groups, their approvals, promotion, rollback, and the managed configuration.

Every change goes through fleet.services, like the UI; a refusal there (core.errors.Refused,
rings.ApprovalError among them) becomes the API's one error body with the status the service chose
(core.api.errors).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.generics import get_object_or_404
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from core.api.errors import ApiErrorSerializer
from core.choices import Role
from fleet.api.serializers import (
    ApprovalEventSerializer,
    ApproveSerializer,
    ConfigImportFileSerializer,
    ConfigImportResultSerializer,
    ConfigImportSerializer,
    ConfigImportTextSerializer,
    EndpointBulkSerializer,
    EndpointChangeSerializer,
    EndpointMoveSerializer,
    EndpointSerializer,
    EnrollmentSecretCreatedSerializer,
    EnrollmentSecretSerializer,
    GroupSerializer,
    HealthReportSerializer,
    IdentityConflictSerializer,
    PromoteResultSerializer,
    TargetActionSerializer,
    TargetStatusSerializer,
)
from fleet.filtersets import (
    ApprovalEventFilterSet,
    EndpointFilterSet,
    EndpointGroupFilterSet,
    EnrollmentSecretFilterSet,
    IdentityConflictFilterSet,
)
from fleet.models import ApprovalEvent, Endpoint, EndpointGroup, EnrollmentSecret, IdentityConflict
from fleet.services import endpoints as endpoints_service
from fleet.services import enrollment, rings
from fleet.services.config import ConfigImportError, config_file, import_policy
from mirror.api.views import AuditedModelViewSet
from mirror.choices import Platform
from mirror.serving import send_bytes

ERROR = ApiErrorSerializer
REFUSED = {
    400: OpenApiResponse(ERROR, description="Invalid input, or a package the group does not serve."),
    403: OpenApiResponse(ERROR, description="The caller's role does not allow it."),
    409: OpenApiResponse(
        ERROR, description="The group changed meanwhile (expected_current), or there is nothing to do it with."
    ),
}


TARGET_EXAMPLE = OpenApiExample("Linux x86_64", request_only=True, value={"platform": "linux", "arch": "x86_64"})


class IgnoreAccept(BaseContentNegotiation):
    """A download answers with its own content type whatever the client's Accept (curl -H 'Accept: …' must not get a 406)."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _status_entry(group, target) -> dict:
    return next(
        entry
        for entry in rings.group_status(group)
        if (entry["platform"], entry["channel"], entry["arch"]) == tuple(target)
    )


def _expected(data):
    return data.get("expected_current", rings.UNSET)


@extend_schema_view(
    create=extend_schema(
        examples=[
            OpenApiExample(
                "A pilot ring",
                request_only=True,
                value={
                    "name": "Pilot",
                    "slug": "pilot",
                    "mirror": "main",
                    "platforms": ["linux", "mac"],
                    "channel": "production",
                    "ring_order": 10,
                    "rollout": "latest",
                },
            ),
            OpenApiExample(
                "A ring that follows pilot",
                request_only=True,
                value={
                    "name": "Broad",
                    "slug": "broad",
                    "mirror": "main",
                    "platforms": ["linux"],
                    "ring_order": 20,
                    "rollout": "after",
                    "source_group": "pilot",
                    "delay_hours": 24,
                    "gate_percent": 90,
                },
            ),
        ]
    )
)
class GroupViewSet(AuditedModelViewSet):
    """Endpoint groups (rings): each has its policy, its rollout rule and a mirror URL serving only what it approved.

    Admins create, change and delete groups; operators approve, promote and roll back; viewers read.
    """

    queryset = EndpointGroup.objects.select_related("mirror", "source_group")
    serializer_class = GroupSerializer
    filterset_class = EndpointGroupFilterSet
    ordering_fields = ["ring_order", "name"]
    audit_name = "group"

    # --- CRUD, through fleet.services.rings (trees, dropped targets, rollout, audit) ---

    def perform_create(self, serializer):
        data = serializer.validated_data
        # The same details as the group form records: every field on creation, from/to on a change.
        serializer.instance = rings.save_group(
            EndpointGroup(**data),
            self.request.user,
            self.request,
            {"fields": {name: rings.group_audit_value(value) for name, value in data.items()}},
        )

    def perform_update(self, serializer):
        group = serializer.instance
        before = EndpointGroup.objects.get(pk=group.pk)
        for name, value in serializer.validated_data.items():
            setattr(group, name, value)
        changes = {
            name: {"from": rings.group_audit_value(getattr(before, name)), "to": rings.group_audit_value(value)}
            for name, value in serializer.validated_data.items()
            if rings.group_audit_value(getattr(before, name)) != rings.group_audit_value(value)
        }
        serializer.instance = rings.save_group(group, self.request.user, self.request, changes)

    def perform_destroy(self, instance):
        rings.delete_group(instance, self.request.user, self.request)

    @extend_schema(
        responses={204: None, 409: OpenApiResponse(ERROR, description="Rings follow it or endpoints are in it.")}
    )
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    # --- What the group serves, and changing it ---

    @extend_schema(responses=TargetStatusSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def status(self, request, pk=None):
        """Per target (platform, channel, arch): the package served, n-1, and where the rollout rule stands."""
        return Response(TargetStatusSerializer(rings.group_status(self.get_object()), many=True).data)

    @extend_schema(
        request=ApproveSerializer,
        responses={200: TargetStatusSerializer, **REFUSED},
        examples=[
            OpenApiExample(
                "Approve package 42, having seen 41 approved",
                request_only=True,
                value={"package": 42, "expected_current": 41},
            )
        ],
    )
    @action(detail=True, methods=["post"], write_role=Role.OPERATOR, filter_backends=[])
    def approve(self, request, pk=None):
        """Serve a package to the group for its target; the one it replaces becomes n-1."""
        group = self.get_object()
        form = ApproveSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        package = form.validated_data["package"]
        row = rings.approve_package(
            group, package, request.user, request, expected_current=_expected(form.validated_data)
        )
        return Response(TargetStatusSerializer(_status_entry(group, row.target)).data)

    @extend_schema(
        request=TargetActionSerializer, responses={200: PromoteResultSerializer, **REFUSED}, examples=[TARGET_EXAMPLE]
    )
    @action(detail=True, methods=["post"], write_role=Role.OPERATOR, filter_backends=[])
    def promote(self, request, pk=None):
        """Approve in the next ring (same mirror and channel, next ring_order) what this ring serves for the target.

        expected_current is what you saw approved in the next ring.
        """
        group = self.get_object()
        form = TargetActionSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        row = rings.promote(
            group,
            (data["platform"], group.channel, data["arch"]),
            request.user,
            request,
            expected_current=_expected(data),
        )
        following = EndpointGroup.objects.select_related("mirror").get(pk=row.group_id)
        return Response(PromoteResultSerializer({"group": following.slug, **_status_entry(following, row.target)}).data)

    @extend_schema(
        request=TargetActionSerializer, responses={200: TargetStatusSerializer, **REFUSED}, examples=[TARGET_EXAMPLE]
    )
    @action(detail=True, methods=["post"], write_role=Role.OPERATOR, filter_backends=[])
    def rollback(self, request, pk=None):
        """Serve again the package approved before the current one (n-1)."""
        group = self.get_object()
        form = TargetActionSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        row = rings.rollback(
            group,
            (data["platform"], group.channel, data["arch"]),
            request.user,
            request,
            expected_current=_expected(data),
        )
        return Response(TargetStatusSerializer(_status_entry(group, row.target)).data)

    # --- The managed configuration (DESIGN §2.3) ---

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "platform",
                str,
                enum=Platform.values,
                required=True,
                description="linux: mdatp_managed.json; mac: a configuration profile (.mobileconfig).",
            )
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                OpenApiTypes.OBJECT, description="mdatp_managed.json (platform=linux)."
            ),
            (200, "application/x-apple-aspen-config"): OpenApiResponse(
                OpenApiTypes.BINARY, description="Configuration profile (platform=mac)."
            ),
            304: OpenApiResponse(description="Not modified (If-None-Match matched the ETag)."),
            400: OpenApiResponse(
                ERROR, description="Missing or unknown platform, or one the group has no endpoints of."
            ),
        },
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="managed-config",
        filter_backends=[],
        pagination_class=None,
        content_negotiation_class=IgnoreAccept,
    )
    def managed_config(self, request, pk=None):
        """The managed configuration the group's endpoints install, with ETag (a matching If-None-Match gets a 304)."""
        group = self.get_object()
        platform = request.query_params.get("platform", "")
        if not platform:
            raise exceptions.ValidationError({"platform": [f"Give ?platform= one of {', '.join(group.platforms)}."]})
        try:
            config = config_file(group, platform)
        except ValueError as exc:
            raise exceptions.ValidationError({"platform": [str(exc)]}) from None
        response = send_bytes(
            request, config.body, content_type=config.content_type, etag=config.etag, last_modified=group.updated
        )
        response["Content-Disposition"] = f'attachment; filename="{config.filename}"'
        return response

    @extend_schema(
        request={"application/json": ConfigImportTextSerializer, "multipart/form-data": ConfigImportFileSerializer},
        responses={
            200: ConfigImportResultSerializer,
            400: OpenApiResponse(
                ERROR,
                description="errors keyed by the JSON path at fault, e.g. cloudService.definitionUpdatesInterval.",
            ),
            403: OpenApiResponse(ERROR, description="Admins only."),
        },
        examples=[
            OpenApiExample(
                "Microsoft's sample mdatp_managed.json",
                request_only=True,
                media_type="application/json",
                value={
                    "content": '{"cloudService": {"automaticDefinitionUpdateEnabled": true, "definitionUpdatesInterval": 1202}, '
                    '"antivirusEngine": {"offlineDefinitionUpdateFallbackToCloud": false, "offlineDefinitionUpdate": "enabled"}, '
                    '"features": {"offlineDefinitionUpdateVerifySig": "enabled"}}'
                },
            )
        ],
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="import-config",
        parser_classes=[JSONParser, MultiPartParser, FormParser],
        filter_backends=[],
    )
    def import_config(self, request, pk=None):
        """Take the policy of an existing mdatp_managed.json into the group (its URL is always the group's own)."""
        group = self.get_object()
        form = ConfigImportSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            warnings = import_policy(group, form.validated_data["content"], request.user, request)
        except ConfigImportError as exc:
            raise exceptions.ValidationError({path: [message] for path, message in exc.errors.items()}) from None
        return Response(
            {"warnings": warnings, "group": GroupSerializer(group, context=self.get_serializer_context()).data}
        )


class ApprovalEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The history of every group's approved packages: approvals, promotions, rollbacks, rollout-rule approvals."""

    queryset = ApprovalEvent.objects.select_related("group")
    serializer_class = ApprovalEventSerializer
    filterset_class = ApprovalEventFilterSet
    ordering_fields = ["created"]


class EndpointViewSet(viewsets.ReadOnlyModelViewSet):
    """Enrolled machines with their latest state, compliance and findings. Operators move and decommission them."""

    queryset = Endpoint.objects.select_related("group")
    serializer_class = EndpointSerializer
    filterset_class = EndpointFilterSet
    ordering_fields = ["hostname", "last_seen", "definitions_version", "compliance"]
    write_role = Role.OPERATOR

    @extend_schema(
        request=EndpointMoveSerializer,
        responses={200: EndpointSerializer, 400: ERROR, 403: ERROR},
        examples=[OpenApiExample("To ring broad", request_only=True, value={"group": "broad"})],
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def move(self, request, pk=None):
        """Move the endpoint to another group (it gets that group's URL with its next config)."""
        endpoint = self.get_object()
        form = EndpointMoveSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        enrollment.move_endpoint(endpoint, form.validated_data["group"], request.user, request)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(
        request=EndpointBulkSerializer,
        responses={200: dict, 400: ERROR, 403: ERROR},
        examples=[
            OpenApiExample(
                "Three endpoints to ring broad",
                request_only=True,
                value={"action": "move", "endpoints": [12, 13, 14], "group": "broad"},
            )
        ],
    )
    @action(detail=False, methods=["post"], filter_backends=[], pagination_class=None)
    def bulk(self, request):
        """Move or decommission several endpoints in one transaction: all of them, or none with a 400 saying why."""
        form = EndpointBulkSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        plan = endpoints_service.apply_bulk(
            data["action"], sorted(set(data["endpoints"])), request.user, request, group=data.get("group")
        )
        return Response(
            {
                "action": data["action"],
                "changed": [endpoint.pk for endpoint in plan.change],
                "unchanged": [endpoint.pk for endpoint in plan.unchanged],
            }
        )

    @extend_schema(request=None, responses={200: EndpointSerializer, 403: ERROR})
    @action(detail=True, methods=["post"], filter_backends=[])
    def decommission(self, request, pk=None):
        """Retire the endpoint: its token stops working at once; it comes back only if an operator accepts its claim."""
        endpoint = enrollment.decommission_endpoint(self.get_object(), request.user, request)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(responses={200: HealthReportSerializer(many=True)})
    @action(
        detail=True,
        methods=["get"],
        filter_backends=[OrderingFilter],
        ordering_fields=["received_at"],
        serializer_class=HealthReportSerializer,
    )
    def reports(self, request, pk=None):
        """The endpoint's last raw reports (FLEET_RAW_REPORTS_KEPT), newest first (raw and parsed)."""
        # Not get_object(): its filter_queryset() would order the endpoints by the reports' ordering.
        endpoint = get_object_or_404(self.get_queryset(), pk=pk)
        self.check_object_permissions(request, endpoint)
        page = self.paginate_queryset(self.filter_queryset(endpoint.reports.all()))
        return self.get_paginated_response(HealthReportSerializer(page, many=True).data)

    @extend_schema(responses={200: EndpointChangeSerializer(many=True)})
    @action(
        detail=True,
        methods=["get"],
        filter_backends=[OrderingFilter],
        ordering_fields=["at"],
        serializer_class=EndpointChangeSerializer,
    )
    def changes(self, request, pk=None):
        """What changed on the endpoint, report by report, newest first, for FLEET_CHANGE_RETENTION_DAYS."""
        endpoint = get_object_or_404(self.get_queryset(), pk=pk)
        self.check_object_permissions(request, endpoint)
        page = self.paginate_queryset(self.filter_queryset(endpoint.changes.all()))
        return self.get_paginated_response(EndpointChangeSerializer(page, many=True).data)


class EnrollmentSecretViewSet(mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """Secrets that let machines join a group: the secret is shown once, at creation or rotation."""

    queryset = EnrollmentSecret.objects.select_related("group", "created_by")
    serializer_class = EnrollmentSecretSerializer
    filterset_class = EnrollmentSecretFilterSet
    ordering_fields = ["created", "name", "last_used_at"]
    write_role = Role.OPERATOR

    @extend_schema(
        responses={201: EnrollmentSecretCreatedSerializer, 400: ERROR, 403: ERROR},
        examples=[
            OpenApiExample(
                "For ring pilot, valid until the end of the year",
                request_only=True,
                value={
                    "group": "pilot",
                    "name": "linux servers",
                    "expires_at": "2030-12-31T23:59:59Z",
                    "max_enrollments": 200,
                },
            )
        ],
    )
    def create(self, request, *args, **kwargs):
        form = EnrollmentSecretSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        secret, plaintext = enrollment.create_enrollment_secret(
            data["group"], data["name"], request.user, request, data.get("expires_at"), data.get("max_enrollments")
        )
        return Response({**EnrollmentSecretSerializer(secret).data, "secret": plaintext}, status=201)

    @extend_schema(request=None, responses={200: EnrollmentSecretSerializer, 403: ERROR})
    @action(detail=True, methods=["post"], filter_backends=[])
    def revoke(self, request, pk=None):
        secret = self.get_object()
        enrollment.revoke_enrollment_secret(secret, request.user, request)
        return Response(EnrollmentSecretSerializer(secret).data)

    @extend_schema(
        request=None,
        responses={
            201: EnrollmentSecretCreatedSerializer,
            403: ERROR,
            409: OpenApiResponse(ERROR, description="The secret is revoked or expired: create a new one."),
        },
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def rotate(self, request, pk=None):
        """Revoke this secret and return its replacement (shown once); a revoked or expired secret is not rotated."""
        new, plaintext = enrollment.rotate_enrollment_secret(self.get_object(), request.user, request)
        return Response({**EnrollmentSecretSerializer(new).data, "secret": plaintext}, status=201)


class IdentityConflictViewSet(viewsets.ReadOnlyModelViewSet):
    """Known machine ids that enrolled again without their token, or while decommissioned: operators accept
    (the claimant takes the endpoint over, a decommissioned one comes back) or reject them."""

    queryset = IdentityConflict.objects.select_related("endpoint__group", "group", "decided_by")
    serializer_class = IdentityConflictSerializer
    filterset_class = IdentityConflictFilterSet
    ordering_fields = ["created", "decided_at"]
    write_role = Role.OPERATOR

    @extend_schema(
        request=None,
        responses={
            200: EndpointSerializer,
            403: ERROR,
            409: OpenApiResponse(ERROR, description="Already decided, or the group no longer has the platform."),
        },
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def accept(self, request, pk=None):
        """The claimant is the machine: it takes the endpoint over with the token it was given."""
        endpoint = enrollment.accept_conflict(self.get_object(), request.user, request)
        return Response(EndpointSerializer(endpoint).data)

    @extend_schema(request=None, responses={200: IdentityConflictSerializer, 403: ERROR, 409: ERROR})
    @action(detail=True, methods=["post"], filter_backends=[])
    def reject(self, request, pk=None):
        """The claimant is not let in: its token never works; the endpoint is unchanged."""
        conflict = enrollment.reject_conflict(self.get_object(), request.user, request)
        return Response(IdentityConflictSerializer(conflict).data)
