"""Agreement statistics checked against numbers worked out by hand (shown in comments)."""

from datetime import UTC, datetime, timedelta
from math import sqrt

import pytest

from labeling.agreement import (
    RankingRecord,
    active_seconds,
    kendall_tau_b,
    kendall_w,
    labeler_summaries,
    mid_ranks,
    pairwise_agreement,
    project_agreement,
)
from labeling.stats import project_labeler_stats
from tests.factories import MembershipFactory, RankingFactory, RankingTaskFactory

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- pure functions


def test_mid_ranks_share_the_mean_rank_of_a_tie() -> None:
    assert mid_ranks([[7], [5, 6], [8]]) == {7: 1.0, 5: 2.5, 6: 2.5, 8: 4.0}


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[1], [2], [3], [4]], [[1], [2], [3], [4]], 1.0),
        ([[1], [2], [3], [4]], [[4], [3], [2], [1]], -1.0),
        # one swapped pair of six: (5 concordant - 1 discordant) / 6
        ([[1], [2], [3], [4]], [[2], [1], [3], [4]], 2 / 3),
        # (1,2) tied in a; (1,3), (2,3) concordant: 2 / sqrt((3 - 1) * (3 - 0))
        ([[1, 2], [3]], [[1], [2], [3]], 2 / sqrt(6)),
        # ids only one ranking has are ignored: same as the first case on {1, 2, 3}
        ([[1], [2], [3]], [[9], [1], [2], [3]], 1.0),
    ],
)
def test_kendall_tau_b(a, b, expected) -> None:
    assert kendall_tau_b(a, b) == pytest.approx(expected)
    assert kendall_tau_b(b, a) == pytest.approx(expected)  # symmetric


def test_kendall_tau_b_is_undefined_when_a_ranking_ties_everything() -> None:
    assert kendall_tau_b([[1, 2, 3]], [[1], [2], [3]]) is None
    assert kendall_tau_b([[1]], [[1]]) is None


def test_pairwise_agreement_counts_only_pairs_both_ordered_strictly() -> None:
    # (1,2) is tied in b, so only (1,3) and (2,3) are compared; both agree.
    assert pairwise_agreement([[1], [2], [3]], [[1, 2], [3]]) == (2, 2)
    # one swap among three strict pairs
    assert pairwise_agreement([[1], [2], [3]], [[2], [1], [3]]) == (2, 3)
    assert pairwise_agreement([[1], [2]], [[2], [1]]) == (0, 1)


def test_kendall_w_is_one_for_identical_rankings() -> None:
    same = [[10], [11], [12], [13]]
    assert kendall_w([same, same, same]) == pytest.approx(1.0)


def test_kendall_w_is_zero_for_two_opposite_rankings() -> None:
    # rank sums 4, 4, 4: no spread at all
    assert kendall_w([[[1], [2], [3]], [[3], [2], [1]]]) == pytest.approx(0.0)


def test_kendall_w_falls_with_disagreement() -> None:
    # ranks 1,2,3 / 1,2,3 / 3,2,1 -> sums 5, 6, 7, mean 6, S = 2;
    # W = 12 * 2 / (3^2 * (27 - 3)) = 24 / 216 = 1/9
    w = kendall_w([[[1], [2], [3]], [[1], [2], [3]], [[3], [2], [1]]])
    assert w == pytest.approx(1 / 9)


def test_kendall_w_tie_correction() -> None:
    # ranks 1, 2, 3 and 1.5, 1.5, 3 -> sums 2.5, 3.5, 6; mean 4; S = 6.5;
    # T = 2^3 - 2 = 6; W = 12 * 6.5 / (2^2 * 24 - 2 * 6) = 78 / 84
    assert kendall_w([[[1], [2], [3]], [[1, 2], [3]]]) == pytest.approx(78 / 84)


def test_kendall_w_needs_two_rankings_of_two_items() -> None:
    assert kendall_w([[[1], [2]]]) is None
    assert kendall_w([[[1]], [[1]]]) is None
    assert kendall_w([[[1, 2]], [[1, 2]]]) is None  # everything tied: undefined


def test_active_seconds_leave_out_long_pauses() -> None:
    subs = [
        (T0 + timedelta(seconds=60), 60_000),  # session 1 starts at T0
        (T0 + timedelta(seconds=120), 50_000),  # ... ends at T0 + 120 s
        (T0 + timedelta(hours=2), 30_000),  # after a 2 h pause: a 30 s session
    ]
    assert active_seconds(subs) == pytest.approx(150.0)
    assert active_seconds([]) == 0.0


def _rec(labeler: int, task: int, groups, minute: int = 0, **kw) -> RankingRecord:
    at = T0 + timedelta(minutes=minute)
    return RankingRecord(labeler, task, groups, 60_000, at, **kw)


def test_labeler_summaries_by_hand() -> None:
    records = [
        _rec(1, 100, [[1], [2], [3]], minute=1),
        _rec(2, 100, [[1], [3], [2]], minute=1),
        _rec(3, 100, [[1], [2], [3]], minute=1),
        # a gold task ranked by labeler 1 only: gold 4 > 5 = 6
        _rec(1, 200, [[4], [5], [6]], minute=2, gold_order=[[4], [5, 6]]),
        # "all unacceptable" rankings never count as agreement or disagreement
        _rec(2, 300, [[7], [8]], minute=2, all_unacceptable=True),
        _rec(3, 300, [[8], [7]], minute=2),
    ]
    stats = labeler_summaries(records)
    one, two = stats[1], stats[2]
    # labeler 1 vs 2: 2 of 3 pairs, tau 1/3; vs 3: 3 of 3, tau 1
    assert one["pairwise_agreement"] == pytest.approx(5 / 6)
    assert one["kendall_tau"] == pytest.approx(2 / 3)
    assert one["shared_tasks"] == 1 and one["pairs_compared"] == 6
    # (4,5), (4,6) concordant; (5,6) tied in gold: 2 / sqrt(3 * 2)
    assert one["gold_tasks"] == 1 and one["gold_tau"] == pytest.approx(2 / sqrt(6))
    assert two["pairwise_agreement"] == pytest.approx(4 / 6)
    assert two["kendall_tau"] == pytest.approx(1 / 3)
    assert two["gold_tau"] is None
    # two rankings, one session from T0 (first started 60 s before its 1st minute) to T0+2 min
    assert one["rankings"] == 2 and one["active_hours"] == pytest.approx(120 / 3600)
    assert one["rankings_per_hour"] == pytest.approx(60.0)
    assert one["median_time_ms"] == 60_000


def test_project_agreement_by_hand() -> None:
    records = [
        _rec(1, 100, [[1], [2], [3]]),
        _rec(2, 100, [[1], [3], [2]]),
        _rec(3, 100, [[1], [2], [3]]),
        _rec(1, 200, [[4], [5]]),  # one ranking only: not in W
    ]
    project = project_agreement(records)
    # rank sums 3, 7, 8; mean 6; S = 9 + 1 + 4 = 14; W = 12 * 14 / (9 * 24) = 7/9
    assert project["kendall_w"] == pytest.approx(7 / 9)
    assert project["tasks_with_overlap"] == 1
    # pairs AB 2/3, AC 3/3, BC 2/3 -> 7 of 9
    assert project["pairwise_agreement"] == pytest.approx(7 / 9)


# --------------------------------------------------------------------------- from the database


@pytest.mark.django_db
def test_project_labeler_stats_reads_rankings(project) -> None:
    project.k = 3
    project.save()
    alice = MembershipFactory(project=project, role="labeler")
    bob = MembershipFactory(project=project, role="labeler")
    task = RankingTaskFactory(project=project)
    a, b, c = task.responses.order_by("position").values_list("id", flat=True)
    RankingFactory(task=task, labeler=alice.user, tie_groups=[[a], [b], [c]])
    RankingFactory(task=task, labeler=bob.user, tie_groups=[[a], [c], [b]])
    gold = RankingTaskFactory(project=project, is_gold=True)
    g1, g2, g3 = gold.responses.order_by("position").values_list("id", flat=True)
    gold.gold_order = [[g1], [g2], [g3]]
    gold.save()
    RankingFactory(task=gold, labeler=alice.user, tie_groups=[[g3], [g2], [g1]])

    stats = project_labeler_stats(project=project)

    rows = {row["username"]: row for row in stats["labelers"]}
    assert rows[alice.user.username]["labeler"] == alice.pseudonym
    assert rows[alice.user.username]["rankings"] == 2
    assert rows[alice.user.username]["pairwise_agreement"] == pytest.approx(2 / 3)
    assert rows[alice.user.username]["gold_tau"] == pytest.approx(-1.0)
    assert rows[bob.user.username]["kendall_tau"] == pytest.approx(1 / 3)
    # ranks 1,2,3 and 1,3,2 -> sums 2, 5, 5; mean 4; S = 6; W = 72 / (4 * 24) = 0.75
    assert stats["project"]["kendall_w"] == pytest.approx(0.75)
    assert stats["project"]["rankings"] == 3
    assert stats["rounds"] == [{"round": None, "rankings": 3, "comparisons": 0}]
