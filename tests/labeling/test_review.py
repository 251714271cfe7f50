"""Second looks at submitted work: revisions, returning to skipped tasks, the admins' review
(accept / reject, filters, gold), and the submit hot path inside a live round."""

import json
import threading

import pytest
from django.db import connection, connections, transaction

from core.exceptions import ConflictError
from labeling import review_reads
from labeling.models import Assignment, Comparison, Ranking
from labeling.review_reads import ReviewFilters, review_tasks
from labeling.services.leasing import task_lease_next, task_skip
from labeling.services.rankings import comparisons_from_ranking, ranking_submit
from labeling.services.review import (
    LABELING_STAGE,
    ranking_review,
    ranking_revise,
    task_mark_gold,
    task_return_to_skipped,
)
from labeling.stats import project_labeler_stats
from tests.factories import (
    MembershipFactory,
    ProjectFactory,
    RankingTaskFactory,
    RoundFactory,
)
from tests.labeling.test_concurrency import run_threads
from training import dispatch
from training.models import Round
from training.services.rounds import round_labeling_progress
from training.services.training_data import ranked_examples

API = "/api/v1"


def ids(task) -> list[int]:
    return list(task.responses.order_by("position").values_list("id", flat=True))


def submit(task, labeler, order=None, **kwargs):
    """Lease `task` to `labeler` (it must be their next one) and rank it."""
    assignment = task_lease_next(project=task.project, labeler=labeler)
    assert assignment is not None and assignment.task_id == task.pk
    order = order or [[i] for i in ids(task)]
    return ranking_submit(
        task=task, labeler=labeler, order=order, flags=None, time_spent_ms=9, **kwargs
    )


def jsonl(response) -> list[dict]:
    return [json.loads(line) for line in b"".join(response.streaming_content).splitlines()]


def pairs(ranking) -> set[tuple[int, int]]:
    return set(Comparison.objects.filter(ranking=ranking).values_list("chosen_id", "rejected_id"))


@pytest.fixture
def live_round(project):
    return RoundFactory(project=project, stage=Round.Stage.LABELING)


def test_the_labeling_stage_is_the_rounds() -> None:
    assert Round.Stage.LABELING.value == LABELING_STAGE


# --------------------------------------------------------------------------- revisions


def test_a_revision_keeps_the_old_row_and_rebuilds_the_pairs(
    project, labeler, live_round, django_capture_on_commit_callbacks
) -> None:
    task = RankingTaskFactory(project=project, round=live_round)
    RankingTaskFactory(project=project, round=live_round)  # keeps the round labeling
    a, b, c, d = ids(task)
    with django_capture_on_commit_callbacks(execute=True):
        old = submit(task, labeler, [[a], [b], [c], [d]])
    live_round.refresh_from_db()
    progress = live_round.progress_done
    assert pairs(old) == {(a, b), (a, c), (a, d), (b, c), (b, d), (c, d)}

    with django_capture_on_commit_callbacks(execute=True):
        new = ranking_revise(
            ranking=old, labeler=labeler, order=[[d], [c, b], [a]], flags=None, time_spent_ms=5
        )

    old.refresh_from_db()
    assert old.tie_groups == [[a], [b], [c], [d]]  # never overwritten
    assert old.superseded_at is not None and old.superseded_by_id == new.pk
    assert new.superseded_at is None and new.tie_groups == [[d], [c, b], [a]]
    assert not pairs(old)
    assert pairs(new) == {(d, c), (d, b), (d, a), (c, a), (b, a)}
    assert comparisons_from_ranking(ranking=old) == []  # a backfill cannot bring them back
    task.refresh_from_db()
    live_round.refresh_from_db()
    assert task.rankings_count == 1 and live_round.progress_done == progress
    assert round_labeling_progress(round_=live_round, save=False).progress_done == progress
    # The RM reads the revision only.
    assert [e.tie_groups for e in ranked_examples(project=project)] == [[[3], [2, 1], [0]]]

    again = ranking_revise(
        ranking=new, labeler=labeler, order=[[a, b, c], [d]], flags=None, time_spent_ms=1
    )
    assert Ranking.objects.filter(task=task, labeler=labeler).count() == 3
    with pytest.raises(ConflictError, match="revised since"):
        ranking_revise(
            ranking=old, labeler=labeler, order=[[a], [b], [c], [d]], flags=None, time_spent_ms=1
        )
    assert Ranking.objects.get(pk=new.pk).superseded_by_id == again.pk


@pytest.mark.parametrize("stage", ["building_pairs", "training_rm", "done", "cancelled"])
def test_a_ranking_cannot_be_revised_once_its_round_left_labeling(
    project, labeler, live_round, stage
) -> None:
    task = RankingTaskFactory(project=project, round=live_round)
    ranking = submit(task, labeler)
    Round.objects.filter(pk=live_round.pk).update(stage=stage)
    with pytest.raises(ConflictError, match="left labeling"):
        ranking_revise(
            ranking=ranking, labeler=labeler, order=[ids(task)], flags=None, time_spent_ms=1
        )
    assert Ranking.objects.filter(task=task).count() == 1 and pairs(ranking)


def test_revisions_need_a_round_the_owner_and_no_review(
    project, labeler, project_admin, live_round
) -> None:
    outside = RankingTaskFactory(project=project)
    ranking = submit(outside, labeler)
    with pytest.raises(ConflictError, match="in no round"):
        ranking_revise(
            ranking=ranking, labeler=labeler, order=[ids(outside)], flags=None, time_spent_ms=1
        )
    task = RankingTaskFactory(project=project, round=live_round)
    mine = submit(task, labeler)
    other = MembershipFactory(project=project).user
    with pytest.raises(ConflictError, match="Only the labeler"):
        ranking_revise(ranking=mine, labeler=other, order=[ids(task)], flags=None, time_spent_ms=1)
    ranking_review(ranking=mine, reviewer=project_admin, decision="accepted")
    with pytest.raises(ConflictError, match="accepted"):
        ranking_revise(
            ranking=mine, labeler=labeler, order=[ids(task)], flags=None, time_spent_ms=1
        )


def test_revise_and_history_over_rest(
    labeler_client, labeler, project, live_round, outsider
) -> None:
    task = RankingTaskFactory(project=project, round=live_round)
    skipped = RankingTaskFactory(project=project, round=live_round)
    ranking = submit(task, labeler)
    task_skip(task=skipped, labeler=labeler)
    a, b, c, d = ids(task)

    bad = labeler_client.post(
        f"{API}/rankings/{ranking.pk}/revise/", {"order": [[a]]}, format="json"
    )
    assert bad.status_code == 400 and "missing" in bad.json()["detail"]
    response = labeler_client.post(
        f"{API}/rankings/{ranking.pk}/revise/",
        {"order": [[b], [a], [c, d]], "flags": {str(a): ["harmful"]}, "time_spent_ms": 3},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["order"] == [[b], [a], [c, d]]
    assert (
        labeler_client.post(
            f"{API}/rankings/{ranking.pk}/revise/", {"order": [[a, b, c, d]]}, format="json"
        ).status_code
        == 409
    )

    rows = labeler_client.get(f"{API}/projects/{project.slug}/history/").json()
    by_task = {row["task_id"]: row for row in rows}
    assert by_task[task.pk]["revisions"] == 1 and by_task[task.pk]["can_revise"]
    assert by_task[task.pk]["ranking"]["id"] == response.json()["id"]
    assert by_task[skipped.pk]["status"] == "skipped" and by_task[skipped.pk]["can_return"]

    stranger = labeler_client.__class__()
    stranger.force_authenticate(outsider)
    assert (
        stranger.post(
            f"{API}/rankings/{ranking.pk}/revise/", {"order": [[a, b, c, d]]}, format="json"
        ).status_code
        == 404
    )
    assert stranger.get(f"{API}/projects/{project.slug}/history/").status_code == 404


# --------------------------------------------------------------------------- skipped tasks


def test_return_to_a_skipped_task_while_it_is_open_and_has_a_slot(
    labeler_client, labeler, project
) -> None:
    first, second = RankingTaskFactory(project=project), RankingTaskFactory(project=project)
    task_skip(task=first, labeler=labeler)
    assert (
        labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()["id"] == second.pk
    )
    returned = labeler_client.post(f"{API}/tasks/{first.pk}/unskip/")
    assert returned.status_code == 200 and returned.json()["task_id"] == first.pk
    assert labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()["id"] == first.pk
    assert (
        labeler_client.post(f"{API}/tasks/{first.pk}/unskip/").status_code == 409
    )  # not skipped now

    full = RankingTaskFactory(project=project)  # overlap 1: another labeler takes it
    task_skip(task=full, labeler=labeler)
    other = MembershipFactory(project=project).user
    task_skip(task=first, labeler=other)
    task_skip(task=second, labeler=other)
    submit(full, other)
    with pytest.raises(ConflictError, match="no longer takes rankings"):
        task_return_to_skipped(task=full, labeler=labeler)


def test_a_skipped_task_held_by_others_cannot_be_taken_back(project, labeler) -> None:
    task = RankingTaskFactory(project=project)
    task_skip(task=task, labeler=labeler)
    other = MembershipFactory(project=project).user
    assert task_lease_next(project=project, labeler=other).task_id == task.pk
    with pytest.raises(ConflictError, match="Other labelers"):
        task_return_to_skipped(task=task, labeler=labeler)
    assert Assignment.objects.get(task=task, labeler=labeler).status == "skipped"


# --------------------------------------------------------------------------- admin review


@pytest.fixture
def two_rankings(project, labeler):
    """A task of overlap 2 ranked by two labelers who disagree on one pair of four."""
    project.overlap = 2
    project.save()
    task = RankingTaskFactory(project=project, overlap=2)
    a, b, c, d = ids(task)
    other = MembershipFactory(project=project).user
    first = submit(task, labeler, [[a], [b], [c], [d]])
    second = submit(task, other, [[b], [a], [c], [d]])
    return task, first, second


def test_rejecting_removes_the_pairs_everywhere_and_accepting_restores_them(
    admin_client_api, project_admin, project, two_rankings
) -> None:
    _, first, second = two_rankings
    comparisons = f"{API}/projects/{project.slug}/comparisons/?format=jsonl"
    rankings = f"{API}/projects/{project.slug}/rankings/?format=jsonl"
    assert len(jsonl(admin_client_api.get(comparisons))) == 12

    response = admin_client_api.post(
        f"{API}/rankings/{second.pk}/review/", {"decision": "rejected"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["reviewed_by"] == project_admin.username
    assert response.json()["reviewed_at"]
    assert not pairs(second) and len(pairs(first)) == 6
    assert {row["ranking_id"] for row in jsonl(admin_client_api.get(comparisons))} == {first.pk}
    assert [row["ranking_id"] for row in jsonl(admin_client_api.get(rankings))] == [first.pk]
    assert len(ranked_examples(project=project)) == 1
    stats = project_labeler_stats(project=project)
    assert stats["project"]["tasks_with_overlap"] == 0  # the rejected one is out of agreement
    assert comparisons_from_ranking(ranking=Ranking.objects.get(pk=second.pk)) == []

    admin_client_api.post(
        f"{API}/rankings/{second.pk}/review/", {"decision": "accepted"}, format="json"
    )
    second.refresh_from_db()
    assert second.review == "accepted" and len(pairs(second)) == 6
    assert project_labeler_stats(project=project)["project"]["tasks_with_overlap"] == 1


def test_review_detail_shows_rankings_side_by_side_with_agreement(
    admin_client_api, project, two_rankings
) -> None:
    task, first, second = two_rankings
    data = admin_client_api.get(f"{API}/projects/{project.slug}/review/tasks/{task.pk}/").json()
    assert [r["id"] for r in data["rankings"]] == [first.pk, second.pk]
    assert [r["id"] for r in data["responses"]] == ids(task)
    assert data["pairwise_agreement"] == pytest.approx(5 / 6)
    ranking_review(ranking=second, reviewer=None, decision="rejected")
    data = admin_client_api.get(f"{API}/projects/{project.slug}/review/tasks/{task.pk}/").json()
    assert data["pairwise_agreement"] is None and data["rankings"][1]["review"] == "rejected"


def test_review_filters(project, labeler, two_rankings) -> None:
    task, _, second = two_rankings
    round_ = RoundFactory(project=project, number=7)
    agreed = RankingTaskFactory(project=project, overlap=2, round=round_)
    other = second.labeler
    submit(agreed, labeler)
    flagged = submit(agreed, other)
    Ranking.objects.filter(pk=flagged.pk).update(flags={str(ids(agreed)[0]): ["harmful"]})
    third = MembershipFactory(project=project).user
    solo = RankingTaskFactory(project=project, overlap=2)
    submit(solo, third)

    def tasks(**kwargs) -> list[int]:
        return [
            row.task.pk for row in review_tasks(project=project, filters=ReviewFilters(**kwargs))
        ]

    assert tasks() == [solo.pk, agreed.pk, task.pk]
    assert tasks(round_number=7) == [agreed.pk]
    assert tasks(labeler_id=third.pk) == [solo.pk]
    assert tasks(flagged=True) == [agreed.pk]
    assert tasks(agreement_below=1.0) == [task.pk]
    assert tasks(agreement_below=0.5) == []
    ranking_review(ranking=second, reviewer=None, decision="rejected")
    assert tasks(review="rejected") == [task.pk]
    assert tasks(agreement_below=1.0) == []  # the disagreeing ranking is rejected


def test_gold_marking(admin_client_api, labeler_client, project, two_rankings) -> None:
    task, *_ = two_rankings
    a, b, c, d = ids(task)
    url = f"{API}/tasks/{task.pk}/gold/"
    assert admin_client_api.post(url, {"order": [[a], [b]]}, format="json").status_code == 400
    assert labeler_client.post(url, {"order": [[a, b, c, d]]}, format="json").status_code == 403
    marked = admin_client_api.post(url, {"order": [[a], [b, c], [d]]}, format="json")
    assert marked.json() == {"task_id": task.pk, "is_gold": True, "gold_order": [[a], [b, c], [d]]}
    detail = review_reads.review_task_detail(project=project, task_id=task.pk)
    assert detail.gold_places == {a: "1", b: "2=", c: "2=", d: "3"}
    assert detail.columns[0].gold_tau is not None
    task_mark_gold(task=task, order=None)
    task.refresh_from_db()
    assert (task.is_gold, task.gold_order) == (False, None)


def test_review_is_for_admins_only(
    labeler_client, admin_client_api, outsider, project, two_rankings
) -> None:
    from rest_framework.test import APIClient

    task, first, _ = two_rankings
    urls = [
        f"{API}/projects/{project.slug}/review/tasks/",
        f"{API}/projects/{project.slug}/review/tasks/{task.pk}/",
    ]
    for url in urls:
        assert admin_client_api.get(url).status_code == 200
        assert labeler_client.get(url).status_code == 403
    review = f"{API}/rankings/{first.pk}/review/"
    assert labeler_client.post(review, {"decision": "rejected"}, format="json").status_code == 403
    stranger = APIClient()
    stranger.force_authenticate(outsider)
    assert stranger.post(review, {"decision": "rejected"}, format="json").status_code == 404
    assert stranger.get(urls[1]).status_code == 404
    assert Ranking.objects.get(pk=first.pk).review == "pending"
    other_project_task = RankingTaskFactory(project=ProjectFactory())
    assert (
        admin_client_api.get(
            f"{API}/projects/{project.slug}/review/tasks/{other_project_task.pk}/"
        ).status_code
        == 404
    )


def test_review_pages(client, labeler, project_admin, project, two_rankings) -> None:
    task, _, second = two_rankings
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    task.responses.filter(position=0).update(text=hostile)
    client.force_login(labeler)
    assert client.get(f"/projects/{project.slug}/review/").status_code == 403
    assert client.get(f"/projects/{project.slug}/review/{task.pk}/").status_code == 403
    client.force_login(project_admin)
    listing = client.get(f"/projects/{project.slug}/review/?agreement=1")
    assert listing.status_code == 200 and f'data-task="{task.pk}"' in listing.content.decode()
    page = client.get(f"/projects/{project.slug}/review/{task.pk}/")
    html = page.content.decode()
    assert hostile not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    answer = client.post(
        f"/projects/{project.slug}/review/{task.pk}/", {"action": f"reject:{second.pk}"}
    )
    assert answer.status_code == 302
    second.refresh_from_db()
    assert second.review == "rejected" and second.reviewed_by == project_admin
    places = {f"place-{rid}": str(n) for n, rid in enumerate(ids(task), start=1)}
    client.post(f"/projects/{project.slug}/review/{task.pk}/", {"action": "gold", **places})
    task.refresh_from_db()
    assert task.is_gold and task.gold_order == [[rid] for rid in ids(task)]


def test_admin_shows_tie_groups_readably(admin_client, project, two_rankings) -> None:
    task, first, _ = two_rankings
    task.responses.filter(position=1).update(text="<b>bold</b> answer")
    html = admin_client.get(f"/admin/labeling/ranking/{first.pk}/change/").content.decode()
    assert "#1 “Response 0" in html and "#2 “&lt;b&gt;bold&lt;/b&gt; answer”" in html
    assert (
        "#1 “Response 0"
        in admin_client.get(f"/admin/labeling/rankingtask/{task.pk}/change/").content.decode()
    )


def test_round_admin_actions_call_the_round_services(admin_client, project, live_round) -> None:
    RankingTaskFactory(project=project, round=live_round)
    page = admin_client.get(f"/admin/training/round/{live_round.pk}/change/").content.decode()
    assert 'name="stage"' not in page  # read-only
    answer = admin_client.post(
        "/admin/training/round/",
        {"action": "advance_rounds", "_selected_action": [live_round.pk]},
    )
    assert answer.status_code == 302
    live_round.refresh_from_db()
    assert live_round.stage == "building_pairs"
    assert live_round.tasks.get().status == "closed"
    admin_client.post(
        "/admin/training/round/", {"action": "cancel_rounds", "_selected_action": [live_round.pk]}
    )
    live_round.refresh_from_db()
    assert live_round.stage == "cancelled"


# --------------------------------------------------------------------------- hot path


def test_submitting_in_a_round_counts_and_ends_labeling(
    project, labeler, live_round, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    queued = []
    monkeypatch.setattr(dispatch, "enqueue_on_commit", lambda name, *args: queued.append(name))
    tasks = RankingTaskFactory.create_batch(2, project=project, round=live_round)
    round_labeling_progress(round_=live_round)
    assert (live_round.progress_done, live_round.progress_total) == (0, 2)
    with django_capture_on_commit_callbacks(execute=True):
        submit(tasks[0], labeler)
    live_round.refresh_from_db()
    assert (live_round.stage, live_round.progress_done) == ("labeling", 1)
    with django_capture_on_commit_callbacks(execute=True):
        submit(tasks[1], labeler)
    live_round.refresh_from_db()
    assert (live_round.stage, live_round.progress_done) == ("building_pairs", 2)
    assert queued == [dispatch.ROUND_BUILD_PAIRS]


def test_submit_in_a_round_has_a_query_budget(
    labeler_client,
    project,
    live_round,
    django_capture_on_commit_callbacks,
    django_assert_max_num_queries,
) -> None:
    """Submit + the round's bookkeeping after commit, with K responses, in a live round."""
    RankingTaskFactory.create_batch(3, project=project, round=live_round)
    task = labeler_client.get(f"{API}/projects/{project.slug}/tasks/next/").json()
    body = {"order": [[r["id"]] for r in task["responses"]], "time_spent_ms": 5}
    # 11 for the submission (test_api.py's budget) + 2 for the round: the F() update and,
    # as this ranking completes its task, the indexed count of the round's open tasks;
    # never an aggregate over the round's rankings, nor a lock on the round.
    with (
        django_assert_max_num_queries(13) as captured,
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = labeler_client.post(f"{API}/tasks/{task['id']}/rankings/", body, format="json")
    assert response.status_code == 201
    sql = [q["sql"].upper() for q in captured.captured_queries]
    round_sql = [s for s in sql if '"TRAINING_ROUND"' in s]
    assert len(round_sql) == 1 and round_sql[0].startswith("UPDATE")
    assert not [
        s for s in sql if "FOR UPDATE" in s and '"LABELING_PROJECT"' in s.split("FOR UPDATE")[-1]
    ]


def test_a_submission_that_leaves_its_task_open_does_not_count_open_tasks(
    project, labeler, live_round, django_capture_on_commit_callbacks
) -> None:
    from django.test.utils import CaptureQueriesContext

    project.overlap = 2
    project.save()
    task = RankingTaskFactory(project=project, round=live_round, overlap=2)
    task_lease_next(project=project, labeler=labeler)
    with (
        CaptureQueriesContext(connection) as captured,
        django_capture_on_commit_callbacks(execute=True),
    ):
        ranking_submit(task=task, labeler=labeler, order=[ids(task)], flags=None, time_spent_ms=1)
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert not [sql for sql in counts if "round_id" in sql]
    live_round.refresh_from_db()
    assert (live_round.stage, live_round.progress_done) == ("labeling", 1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_last_submissions_at_once_advance_the_round_exactly_once(monkeypatch) -> None:
    queued = []
    monkeypatch.setattr(dispatch, "enqueue_on_commit", lambda name, *args: queued.append(name))
    for attempt in range(5):
        project = ProjectFactory(overlap=1)
        round_ = RoundFactory(project=project, stage=Round.Stage.LABELING)
        tasks = RankingTaskFactory.create_batch(2, project=project, round=round_)
        labelers = [MembershipFactory(project=project).user for _ in range(2)]
        leases = [task_lease_next(project=project, labeler=labeler) for labeler in labelers]
        assert sorted(a.task_id for a in leases) == sorted(t.pk for t in tasks)

        def last(i: int, leases=leases, labelers=labelers) -> None:
            task = leases[i].task
            ranking_submit(
                task=task,
                labeler=labelers[i],
                order=[[r] for r in ids(task)],
                flags=None,
                time_spent_ms=1,
            )

        run_threads(2, last)
        round_.refresh_from_db()
        assert (round_.stage, round_.progress_done) == ("building_pairs", 2), attempt
        assert queued.count(dispatch.ROUND_BUILD_PAIRS) == attempt + 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_submitting_in_a_round_never_waits_for_the_project_lock() -> None:
    project = ProjectFactory(overlap=2)
    round_ = RoundFactory(project=project, stage=Round.Stage.LABELING)
    task = RankingTaskFactory(project=project, round=round_)
    labeler = MembershipFactory(project=project).user
    task_lease_next(project=project, labeler=labeler)
    locked, release = threading.Event(), threading.Event()

    def hold_project_lock() -> None:
        try:
            with transaction.atomic():
                # FOR NO KEY UPDATE: the lock a write of the project row takes. It does not
                # conflict with the key-share locks of inserting rows that reference it.
                type(project).objects.select_for_update(no_key=True).get(pk=project.pk)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_project_lock)
    holder.start()
    try:
        assert locked.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        ranking_submit(
            task=task, labeler=labeler, order=[[r] for r in ids(task)], flags=None, time_spent_ms=1
        )
    finally:
        release.set()
        holder.join(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = 0")
    round_.refresh_from_db()
    assert round_.progress_done == 1


def test_history_page_revises_and_returns_to_a_skip(client, labeler, project, live_round) -> None:
    task = RankingTaskFactory(project=project, round=live_round)
    skipped = RankingTaskFactory(project=project, round=live_round)
    RankingTaskFactory(project=project, round=live_round)
    ranking = submit(task, labeler)
    task_skip(task=skipped, labeler=labeler)
    client.force_login(labeler)
    html = client.get(f"/projects/{project.slug}/history/").content.decode()
    assert (
        f"/history/{ranking.pk}/revise/" in html and f'name="unskip" value="{skipped.pk}"' in html
    )
    a, b, c, d = ids(task)
    form = {f"place-{a}": "2", f"place-{b}": "1", f"place-{c}": "2", f"place-{d}": "3"}
    answer = client.post(f"/projects/{project.slug}/history/{ranking.pk}/revise/", form)
    assert answer.status_code == 302
    revision = Ranking.objects.get(task=task, superseded_at__isnull=True)
    assert revision.tie_groups == [[b], [a, c], [d]]
    missing = client.post(f"/projects/{project.slug}/history/{revision.pk}/revise/", {})
    assert missing.status_code == 200 and "give it a place" in missing.content.decode()
    answer = client.post(f"/projects/{project.slug}/history/", {"unskip": str(skipped.pk)})
    assert answer.status_code == 302 and answer["Location"].endswith("/label/")
    assert Assignment.objects.get(task=skipped, labeler=labeler).status == "active"
