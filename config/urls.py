from django.conf import settings
from django.contrib import admin
from django.contrib.auth import urls as auth_urls
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

# Login, logout and password change; the password-reset pages (which mail a link) only
# when a mail server is configured (DJANGO_EMAIL_HOST), else they are 404.
account_urls = [
    pattern
    for pattern in auth_urls.urlpatterns
    if settings.EMAIL_HOST or not str(getattr(pattern, "name", "")).startswith("password_reset")
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include(account_urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI from drf-spectacular-sidecar; the split view serves its start-up script as
    # a file, so the page needs no inline script (CSP), and the template no inline style.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api_docs.html"),
        name="api-docs",
    ),
    path("api/v1/", include("labeling.api.urls")),
    path("api/v1/", include("training.api.urls")),
    path("", include("frontend.urls")),
]

# A URL under /api/ that matches no route answers JSON, like the API's other errors.
handler404 = "core.http_errors.page_not_found"
