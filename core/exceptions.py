"""Errors raised by services, and the API handler that turns them into {"detail": ...}."""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


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
    elif isinstance(exc, ApplicationError):
        return Response({"detail": exc.message, **exc.extra}, status=exc.status_code)

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
