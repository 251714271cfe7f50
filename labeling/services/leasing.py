"""Leasing ranking tasks to labelers, and skips.

Lease invariant (PRODUCT.md section 2): a task is never held by more labelers than its
`overlap` needs, and never given twice to one labeler. A task's *used slots* are its
submitted assignments plus its active, unexpired leases. Every write that can change the
used slots of a task (lease, submit, skip) happens while holding the task's row lock, so a
count taken under the lock is exact.
"""

from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.exceptions import ConflictError
from labeling.models import Assignment, Membership, Project, RankingTask
from labeling.services.task_slots import holds_slot, lock_task, of_self, slot_counts

ACTIVE, SUBMITTED, SKIPPED = (
    Assignment.Status.ACTIVE,
    Assignment.Status.SUBMITTED,
    Assignment.Status.SKIPPED,
)


@transaction.atomic
def task_lease_next(
    *,
    project: Project,
    labeler: Any,
    now: datetime | None = None,
    exclude_task_id: int | None = None,
) -> Assignment | None:
    """The labeler's next task, leased until `now + project.lease_seconds`; None when none.

    The labeler's own unexpired lease comes first, so reloading the page shows the same
    task. Otherwise the oldest open task with a free slot that the labeler has never ranked
    or skipped is leased (the labeler's own expired lease on it is renewed, since a task
    has one assignment row per labeler). Gold tasks are offered like any other.

    `exclude_task_id` is the task on the labeler's screen: the browser prefetches the task
    after it, so a labeler holds at most two leases (the one being ranked and the next).
    """
    now = now or timezone.now()
    _lock_membership(project, labeler)
    current = _current_lease(project, labeler, now, exclude_task_id=exclude_task_id)
    if current is not None:
        return current
    tried: list[int] = [exclude_task_id] if exclude_task_id is not None else []
    while (task := _lock_candidate(project, labeler, now, exclude=tried)) is not None:
        # The candidate query read a snapshot; recount under the lock. It may also have
        # missed this labeler's own skip or submission of the task, committed just before
        # the lock was taken (another tab): such a task is not theirs to lease again.
        others, finished_by_labeler = slot_counts(task=task, now=now, labeler=labeler)
        if not finished_by_labeler and others < task.overlap:
            return _lease(task, labeler, now + timedelta(seconds=project.lease_seconds))
        tried.append(task.pk)
    return None


@transaction.atomic
def task_skip(*, task: RankingTask, labeler: Any) -> None:
    """The labeler passes on `task`: their lease ends and the task is never offered to them
    again. Skipping a task one has already ranked is a conflict; skipping twice is a no-op."""
    task = lock_task(task)
    assignment = Assignment.objects.filter(task=task, labeler=labeler).first()
    if assignment is None:
        Assignment.objects.create(
            task=task, labeler=labeler, status=SKIPPED, expires_at=timezone.now()
        )
    elif assignment.status == SUBMITTED:
        raise ConflictError("You have already ranked this task; it cannot be skipped.")
    elif assignment.status == ACTIVE:
        assignment.status = SKIPPED
        assignment.save(update_fields=["status", "updated_at"])


def _current_lease(
    project: Project, labeler: Any, now: datetime, *, exclude_task_id: int | None = None
) -> Assignment | None:
    leases = Assignment.objects.filter(
        task__project=project,
        task__status=RankingTask.Status.OPEN,
        labeler=labeler,
        status=ACTIVE,
        expires_at__gt=now,
    )
    if exclude_task_id is not None:
        leases = leases.exclude(task_id=exclude_task_id)
    # Most requests come after a submission and find no lease: ask for the id alone, and
    # load the lease with its task only when there is one.
    lease_id = leases.order_by("id").values_list("pk", flat=True).first()
    if lease_id is None:
        return None
    # The project is known: a join on it would only load its many columns again.
    lease = Assignment.objects.select_related("task__prompt", "task__round").get(pk=lease_id)
    lease.task.project = project
    return lease


def _lock_membership(project: Project, labeler: Any) -> None:
    # Serialises one labeler's own lease requests (a double click, two tabs), so a labeler
    # does not end up holding two leases. Other labelers are not blocked.
    if connection.features.has_select_for_update:
        list(Membership.objects.select_for_update().filter(project=project, user=labeler))


def _lock_candidate(
    project: Project, labeler: Any, now: datetime, exclude: list[int]
) -> RankingTask | None:
    """Lock and return the oldest open task that seems to have a free slot for `labeler`.

    Tasks locked by a concurrent transaction are skipped (PostgreSQL SKIP LOCKED), so
    labelers never queue behind each other's leases.
    """
    candidates = _candidates(project, labeler, now).exclude(pk__in=exclude).order_by("id")
    if connection.features.has_select_for_update_skip_locked:
        candidates = candidates.select_for_update(skip_locked=True, of=of_self())
    task = candidates.select_related("prompt", "round").first()
    if task is not None:
        task.project = project
    return task


def _candidates(project: Project, labeler: Any, now: datetime) -> QuerySet[RankingTask]:
    done_by_labeler = Assignment.objects.filter(
        task=OuterRef("pk"), labeler=labeler, status__in=[SUBMITTED, SKIPPED]
    )
    # A correlated count (not a GROUP BY, which PostgreSQL forbids with FOR UPDATE).
    slots = (
        Assignment.objects.filter(holds_slot(now), task=OuterRef("pk"))
        .exclude(labeler=labeler)
        .values("task")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return (
        RankingTask.objects.filter(project=project, status=RankingTask.Status.OPEN)
        .filter(~Exists(done_by_labeler))
        # alias, not annotate: the count is compiled once, into WHERE, and not selected.
        .alias(used=Coalesce(Subquery(slots, output_field=IntegerField()), 0))
        .filter(used__lt=F("overlap"))
    )


def _lease(task: RankingTask, labeler: Any, expires_at: datetime) -> Assignment:
    """Create the labeler's assignment of `task`, or renew their expired one. Hold the lock.

    An UPDATE first, an INSERT only when it touched nothing. No one can race for this
    (task, labeler) row: leases by the same labeler are serialised by their membership
    lock, and their skips and submissions of the task by its row lock, which we hold and
    under which `slot_counts` saw no finished row of theirs. So this needs neither
    get_or_create's SELECT nor its savepoints (the hot path of the ranking screen).
    """
    renewed = Assignment.objects.filter(task=task, labeler=labeler).exclude(
        status__in=[SUBMITTED, SKIPPED]
    )
    if renewed.update(status=ACTIVE, expires_at=expires_at, updated_at=timezone.now()):
        assignment = Assignment.objects.get(task=task, labeler=labeler)
    else:
        assignment = Assignment.objects.create(
            task=task, labeler=labeler, status=ACTIVE, expires_at=expires_at
        )
    assignment.task = task
    return assignment
