"""Django's answer for a URL that reaches no view: under /api/ it is the API's own
`{"detail": ...}` JSON (a client parsing JSON gets no HTML page), elsewhere the page."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
