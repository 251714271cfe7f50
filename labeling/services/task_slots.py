"""Row locks and slot counts shared by leasing (leasing.py) and submitting (rankings.py).

A task's *used slots* are its submitted assignments plus its active, unexpired leases.
Every write that can change them (lease, submit, skip) holds the task's row lock, so a
count taken under the lock is exact.
"""

from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, Q

from labeling.models import Assignment, RankingTask


def holds_slot(now: datetime) -> Q:
    """Assignments that count against overlap: submitted, or leased and not yet expired."""
    return Q(status=Assignment.Status.SUBMITTED) | Q(
        status=Assignment.Status.ACTIVE, expires_at__gt=now
    )


def slot_counts(*, task: RankingTask, now: datetime, labeler: Any) -> tuple[int, bool]:
    """(slots of `task` in use by others than `labeler`, whether `labeler` has ranked or
    skipped it), in one query. Exact under the task lock."""
    counts = Assignment.objects.filter(task=task).aggregate(
        others=Count("pk", filter=holds_slot(now) & ~Q(labeler=labeler)),
        finished=Count(
            "pk",
            filter=Q(
                labeler=labeler,
                status__in=[Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED],
            ),
        ),
    )
    return counts["others"], counts["finished"] > 0


def lock_task(task: RankingTask) -> RankingTask:
    """Re-read `task` holding its row lock until the transaction ends (PostgreSQL).

    Call inside a transaction. On SQLite there are no row locks; its single writer
    serialises the transactions instead.
    """
    locked = RankingTask.objects.select_for_update(of=of_self())
    if RankingTask.project.is_cached(task):  # the caller's project row (loaded with access)
        row = locked.get(pk=task.pk)
        row.project = task.project
        return row
    return locked.select_related("project").get(pk=task.pk)


def of_self() -> tuple[str, ...]:
    """`of` for select_for_update: lock only the task rows, not joined project/prompt rows."""
    return ("self",) if connection.features.has_select_for_update_of else ()
