from django.contrib import admin

from training import models


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
    list_display = ["id", "project", "number", "stage", "progress_done", "progress_total"]
    list_filter = ["project", "stage"]
    raw_id_fields = ["sampling_policy", "reward_model", "policy", "created_by"]
    inlines = [TrainingRunInline]


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
