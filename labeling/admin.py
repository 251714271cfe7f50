from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied

from core.exceptions import ApplicationError
from labeling import models, seams
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
        fields = ["base_model", "training_config"]

    def clean_base_model(self):
        project = self.instance if self.instance.pk else None
        return _as_form_error(
            check_base_model, project=project, base_model=self.cleaned_data["base_model"]
        )

    def clean_training_config(self):
        return _as_form_error(seams.check_training_config, self.cleaned_data["training_config"])


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


@admin.register(models.Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role", "pseudonym"]
    list_filter = ["role", "project"]
    raw_id_fields = ["user"]
    readonly_fields = ["pseudonym"]


@admin.register(models.Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "short_text", "split", "source", "created_at"]
    list_filter = ["project", "split"]
    search_fields = ["text"]
    readonly_fields = ["content_hash"]

    @admin.display(description="text")
    def short_text(self, obj: models.Prompt) -> str:
        return obj.text[:80]


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


@admin.register(models.RankingTask)
class RankingTaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "round", "status", "rankings_count", "overlap", "is_gold"]
    list_filter = ["project", "status", "is_gold", "source"]
    raw_id_fields = ["prompt", "round"]
    inlines = [ResponseInline]


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
    """Read-only: submitted rankings are never silently changed."""

    list_display = ["id", "task", "labeler", "all_unacceptable", "time_spent_ms", "created_at"]
    list_filter = ["source", "all_unacceptable"]
    raw_id_fields = ["task", "assignment", "labeler"]

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
