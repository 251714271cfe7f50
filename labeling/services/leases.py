"""Row locks and slot counts shared by leasing (tasks.py) and submitting (rankings.py).

A task's *used slots* are its submitted assignments plus its active, unexpired leases.
Every write that can change them (lease, submit, skip) holds the task's row lock, so a
count taken under the lock is exact.
"""

from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Q

from labeling.models import Assignment, RankingTask


def holds_slot(now: datetime) -> Q:
    """Assignments that count against overlap: submitted, or leased and not yet expired."""
    return Q(status=Assignment.Status.SUBMITTED) | Q(
        status=Assignment.Status.ACTIVE, expires_at__gt=now
    )


def used_slots(*, task: RankingTask, now: datetime, exclude_labeler: Any = None) -> int:
    """Slots of `task` in use (by others than `exclude_labeler`). Exact under the task lock."""
    assignments = Assignment.objects.filter(holds_slot(now), task=task)
    if exclude_labeler is not None:
        assignments = assignments.exclude(labeler=exclude_labeler)
    return assignments.count()


def lock_task(task: RankingTask) -> RankingTask:
    """Re-read `task` holding its row lock until the transaction ends (PostgreSQL).

    Call inside a transaction. On SQLite there are no row locks; its single writer
    serialises the transactions instead.
    """
    return (
        RankingTask.objects.select_for_update(of=of_self())
        .select_related("project")
        .get(pk=task.pk)
    )


def of_self() -> tuple[str, ...]:
    """`of` for select_for_update: lock only the task rows, not joined project/prompt rows."""
    return ("self",) if connection.features.has_select_for_update_of else ()
