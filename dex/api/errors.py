"""One error shape for the whole API.

Every refusal is ``{"code": "...", "message": "...", "details": {...}}`` with a 4xx
status: ``code`` is stable and machine-readable (``VALIDATION_ERROR``,
``INSUFFICIENT_FUNDS``, ``NONCE_REUSED``…), ``message`` is for people, and
``details`` maps a field to what is wrong with it (absent when no field is to blame).

A value the database refuses outright (``DataError``: a NUL character in text, a
number out of its column's range) came from the request: ``400 MALFORMED_REQUEST``.

When the database cannot be reached (or asks for a retry: a serialization failure,
a deadlock), the answer is ``503 SERVICE_UNAVAILABLE`` with ``Retry-After``: the
request may or may not have been applied, and retrying it is safe because orders and
withdrawals are idempotent on the client's own id.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpResponse, JsonResponse
from django.views.defaults import bad_request as django_bad_request
from django.views.defaults import page_not_found
from django.views.defaults import permission_denied as django_permission_denied
from django.views.defaults import server_error as django_server_error
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class ApiError(exceptions.APIException):
    """A refusal with a domain code: ``raise ApiError("NONCE_REUSED", "…", status=409)``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int = status.HTTP_400_BAD_REQUEST,
        details: dict | None = None,
    ) -> None:
        super().__init__(detail=message, code=code)
        self.status_code = status
        self.code = code
        self.message = message
        self.details = details


_CODES = {
    exceptions.ParseError: "MALFORMED_REQUEST",
    exceptions.AuthenticationFailed: "AUTHENTICATION_FAILED",
    exceptions.NotAuthenticated: "NOT_AUTHENTICATED",
    exceptions.PermissionDenied: "PERMISSION_DENIED",
    exceptions.NotFound: "NOT_FOUND",
    exceptions.MethodNotAllowed: "METHOD_NOT_ALLOWED",
    exceptions.NotAcceptable: "NOT_ACCEPTABLE",
    exceptions.UnsupportedMediaType: "UNSUPPORTED_MEDIA_TYPE",
    exceptions.Throttled: "RATE_LIMITED",
}


def _flatten(detail) -> dict:
    """DRF's nested validation errors as ``{"field": ["message", …]}`` (nested fields
    joined with dots, list items by index)."""
    out: dict[str, list[str]] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif (
            isinstance(value, list)
            and value
            and not all(isinstance(v, exceptions.ErrorDetail | str) for v in value)
        ):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}" if prefix else str(index), item)
        else:
            items = value if isinstance(value, list) else [value]
            out.setdefault(prefix or "non_field_errors", []).extend(str(v) for v in items)

    walk("", detail)
    return out


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    body = {"code": code, "message": message}
    if details:
        body["details"] = details
    return body


logger = logging.getLogger(__name__)

# Seconds a client is asked to wait before retrying when the database is away.
RETRY_AFTER_SECONDS = 1


def exception_handler(exc, context) -> Response | None:
    """DRF's ``EXCEPTION_HANDLER``: every exception a view raises, in the one shape."""
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable: %s", exc)
        return Response(
            error_body(
                "SERVICE_UNAVAILABLE",
                "the exchange cannot reach its database right now; retry shortly",
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, DataError):
        # A value from the request that PostgreSQL cannot hold or compare: a NUL in a
        # path segment looked up as text, a number past its column's range.
        logger.warning("request data refused by the database: %s", exc)
        return Response(
            error_body(
                "MALFORMED_REQUEST",
                "the request holds a value the exchange cannot store or look up",
            ),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("PAYLOAD_TOO_LARGE", "the request body is too large"),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django logs it and answers 500
    if isinstance(exc, ApiError):
        response.data = error_body(exc.code, exc.message, exc.details)
    elif isinstance(exc, exceptions.ValidationError):
        details = _flatten(exc.detail)
        first_field, first = next(iter(details.items()))
        message = first[0] if first_field == "non_field_errors" else f"{first_field}: {first[0]}"
        response.data = error_body("VALIDATION_ERROR", message, details)
    else:
        code = next((c for t, c in _CODES.items() if isinstance(exc, t)), "ERROR")
        response.data = error_body(code, str(exc.detail))
    return response


def not_found(request, exception=None) -> HttpResponse:
    """``handler404``: JSON under ``/api/``, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("NOT_FOUND", "no such endpoint"), status=404)
    return page_not_found(request, exception)


def bad_request(request, exception=None) -> HttpResponse:
    """``handler400`` (a bad Host header, a suspicious request): JSON under ``/api/``."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("BAD_REQUEST", "the request was refused"), status=400)
    return django_bad_request(request, exception)


def permission_denied(request, exception=None) -> HttpResponse:
    """``handler403``: JSON under ``/api/``, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("PERMISSION_DENIED", "permission denied"), status=403)
    return django_permission_denied(request, exception)


def server_error(request) -> HttpResponse:
    """``handler500``: JSON under ``/api/``, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("INTERNAL_ERROR", "an internal error occurred"), status=500)
    return django_server_error(request)
