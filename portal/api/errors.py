"""One JSON error format for the whole API.

    {"status": 400, "code": "invalid", "detail": "name: This field is required.",
     "errors": {"name": ["This field is required."]}}

``detail`` is always one readable sentence; ``errors`` (field -> messages) only
for validation errors.
"""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.views import exception_handler as drf_exception_handler


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
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        response.data = error_body(response.status_code, "invalid", " ".join(_flatten(errors)), errors)
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
api_server_error = json_error_view(status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "The server failed; the error has been logged.")
