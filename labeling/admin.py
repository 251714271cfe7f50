from django.contrib import admin

from labeling import models


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    raw_id_fields = ["user"]
    readonly_fields = ["pseudonym"]


@admin.register(models.Project)
class ProjectAdmin(admin.ModelAdmin):
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
        "position", "text", "token_count", "finished", "policy_version", "seed"
    )  # fmt: skip


@admin.register(models.RankingTask)
class RankingTaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "round", "status", "rankings_count", "overlap", "is_gold"]
    list_filter = ["project", "status", "is_gold", "source"]
    raw_id_fields = ["prompt", "round"]
    inlines = [ResponseInline]


@admin.register(models.Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    """Leases can be shortened (edit `expires_at` to end one now); who holds what and its
    status are the lease invariant's and the counters' record, so they are read-only, and
    a submitted assignment (it goes with a ranking) cannot be deleted."""

    list_display = ["id", "task", "labeler", "status", "expires_at"]
    list_filter = ["status"]
    readonly_fields = ["task", "labeler", "status"]

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # leases are taken through tasks/next, never made by hand

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        if obj is not None and obj.status == models.Assignment.Status.SUBMITTED:
            return False
        return super().has_delete_permission(request, obj)


@admin.register(models.Ranking)
class RankingAdmin(admin.ModelAdmin):
    """Read-only: submitted rankings are never silently changed."""

    list_display = ["id", "task", "labeler", "all_unacceptable", "time_spent_ms", "created_at"]
    list_filter = ["source", "all_unacceptable"]
    raw_id_fields = ["task", "assignment", "labeler"]

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(models.Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "ranking", "chosen", "rejected", "margin", "round"]
    list_filter = ["project"]
    raw_id_fields = ["ranking", "task", "prompt", "chosen", "rejected", "round"]

    def has_change_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False


@admin.register(models.Feedback)
class FeedbackAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "user", "rating", "policy_version", "created_at"]
    list_filter = ["project", "rating"]
