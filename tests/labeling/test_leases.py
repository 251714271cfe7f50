"""Leases: overlap honoured, never twice to one labeler, expiry, the current lease first."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.exceptions import ConflictError
from labeling.models import Assignment, RankingTask
from labeling.services.leasing import task_lease_next, task_skip
from labeling.services.rankings import ranking_submit
from tests.factories import MembershipFactory, RankingTaskFactory


@pytest.fixture
def labelers(project):
    return [MembershipFactory(project=project).user for _ in range(4)]


def submit(task: RankingTask, labeler: object) -> None:
    ids = list(task.responses.values_list("id", flat=True))
    ranking_submit(task=task, labeler=labeler, order=[ids], flags=None, time_spent_ms=1)


def test_lease_has_expiry_from_project(project, labeler) -> None:
    project.lease_seconds = 90
    project.save()
    task = RankingTaskFactory(project=project)
    now = timezone.now()
    assignment = task_lease_next(project=project, labeler=labeler, now=now)
    assert assignment is not None
    assert (assignment.task, assignment.labeler, assignment.status) == (task, labeler, "active")
    assert assignment.expires_at == now + timedelta(seconds=90)


def test_no_task_gives_none(project, labeler) -> None:
    assert task_lease_next(project=project, labeler=labeler) is None


def test_current_lease_is_returned_again(project, labeler) -> None:
    RankingTaskFactory.create_batch(3, project=project)
    first = task_lease_next(project=project, labeler=labeler)
    again = task_lease_next(project=project, labeler=labeler)
    assert again is not None and first is not None
    assert (again.pk, again.expires_at) == (first.pk, first.expires_at)
    assert Assignment.objects.count() == 1


def test_oldest_open_task_first_and_gold_offered_like_others(project, labelers) -> None:
    gold = RankingTaskFactory(project=project, is_gold=True)
    RankingTaskFactory(project=project, status=RankingTask.Status.CLOSED)
    later = RankingTaskFactory(project=project)
    assert task_lease_next(project=project, labeler=labelers[0]).task == gold  # type: ignore[union-attr]
    assert task_lease_next(project=project, labeler=labelers[1]).task == later  # type: ignore[union-attr]
    assert task_lease_next(project=project, labeler=labelers[2]) is None  # closed is never offered


def test_overlap_is_honoured(project, labelers) -> None:
    task = RankingTaskFactory(project=project, overlap=2)
    leases = [task_lease_next(project=project, labeler=user) for user in labelers]
    assert [lease.task if lease else None for lease in leases] == [task, task, None, None]


def test_submitted_rankings_hold_their_slots(project, labelers) -> None:
    task = RankingTaskFactory(project=project, overlap=2)
    later = timezone.now() + timedelta(days=1)  # every lease has expired by then
    for user in labelers[:2]:
        task_lease_next(project=project, labeler=user)
        submit(task, user)
    task.refresh_from_db()
    assert task.status == "complete"
    assert task_lease_next(project=project, labeler=labelers[2], now=later) is None


def test_never_twice_to_one_labeler(project, labelers) -> None:
    ranked, skipped = RankingTaskFactory.create_batch(2, project=project, overlap=3)
    me = labelers[0]
    task_lease_next(project=project, labeler=me)
    submit(ranked, me)
    assert task_lease_next(project=project, labeler=me).task == skipped  # type: ignore[union-attr]
    task_skip(task=skipped, labeler=me)
    assert task_lease_next(project=project, labeler=me) is None
    # Others still get both tasks: the overlap is not used up.
    assert task_lease_next(project=project, labeler=labelers[1]).task == ranked  # type: ignore[union-attr]
    assert Assignment.objects.filter(labeler=me).count() == 2  # one row per (task, labeler)


def test_expired_lease_goes_to_another_labeler(project, labelers) -> None:
    project.lease_seconds = 60
    project.save()
    task = RankingTaskFactory(project=project)
    start = timezone.now()
    task_lease_next(project=project, labeler=labelers[0], now=start)
    assert task_lease_next(project=project, labeler=labelers[1], now=start) is None
    after_expiry = start + timedelta(seconds=61)
    lease = task_lease_next(project=project, labeler=labelers[1], now=after_expiry)
    assert lease is not None and lease.task == task
    # The first labeler's expired lease does not come back: the slot is taken.
    assert task_lease_next(project=project, labeler=labelers[0], now=after_expiry) is None


def test_own_expired_lease_is_renewed(project, labeler) -> None:
    project.lease_seconds = 60
    project.save()
    RankingTaskFactory(project=project)
    start = timezone.now()
    first = task_lease_next(project=project, labeler=labeler, now=start)
    later = start + timedelta(seconds=600)
    renewed = task_lease_next(project=project, labeler=labeler, now=later)
    assert renewed is not None and first is not None
    assert renewed.pk == first.pk
    assert renewed.expires_at == later + timedelta(seconds=60)
    assert Assignment.objects.count() == 1


def test_skipping_frees_the_slot(project, labelers) -> None:
    task = RankingTaskFactory(project=project)
    task_lease_next(project=project, labeler=labelers[0])
    assert task_lease_next(project=project, labeler=labelers[1]) is None
    task_skip(task=task, labeler=labelers[0])
    assert Assignment.objects.get(labeler=labelers[0]).status == "skipped"
    assert task_lease_next(project=project, labeler=labelers[1]).task == task  # type: ignore[union-attr]


def test_skip_without_lease_and_twice(project, labeler) -> None:
    task = RankingTaskFactory(project=project)
    task_skip(task=task, labeler=labeler)
    task_skip(task=task, labeler=labeler)
    assert Assignment.objects.get().status == "skipped"
    assert task_lease_next(project=project, labeler=labeler) is None


def test_skip_after_ranking_is_a_conflict(project, labeler) -> None:
    task = RankingTaskFactory(project=project)
    task_lease_next(project=project, labeler=labeler)
    submit(task, labeler)
    with pytest.raises(ConflictError):
        task_skip(task=task, labeler=labeler)
    assert Assignment.objects.get().status == "submitted"


def test_tasks_of_other_projects_are_not_offered(project, labeler, outsider) -> None:
    RankingTaskFactory(project=outsider.memberships.get().project)
    assert task_lease_next(project=project, labeler=labeler) is None


def test_prefetch_leases_the_task_after_the_one_on_screen(project, labeler) -> None:
    RankingTaskFactory.create_batch(3, project=project)
    on_screen = task_lease_next(project=project, labeler=labeler)
    assert on_screen is not None
    prefetched = task_lease_next(
        project=project, labeler=labeler, exclude_task_id=on_screen.task_id
    )
    assert prefetched is not None and prefetched.task_id != on_screen.task_id
    # Asking again (a reload of the prefetch) gives the same next task: at most two leases.
    again = task_lease_next(project=project, labeler=labeler, exclude_task_id=on_screen.task_id)
    assert again is not None and again.pk == prefetched.pk
    assert Assignment.objects.filter(labeler=labeler, status="active").count() == 2
    # After submitting the task on screen, the plain next is the prefetched one.
    submit(on_screen.task, labeler)
    following = task_lease_next(project=project, labeler=labeler)
    assert following is not None and following.pk == prefetched.pk


def test_prefetch_on_the_last_task_gives_none(project, labeler) -> None:
    RankingTaskFactory(project=project)
    only = task_lease_next(project=project, labeler=labeler)
    assert only is not None
    assert task_lease_next(project=project, labeler=labeler, exclude_task_id=only.task_id) is None


@pytest.mark.parametrize("finish", ["skip", "submit"])
def test_a_stale_candidate_the_labeler_finished_is_passed_over(
    project, labeler, monkeypatch, finish
):
    """The candidate query reads a snapshot that can miss the labeler's own skip or
    submission committed a moment before (another tab). Under the task's lock that is seen,
    and the next task is leased instead of failing on the one-assignment constraint."""
    from labeling.services import leasing

    first, second = RankingTaskFactory(project=project), RankingTaskFactory(project=project)
    if finish == "skip":
        task_skip(task=first, labeler=labeler)
    else:
        lease = task_lease_next(project=project, labeler=labeler)
        assert lease is not None and lease.task == first
        submit(first, labeler)
    stale = lambda project, labeler, now: RankingTask.objects.filter(project=project)  # noqa: E731
    monkeypatch.setattr(leasing, "_candidates", stale)  # as if the snapshot predated it
    lease = task_lease_next(project=project, labeler=labeler)
    assert lease is not None and lease.task == second
    assert Assignment.objects.get(task=first, labeler=labeler).status == (
        "skipped" if finish == "skip" else "submitted"
    )


def test_the_labelers_counters(project, labeler, labelers) -> None:
    """done today / in total, skipped, remaining: each of the four can be told apart."""
    from labeling.models import Ranking
    from labeling.selectors import labeler_counts

    tasks = [RankingTaskFactory(project=project, overlap=2) for _ in range(6)]
    for _ in range(2):  # rank two tasks
        lease = task_lease_next(project=project, labeler=labeler)
        assert lease is not None
        submit(lease.task, labeler)
    yesterday = timezone.now() - timedelta(days=1, hours=1)
    Ranking.objects.filter(task=tasks[0], labeler=labeler).update(created_at=yesterday)
    task_skip(task=tasks[2], labeler=labeler)
    # Someone else completes task 0 (overlap 2): it is no longer open. Another labeler
    # holds a lease on task 4: still open, and still remaining for our labeler.
    lease = task_lease_next(project=project, labeler=labelers[0])
    assert lease is not None and lease.task == tasks[0]
    submit(tasks[0], labelers[0])
    Assignment.objects.create(
        task=tasks[4],
        labeler=labelers[1],
        status="active",
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    tasks[3].status = RankingTask.Status.COMPLETE  # closed by an admin
    tasks[3].save(update_fields=["status"])
    counts = labeler_counts(project=project, user=labeler)
    # open: tasks 1, 2, 4, 5 minus the labeler's finished ones among them (1 ranked, 2 skipped)
    assert counts == {"done_today": 1, "done_total": 2, "skipped": 1, "remaining": 2}
