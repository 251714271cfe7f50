from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest

from core.exceptions import ApplicationError
from labeling import models, seams
from labeling.services.moderation import (
    check_moderation_rules,
    moderation_rescan,
    prompt_drop,
    prompt_release,
)
from labeling.services.projects import check_base_model


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["pseudonym"]


class ProjectForm(forms.ModelForm):
    """The same checks of base_model and training_config as the API and the CLI (the
    admin adds the model's other fields to the form)."""

    class Meta:
        model = models.Project
        fields = ["base_model", "training_config", "moderation_rules"]

    def clean_base_model(self):
        project = self.instance if self.instance.pk else None
        return _as_form_error(
            check_base_model, project=project, base_model=self.cleaned_data["base_model"]
        )

    def clean_training_config(self):
        return _as_form_error(seams.check_training_config, self.cleaned_data["training_config"])

    def clean_moderation_rules(self):
        return _as_form_error(
            check_moderation_rules,
            project=self.instance,
            config=self.cleaned_data["moderation_rules"],
        )


def _as_form_error(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return check(*args, **kwargs)
    except ApplicationError as error:
        raise forms.ValidationError(error.message) from None


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
    form = ProjectForm
    list_display = ["slug", "name", "k", "overlap", "base_model", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]

    def save_model(
        self, request: HttpRequest, obj: models.Project, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        if "moderation_rules" in form.changed_data:
            moderation_rescan(project=obj)


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role", "pseudonym"]
    list_filter = ["role", "project"]
    raw_id_fields = ["user"]
    readonly_fields = ["pseudonym"]


@admin.register(models.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "short_text", "split", "moderation", "source", "created_at"]
    list_filter = ["project", "split", "moderation"]
    search_fields = ["text"]
    # Moderation changes only through the actions (labeling.services.moderation).
    readonly_fields = ["content_hash", "moderation", "moderation_reasons"]
    actions = ["release_prompts", "drop_prompts"]

    @admin.display(description="text")
    def short_text(self, obj: models.Prompt) -> str:
        return obj.text[:80]

    @admin.action(description="Release the selected flagged prompts (used in rounds again)")
    def release_prompts(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, prompt_release, "released")

    @admin.action(description="Drop the selected prompts (kept, never used in a round)")
    def drop_prompts(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, prompt_drop, "dropped")

    def _decide(self, request: HttpRequest, queryset: QuerySet, decide: Any, what: str) -> None:
        done, skipped = 0, []
        for prompt in queryset:
            try:
                decide(prompt=prompt)
                done += 1
            except ApplicationError as error:
                skipped.append(str(error))
        self.message_user(request, f"{done} prompt(s) {what}.")
        for message in skipped[:5]:
            self.message_user(request, message, level=messages.WARNING)


@admin.register(models.Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "author", "source", "created_at"]
    list_filter = ["project", "source"]
    raw_id_fields = ["prompt", "author"]


class ResponseInline(admin.TabularInline):
    model = models.Response
    extra = 0
    fields = readonly_fields = (
        "position",
        "text",
        "token_count",
        "finished",
        "policy_version",
        "seed",
    )


def readable_order(ranking: models.Ranking, snippet: int = 40) -> str:
    """Tie groups as response places and text snippets, best first: "#2 'Sure…' > #1 'No' =
    #4 'Hm'". Plain text (the admin escapes it): model output is hostile."""
    by_id = {r.pk: r for r in ranking.task.responses.all()}

    def name(response_id: int) -> str:
        response = by_id.get(response_id)
        if response is None:
            return f"?{response_id}"
        text = " ".join(response.text.split())
        short = text if len(text) <= snippet else text[: snippet - 1] + "…"
        return f"#{response.position + 1} “{short}”"

    return " > ".join(" = ".join(name(i) for i in group) for group in ranking.tie_groups or [])


class RankingInline(admin.TabularInline):
    """A task's rankings, readable; read-only (reviews happen on the review screen)."""

    model = models.Ranking
    fk_name = "task"
    extra = 0
    fields = readonly_fields = ("labeler", "order", "review", "superseded_at", "created_at")
    can_delete = False

    @admin.display(description="order (best first)")
    def order(self, obj: models.Ranking) -> str:
        return readable_order(obj)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(models.RankingTask)
class RankingTaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "round", "status", "rankings_count", "overlap", "is_gold"]
    list_filter = ["project", "status", "is_gold", "source"]
    raw_id_fields = ["prompt", "round"]
    inlines = [ResponseInline, RankingInline]


class AssignmentForm(forms.ModelForm):
    class Meta:
        model = models.Assignment
        fields = ["expires_at"]

    def clean_expires_at(self):
        value = self.cleaned_data["expires_at"]
        if self.instance.pk and value > self.instance.expires_at:
            # A revived lease could take a slot given to someone else meanwhile.
            raise forms.ValidationError("A lease can be shortened or ended, not extended.")
        return value


@admin.register(models.Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    """Leases can be shortened (set `expires_at` to now to end one); who holds what and
    its status are the lease invariant's and the counters' record, so they are read-only,
    and a submitted assignment (it goes with a ranking) cannot be deleted on its own. It
    still goes when its task, project or labeler is deleted (the cascade asks
    has_delete_permission, so the rule lives in the assignment's own delete views)."""

    form = AssignmentForm
    list_display = ["id", "task", "labeler", "status", "expires_at"]
    list_filter = ["status"]
    readonly_fields = ["task", "labeler", "status"]

    def has_add_permission(self, request) -> bool:
        return False  # leases are taken through tasks/next, never made by hand

    def delete_view(self, request, object_id, extra_context=None):
        obj = self.get_object(request, object_id)
        if obj is not None and obj.status == models.Assignment.Status.SUBMITTED:
            raise PermissionDenied("A submitted assignment goes with its ranking.")
        return super().delete_view(request, object_id, extra_context)

    def delete_queryset(self, request, queryset) -> None:
        if queryset.filter(status=models.Assignment.Status.SUBMITTED).exists():
            raise PermissionDenied("Submitted assignments go with their rankings.")
        super().delete_queryset(request, queryset)


@admin.register(models.Ranking)
class RankingAdmin(admin.ModelAdmin):
    """Read-only: submitted rankings are never silently changed (revisions and reviews go
    through labeling/services/review.py)."""

    list_display = ["id", "task", "labeler", "order", "review", "superseded_at", "created_at"]
    list_filter = ["source", "all_unacceptable", "review"]
    raw_id_fields = ["task", "assignment", "labeler", "superseded_by", "reviewed_by"]
    readonly_fields = ["order"]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("task__responses")

    @admin.display(description="order (best first)")
    def order(self, obj: models.Ranking) -> str:
        return readable_order(obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(models.Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "ranking", "chosen", "rejected", "margin", "round"]
    list_filter = ["project"]
    raw_id_fields = ["ranking", "task", "prompt", "chosen", "rejected", "round"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(models.Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "user", "rating", "policy_version", "created_at"]
    list_filter = ["project", "rating"]
