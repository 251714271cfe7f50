"""Submitting rankings: validation, conflicts, comparisons, completion at overlap."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.exceptions import ApplicationError, ConflictError
from labeling.models import Assignment, Comparison, Ranking, RankingTask
from labeling.services.leasing import task_lease_next, task_skip
from labeling.services.rankings import comparisons_from_ranking, ranking_submit
from tests.factories import MembershipFactory, RankingTaskFactory


@pytest.fixture
def task(project):
    return RankingTaskFactory(project=project)


@pytest.fixture
def ids(task) -> list[int]:
    return list(task.responses.order_by("position").values_list("id", flat=True))


@pytest.fixture
def leased(task, labeler):
    return task_lease_next(project=task.project, labeler=labeler)


def submit(task: RankingTask, labeler: object, order: object, **kwargs: object) -> Ranking:
    kwargs.setdefault("flags", None)
    kwargs.setdefault("time_spent_ms", 1500)
    return ranking_submit(task=task, labeler=labeler, order=order, **kwargs)  # type: ignore[arg-type]


def test_submission_stores_ranking_and_pairs(task, ids, labeler, leased) -> None:
    a, b, c, d = ids
    ranking = submit(task, labeler, [[d], [c], [a, b]], flags={str(a): ["harmful"], b: []})
    assert ranking.tie_groups == [[d], [c], [a, b]]
    assert ranking.flags == {str(a): ["harmful"]}
    assert (ranking.time_spent_ms, ranking.assignment, ranking.source) == (1500, leased, "labeler")
    pairs = Comparison.objects.filter(ranking=ranking)
    assert sorted((p.chosen_id, p.rejected_id, p.margin) for p in pairs) == sorted(
        [(d, c, 1), (d, a, 2), (d, b, 2), (c, a, 1), (c, b, 1)]
    )
    assert {(p.task_id, p.prompt_id, p.project_id) for p in pairs} == {
        (task.pk, task.prompt_id, task.project_id)
    }
    leased.refresh_from_db()
    task.refresh_from_db()
    assert leased.status == "submitted"
    assert (task.rankings_count, task.status) == (1, "complete")


def test_no_ties_gives_six_pairs(task, ids, labeler, leased) -> None:
    ranking = submit(task, labeler, [[i] for i in ids])
    assert ranking.comparisons.count() == 6


@pytest.mark.parametrize(
    ("make_order", "fragment"),
    [
        (lambda ids: [[ids[0]], [ids[1]], [ids[2]]], "is missing"),
        (lambda ids: [[ids[0]], [ids[1], ids[0]], [ids[2]], [ids[3]]], "more than once"),
        (lambda ids: [[ids[0]], [ids[1]], [ids[2]], [ids[3]], [999_999]], "not a response of this"),
        (lambda ids: [[ids[0]], [], [ids[1], ids[2], ids[3]]], "empty tie group"),
        (lambda ids: [ids[0], ids[1], ids[2], ids[3]], "list of tie groups"),
        (lambda ids: [[str(i)] for i in ids], "is not a response id"),
        (lambda ids: [], "is missing"),
    ],
)
def test_invalid_order_is_rejected(task, ids, labeler, leased, make_order, fragment) -> None:
    with pytest.raises(ApplicationError) as caught:
        submit(task, labeler, make_order(ids))
    assert not isinstance(caught.value, ConflictError)
    assert fragment in caught.value.message
    assert "order" in caught.value.extra["errors"]
    assert not Ranking.objects.exists()


def test_foreign_response_id_is_rejected(task, ids, labeler, leased, project) -> None:
    other = RankingTaskFactory(project=project)
    foreign = other.responses.first().pk
    with pytest.raises(ApplicationError, match="not a response of this task"):
        submit(task, labeler, [[ids[0]], [ids[1]], [ids[2]], [ids[3], foreign]])


@pytest.mark.parametrize(
    ("make_flags", "fragment"),
    [
        (lambda ids: {str(ids[0]): ["rude"]}, "unknown flag 'rude'"),
        (lambda ids: {"999999": ["harmful"]}, "not a response of this task"),
        (lambda ids: {str(ids[0]): "harmful"}, "must be a list"),
        (lambda ids: ["harmful"], "must be an object"),
    ],
)
def test_invalid_flags_are_rejected(task, ids, labeler, leased, make_flags, fragment) -> None:
    with pytest.raises(ApplicationError) as caught:
        submit(task, labeler, [ids], flags=make_flags(ids))
    assert fragment in caught.value.message
    assert not Ranking.objects.exists()


@pytest.mark.parametrize("spent", [-1, "10", 2.5, True])
def test_invalid_time_spent_is_rejected(task, ids, labeler, leased, spent) -> None:
    with pytest.raises(ApplicationError, match="time_spent_ms"):
        submit(task, labeler, [ids], time_spent_ms=spent)


def test_resubmission_conflicts_and_changes_nothing(task, ids, labeler, leased) -> None:
    first = submit(task, labeler, [[i] for i in ids])
    with pytest.raises(ConflictError, match="already ranked"):
        submit(task, labeler, [[i] for i in reversed(ids)])
    assert list(Ranking.objects.all()) == [first]
    assert Ranking.objects.get().tie_groups == [[i] for i in ids]
    assert Comparison.objects.count() == 6
    task.refresh_from_db()
    assert task.rankings_count == 1


def test_all_unacceptable_is_kept_without_pairs(task, ids, labeler, leased) -> None:
    ranking = submit(task, labeler, [], all_unacceptable=True, flags={ids[1]: ["harmful"]})
    assert ranking.all_unacceptable
    assert ranking.tie_groups == [ids]
    assert not Comparison.objects.exists()
    assert comparisons_from_ranking(ranking=ranking) == []
    task.refresh_from_db()
    assert (task.rankings_count, task.status) == (1, "complete")


def test_all_unacceptable_with_an_order_still_yields_no_pairs(task, ids, labeler, leased) -> None:
    submit(task, labeler, [[i] for i in ids], all_unacceptable=True)
    assert not Comparison.objects.exists()


def test_task_completes_at_overlap(project) -> None:
    task = RankingTaskFactory(project=project, overlap=3)
    users = [MembershipFactory(project=project).user for _ in range(3)]
    ids = list(task.responses.values_list("id", flat=True))
    for done, user in enumerate(users, start=1):
        task_lease_next(project=project, labeler=user)
        submit(task, user, [ids])
        task.refresh_from_db()
        assert task.rankings_count == done
        assert task.status == ("complete" if done == 3 else "open")


def test_submission_needs_a_lease(task, ids, labeler) -> None:
    with pytest.raises(ConflictError, match="not given to you"):
        submit(task, labeler, [ids])


def test_skipped_task_cannot_be_ranked(task, ids, labeler, leased) -> None:
    task_skip(task=task, labeler=labeler)
    with pytest.raises(ConflictError, match="skipped"):
        submit(task, labeler, [ids])


def test_closed_task_takes_no_ranking(task, ids, labeler, leased) -> None:
    RankingTask.objects.filter(pk=task.pk).update(status=RankingTask.Status.CLOSED)
    with pytest.raises(ConflictError, match="no longer takes rankings"):
        submit(task, labeler, [ids])


def test_expired_lease_within_overlap_is_accepted(task, ids, labeler, leased) -> None:
    Assignment.objects.filter(pk=leased.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    ranking = submit(task, labeler, [[i] for i in ids])
    assert ranking.comparisons.count() == 6


def test_expired_lease_taken_by_others_is_a_conflict(project, task, ids, labeler, leased) -> None:
    Assignment.objects.filter(pk=leased.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    other = MembershipFactory(project=project).user
    assert task_lease_next(project=project, labeler=other).task == task  # type: ignore[union-attr]
    with pytest.raises(ConflictError, match="expired"):
        submit(task, labeler, [ids])
    submit(task, other, [ids])  # the new holder's ranking is accepted
    with pytest.raises(ConflictError, match="expired"):
        submit(task, labeler, [ids])
    assert Ranking.objects.get().labeler == other


def test_comparisons_from_ranking_backfills_once(task, ids, labeler, leased) -> None:
    ranking = submit(task, labeler, [[i] for i in ids])
    Comparison.objects.all().delete()
    assert len(comparisons_from_ranking(ranking=ranking)) == 6
    assert len(comparisons_from_ranking(ranking=ranking)) == 6
    assert Comparison.objects.count() == 6


def test_source_is_recorded_and_checked(task, ids, labeler, leased) -> None:
    with pytest.raises(ApplicationError, match="source"):
        submit(task, labeler, [ids], source="robot")
    assert submit(task, labeler, [ids], source="simulated").source == "simulated"
