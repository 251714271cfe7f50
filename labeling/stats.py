"""Labeler statistics of a project: one read of the rankings, then pure arithmetic.

The numbers come from `labeling.agreement`; this module only loads the rows
(one query for rankings, one for memberships, two for per-round counts). Callers check
that the user is an admin of the project first (the numbers name people).
"""

from typing import Any

from django.db.models import Count

from labeling.agreement import RankingRecord, labeler_summaries, project_agreement
from labeling.models import Comparison, Membership, Project, Ranking


def ranking_records(*, project: Project) -> list[RankingRecord]:
    """Every ranking in use of the project by a known labeler (imported rankings have
    none): superseded revisions and rankings an admin rejected are left out."""
    rows = (
        Ranking.objects.filter(task__project=project, labeler__isnull=False)
        .filter(superseded_at__isnull=True)
        .exclude(review=Ranking.Review.REJECTED)
        .order_by("id")
        .values_list(
            "labeler_id",
            "task_id",
            "tie_groups",
            "time_spent_ms",
            "created_at",
            "all_unacceptable",
            "task__is_gold",
            "task__gold_order",
        )
    )
    return [
        RankingRecord(
            labeler=labeler,
            task=task,
            tie_groups=groups,
            time_spent_ms=spent,
            submitted_at=at,
            all_unacceptable=unacceptable,
            gold_order=gold_order if is_gold and gold_order else None,
        )
        for labeler, task, groups, spent, at, unacceptable, is_gold, gold_order in rows
    ]


def round_counts(*, project: Project) -> list[dict[str, Any]]:
    """Rankings and comparisons per round number (None: outside rounds, e.g. imports)."""
    rankings = dict(
        Ranking.objects.filter(task__project=project, superseded_at__isnull=True)
        .values("task__round__number")
        .annotate(n=Count("id"))
        .values_list("task__round__number", "n")
    )
    comparisons = dict(
        Comparison.objects.filter(project=project)
        .values("round__number")
        .annotate(n=Count("id"))
        .values_list("round__number", "n")
    )
    numbers = sorted(rankings.keys() | comparisons.keys(), key=lambda n: (n is None, n or 0))
    return [
        {"round": n, "rankings": rankings.get(n, 0), "comparisons": comparisons.get(n, 0)}
        for n in numbers
    ]


def project_labeler_stats(*, project: Project) -> dict[str, Any]:
    """`{"labelers": [...], "project": {...}, "rounds": [...]}` for the dashboard and API."""
    records = ranking_records(project=project)
    members = {
        m.user_id: m for m in Membership.objects.filter(project=project).select_related("user")
    }
    labelers = []
    for user_id, summary in labeler_summaries(records).items():
        member = members.get(user_id)
        labelers.append(
            {
                "labeler": member.pseudonym if member else f"former-member-{user_id}",
                "username": member.user.get_username() if member else None,
                "role": member.role if member else None,
                **summary,
            }
        )
    labelers.sort(key=lambda row: (-row["rankings"], row["labeler"]))
    return {
        "labelers": labelers,
        "project": {
            "rankings": len(records),
            "labelers": len(labelers),
            **project_agreement(records),
        },
        "rounds": round_counts(project=project),
    }
