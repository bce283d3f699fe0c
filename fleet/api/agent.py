"""What endpoints call: enrollment, health reports, and their group's managed configuration.

Endpoints authenticate with their own token (``Authorization: Bearer mde_ep_…``), which
grants exactly these: posting their own reports and reading their own group's config.
Every refusal is the API's one error body; a 401 never says whether the endpoint exists.
"""

import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.errors import ApiErrorSerializer as ErrorSerializer
from core.api.errors import error_body
from core.errors import Refused
from fleet import metrics
from fleet.models import EndpointGroup
from fleet.services import config, enrollment, ingest
from fleet.services.config import config_file
from mirror.serving import send_bytes

UNAUTHORIZED = ingest.UNAUTHORIZED
CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    409: "conflict",
    413: "too_large",
    429: "throttled",
}


def refusal(exc: Refused, response_class=Response):
    errors = {exc.field: [str(exc)]} if exc.status == 400 else None
    response = response_class(
        error_body(exc.status, CODES.get(exc.status, "error"), str(exc), errors), status=exc.status
    )
    if exc.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="endpoint"'
    return response


class RawBody(BaseParser):
    """Reports are read from request.body as sent (text or JSON); this only lets any content type in."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return None


class EnrollSerializer(serializers.Serializer):
    secret = serializers.CharField(help_text="An enrollment secret of the group (mde_enr_…).")
    machine_id = serializers.CharField(max_length=64, help_text="`mdatp health --field machine_guid`")
    hostname = serializers.CharField(max_length=255, required=False, allow_blank=True, default="")
    platform = serializers.CharField(help_text="linux or mac")
    arch = serializers.CharField(required=False, allow_blank=True, default="x86_64", help_text="x86_64 or arm64")
    app_version = serializers.CharField(max_length=32, required=False, allow_blank=True, default="")


EnrolledSerializer = inline_serializer(
    "Enrolled",
    {
        "status": serializers.CharField(help_text="enrolled (201) or rekeyed (200)."),
        "endpoint": serializers.IntegerField(),
        "token": serializers.CharField(help_text="Shown once: keep it in a root-only file."),
        "group": serializers.CharField(),
        "definition_url": serializers.CharField(help_text="The group's offlineDefinitionUpdateUrl for this platform."),
        "report_url": serializers.CharField(),
        "config_url": serializers.CharField(),
    },
)
EnrollmentHeldSerializer = inline_serializer(
    "EnrollmentHeld",
    {
        "status": serializers.CharField(help_text="pending"),
        "conflict": serializers.IntegerField(help_text="The identity conflict an operator decides."),
        "token": serializers.CharField(help_text="Works only once an operator accepts the conflict."),
        "detail": serializers.CharField(),
        "report_url": serializers.CharField(),
        "config_url": serializers.CharField(),
    },
)
ReportAcceptedSerializer = inline_serializer(
    "ReportAccepted",
    {
        "report": serializers.IntegerField(),
        "compliance": serializers.CharField(),
        "findings": serializers.ListField(child=serializers.CharField()),
    },
)


def _too_big(request) -> bool:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0) > settings.FLEET_REPORT_MAX_BYTES
    except ValueError:
        return False


class EnrollView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=EnrollSerializer,
        responses={
            201: EnrolledSerializer,
            200: EnrolledSerializer,
            202: EnrollmentHeldSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            413: ErrorSerializer,
            429: ErrorSerializer,
        },
        tags=["endpoints (agent)"],
        auth=[],
        description=(
            "A new machine id becomes an endpoint (201). A known one is never moved, renamed, re-keyed or revived by "
            "a secret: with its current token in `Authorization: Bearer` it gets a new token and stays where it is "
            "(200); without it, or when it was decommissioned, the enrollment is held as an identity conflict (202) "
            "that an operator accepts or rejects (`/api/v1/identity-conflicts/`). A secret with a cap enrolls at "
            "most that many endpoints (403 after), and each secret enrolls at most FLEET_ENROLL_BURST a minute (429)."
        ),
        examples=[
            OpenApiExample(
                "A Linux server",
                request_only=True,
                value={
                    "secret": "mde_enr_…",
                    "machine_id": "0f3c8c1e-5b1d-4c6e-9a7e-2d4f7b9e1a20",
                    "hostname": "web-01",
                    "platform": "linux",
                    "arch": "x86_64",
                    "app_version": "101.24022.0001",
                },
            ),
            OpenApiExample(
                "Enrolled",
                response_only=True,
                status_codes=["201"],
                value={
                    "status": "enrolled",
                    "endpoint": 17,
                    "token": "mde_ep_…",
                    "group": "pilot",
                    "definition_url": "https://portal.example.org/mirror/groups/pilot/linux/production/",
                    "report_url": "https://portal.example.org/api/v1/reports",
                    "config_url": "https://portal.example.org/api/v1/endpoint/managed-config",
                },
            ),
        ],
    )
    def post(self, request):
        """Join a group with one of its enrollment secrets; returns this machine's token (shown once).

        A known machine proves itself with its current token, or waits for an operator (202)."""
        if _too_big(request):
            return refusal(Refused("the enrollment request is too large", status=413))
        form = EnrollSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        authorization = request.META.get("HTTP_AUTHORIZATION", "")
        try:
            enrolled = enrollment.enroll(
                data["secret"],
                data["machine_id"],
                data["hostname"],
                data["platform"],
                data["arch"],
                data["app_version"],
                request,
                current_token=authorization[7:].strip() if authorization[:7].lower() == "bearer " else "",
            )
        except Refused as exc:
            return refusal(exc)
        base = request.build_absolute_uri("/api/v1/")
        urls = {"report_url": base + "reports", "config_url": base + "endpoint/managed-config"}
        if enrolled.outcome == enrollment.EnrollOutcome.PENDING:
            conflict = enrolled.conflict
            return Response(
                {
                    "status": enrolled.outcome,
                    "conflict": conflict.pk,
                    "token": enrolled.token,
                    "detail": (
                        f"machine {data['machine_id']} is already enrolled"
                        + (" and was decommissioned" if conflict.was_decommissioned else "")
                        + f": this enrollment is held as identity conflict {conflict.pk} until an operator accepts "
                        "it; this token works from then on, and never if it is rejected"
                    ),
                    **urls,
                },
                status=202,
            )
        endpoint = enrolled.endpoint
        return Response(
            {
                "status": enrolled.outcome,
                "endpoint": endpoint.pk,
                "token": enrolled.token,
                "group": endpoint.group.slug,
                "definition_url": endpoint.group.definition_url(endpoint.platform),
                **urls,
            },
            status=201 if enrolled.outcome == enrollment.EnrollOutcome.ENROLLED else 200,
        )


class ReportView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [RawBody]

    @extend_schema(
        request={"text/plain": OpenApiTypes.STR, "application/json": OpenApiTypes.OBJECT},
        responses={
            201: ReportAcceptedSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            413: ErrorSerializer,
            429: ErrorSerializer,
        },
        tags=["endpoints (agent)"],
        auth=[{"endpointToken": []}],
        description=(
            "The body is what the agent gathers from `mdatp health` and `mdatp health --details definitions` (only "
            'the latter prints the offline-update fields): the JSON envelope `{"$type": "mdeOfflineAgentReport", '
            '"health": ..., "definitions": ...}` of their `--output json`, or their text outputs each after its '
            "command line (`$ mdatp health`), or one output alone (text or JSON). A 201 means the report is committed."
        ),
        examples=[
            OpenApiExample(
                "mdatp health --details definitions",
                request_only=True,
                media_type="text/plain",
                value=(
                    'definitions_version                         : "1.407.417.0"\n'
                    'definitions_status                          : "up_to_date"\n'
                    'offline_definition_update                   : "enabled" [managed]\n'
                ),
            )
        ],
    )
    def post(self, request):
        """Post this endpoint's health report (its token in `Authorization: Bearer`)."""
        return post_report(request)

    def dispatch(self, request, *args, **kwargs):
        # The busiest URL of the portal: DRF's request wrapping, negotiation and rendering were
        # a fifth of a report's CPU (bench/ingest.py). The view stays an APIView for the schema;
        # its one method runs on the plain Django request.
        if request.method != "POST":
            return JsonResponse(
                error_body(405, "method_not_allowed", f'Method "{request.method}" not allowed.'),
                status=405,
                headers={"Allow": "POST"},
            )
        started = time.perf_counter()
        response = post_report(request)
        metrics.observe_report(response.status_code, time.perf_counter() - started)
        return response


def post_report(request) -> JsonResponse:
    endpoint = ingest.endpoint_for_token(request.META.get("HTTP_AUTHORIZATION", ""))
    try:
        if endpoint is None:
            raise Refused(UNAUTHORIZED, status=401)
        if _too_big(request):
            raise Refused(f"the report is larger than {settings.FLEET_REPORT_MAX_BYTES} bytes", status=413)
        minute = ingest.minute_now()
        ingest.check_burst(endpoint, minute)
        accepted = ingest.ingest_report(endpoint, request.body, minute=minute)
    except Refused as exc:
        return refusal(exc, JsonResponse)
    return JsonResponse(
        {
            "report": accepted.report.pk,
            "compliance": accepted.compliance,
            "findings": [f.code for f in accepted.findings],
        },
        status=201,
    )


class EndpointConfigView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [RawBody]

    @extend_schema(
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "application/x-apple-aspen-config"): OpenApiTypes.BINARY,
            304: OpenApiResponse(description="Not modified (If-None-Match)"),
            401: ErrorSerializer,
        },
        tags=["endpoints (agent)"],
        auth=[{"endpointToken": []}],
    )
    def get(self, request):
        """This endpoint's group's managed configuration for its platform, with an ETag."""
        endpoint = ingest.endpoint_for_token(request.META.get("HTTP_AUTHORIZATION", ""))
        if endpoint is None:
            return refusal(Refused(UNAUTHORIZED, status=401))
        # Fresh, not the report path's cached group: a policy change must show at the next fetch.
        group = EndpointGroup.objects.select_related("mirror").get(pk=endpoint.group_id)
        file = config_file(group, endpoint.platform)
        response = send_bytes(
            request._request, file.body, content_type=file.content_type, etag=file.etag, last_modified=group.updated
        )
        response["Cache-Control"] = "private, no-cache"
        return response

    @extend_schema(
        request={
            "application/json": OpenApiTypes.BINARY,
            "application/x-plist": OpenApiTypes.BINARY,
        },
        responses={
            (200, "application/json"): OpenApiTypes.OBJECT,
            (200, "application/x-apple-aspen-config"): OpenApiTypes.BINARY,
            400: ErrorSerializer,
            401: ErrorSerializer,
            409: ErrorSerializer,
            413: ErrorSerializer,
        },
        tags=["endpoints (agent)"],
        auth=[{"endpointToken": []}],
        description=(
            "The body is the endpoint's current managed configuration (empty when it has none): on Linux its "
            "`mdatp_managed.json`, answered with the group's keys merged in and every other key kept (the keys "
            f"set are listed in `{config.CHANGES_HEADER}`, comma-separated; the body comes back byte for byte "
            "when nothing changes); on macOS `/Library/Managed Preferences/com.microsoft.wdav.plist`, answered "
            "with the group's profile, or 409 when an MDM profile already sets the domain without the group's "
            "keys. A file that cannot be read is 400 with the reason; nothing is stored but the outcome, which "
            "the endpoint's page shows."
        ),
    )
    def post(self, request):
        """Merge the group's keys into this endpoint's own managed configuration and answer the result."""
        endpoint = ingest.endpoint_for_token(request.META.get("HTTP_AUTHORIZATION", ""))
        if endpoint is None:
            return refusal(Refused(UNAUTHORIZED, status=401))
        try:
            # Refused before the body is read: a runaway file must not be held in memory to be refused.
            config.check_managed_config_size(endpoint, _content_length(request))
            merged = config.check_managed_config(endpoint, request.body)
        except Refused as exc:
            return refusal(exc)
        content_type = "application/x-apple-aspen-config" if endpoint.platform == "mac" else "application/json"
        response = HttpResponse(merged.body, content_type=content_type)
        response[config.CHANGES_HEADER] = ", ".join(merged.changes)
        response["Cache-Control"] = "private, no-store"
        return response


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
