"""Submitting a ranking, and deriving its pairwise comparisons.

A ranking is stored once per (task, labeler) and never changed; its comparisons are
written in the same transaction (InstructGPT section 3.5: every pair of different tie
groups). "All unacceptable" rankings are kept as safety data and yield no pairs. A labeler's
revision (labeling/services/review.py) is a new row that supersedes the old one; only a
ranking in use (not superseded, not rejected by an admin) yields pairs.
"""

from typing import Any, NoReturn

from django.db import transaction
from django.utils import timezone

from core.exceptions import ApplicationError, ConflictError
from formats.preferences import pairs_from_tie_groups
from labeling.models import Assignment, Comparison, Ranking, RankingTask
from labeling.services.task_slots import lock_task, slot_counts

MAX_TIME_SPENT_MS = 2**31 - 1
RANKING_SOURCES = ("labeler", "simulated")


@transaction.atomic
def ranking_submit(
    *,
    task: RankingTask,
    labeler: Any,
    order: list[list[int]],
    flags: dict[str, list[str]] | None,
    time_spent_ms: int,
    all_unacceptable: bool = False,
    source: str = "labeler",
) -> Ranking:
    """Store `labeler`'s ranking of `task` with its comparisons; return the Ranking.

    `order` lists tie groups of response ids, best first, each response exactly once.
    With `all_unacceptable` the order may be empty (stored as one group of all responses).
    The labeler must hold a lease: an active one, or an expired one whose slot nobody else
    took meanwhile (nothing the labeler did is lost). Raises ApplicationError (400) for
    invalid input and ConflictError (409) for a second submission or a lost lease.
    `source` records who ranked: "labeler" (a person) or "simulated" (synthetic labelers).
    """
    if source not in RANKING_SOURCES:
        raise ApplicationError(f"source: must be one of {', '.join(RANKING_SOURCES)}")
    task = lock_task(task)
    if Ranking.objects.filter(task=task, labeler=labeler).exists():
        raise ConflictError(
            "You have already ranked this task (revise it from your recent submissions)."
        )
    response_ids = list(task.responses.order_by("position").values_list("id", flat=True))
    tie_groups = check_order(order, response_ids, all_unacceptable=all_unacceptable)
    clean_flags = check_flags(flags, response_ids, task.project.flag_vocabulary)
    spent = check_time_spent(time_spent_ms)
    assignment = _check_lease(task, labeler)

    ranking = Ranking.objects.create(
        task=task,
        assignment=assignment,
        labeler=labeler,
        tie_groups=tie_groups,
        flags=clean_flags,
        all_unacceptable=all_unacceptable,
        time_spent_ms=spent,
        source=source,
    )
    assignment.status = Assignment.Status.SUBMITTED
    assignment.save(update_fields=["status", "updated_at"])
    task.rankings_count += 1  # exact: we hold the task's row lock
    if task.rankings_count >= task.overlap:
        task.status = RankingTask.Status.COMPLETE
    task.save(update_fields=["rankings_count", "status", "updated_at"])
    Comparison.objects.bulk_create(build_comparisons(ranking))  # a new ranking has none yet
    return ranking


def comparisons_from_ranking(*, ranking: Ranking) -> list[Comparison]:
    """The ranking's comparisons, created if missing (idempotent). None for an "all
    unacceptable" ranking, a superseded one (its revision has the pairs) or a rejected one."""
    if (
        ranking.all_unacceptable
        or ranking.superseded_at is not None
        or ranking.review == Ranking.Review.REJECTED
    ):
        return []
    existing = list(ranking.comparisons.order_by("id"))
    if existing:
        return existing
    return Comparison.objects.bulk_create(build_comparisons(ranking))


def build_comparisons(ranking: Ranking) -> list[Comparison]:
    """Unsaved comparisons for every pair between different tie groups of `ranking`."""
    if ranking.all_unacceptable:
        return []
    task = ranking.task
    return [
        Comparison(
            project_id=task.project_id,
            ranking=ranking,
            task_id=task.pk,
            prompt_id=task.prompt_id,
            chosen_id=chosen,
            rejected_id=rejected,
            margin=margin,
            round_id=task.round_id,
        )
        for chosen, rejected, margin in pairs_from_tie_groups(ranking.tie_groups)
    ]


def check_order(
    order: Any, response_ids: list[int], *, all_unacceptable: bool = False
) -> list[list[int]]:
    """Validate tie groups of response ids: every response of the task exactly once."""
    if all_unacceptable and not order:
        return [list(response_ids)]
    if not isinstance(order, list) or not all(isinstance(group, list) for group in order):
        _invalid("order", "must be a list of tie groups (lists of response ids), best first")
    known, seen = set(response_ids), set()
    for group in order:
        if not group:
            _invalid("order", "holds an empty tie group")
        for response_id in group:
            if isinstance(response_id, bool) or not isinstance(response_id, int):
                _invalid("order", f"{response_id!r} is not a response id")
            if response_id not in known:
                _invalid("order", f"response {response_id} is not a response of this task")
            if response_id in seen:
                _invalid("order", f"response {response_id} appears more than once")
            seen.add(response_id)
    missing = [response_id for response_id in response_ids if response_id not in seen]
    if missing:
        _invalid("order", f"response {missing[0]} is missing: rank every response once")
    return [list(group) for group in order]


def check_flags(flags: Any, response_ids: list[int], vocabulary: list[str]) -> dict[str, list[str]]:
    """Validate `{response_id: [flag, ...]}` against the project's flag vocabulary.

    Keys may be ints or their strings (JSON object keys are strings); they are stored as
    strings. Empty flag lists are dropped, repeated flags kept once.
    """
    if flags is None:
        return {}
    if not isinstance(flags, dict):
        _invalid("flags", "must be an object {response_id: [flag, ...]}")
    known = {str(response_id) for response_id in response_ids}
    clean: dict[str, list[str]] = {}
    for key, values in flags.items():
        if isinstance(key, bool) or str(key) not in known:
            _invalid("flags", f"{key!r} is not a response of this task")
        if not isinstance(values, list):
            _invalid("flags", f"flags of response {key} must be a list")
        for flag in values:
            if flag not in vocabulary:
                allowed = ", ".join(vocabulary)
                _invalid("flags", f"unknown flag {flag!r} (allowed: {allowed})")
        if values:
            clean[str(key)] = list(dict.fromkeys(values))
    return clean


def check_time_spent(time_spent_ms: Any) -> int:
    if isinstance(time_spent_ms, bool) or not isinstance(time_spent_ms, int) or time_spent_ms < 0:
        _invalid("time_spent_ms", "must be a non-negative integer")
    return min(time_spent_ms, MAX_TIME_SPENT_MS)  # a tab left open overnight is not an error


def _check_lease(task: RankingTask, labeler: Any) -> Assignment:
    """The labeler's assignment of `task`, if they may still submit. Hold the task lock."""
    assignment = Assignment.objects.filter(task=task, labeler=labeler).first()
    if assignment is None:
        raise ConflictError("This task was not given to you: fetch your next task first.")
    if assignment.status == Assignment.Status.SKIPPED:
        raise ConflictError("You skipped this task.")
    if assignment.status == Assignment.Status.SUBMITTED:
        raise ConflictError(
            "You have already ranked this task (revise it from your recent submissions)."
        )
    now = timezone.now()
    expired = assignment.expires_at <= now
    if expired and (
        task.status == RankingTask.Status.COMPLETE
        or slot_counts(task=task, now=now, labeler=labeler)[0] >= task.overlap
    ):
        raise ConflictError(
            "Your lease on this task expired and the task has since been given to other "
            "labelers, so this ranking is no longer needed. Fetch your next task."
        )
    if task.status != RankingTask.Status.OPEN:
        raise ConflictError("This task no longer takes rankings (it is complete or closed).")
    return assignment


def _invalid(field: str, message: str) -> NoReturn:
    raise ApplicationError(f"{field}: {message}", extra={"errors": {field: [message]}})
