"""Agreement between labelers on K-wise rankings with ties: pure functions, no database.

A ranking is its tie groups, best first: ``[[3], [1, 4], [2]]`` means 3 > 1 = 4 > 2.
Items are response ids. Every measure here treats a tie as "no preference", never as a
guess, so rankings with ties are compared fairly (PRODUCT.md section 4: agreement
metrics made for rankings).

- ``pairwise_agreement``: among the response pairs that BOTH labelers ordered strictly,
  how many they ordered the same way (the statistic InstructGPT reports as inter-annotator
  agreement, Ouyang et al. 2022, section 5.1 / appendix B.4).
- ``kendall_tau_b``: Kendall's rank correlation with the tie-corrected denominator
  (Kendall 1945), in [-1, 1].
- ``kendall_w``: Kendall's coefficient of concordance of m rankings of the same n items,
  with the correction for ties (Kendall & Babington Smith 1939), in [0, 1].
- ``active_seconds``: the time a labeler was actually working, from submission times.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import combinations
from math import sqrt
from statistics import median
from typing import Any

TieGroups = Sequence[Sequence[int]]

# A pause longer than this between two submissions ends a labeling session.
SESSION_GAP = timedelta(minutes=30)


def group_index(tie_groups: TieGroups) -> dict[int, int]:
    """Item -> index of its tie group (0 = best). Tied items share an index."""
    return {item: g for g, group in enumerate(tie_groups) for item in group}


def mid_ranks(tie_groups: TieGroups) -> dict[int, float]:
    """Item -> rank 1..n, tied items sharing the mean of the ranks they span.

    ``[[7], [5, 6], [8]]`` -> {7: 1.0, 5: 2.5, 6: 2.5, 8: 4.0}.
    """
    ranks: dict[int, float] = {}
    start = 1
    for group in tie_groups:
        mean_rank = start + (len(group) - 1) / 2
        for item in group:
            ranks[item] = mean_rank
        start += len(group)
    return ranks


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _pair_signs(a: TieGroups, b: TieGroups) -> list[tuple[int, int]]:
    """For every pair of items ranked by both: (sign in a, sign in b); 0 means tied."""
    ga, gb = group_index(a), group_index(b)
    common = sorted(ga.keys() & gb.keys())
    return [(_sign(ga[i] - ga[j]), _sign(gb[i] - gb[j])) for i, j in combinations(common, 2)]


def pairwise_agreement(a: TieGroups, b: TieGroups) -> tuple[int, int]:
    """``(agreeing, compared)``: pairs both rankings order strictly, and those ordered alike.

    The rate is ``agreeing / compared``; counts are returned so callers can pool them
    over tasks (a pooled rate weighs every pair equally).
    """
    strict = [(sa, sb) for sa, sb in _pair_signs(a, b) if sa and sb]
    return sum(sa == sb for sa, sb in strict), len(strict)


def kendall_tau_b(a: TieGroups, b: TieGroups) -> float | None:
    """Kendall's tau-b of two rankings over the items both contain.

    tau_b = (n_c - n_d) / sqrt((n_0 - n_1) (n_0 - n_2)), n_0 = n(n-1)/2 pairs, n_1 and n_2
    the pairs tied in a and in b. None when undefined (fewer than 2 items, or one ranking
    ties everything).
    """
    signs = _pair_signs(a, b)
    n0 = len(signs)
    concordant = sum(sa * sb > 0 for sa, sb in signs)
    discordant = sum(sa * sb < 0 for sa, sb in signs)
    tied_a = sum(sa == 0 for sa, _ in signs)
    tied_b = sum(sb == 0 for _, sb in signs)
    denominator = sqrt((n0 - tied_a) * (n0 - tied_b))
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator


def kendall_w(rankings: Sequence[TieGroups]) -> float | None:
    """Kendall's W of m rankings of the same n items, corrected for ties.

    W = 12 S / (m^2 (n^3 - n) - m sum_j T_j), where S = sum_i (R_i - mean R)^2 over the
    items' rank sums R_i (mid-ranks for ties) and T_j = sum over rater j's tie groups of
    (t^3 - t). Only items every ranking contains are used. None when m < 2, n < 2, or
    every ranking ties everything.
    """
    m = len(rankings)
    if m < 2:
        return None
    common = set.intersection(*(set(group_index(r)) for r in rankings))
    n = len(common)
    if n < 2:
        return None
    restricted = [[[i for i in g if i in common] for g in r] for r in rankings]
    restricted = [[g for g in r if g] for r in restricted]
    sums = {item: 0.0 for item in common}
    ties = 0
    for groups in restricted:
        for item, rank in mid_ranks(groups).items():
            sums[item] += rank
        ties += sum(len(g) ** 3 - len(g) for g in groups)
    mean = m * (n + 1) / 2
    s = sum((r - mean) ** 2 for r in sums.values())
    denominator = m * m * (n**3 - n) - m * ties
    if denominator <= 0:
        return None
    return 12 * s / denominator


def mean_or_none(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def median_or_none(values: Sequence[float]) -> float | None:
    return float(median(values)) if values else None


def active_seconds(
    submissions: Sequence[tuple[datetime, int]], *, gap: timedelta = SESSION_GAP
) -> float:
    """Seconds a labeler was working, from ``(submitted_at, time_spent_ms)`` pairs.

    Submissions closer than ``gap`` form one session; a session lasts from the start of
    its first ranking (submission time minus the time spent on it) to its last
    submission. Pauses longer than ``gap`` (lunch, nights) are not counted.
    """
    total = 0.0
    session_start: datetime | None = None
    previous: datetime | None = None
    for at, spent_ms in sorted(submissions):
        if previous is None or at - previous > gap:
            if session_start is not None and previous is not None:
                total += (previous - session_start).total_seconds()
            session_start = at - timedelta(milliseconds=spent_ms)
        previous = at
    if session_start is not None and previous is not None:
        total += (previous - session_start).total_seconds()
    return total


def rate_per_hour(count: int, seconds: float) -> float | None:
    return count * 3600.0 / seconds if seconds > 0 else None


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True)
class RankingRecord:
    """The parts of one submitted ranking the statistics need (plain data)."""

    labeler: int
    task: int
    tie_groups: TieGroups
    time_spent_ms: int
    submitted_at: datetime
    all_unacceptable: bool = False
    gold_order: TieGroups | None = None  # set when the task is a gold task


@dataclass
class _Tally:
    agreeing: int = 0
    compared: int = 0
    taus: list[float | None] = field(default_factory=list)
    tasks: set[int] = field(default_factory=set)

    def add(self, task: int, a: TieGroups, b: TieGroups) -> None:
        agreeing, compared = pairwise_agreement(a, b)
        self.agreeing += agreeing
        self.compared += compared
        self.taus.append(kendall_tau_b(a, b))
        self.tasks.add(task)

    @property
    def rate(self) -> float | None:
        return self.agreeing / self.compared if self.compared else None


def _by_task(records: Sequence[RankingRecord]) -> dict[int, list[RankingRecord]]:
    """Rankings usable for agreement, grouped by task. An "all unacceptable" ranking is
    left out: its order among unacceptable responses is not a preference."""
    tasks: dict[int, list[RankingRecord]] = defaultdict(list)
    for record in records:
        if not record.all_unacceptable:
            tasks[record.task].append(record)
    return tasks


def labeler_summaries(records: Sequence[RankingRecord]) -> dict[int, dict[str, Any]]:
    """Per labeler id: volume, speed, agreement with the others, accuracy on gold tasks.

    Agreement pools every (task, other labeler) comparison of the labeler: the rate over
    all strictly ordered pairs both made, and the mean Kendall's tau-b.
    """
    mine: dict[int, list[RankingRecord]] = defaultdict(list)
    for record in records:
        mine[record.labeler].append(record)
    tallies: dict[int, _Tally] = defaultdict(_Tally)
    for task, rankings in _by_task(records).items():
        for x, y in combinations(rankings, 2):
            tallies[x.labeler].add(task, x.tie_groups, y.tie_groups)
            tallies[y.labeler].add(task, y.tie_groups, x.tie_groups)
    return {labeler: _summary(rows, tallies[labeler]) for labeler, rows in mine.items()}


def _summary(rows: list[RankingRecord], tally: _Tally) -> dict[str, Any]:
    seconds = active_seconds([(r.submitted_at, r.time_spent_ms) for r in rows])
    gold = [
        kendall_tau_b(r.tie_groups, r.gold_order)
        for r in rows
        if r.gold_order and not r.all_unacceptable
    ]
    return {
        "rankings": len(rows),
        "active_hours": seconds / 3600.0,
        "rankings_per_hour": rate_per_hour(len(rows), seconds),
        "median_time_ms": median_or_none([r.time_spent_ms for r in rows]),
        "shared_tasks": len(tally.tasks),
        "pairs_compared": tally.compared,
        "pairwise_agreement": tally.rate,
        "kendall_tau": mean_or_none(tally.taus),
        "gold_tasks": len(gold),
        "gold_tau": mean_or_none(gold),
    }


def project_agreement(records: Sequence[RankingRecord]) -> dict[str, Any]:
    """Project-wide agreement over tasks with >= 2 rankings: mean Kendall's W per task,
    and the pooled pairwise agreement rate over every pair of labelers on a task."""
    overlapping = {t: rs for t, rs in _by_task(records).items() if len(rs) >= 2}
    tally = _Tally()
    for task, rankings in overlapping.items():
        for x, y in combinations(rankings, 2):
            tally.add(task, x.tie_groups, y.tie_groups)
    return {
        "tasks_with_overlap": len(overlapping),
        "kendall_w": mean_or_none(
            [kendall_w([r.tie_groups for r in rs]) for rs in overlapping.values()]
        ),
        "pairwise_agreement": tally.rate,
        "pairs_compared": tally.compared,
        "kendall_tau": mean_or_none(tally.taus),
    }
