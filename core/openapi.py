"""The OpenAPI schema of the API documents its error answers next to each view's own ones.

Every API error is `{"detail": ...}` (core.exceptions.api_exception_handler, and
core.http_errors for URLs that match no route). Which codes an operation can answer follows
from its shape: 401, 403 and 429 wherever a login is needed (403: the user may not do
this; 429: too many requests or bad tokens), 404 wherever the path names an object, 400
wherever the request carries input, 413 and 415 wherever it has a body. A view documents
its own others (409) with @extend_schema.
"""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

WRITE_METHODS = {"POST", "PUT", "PATCH"}
MEANINGS = {
    400: "The input is invalid, or the request cannot be done (detail says why).",
    401: "No valid token or session.",
    403: "The user may not do this (a labeler on an admin route, for one).",
    404: "No such object in the user's projects.",
    413: "The body is over the size limit (RLHF_IMPORT_MAX_BYTES).",
    415: "The body is not of a media type the operation reads.",
    429: "Too many requests, or too many bad tokens from this address (see Retry-After).",
}


class ErrorOut(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    # DRF's metaclass takes declared fields off the class, so this does not shadow
    # Serializer.errors at run time; mypy cannot know that.
    errors = serializers.JSONField(  # type: ignore[assignment]
        required=False, help_text="Messages per input field, when the input was invalid."
    )


class ApiSchema(AutoSchema):
    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if str(code) not in responses:
                error = OpenApiResponse(ErrorOut, description=MEANINGS[code])
                responses[str(code)] = self._get_response_for_code(
                    error, str(code), direction=direction
                )
        return responses

    def _error_codes(self) -> list[int]:
        codes = set()
        if self.method in WRITE_METHODS or any(p["in"] == "query" for p in self._get_parameters()):
            codes.add(400)
        if self.method in WRITE_METHODS and self.get_request_serializer() is not None:
            codes |= {413, 415}
        if any(not isinstance(p, AllowAny) for p in self.view.get_permissions()):
            codes |= {401, 403, 429}
        if "{" in self.path:
            codes.add(404)
        return sorted(codes)


def error_response(description: str) -> OpenApiResponse:
    """An error answer that a view documents itself (a 409, say), in the API's shape."""
    return OpenApiResponse(ErrorOut, description=description)
