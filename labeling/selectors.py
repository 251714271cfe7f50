"""Reads of the labeling domain, always scoped to what the user may see.

`access_*` functions are the only way to load an object named by user input (a slug or an
id): they raise Http404 for objects of projects the user is not a member of, so a
stranger cannot even learn that the object exists, and PermissionDenied (403) when a
labeler asks for an admin-only action of their own project. Django superusers see all.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404
from django.utils import timezone

from labeling.models import (
    Assignment,
    Comparison,
    Membership,
    Project,
    Prompt,
    Ranking,
    RankingTask,
)


def project_list_for_user(*, user: Any) -> QuerySet[Project]:
    """The projects `user` is a member of (all of them for a superuser)."""
    if not getattr(user, "is_authenticated", False):
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def membership_for(*, user: Any, project: Project) -> Membership | None:
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.filter(project=project, user=user).first()


def project_role(*, user: Any, project: Project) -> str:
    """The user's role in `project` for display: their membership's role, "superuser" for a
    superuser who is no member, "" for anyone else."""
    membership = membership_for(user=user, project=project)
    return _role_name(membership.role if membership else None, user)


def _role_name(role: str | None, user: Any) -> str:
    return role or ("superuser" if getattr(user, "is_superuser", False) else "")


@dataclass(frozen=True)
class ProjectRow:
    """One card of the project list."""

    project: Project
    role: str  # as project_role
    counts: dict[str, int]  # as labeler_counts


def project_rows_for_user(*, user: Any) -> list[ProjectRow]:
    """The project list of `user`: each project with their role and work counter.

    Four queries whatever the number of projects (projects, memberships, and the two of
    `labeler_counts`, grouped by project).
    """
    projects = list(project_list_for_user(user=user))
    if not projects:
        return []
    ids = [project.pk for project in projects]
    roles = dict(
        Membership.objects.filter(project_id__in=ids, user=user).values_list("project_id", "role")
    )
    counts = labeler_counts_by_project(project_ids=ids, user=user)
    return [
        ProjectRow(
            project=project,
            role=_role_name(roles.get(project.pk), user),
            counts=counts[project.pk],
        )
        for project in projects
    ]


def is_project_admin(*, user: Any, project: Project) -> bool:
    if getattr(user, "is_superuser", False):
        return True
    membership = membership_for(user=user, project=project)
    return membership is not None and membership.role == Membership.Role.ADMIN


def access_project(*, user: Any, slug: str, admin: bool = False) -> Project:
    """The project `slug` if `user` is a member (Http404 otherwise).

    With `admin=True` a member who is not an admin of the project gets PermissionDenied.
    One query for a member (the membership with its project): every project URL of the
    API and of the ranking screen starts here.
    """
    if not getattr(user, "is_authenticated", False):
        raise Http404("No such project.")
    if user.is_superuser:
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise Http404("No such project.")
        return project
    membership = (
        Membership.objects.select_related("project").filter(project__slug=slug, user=user).first()
    )
    if membership is None:
        raise Http404("No such project.")
    if admin and membership.role != Membership.Role.ADMIN:
        raise PermissionDenied("Only project admins may do this.")
    return membership.project


def access_task(*, user: Any, task_id: int) -> RankingTask:
    """The ranking task `task_id` if `user` is a member of its project (Http404 otherwise),
    in one query (the membership is a join: one row per project and user)."""
    if not getattr(user, "is_authenticated", False):
        raise Http404("No such task.")
    tasks = RankingTask.objects.select_related("project").filter(pk=task_id)
    if not user.is_superuser:
        tasks = tasks.filter(project__memberships__user=user)
    task = tasks.first()
    if task is None:
        raise Http404("No such task.")
    return task


def prompts_for_project(*, project: Project, split: str | None = None) -> QuerySet[Prompt]:
    prompts = Prompt.objects.filter(project=project)
    if split is not None:
        prompts = prompts.filter(split=split)
    return prompts.order_by("id")


def prompt_of_project(*, project: Project, prompt_id: int) -> Prompt | None:
    """The prompt `prompt_id` if it belongs to `project` (None otherwise)."""
    return prompts_for_project(project=project).filter(pk=prompt_id).first()


def prompt_to_demonstrate(*, project: Project, after: int | None = None) -> Prompt | None:
    """The next training prompt of `project` that has no demonstration yet, after the prompt
    id `after` (the labeler passed on it), wrapping around to the first one."""
    pending = prompts_for_project(project=project, split=Prompt.Split.TRAIN).filter(
        demonstrations__isnull=True
    )
    if after is not None:
        later = pending.filter(pk__gt=after).first()
        if later is not None:
            return later
    return pending.first()


def comparisons_for_project(
    *, project: Project, round_number: int | None = None
) -> QuerySet[Comparison]:
    """The project's comparisons with everything an export row needs, oldest first."""
    comparisons = Comparison.objects.filter(project=project)
    if round_number is not None:
        comparisons = comparisons.filter(round__number=round_number)
    return comparisons.select_related(
        "chosen__policy_version", "rejected", "prompt", "ranking", "round"
    ).order_by("id")


def rankings_in_use() -> Q:
    """Rankings whose order counts (pairs, exports, agreement): each labeler's current
    version (a revision supersedes the old row, which is kept) and not rejected by an admin."""
    return Q(superseded_at__isnull=True) & ~Q(review=Ranking.Review.REJECTED)


def access_ranking(*, user: Any, ranking_id: int) -> Ranking:
    """The ranking `ranking_id` if `user` is a member of its project (Http404 otherwise)."""
    ranking = (
        Ranking.objects.select_related("task__project", "task__prompt", "task__round")
        .filter(pk=ranking_id)
        .first()
    )
    if ranking is None or not getattr(user, "is_authenticated", False):
        raise Http404("No such ranking.")
    if not user.is_superuser and membership_for(user=user, project=ranking.task.project) is None:
        raise Http404("No such ranking.")
    return ranking


def rankings_for_project(*, project: Project, round_number: int | None = None) -> QuerySet[Ranking]:
    """The project's rankings in use (rankings_in_use) with their task, prompt and
    responses, oldest first."""
    rankings = Ranking.objects.filter(rankings_in_use(), task__project=project)
    if round_number is not None:
        rankings = rankings.filter(task__round__number=round_number)
    return (
        rankings.select_related("task__prompt", "task__round", "labeler")
        .prefetch_related("task__responses")
        .order_by("id")
    )


def labeler_counts(*, project: Project, user: Any) -> dict[str, int]:
    """The work counter of the ranking screen.

    `done_today` and `done_total`: rankings `user` submitted in the project (today in the
    server's time zone, and ever); `skipped`: tasks they skipped; `remaining`: open tasks
    they have not ranked or skipped (an upper bound: some may be leased to others).
    """
    return labeler_counts_by_project(project_ids=[project.pk], user=user)[project.pk]


def labeler_counts_by_project(
    *, project_ids: Iterable[int], user: Any
) -> dict[int, dict[str, int]]:
    """`labeler_counts` of every project in `project_ids`, by project id, in two queries."""
    ids = list(project_ids)
    start_of_day = timezone.make_aware(datetime.combine(timezone.localdate(), time.min))
    submitted, skipped = Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED
    # Two indexed queries on the hot path of the ranking screen. A labeler's ranking always
    # goes with their SUBMITTED assignment of the task (ranking_submit needs the lease).
    finished = {
        row["task__project_id"]: row
        for row in Assignment.objects.filter(
            task__project_id__in=ids, labeler=user, status__in=[submitted, skipped]
        )
        .values("task__project_id")
        .annotate(
            done_total=Count("pk", filter=Q(status=submitted)),
            done_today=Count(
                "pk", filter=Q(status=submitted, ranking__created_at__gte=start_of_day)
            ),
            skipped=Count("pk", filter=Q(status=skipped)),
            finished_open=Count("pk", filter=Q(task__status=RankingTask.Status.OPEN)),
        )
        .order_by()
    }
    open_tasks = dict(
        RankingTask.objects.filter(project_id__in=ids, status=RankingTask.Status.OPEN)
        .values("project_id")
        .annotate(n=Count("pk"))
        .order_by()
        .values_list("project_id", "n")
    )
    none = {"done_today": 0, "done_total": 0, "skipped": 0, "finished_open": 0}
    counts: dict[int, dict[str, int]] = {}
    for pk in ids:
        row = finished.get(pk, none)
        counts[pk] = {
            "done_today": row["done_today"],
            "done_total": row["done_total"],
            "skipped": row["skipped"],
            "remaining": open_tasks.get(pk, 0) - row["finished_open"],
        }
    return counts
