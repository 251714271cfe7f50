"""Routes of the labeling API under /api/v1/ (PRODUCT.md section 3)."""

from django.urls import path

from labeling.api import review, stats, views

urlpatterns = [
    path("projects/", views.ProjectListApi.as_view(), name="api-project-list"),
    path("projects/<slug:slug>/", views.ProjectDetailApi.as_view(), name="api-project-detail"),
    path("projects/<slug:slug>/members/", views.MemberListApi.as_view(), name="api-member-list"),
    path("projects/<slug:slug>/prompts/", views.PromptListApi.as_view(), name="api-prompt-list"),
    # PRODUCT.md writes this one without the trailing slash; both spellings work.
    path(
        "projects/<slug:slug>/prompts/import",
        views.PromptImportApi.as_view(),
        name="api-prompt-import",
    ),
    path(
        "projects/<slug:slug>/prompts/import/",
        views.PromptImportSlashApi.as_view(),
        name="api-prompt-import-slash",
    ),
    path(
        "projects/<slug:slug>/prompts/<int:prompt_id>/release/",
        views.PromptModerationApi.as_view(action="release"),
        name="api-prompt-release",
    ),
    path(
        "projects/<slug:slug>/prompts/<int:prompt_id>/drop/",
        views.PromptModerationApi.as_view(action="drop"),
        name="api-prompt-drop",
    ),
    path("projects/<slug:slug>/tasks/next/", views.NextTaskApi.as_view(), name="api-task-next"),
    path(
        "tasks/<int:task_id>/rankings/", views.RankingCreateApi.as_view(), name="api-ranking-create"
    ),
    path("tasks/<int:task_id>/skip/", views.TaskSkipApi.as_view(), name="api-task-skip"),
    path(
        "projects/<slug:slug>/demonstrations/",
        views.DemonstrationListApi.as_view(),
        name="api-demonstration-list",
    ),
    path(
        "projects/<slug:slug>/comparisons/",
        views.ComparisonExportApi.as_view(),
        name="api-comparison-list",
    ),
    path(
        "projects/<slug:slug>/rankings/",
        views.RankingExportApi.as_view(),
        name="api-ranking-list",
    ),
    path(
        "projects/<slug:slug>/labelers/stats/",
        stats.LabelerStatsApi.as_view(),
        name="api-labeler-stats",
    ),
    # Second looks (labeling/api/review.py): labelers' history, revisions, skipped tasks;
    # admins' review and gold tasks.
    path("projects/<slug:slug>/history/", review.HistoryApi.as_view(), name="api-history"),
    path(
        "rankings/<int:ranking_id>/revise/",
        review.RankingReviseApi.as_view(),
        name="api-ranking-revise",
    ),
    path("tasks/<int:task_id>/unskip/", review.TaskReturnApi.as_view(), name="api-task-unskip"),
    path(
        "projects/<slug:slug>/review/tasks/",
        review.ReviewTaskListApi.as_view(),
        name="api-review-tasks",
    ),
    path(
        "projects/<slug:slug>/review/tasks/<int:task_id>/",
        review.ReviewTaskDetailApi.as_view(),
        name="api-review-task",
    ),
    path(
        "rankings/<int:ranking_id>/review/",
        review.RankingReviewApi.as_view(),
        name="api-ranking-review",
    ),
    path("tasks/<int:task_id>/gold/", review.TaskGoldApi.as_view(), name="api-task-gold"),
]
