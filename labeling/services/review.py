"""Second looks at submitted work: a labeler revises their ranking or returns to a task they
skipped; an admin accepts or rejects a ranking and marks gold tasks.

Submitted rankings are never overwritten (PRODUCT.md section 2). A revision is a new
Ranking row; the old one is kept with `superseded_at` (set first) and `superseded_by` (set
once the revision exists). Only the current row of a (task, labeler) yields pairs: the old
row's comparisons are deleted and rebuilt from the revision, in one transaction. A rejected
ranking yields no pairs either (its comparisons are deleted, and rebuilt if an admin
accepts it later); who decided and when is kept on the row.

When may a ranking be revised? While its pairs have not been used for an RM: a task's
rankings are read for the RM when its round leaves the labeling stage (building_pairs), so
a ranking can be revised while its round is at the labeling stage. Rankings of tasks
outside any round (imported tasks) are read by whichever round trains next, at any time,
so they cannot be revised. A ranking an admin has reviewed cannot be revised either (the
decision was about that order).
"""

from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from core.exceptions import ApplicationError, ConflictError
from labeling.models import Assignment, Ranking, RankingTask
from labeling.services.rankings import (
    check_flags,
    check_order,
    check_time_spent,
    comparisons_from_ranking,
)
from labeling.services.task_slots import lock_task, of_self, slot_counts

# Round.Stage.LABELING of the training app, which labeling never imports (the value is
# checked against the model's choices in tests/labeling/test_review.py).
LABELING_STAGE = "labeling"
DECISIONS = (Ranking.Review.ACCEPTED, Ranking.Review.REJECTED)


def revision_block_reason(*, ranking: Ranking, round_stage: str | None) -> str | None:
    """Why `ranking` cannot be revised now, or None if it can. `round_stage` is the stage
    of the task's round (None: the task is in no round)."""
    if ranking.superseded_at is not None:
        return "This ranking was revised since; revise the latest version."
    if ranking.review != Ranking.Review.PENDING:
        return f"An admin has {ranking.review} this ranking; it can no longer be revised."
    if round_stage is None:
        return "This task is in no round: its pairs may be used for an RM at any time."
    if round_stage != LABELING_STAGE:
        return "The round has left labeling: this ranking's pairs are being used for an RM."
    return None


@transaction.atomic
def ranking_revise(
    *,
    ranking: Ranking,
    labeler: Any,
    order: list[list[int]],
    flags: dict[str, list[str]] | None,
    time_spent_ms: int,
    all_unacceptable: bool = False,
) -> Ranking:
    """Replace `labeler`'s ranking by a revision; return the revision (a new row).

    The old row is kept (superseded), its comparisons are deleted and the revision's built.
    Holds the task's row lock, and the round's row lock while checking its stage, so a
    revision cannot race the round leaving labeling (round_advance takes the same lock).
    ConflictError (409) when the ranking cannot be revised (revision_block_reason).
    """
    task = lock_task(ranking.task)
    old = Ranking.objects.get(pk=ranking.pk)
    if old.labeler_id != labeler.pk:
        raise ConflictError("Only the labeler who submitted a ranking may revise it.")
    reason = revision_block_reason(ranking=old, round_stage=_locked_round_stage(task))
    if reason:
        raise ConflictError(reason)
    response_ids = list(task.responses.order_by("position").values_list("id", flat=True))
    tie_groups = check_order(order, response_ids, all_unacceptable=all_unacceptable)
    clean_flags = check_flags(flags, response_ids, task.project.flag_vocabulary)
    spent = check_time_spent(time_spent_ms)

    now = timezone.now()
    Ranking.objects.filter(pk=old.pk).update(superseded_at=now, updated_at=now)
    old.comparisons.all().delete()
    # bulk_create, not create: post_save of a Ranking is the loop's "a ranking was
    # submitted" event (training.signals), and a revision is no new submission: the task's
    # rankings_count and its round's progress stay as they are.
    (revision,) = Ranking.objects.bulk_create(
        [
            Ranking(
                task=task,
                labeler=labeler,
                tie_groups=tie_groups,
                flags=clean_flags,
                all_unacceptable=all_unacceptable,
                time_spent_ms=spent,
                source=old.source,
            )
        ]
    )
    Ranking.objects.filter(pk=old.pk).update(superseded_by=revision)
    comparisons_from_ranking(ranking=revision)
    return revision


def _locked_round_stage(task: RankingTask) -> str | None:
    """The stage of the task's round, read under the round's row lock (None: no round).

    The round model is reached through the task's foreign key: labeling never imports the
    training app."""
    if task.round_id is None:
        return None
    rounds = RankingTask.round.field.related_model._default_manager.filter(pk=task.round_id)
    if connection.features.has_select_for_update:
        rounds = rounds.select_for_update(of=of_self())
    return rounds.values_list("stage", flat=True).first()


@transaction.atomic
def ranking_review(*, ranking: Ranking, reviewer: Any, decision: str) -> Ranking:
    """Record an admin's decision on a ranking: accepted, or rejected (it yields no pairs).

    Rejecting deletes the ranking's comparisons; accepting a ranking rejected before
    rebuilds them. A superseded ranking cannot be reviewed (review its revision).
    """
    if decision not in DECISIONS:
        raise ApplicationError(f"decision: must be one of {', '.join(DECISIONS)}")
    lock_task(ranking.task)
    ranking = Ranking.objects.select_related("task").get(pk=ranking.pk)
    if ranking.superseded_at is not None:
        raise ConflictError("This ranking was revised; review its latest version.")
    ranking.review = decision
    ranking.reviewed_by = reviewer
    ranking.reviewed_at = timezone.now()
    ranking.save(update_fields=["review", "reviewed_by", "reviewed_at", "updated_at"])
    if decision == Ranking.Review.REJECTED:
        ranking.comparisons.all().delete()
    else:
        comparisons_from_ranking(ranking=ranking)
    return ranking


@transaction.atomic
def task_mark_gold(*, task: RankingTask, order: list[list[int]] | None) -> RankingTask:
    """Make `task` a gold task with the known `order` (tie groups of its response ids, best
    first), or an ordinary task again with `order=None`. Labelers' rankings of gold tasks
    are scored against the order (labeling.agreement, Kendall's tau-b)."""
    task = lock_task(task)
    if order is None:
        task.is_gold, task.gold_order = False, None
    else:
        response_ids = list(task.responses.order_by("position").values_list("id", flat=True))
        task.is_gold, task.gold_order = True, check_order(order, response_ids)
    task.save(update_fields=["is_gold", "gold_order", "updated_at"])
    return task


@transaction.atomic
def task_return_to_skipped(*, task: RankingTask, labeler: Any) -> Assignment:
    """Lease again a task `labeler` skipped, while it is open and has a free slot within its
    overlap; the ranking screen then shows it first (the labeler's oldest lease)."""
    task = lock_task(task)
    assignment = Assignment.objects.filter(task=task, labeler=labeler).first()
    if assignment is None or assignment.status != Assignment.Status.SKIPPED:
        raise ConflictError("You have not skipped this task.")
    if task.status != RankingTask.Status.OPEN:
        raise ConflictError("This task no longer takes rankings (it is complete or closed).")
    now = timezone.now()
    others, _ = slot_counts(task=task, now=now, labeler=labeler)
    if others >= task.overlap:
        raise ConflictError("Other labelers hold every ranking this task needs.")
    assignment.status = Assignment.Status.ACTIVE
    assignment.expires_at = now + timedelta(seconds=task.project.lease_seconds)
    assignment.save(update_fields=["status", "expires_at", "updated_at"])
    return assignment
