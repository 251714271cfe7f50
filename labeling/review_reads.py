"""Reads behind second looks at submitted work (selectors of labeling/services/review.py):
a labeler's recent submissions and skips, and the admins' review screen (a task's K
responses with every labeler's ranking side by side, and its agreement).

Callers scope first: `access_project` (admin=True for the review screen) names the project;
everything here is filtered to it.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Exists, OuterRef, Q
from django.http import Http404

from labeling.agreement import kendall_tau_b, kendall_w, pairwise_agreement
from labeling.models import Assignment, Project, Ranking, RankingTask, Response
from labeling.services.review import revision_block_reason

HISTORY_LIMIT = 50
REVIEW_LIMIT = 100


# --------------------------------------------------------------------------- labelers


@dataclass(frozen=True)
class HistoryRow:
    """One task the labeler finished: submitted (with its current ranking) or skipped."""

    task: RankingTask
    status: str  # Assignment.Status.SUBMITTED | SKIPPED
    at: Any  # when the assignment last changed (submitted, skipped or revised)
    ranking: Ranking | None  # the current version of their ranking, if submitted
    revisions: int  # how many times they revised it
    revise_block: str | None  # why it cannot be revised now (None: it can)
    can_return: bool  # a skipped task that is open and not fully held by others (a hint)


def labeler_history(*, project: Project, user: Any, limit: int = HISTORY_LIMIT) -> list[HistoryRow]:
    """`user`'s most recent submitted and skipped tasks in `project`, newest first.

    Two queries: the assignments (with task, prompt and round), then every ranking row of
    theirs on those tasks (current and superseded)."""
    assignments = list(
        Assignment.objects.filter(
            task__project=project,
            labeler=user,
            status__in=[Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED],
        )
        .select_related("task__prompt", "task__round", "task__project")
        .order_by("-updated_at", "-id")[:limit]
    )
    rows_by_task: dict[int, list[Ranking]] = defaultdict(list)
    for ranking in Ranking.objects.filter(
        labeler=user, task_id__in=[a.task_id for a in assignments]
    ).order_by("id"):
        rows_by_task[ranking.task_id].append(ranking)
    history = []
    for assignment in assignments:
        task = assignment.task
        rows = rows_by_task.get(task.pk, [])
        current = next((r for r in rows if r.superseded_at is None), None)
        stage = task.round.stage if task.round is not None else None
        history.append(
            HistoryRow(
                task=task,
                status=assignment.status,
                at=max([assignment.updated_at, *(r.created_at for r in rows)]),
                ranking=current,
                revisions=len(rows) - 1 if rows else 0,
                revise_block=(
                    revision_block_reason(ranking=current, round_stage=stage) if current else None
                ),
                can_return=assignment.status == Assignment.Status.SKIPPED
                and task.status == RankingTask.Status.OPEN
                and task.rankings_count < task.overlap,
            )
        )
    return history


# --------------------------------------------------------------------------- admins


@dataclass(frozen=True)
class ReviewFilters:
    """The review screen's allow-listed filters."""

    round_number: int | None = None
    labeler_id: int | None = None
    flagged: bool = False
    agreement_below: float | None = None  # only tasks whose pairwise agreement is lower
    review: str | None = None  # only tasks with a current ranking in this review state


@dataclass
class ReviewRow:
    task: RankingTask
    rankings: int  # current rankings (rejected included)
    pending: int
    rejected: int
    flagged: bool
    pairwise_agreement: float | None
    kendall_w: float | None


def review_tasks(
    *, project: Project, filters: ReviewFilters, limit: int = REVIEW_LIMIT
) -> list[ReviewRow]:
    """Tasks of `project` with at least one ranking, filtered; with disagreement asked for,
    the least agreed first, otherwise the newest first. Two queries (tasks, rankings)."""
    tasks = RankingTask.objects.filter(project=project).filter(
        Exists(Ranking.objects.filter(task=OuterRef("pk"), superseded_at__isnull=True))
    )
    if filters.round_number is not None:
        tasks = tasks.filter(round__number=filters.round_number)
    if filters.labeler_id is not None:
        tasks = tasks.filter(
            Exists(Ranking.objects.filter(task=OuterRef("pk"), labeler_id=filters.labeler_id))
        )
    by_id = {t.pk: t for t in tasks.select_related("prompt", "round").order_by("-id")}
    current: dict[int, list[tuple]] = defaultdict(list)
    for row in Ranking.objects.filter(
        task_id__in=list(by_id), superseded_at__isnull=True
    ).values_list("task_id", "tie_groups", "flags", "all_unacceptable", "review"):
        current[row[0]].append(row)
    rows = [_review_row(task, current[pk]) for pk, task in by_id.items()]
    if filters.flagged:
        rows = [r for r in rows if r.flagged]
    if filters.review is not None:
        wanted = {"pending": "pending", "rejected": "rejected"}.get(filters.review)
        rows = [r for r in rows if (r.pending if wanted == "pending" else r.rejected)]
    if filters.agreement_below is not None:
        limit_rate = filters.agreement_below
        rows = [
            r
            for r in rows
            if r.pairwise_agreement is not None and r.pairwise_agreement < limit_rate
        ]
        rows.sort(key=lambda r: (r.pairwise_agreement, -r.task.pk))
    return rows[:limit]


def _review_row(task: RankingTask, rows: list[tuple]) -> ReviewRow:
    usable = [
        groups for _, groups, _, unacceptable, review in rows if _counts(unacceptable, review)
    ]
    return ReviewRow(
        task=task,
        rankings=len(rows),
        pending=sum(review == Ranking.Review.PENDING for *_, review in rows),
        rejected=sum(review == Ranking.Review.REJECTED for *_, review in rows),
        flagged=any(flags or unacceptable for _, _, flags, unacceptable, _ in rows),
        pairwise_agreement=pooled_agreement(usable),
        kendall_w=kendall_w(usable) if len(usable) >= 2 else None,
    )


def pooled_agreement(rankings: list[Any]) -> float | None:
    """Pairwise agreement of a task's rankings pooled over every pair of them: among the
    response pairs two labelers both ordered strictly, the share ordered alike."""
    agreeing = compared = 0
    for i, a in enumerate(rankings):
        for b in rankings[i + 1 :]:
            x, y = pairwise_agreement(a, b)
            agreeing, compared = agreeing + x, compared + y
    return agreeing / compared if compared else None


def _counts(all_unacceptable: bool, review: str) -> bool:
    """Whether a current ranking counts for agreement: not rejected, not all unacceptable
    (its order among unacceptable responses is no preference)."""
    return not all_unacceptable and review != Ranking.Review.REJECTED


@dataclass
class RankingColumn:
    """One labeler's ranking of the task, as the review screen shows it."""

    ranking: Ranking
    places: dict[int, str]  # response id -> "1", "2=" (tied), ... (best first)
    flags: dict[int, list[str]]
    revisions: int
    gold_tau: float | None
    counts: bool  # used for agreement and pairs (not rejected, not all unacceptable)


@dataclass
class ReviewDetail:
    task: RankingTask
    responses: list[Response]
    columns: list[RankingColumn]
    pairwise_agreement: float | None
    kendall_w: float | None
    gold_places: dict[int, str] = field(default_factory=dict)


def review_task_detail(*, project: Project, task_id: int) -> ReviewDetail:
    """Task `task_id` of `project` (Http404 for any other) with its responses and every
    labeler's current ranking (who reviewed it, how often it was revised) side by side."""
    task = (
        RankingTask.objects.filter(project=project, pk=task_id)
        .select_related("prompt", "round")
        .first()
    )
    if task is None:
        raise Http404("No such task.")
    responses = list(task.responses.order_by("position"))
    all_rows = list(
        Ranking.objects.filter(task=task).select_related("labeler", "reviewed_by").order_by("id")
    )
    revisions: dict[Any, int] = defaultdict(int)
    for row in all_rows:
        if row.superseded_at is not None:
            revisions[row.labeler_id] += 1
    gold = task.gold_order if task.is_gold and task.gold_order else None
    columns = [
        RankingColumn(
            ranking=row,
            places=places(row.tie_groups),
            flags={int(k): v for k, v in (row.flags or {}).items()},
            revisions=revisions[row.labeler_id] if row.labeler_id else 0,
            gold_tau=kendall_tau_b(row.tie_groups, gold) if gold else None,
            counts=_counts(row.all_unacceptable, row.review),
        )
        for row in all_rows
        if row.superseded_at is None
    ]
    usable = [c.ranking.tie_groups for c in columns if c.counts]
    return ReviewDetail(
        task=task,
        responses=responses,
        columns=columns,
        pairwise_agreement=pooled_agreement(usable),
        kendall_w=kendall_w(usable) if len(usable) >= 2 else None,
        gold_places=places(gold) if gold else {},
    )


def places(tie_groups: Any) -> dict[int, str]:
    """Response id -> its place, 1 = best; tied responses share a place marked "=".

    ``[[7], [5, 6], [8]]`` -> {7: "1", 5: "2=", 6: "2=", 8: "3"}."""
    out: dict[int, str] = {}
    for index, group in enumerate(tie_groups or []):
        for response_id in group:
            out[int(response_id)] = f"{index + 1}{'=' if len(group) > 1 else ''}"
    return out


def review_labelers(*, project: Project) -> list[tuple[int, str]]:
    """(user id, username) of the project's members who ranked a task, for the filter."""
    ranked = Ranking.objects.filter(task__project=project, labeler=OuterRef("user_id"))
    return list(
        project.memberships.filter(Q(Exists(ranked)))
        .order_by("user__username")
        .values_list("user_id", "user__username")
    )
