"""Every HTML page of RLHF Studio (the REST API is under /api/v1/, see config/urls.py)."""

from django.urls import path

from frontend.views import labeling, playground, review, rounds, settings

urlpatterns = [
    path("", labeling.home, name="home"),
    path("projects/", labeling.project_list, name="project-list"),
    path("projects/<slug:slug>/label/", labeling.label, name="project-label"),
    path("projects/<slug:slug>/demonstrate/", labeling.demonstrate, name="project-demonstrate"),
    path("projects/<slug:slug>/rounds/", rounds.rounds_dashboard, name="project-rounds"),
    path("projects/<slug:slug>/playground/", playground.playground, name="project-playground"),
    path("projects/<slug:slug>/history/", review.history, name="project-history"),
    path(
        "projects/<slug:slug>/history/<int:ranking_id>/revise/",
        review.revise,
        name="project-revise",
    ),
    path("projects/<slug:slug>/settings/", settings.project_settings, name="project-settings"),
    path("projects/<slug:slug>/review/", review.review_list, name="project-review"),
    path(
        "projects/<slug:slug>/review/<int:task_id>/",
        review.review_task,
        name="project-review-task",
    ),
]
