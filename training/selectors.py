"""Reads of the training domain; the `access_*` ones are scoped through the labeling
selectors' access checks."""

from django.db.models import QuerySet
from django.http import Http404

from labeling.models import Project, Prompt, RankingTask
from labeling.selectors import access_project
from training.models import MetricPoint, ModelVersion, Round, TrainingRun


def access_round(*, user, round_id: int, admin: bool = True) -> Round:
    """The round, if `user` may see it (404 otherwise; 403 for a labeler on admin routes)."""
    round_ = Round.objects.select_related("project").filter(pk=round_id).first()
    if round_ is None:
        raise Http404("No such round.")
    access_project(user=user, slug=round_.project.slug, admin=admin)
    return round_


def access_run(*, user, run_id: int, admin: bool = True) -> TrainingRun:
    run = TrainingRun.objects.select_related("project").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    access_project(user=user, slug=run.project.slug, admin=admin)
    return run


def rounds_for_project(*, project: Project) -> QuerySet[Round]:
    return (
        Round.objects.filter(project=project)
        .select_related("project", "sampling_policy", "reward_model", "policy", "reviewed_by")
        .order_by("-number")
    )


def models_for_project(*, project: Project) -> QuerySet[ModelVersion]:
    return (
        ModelVersion.objects.filter(project=project).select_related("parent").order_by("-version")
    )


def runs_for_round(*, round_: Round) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(round=round_).order_by("id")


def runs_for_project(*, project: Project) -> QuerySet[TrainingRun]:
    return TrainingRun.objects.filter(project=project).select_related("round").order_by("-id")


def metric_series(*, run: TrainingRun, after_step: int = -1) -> dict[str, list]:
    """Column-wise series {"step": [...], "rm/loss": [...], ...} for plots (None for gaps)."""
    points = list(
        MetricPoint.objects.filter(run=run, step__gt=after_step)
        .order_by("step")
        .values_list("step", "values")
    )
    names = sorted({name for _, values in points for name in values})
    series: dict[str, list] = {"step": [step for step, _ in points]}
    for name in names:
        series[name] = [values.get(name) for _, values in points]
    return series


def current_policy_for_project(*, project: Project) -> ModelVersion | None:
    """The project's current policy version; None before the first one is registered (the
    registry's `current_policy` creates it, this read does not)."""
    return ModelVersion.objects.filter(
        project=project, role=ModelVersion.Role.POLICY, is_current=True
    ).first()


def round_prompts(*, project: Project) -> QuerySet[Prompt]:
    """The prompts a round may sample: train prompts the moderation filter has not held
    out (labeling.services.moderation)."""
    return Prompt.objects.filter(
        project=project, split=Prompt.Split.TRAIN, moderation__in=Prompt.USABLE_MODERATION
    )


def prompts_for_round(*, round_: Round) -> list[Prompt]:
    """Train prompts not yet tasked in this round, preferring prompts never ranked before."""
    project = round_.project
    already = RankingTask.objects.filter(round=round_).values_list("prompt_id", flat=True)
    missing = round_.num_prompts - len(already)
    if missing <= 0:
        return []
    candidates = round_prompts(project=project).exclude(pk__in=already)
    used = set(RankingTask.objects.filter(project=project).values_list("prompt_id", flat=True))
    fresh = [p for p in candidates.order_by("id") if p.pk not in used]
    reused = [p for p in candidates.order_by("id") if p.pk in used]
    return (fresh + reused)[:missing]
