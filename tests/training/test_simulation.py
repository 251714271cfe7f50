"""Synthetic labelers rank through the labeling services, and the command reports on them."""

import json

import pytest
from django.core.management import CommandError, call_command

from labeling.models import Assignment, Comparison, Membership, Ranking, RankingTask
from tests.factories import MembershipFactory, ProjectFactory, RankingTaskFactory
from training.services.simulation import labelers_simulate, rankings_wanted

TEXTS = ["yes yes", "no", "Yes, and yes again: yes.", "maybe"]  # keyword:yes -> 2, 0, 3, 0


@pytest.fixture
def sim_project(db):
    project = ProjectFactory(k=4, overlap=2)
    tasks = [RankingTaskFactory(project=project, responses=TEXTS) for _ in range(3)]
    return project, tasks


def test_exact_labelers_rank_every_task_by_the_preference(sim_project) -> None:
    project, tasks = sim_project

    summary = labelers_simulate(project=project, preference="keyword:yes", labelers=2)

    assert summary["rankings"] == 6 and summary["open_tasks_left"] == 0
    assert summary["by_labeler"] == {"sim-labeler-1": 3, "sim-labeler-2": 3}
    assert summary["pair_agreement"] == 1.0
    for task in tasks:
        task.refresh_from_db()
        assert task.status == RankingTask.Status.COMPLETE and task.rankings_count == 2
        ids = list(task.responses.order_by("position").values_list("id", flat=True))
        rankings = Ranking.objects.filter(task=task)
        assert {r.labeler.username for r in rankings} == {"sim-labeler-1", "sim-labeler-2"}
        for ranking in rankings:
            # 3 > 2 > 0 = 0: the two responses without the keyword are tied.
            assert ranking.tie_groups == [[ids[2]], [ids[0]], [ids[1], ids[3]]]
            assert ranking.time_spent_ms >= 1
            assert ranking.assignment.status == Assignment.Status.SUBMITTED
    # Pairs from different tie groups: 1x1 + 1x2 + 1x2 = 5 per ranking.
    assert Comparison.objects.filter(project=project).count() == 6 * 5


def test_simulated_labelers_are_labeler_members_without_a_password(sim_project) -> None:
    project, _ = sim_project
    labelers_simulate(project=project, preference="length", labelers=3, max_tasks=1)
    labelers_simulate(project=project, preference="length", labelers=3, max_tasks=1)

    members = Membership.objects.filter(project=project, user__username__startswith="sim-")
    assert sorted(m.user.username for m in members) == [
        "sim-labeler-1",
        "sim-labeler-2",
        "sim-labeler-3",
    ]
    assert all(m.role == Membership.Role.LABELER for m in members)
    assert not any(m.user.has_usable_password() for m in members)


def test_max_tasks_and_overlap_limits(sim_project) -> None:
    project, _ = sim_project
    assert rankings_wanted(project=project) == 6

    first = labelers_simulate(project=project, preference="length", labelers=1, max_tasks=2)
    assert first["rankings"] == 2 and rankings_wanted(project=project) == 4
    from labeling.models import Ranking

    # Recorded as synthetic, so exports and agreement statistics can tell them from people.
    assert set(Ranking.objects.filter(task__project=project).values_list("source", flat=True)) == {
        "simulated"
    }

    # One labeler may rank each task once: with overlap 2 the tasks stay open.
    second = labelers_simulate(project=project, preference="length", labelers=1)
    assert second["rankings"] == 1 and second["open_tasks_left"] == 3
    assert rankings_wanted(project=project) == 3


def test_noise_is_seeded_and_sometimes_flips_pairs(db) -> None:
    def run(seed: int) -> tuple[list[list[int]], float]:
        project = ProjectFactory(k=4, overlap=1)
        for _ in range(30):
            RankingTaskFactory(project=project, responses=["a", "bb", "ccc", "dddd"])
        summary = labelers_simulate(
            project=project, preference="length:shorter", labelers=2, noise=1.0, seed=seed
        )
        assert summary["rankings"] == 30
        orders = Ranking.objects.filter(task__project=project).order_by("task_id")
        return [[len(g) for g in r.tie_groups] for r in orders], summary["pair_agreement"]

    (shapes, agreement), (_, again) = run(5), run(5)
    assert agreement == again
    # Neighbours differ by 1 character = 1 temperature unit: sigmoid(1) ~ 0.73 for them,
    # more for the wider pairs. Neither exact nor random.
    assert 0.6 < agreement < 0.95
    assert all(shape == [1, 1, 1, 1] for shape in shapes)  # T > 0 gives no ties


def test_command_reports_a_summary(sim_project, capsys) -> None:
    project, _ = sim_project
    call_command(
        "simulate_labelers", project.slug, "--preference", "keyword:yes", "--labelers", "2"
    )
    out = capsys.readouterr().out
    assert "6 rankings by 2 simulated labelers" in out
    assert "0 tasks still open" in out
    assert json.loads(out.strip().splitlines()[-1])["rankings"] == 6


def test_command_rejects_an_unknown_preference(sim_project) -> None:
    project, _ = sim_project
    with pytest.raises(CommandError, match="valid preferences: length"):
        call_command("simulate_labelers", project.slug, "--preference", "politeness")
    with pytest.raises(CommandError, match="No project"):
        call_command("simulate_labelers", "nope", "--preference", "length")


def test_a_human_lease_is_respected(sim_project) -> None:
    """A task a person holds with overlap 1 is not given to a simulated labeler."""
    from labeling.services.leasing import task_lease_next

    project = ProjectFactory(k=4, overlap=1)
    held = RankingTaskFactory(project=project, responses=TEXTS)
    free = RankingTaskFactory(project=project, responses=TEXTS)
    person = MembershipFactory(project=project).user
    assert task_lease_next(project=project, labeler=person).task == held

    summary = labelers_simulate(project=project, preference="keyword:yes", labelers=2)

    assert summary["rankings"] == 1
    assert Ranking.objects.get().task == free
