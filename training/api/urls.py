from django.urls import path

from training.api import views

urlpatterns = [
    path("projects/<slug:slug>/rounds/", views.RoundListApi.as_view(), name="api-round-list"),
    path("rounds/<int:round_id>/", views.RoundDetailApi.as_view(), name="api-round-detail"),
    path(
        "rounds/<int:round_id>/advance/", views.RoundAdvanceApi.as_view(), name="api-round-advance"
    ),
    path("rounds/<int:round_id>/cancel/", views.RoundCancelApi.as_view(), name="api-round-cancel"),
    path(
        "rounds/<int:round_id>/approve/", views.RoundApproveApi.as_view(), name="api-round-approve"
    ),
    path("rounds/<int:round_id>/reject/", views.RoundRejectApi.as_view(), name="api-round-reject"),
    path("projects/<slug:slug>/models/", views.ModelListApi.as_view(), name="api-model-list"),
    path("projects/<slug:slug>/runs/", views.RunListApi.as_view(), name="api-run-list"),
    path("projects/<slug:slug>/sft/", views.SftStartApi.as_view(), name="api-sft-start"),
    path("runs/<int:run_id>/metrics/", views.RunMetricsApi.as_view(), name="api-run-metrics"),
]

from training.api import playground  # noqa: E402

urlpatterns += [
    path(
        "projects/<slug:slug>/playground/",
        playground.PlaygroundRequestApi.as_view(),
        name="api-playground-request",
    ),
    path(
        "playground/<int:reply_id>/",
        playground.PlaygroundReplyApi.as_view(),
        name="api-playground-reply",
    ),
    path(
        "playground/<int:reply_id>/feedback/",
        playground.PlaygroundFeedbackApi.as_view(),
        name="api-playground-feedback",
    ),
    path(
        "playground/<int:reply_id>/demonstration/",
        playground.PlaygroundDemonstrationApi.as_view(),
        name="api-playground-demonstration",
    ),
]
