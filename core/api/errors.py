"""One JSON error format for the whole API.

    {"status": 400, "code": "invalid", "detail": "name: This field is required.",
     "errors": {"name": ["This field is required."]}}

``detail`` is always one readable sentence; ``errors`` (field -> messages) only
for validation errors and conflicts. A list or nested field's messages are keyed by index or
sub-field: ``{"platforms": {"1": ["\"x\" is not a valid choice."]}}``.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers, status
from rest_framework.views import exception_handler as drf_exception_handler

from core.errors import Refused


def _flatten(errors, prefix="") -> list[str]:
    if isinstance(errors, dict):
        lines = []
        for field, value in errors.items():
            name = f"{prefix}.{field}" if prefix else str(field)
            lines += _flatten(value, "" if name == "non_field_errors" else name)
        return lines
    if isinstance(errors, list):
        lines = []
        for index, value in enumerate(errors):
            lines += _flatten(value, f"{prefix}[{index}]" if isinstance(value, (dict, list)) and prefix else prefix)
        return lines
    return [f"{prefix}: {errors}" if prefix else str(errors)]


class Conflict(exceptions.ValidationError):
    """Refused because of the current state (still in use, changed meanwhile): 409, ``errors`` as for invalid input."""

    status_code = status.HTTP_409_CONFLICT


MESSAGES = {"type": "array", "items": {"type": "string"}}


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "anyOf": [
                MESSAGES,
                {"type": "object", "description": "A list's or nested field's messages, by index or sub-field."},
                {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "Messages of each item of a nested list.",
                },
            ]
        },
    }
)
class FieldErrorsField(serializers.DictField):
    pass


class ApiErrorSerializer(serializers.Serializer):
    """The API's one error body: every refusal of every operation (core.api.schema adds it to each)."""

    status = serializers.IntegerField(help_text="The HTTP status, repeated.")
    code = serializers.CharField(
        help_text="Machine-readable: invalid, parse_error, not_authenticated, authentication_failed, "
        "permission_denied, not_found, method_not_allowed, conflict, too_large, throttled..."
    )
    detail = serializers.CharField(help_text="One readable sentence.")
    errors = FieldErrorsField(
        required=False,
        help_text="Invalid input and conflicts only: field (or JSON path of an imported "
        "file) -> messages; non_field_errors for the request as a whole.",
    )


def error_body(status_code: int, code: str, detail: str, errors=None) -> dict:
    body = {"status": status_code, "code": code, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def exception_handler(exc, context):
    # DRF turns Django's own exceptions into these inside its handler; do it first
    # so that they get the same body.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, Refused):
        # A service's refusal reaches the API as the UI shows it: the same words, on the same field. A 403 (who asks,
        # not what is asked: a token's scope, a password to confirm) is the API's permission error.
        if exc.status == status.HTTP_403_FORBIDDEN:
            exc = exceptions.PermissionDenied(exc.message)
        else:
            exc = (Conflict if exc.status == status.HTTP_409_CONFLICT else exceptions.ValidationError)(
                {exc.field: [exc.message]}
            )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        code = "conflict" if response.status_code == status.HTTP_409_CONFLICT else "invalid"
        response.data = error_body(response.status_code, code, " ".join(_flatten(errors)), errors)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "error"
        response.data = error_body(response.status_code, code, str(exc.detail))
    return response


def json_error_view(status_code: int, code: str, detail: str):
    def view(request, exception=None):
        return JsonResponse(error_body(status_code, code, detail), status=status_code)

    return view


api_not_found = json_error_view(status.HTTP_404_NOT_FOUND, "not_found", "No API endpoint or object at this URL.")
api_server_error = json_error_view(
    status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "The server failed; the error has been logged."
)
