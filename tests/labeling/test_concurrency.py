"""Leasing and submitting from many threads at once, on PostgreSQL (row locks, SKIP LOCKED).

Each thread has its own database connection (Django's connections are per thread) and
closes it at the end. The checks: no task is leased to more labelers than its overlap,
no successful submission is lost, a resubmission is rejected, and every task's
rankings_count equals its stored rankings.
"""

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections
from django.db.models import Count

from core.exceptions import ConflictError
from labeling.models import Assignment, Comparison, Ranking, RankingTask
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.factories import MembershipFactory, ProjectFactory, RankingTaskFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 24


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads started together; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as error:  # reported to the test below
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]
    return results


def random_order(task: RankingTask, rng: random.Random) -> list[list[int]]:
    ids = list(task.responses.values_list("id", flat=True))
    rng.shuffle(ids)
    return [[ids[0]], ids[1:3], [ids[3]]]  # one tie: 5 pairs


def label_until_done(project: Any, labeler: Any, seed: int) -> dict[str, list[int]]:
    """Lease and rank until no task is left; try to resubmit every ranking once."""
    rng = random.Random(seed)
    done: dict[str, list[int]] = {"rankings": [], "resubmits_rejected": [], "conflicts": []}
    while (assignment := task_lease_next(project=project, labeler=labeler)) is not None:
        task = assignment.task
        try:
            ranking = ranking_submit(
                task=task,
                labeler=labeler,
                order=random_order(task, rng),
                flags=None,
                time_spent_ms=rng.randint(1, 9000),
            )
        except ConflictError:
            done["conflicts"].append(task.pk)  # an expired lease whose slot was taken
            continue
        done["rankings"].append(ranking.pk)
        try:
            ranking_submit(
                task=task,
                labeler=labeler,
                order=random_order(task, rng),
                flags=None,
                time_spent_ms=1,
            )
        except ConflictError:
            done["resubmits_rejected"].append(ranking.pk)
    return done


def check_counts(project: Any) -> None:
    per_task = RankingTask.objects.filter(project=project).annotate(n=Count("rankings"))
    for task in per_task:
        assert task.rankings_count == task.n, (
            f"task {task.pk}: count {task.rankings_count} != {task.n}"
        )
        assert task.n <= task.overlap, f"task {task.pk} has {task.n} rankings > overlap"
        assert task.status == ("complete" if task.n == task.overlap else "open")


def test_many_labelers_never_over_lease_nor_lose_rankings() -> None:
    project = ProjectFactory(overlap=3, k=4)
    tasks = RankingTaskFactory.create_batch(30, project=project)
    labelers = [MembershipFactory(project=project).user for _ in range(THREADS)]

    results = run_threads(THREADS, lambda i: label_until_done(project, labelers[i], seed=i))

    submitted = [pk for result in results for pk in result["rankings"]]
    assert sorted(submitted) == sorted(Ranking.objects.values_list("pk", flat=True))
    assert len(submitted) == len(tasks) * 3  # every slot filled, none twice
    assert sorted(pk for r in results for pk in r["resubmits_rejected"]) == sorted(submitted)
    assert not [pk for r in results for pk in r["conflicts"]]  # no lease expired here
    # No task was ever leased to more labelers than its overlap: one row per lease.
    leases = Counter(Assignment.objects.values_list("task_id", flat=True))
    assert max(leases.values()) == 3
    assert set(Assignment.objects.values_list("status", flat=True)) == {"submitted"}
    pairs = Counter(Ranking.objects.values_list("task_id", "labeler_id"))
    assert max(pairs.values()) == 1  # never twice to one labeler
    assert Comparison.objects.count() == len(submitted) * 5
    check_counts(project)


def test_expiring_leases_never_give_a_task_more_rankings_than_overlap() -> None:
    # Leases expire at once: labelers race for the same tasks and late submissions are
    # accepted only while the task still has a free slot.
    project = ProjectFactory(overlap=2, k=4, lease_seconds=0)
    RankingTaskFactory.create_batch(10, project=project)
    labelers = [MembershipFactory(project=project).user for _ in range(THREADS)]

    results = run_threads(THREADS, lambda i: label_until_done(project, labelers[i], seed=i))

    submitted = [pk for result in results for pk in result["rankings"]]
    assert sorted(submitted) == sorted(Ranking.objects.values_list("pk", flat=True))
    assert len(submitted) == 10 * 2
    check_counts(project)
    conflicted = [pk for r in results for pk in r["conflicts"]]
    assert len(conflicted) + len(submitted) == Assignment.objects.count()


def test_same_labeler_submitting_twice_at_once_is_counted_once() -> None:
    project = ProjectFactory(overlap=1, k=4)
    task = RankingTaskFactory(project=project)
    labeler = MembershipFactory(project=project).user
    task_lease_next(project=project, labeler=labeler)
    order = [[pk] for pk in task.responses.values_list("id", flat=True)]

    def submit(_: int) -> str:
        try:
            ranking_submit(task=task, labeler=labeler, order=order, flags=None, time_spent_ms=5)
        except ConflictError:
            return "conflict"
        return "stored"

    outcomes = run_threads(THREADS, submit)
    assert Counter(outcomes) == {"stored": 1, "conflict": THREADS - 1}
    task.refresh_from_db()
    assert (task.rankings_count, task.status) == (1, "complete")
    assert Comparison.objects.count() == 6
