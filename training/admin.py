from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.exceptions import ApplicationError
from training import models
from training.services.rounds import round_advance, round_cancel


@admin.register(models.ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "version", "status", "is_current", "created_at"]
    list_filter = ["project", "kind", "status", "is_current"]
    raw_id_fields = ["parent"]


class TrainingRunInline(admin.TabularInline):
    model = models.TrainingRun
    extra = 0
    fields = readonly_fields = ("kind", "status", "progress_done", "progress_total", "error")
    show_change_link = True


@admin.register(models.Round)
class RoundAdmin(admin.ModelAdmin):
    """A round's stage and progress are the state machine's (training.services.rounds):
    read-only here, moved only by the "advance" and "cancel" actions, which call it."""

    list_display = ["id", "project", "number", "recipe", "stage", "progress"]
    list_filter = ["project", "stage"]
    raw_id_fields = ["sampling_policy", "reward_model", "policy", "created_by"]
    readonly_fields = [
        "stage",
        "progress",
        "progress_done",
        "progress_total",
        "failed_stage",
        "error",
        "metrics",
    ]
    inlines = [TrainingRunInline]
    actions = ["advance_rounds", "cancel_rounds"]

    @admin.display(description="progress")
    def progress(self, obj: models.Round) -> str:
        return f"{obj.progress_done} / {obj.progress_total}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rounds start from the dashboard, the API or start_round

    @admin.action(description="Advance the selected rounds (end labeling, or retry)")
    def advance_rounds(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, round_advance, "advanced")

    @admin.action(description="Cancel the selected rounds")
    def cancel_rounds(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(request, queryset, round_cancel, "cancelled")

    def _each(self, request: HttpRequest, queryset: QuerySet, act: Any, what: str) -> None:
        for round_ in queryset.order_by("id"):
            try:
                act(round_=round_, user=request.user)
            except ApplicationError as error:
                self.message_user(request, f"Round {round_.number}: {error}", messages.WARNING)
            else:
                self.message_user(request, f"Round {round_.number} of {round_.project} {what}.")


@admin.register(models.TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "round", "kind", "status", "progress_done", "progress_total"]
    list_filter = ["project", "kind", "status"]
    raw_id_fields = ["round", "output"]


@admin.register(models.PlaygroundReply)
class PlaygroundReplyAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "user", "status", "policy_version", "created_at"]
    list_filter = ["project", "status"]
    raw_id_fields = ["user", "policy_version"]
