"""Synthetic labelers: rank a project's open tasks by a named preference, for dry runs.

They work through the SAME services as people (`task_lease_next`, then `ranking_submit`),
so leases, overlap, validation, comparisons and the round's auto-advance behave exactly as
they will with paid labelers. Each simulated labeler is a member `sim-labeler-N` with the
labeler role and an unusable password (nobody can log in as one).
"""

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import F, Sum

from core.exceptions import ConflictError
from labeling.models import Membership, Project, RankingTask
from labeling.services.leasing import task_lease_next
from labeling.services.projects import membership_add
from labeling.services.rankings import ranking_submit
from training.ml.synthetic import Scorer, bradley_terry_ranking, exact_ranking, make_preference

SIM_USERNAME = "sim-labeler-{}"

ProgressCallback = Callable[[int, int], None]


def simulated_labelers_ensure(*, project: Project, count: int) -> list[Any]:
    """Users sim-labeler-1..count, each a labeler member of `project` (created if needed)."""
    if count < 1:
        raise ValueError("at least one simulated labeler is needed")
    users = []
    for n in range(1, count + 1):
        username = SIM_USERNAME.format(n)
        member = Membership.objects.filter(project=project, user__username=username).first()
        if member is None:
            member = membership_add(
                project=project, username=username, role=Membership.Role.LABELER
            )
        users.append(get_user_model().objects.get(pk=member.user_id))
    return users


def rankings_wanted(*, project: Project) -> int:
    """Rankings still missing on the project's open tasks (sum of overlap - rankings)."""
    open_tasks = RankingTask.objects.filter(project=project, status=RankingTask.Status.OPEN)
    missing = open_tasks.aggregate(n=Sum(F("overlap") - F("rankings_count")))["n"]
    return max(0, missing or 0)


def labelers_simulate(
    *,
    project: Project,
    preference: str,
    labelers: int = 3,
    noise: float = 0.0,
    max_tasks: int | None = None,
    seed: int = 0,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Let `labelers` synthetic labelers rank open tasks until none is left for them.

    Labelers take turns, one task each, so a task with overlap > 1 is ranked by different
    labelers. `noise` is the Bradley-Terry temperature in the preference's units (0: exact
    order, equal scores tied). `max_tasks` caps the number of rankings submitted. Each
    ranking commits on its own, so the round's auto-advance fires as it would for people.
    Returns a summary (rankings per labeler, agreement of the noisy rankings with the exact
    preference, tasks still open).
    """
    if noise < 0:
        raise ValueError("noise (the Bradley-Terry temperature) must be >= 0")
    scorer = make_preference(preference, device=settings.RLHF_DEVICE, dtype=settings.RLHF_DTYPE)
    users = simulated_labelers_ensure(project=project, count=labelers)
    rng = random.Random(seed)
    total = rankings_wanted(project=project)
    if max_tasks is not None:
        total = min(total, max_tasks)
    tally = _Tally()
    started = time.monotonic()
    waiting = list(users)
    while waiting and (max_tasks is None or tally.rankings < max_tasks):
        for user in list(waiting):
            if max_tasks is not None and tally.rankings >= max_tasks:
                break
            assignment = task_lease_next(project=project, labeler=user)
            if assignment is None:
                waiting.remove(user)  # nothing left that this labeler may rank
                continue
            _rank_one(assignment.task, user, scorer, noise, rng, tally)
            if on_progress is not None:
                on_progress(tally.rankings, max(total, tally.rankings))
    return tally.summary(
        preference=preference,
        noise=noise,
        labelers=[u.username for u in users],
        open_tasks_left=RankingTask.objects.filter(
            project=project, status=RankingTask.Status.OPEN
        ).count(),
        seconds=time.monotonic() - started,
    )


def _rank_one(
    task: RankingTask, user: Any, scorer: Scorer, noise: float, rng: random.Random, tally: "_Tally"
) -> None:
    """Score the task's responses, sample a noisy order and submit it like a person would."""
    started = time.perf_counter()
    responses = list(task.responses.order_by("position"))
    scores = scorer(task.prompt.as_input, [r.text for r in responses])
    groups = bradley_terry_ranking(scores, noise, rng)  # indices into `responses`
    order = [[responses[i].pk for i in group] for group in groups]
    spent_ms = max(1, round((time.perf_counter() - started) * 1000))
    try:
        ranking_submit(
            task=task,
            labeler=user,
            order=order,
            flags={},
            time_spent_ms=spent_ms,
            source="simulated",
        )
    except ConflictError:
        # The task was closed meanwhile (an admin advanced or cancelled the round).
        tally.conflicts += 1
        return
    tally.add(user.username, scores, groups)


class _Tally:
    """Counts of the simulation and how often the noisy order kept the exact pair order."""

    def __init__(self) -> None:
        self.rankings = 0
        self.conflicts = 0
        self.by_labeler: Counter[str] = Counter()
        self.pairs = 0
        self.pairs_agreeing = 0

    def add(self, username: str, scores: list[float], groups: list[list[int]]) -> None:
        self.rankings += 1
        self.by_labeler[username] += 1
        exact, sampled = _group_of(exact_ranking(scores)), _group_of(groups)
        for i in range(len(scores)):
            for j in range(len(scores)):
                if exact[i] < exact[j]:  # i strictly preferred by the exact preference
                    self.pairs += 1
                    self.pairs_agreeing += sampled[i] < sampled[j]

    def summary(self, **fields: Any) -> dict[str, Any]:
        return {
            **fields,
            "rankings": self.rankings,
            "by_labeler": dict(self.by_labeler),
            "conflicts": self.conflicts,
            "pair_agreement": self.pairs_agreeing / self.pairs if self.pairs else None,
        }


def _group_of(groups: list[list[int]]) -> dict[int, int]:
    return {i: g for g, group in enumerate(groups) for i in group}
