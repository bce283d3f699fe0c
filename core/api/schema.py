"""What the OpenAPI schema says about every operation, in one place.

``PortalAutoSchema`` (REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]) adds the error responses an
operation can give, each with the API's one error body (core.api.errors) and an example,
so that no view has to list them: 401 everywhere, 403 where a role is needed, 400 where there
is input, 404 where there is an id or a page. Views declare only the unusual ones (409, 413,
429) and their own wording, which is kept.
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiFilterExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_array_type, build_basic_type, build_parameter_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework.permissions import AllowAny

from core.api.errors import ApiErrorSerializer, error_body

ERROR_EXAMPLES = {
    400: (
        "Invalid input",
        error_body(400, "invalid", "name: This field is required.", {"name": ["This field is required."]}),
    ),
    401: ("No or bad credentials", error_body(401, "authentication_failed", "Invalid API token.")),
    403: (
        "Role or token scope too low",
        error_body(403, "permission_denied", "This action needs the operator role; you are a viewer."),
    ),
    404: ("No such object or page", error_body(404, "not_found", "Not found.")),
    409: (
        "Conflict with the current state",
        error_body(
            409,
            "conflict",
            "ring broad follows pilot; change its rollout first",
            {"non_field_errors": ["ring broad follows pilot; change its rollout first"]},
        ),
    ),
    413: ("Body too large", error_body(413, "too_large", "the report is larger than 65536 bytes")),
    429: (
        "Too many requests",
        error_body(429, "throttled", "too many reports from this endpoint: at most 10 a minute"),
    ),
}
ERROR_DESCRIPTIONS = {
    400: "Invalid input: `errors` names each field at fault.",
    401: "Missing, invalid, expired or revoked credentials.",
    403: "The caller's role, or a read-only token, does not allow it.",
    404: "No object with this id (or no such page of the list).",
}


def error_examples(code: int) -> list[OpenApiExample]:
    summary, body = ERROR_EXAMPLES.get(code, ERROR_EXAMPLES[400])
    return [
        OpenApiExample(
            f"{code}", value={**body, "status": code}, summary=summary, response_only=True, status_codes=[str(code)]
        )
    ]


def error_response(code: int, description: str = "") -> OpenApiResponse:
    """The error body for ``code``, for views that declare an unusual error themselves."""
    return OpenApiResponse(
        ApiErrorSerializer, description=description or ERROR_DESCRIPTIONS.get(code, ""), examples=error_examples(code)
    )


class PortalAutoSchema(AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for code in self._error_codes(operation):
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(error_response(code), str(code))
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_codes(self, operation) -> list[int]:
        codes = [401]
        if any(not isinstance(permission, AllowAny) for permission in self.view.get_permissions()):
            codes.append(403)
        query = [p for p in operation.get("parameters", []) if p["in"] == "query"]
        if operation.get("requestBody") or query:
            codes.append(400)
        if "{" in self.path or any(p["name"] == "page" for p in query):
            codes.append(404)
        return codes

    def _get_response_for_code(self, serializer, status_code, media_types=None, direction="response"):
        # An error response a view declares without examples gets the standard one.
        plain = serializer.response if isinstance(serializer, OpenApiResponse) else serializer
        if _is_error_serializer(plain) and not (isinstance(serializer, OpenApiResponse) and serializer.examples):
            description = serializer.description if isinstance(serializer, OpenApiResponse) else ""
            serializer = error_response(int(status_code), description)
        return super()._get_response_for_code(serializer, status_code, media_types, direction)


def _is_error_serializer(serializer) -> bool:
    return serializer is ApiErrorSerializer or isinstance(serializer, ApiErrorSerializer)


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "core.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (mdo_…), from the API tokens page: "
            "`Authorization: Bearer mdo_…`. Read-only tokens cannot write.",
        }


class OrderingFilterParameter(OpenApiFilterExtension):
    """``?ordering=`` with the fields the view allows (``-`` for descending, several comma-separated)."""

    target_class = "rest_framework.filters.OrderingFilter"

    def get_schema_operation_parameters(self, auto_schema, *args, **kwargs):
        view = auto_schema.view
        if getattr(view, "ordering_fields", None) in (None, "__all__"):
            return self.target.get_schema_operation_parameters(view)  # DRF's own: a plain string
        fields = [name for name, _ in self.target.get_valid_fields(None, view, {"request": None})]
        values = [value for name in fields for value in (name, f"-{name}")]
        return [
            build_parameter_type(
                name=self.target.ordering_param,
                schema=build_array_type(build_basic_type(OpenApiTypes.STR) | {"enum": values}),
                location=OpenApiParameter.QUERY,
                description=f"Order by {', '.join(fields)}; `-` before a field for descending, several comma-separated.",
                explode=False,
            )
        ]
