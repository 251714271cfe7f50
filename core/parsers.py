"""Request body parsers of the API: strict JSON (the default) and multipart (imports only).

Both refuse a body over settings.RLHF_IMPORT_MAX_BYTES with a JSON 413 before reading it,
and refuse what formats.json_safety refuses (NaN, 1e400, a 5,000-digit integer, deep
nesting, NUL or a lone surrogate) with a 400 naming the JSON path:
`{"detail": "$[0].metadata.note: contains a NUL character (at 1)", "errors": {...}}`.
"""

from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers

from core.exceptions import RequestTooLarge
from formats.json_safety import JsonRefused, check_value, loads

# Headers and boundaries around an uploaded file: a file of exactly the limit still fits.
MULTIPART_OVERHEAD_BYTES = 64 * 2**10


def check_body_size(request: Any, *, slack: int = 0) -> None:
    """Refuse (413) a request whose Content-Length is over the limit (plus `slack`)."""
    limit = settings.RLHF_IMPORT_MAX_BYTES
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit + slack:
        raise RequestTooLarge.for_size(length)


class StrictJSONParser(parsers.JSONParser):
    """application/json under formats.json_safety's rules."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        parser_context = parser_context or {}
        check_body_size(parser_context["request"])
        limit = settings.RLHF_IMPORT_MAX_BYTES
        raw = stream.read(limit + 1)  # a body without a true Content-Length stops here
        if len(raw) > limit:
            raise RequestTooLarge.for_size(None)
        try:  # JSON is UTF-8 (RFC 8259 section 8.1), whatever charset the header names
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.ParseError("JSON parse error - the body is not UTF-8") from None
        try:
            return loads(text)
        except JsonRefused as error:
            raise _refusal(error) from None


class StrictMultiPartParser(parsers.MultiPartParser):
    """multipart/form-data whose form fields (not files) follow the same text rules."""

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> parsers.DataAndFiles:
        parser_context = parser_context or {}
        check_body_size(parser_context["request"], slack=MULTIPART_OVERHEAD_BYTES)
        parsed = super().parse(stream, media_type, parser_context)
        try:
            check_value({key: parsed.data.getlist(key) for key in parsed.data})
        except JsonRefused as error:
            raise _refusal(error) from None
        return parsed


def _refusal(error: JsonRefused) -> exceptions.APIException:
    if error.path is None:
        return exceptions.ParseError(f"JSON parse error - {error.reason}")
    return exceptions.ValidationError({error.path: [error.reason]})
