"""Errors raised by services, and the API handler that turns them into {"detail": ...}."""

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response


class ApplicationError(Exception):
    """A user-facing error from a service: the request was understood but cannot be done.

    `extra` carries field messages, e.g. {"line": 12} for an import error.
    """

    status_code = 400

    def __init__(self, message: str, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class ConflictError(ApplicationError):
    """The request conflicts with the current state (e.g. a ranking already submitted)."""

    status_code = 409


class RequestTooLarge(drf_exceptions.APIException):
    """A request body or an uploaded file over settings.RLHF_IMPORT_MAX_BYTES (413)."""

    status_code = 413
    default_detail = "The request is too large."
    default_code = "request_too_large"

    @classmethod
    def for_size(cls, size: int | None, *, what: str = "request") -> "RequestTooLarge":
        limit = settings.RLHF_IMPORT_MAX_BYTES
        if size is None:
            return cls(f"the {what} is larger than the limit of {limit} bytes")
        return cls(f"the {what} is {size} bytes; the limit is {limit} bytes")


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every API error is `{"detail": ...}` with a 4xx status, plus field messages."""
    if isinstance(exc, DjangoValidationError):
        exc = drf_exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        )
    elif isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):  # Django's own check of the same limit
        exc = RequestTooLarge.for_size(None)
    elif isinstance(exc, SuspiciousOperation):  # e.g. too many form fields
        exc = drf_exceptions.ParseError("The request body cannot be read.")
    elif isinstance(exc, ApplicationError):
        return Response({"detail": exc.message, **exc.extra}, status=exc.status_code)

    # Imported here: DRF's views load the API parsers, which import this module.
    from rest_framework.views import exception_handler

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        data = response.data
        if isinstance(data, dict) and "detail" not in data:
            first = next(iter(data.items()), None)
            summary = f"{first[0]}: {_first_message(first[1])}" if first else "Invalid input."
            response.data = {"detail": summary, "errors": data}
        elif isinstance(data, list):
            response.data = {"detail": _first_message(data), "errors": data}
    return response


def _first_message(value: Any) -> str:
    while isinstance(value, list | tuple) and value:
        value = value[0]
    if isinstance(value, dict) and value:
        return _first_message(next(iter(value.values())))
    return str(value)
