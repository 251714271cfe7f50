from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/", include("labeling.api.urls")),
    path("api/v1/", include("training.api.urls")),
    path("", include("training.urls")),
    path("", include("frontend.urls")),
]
