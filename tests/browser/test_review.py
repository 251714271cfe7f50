"""Second looks in a real browser: a labeler revises a ranking from the ranking screen's
recent submissions; an admin reads a task's rankings side by side and rejects one."""

import pytest

from labeling.models import Comparison, Ranking
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.browser.conftest import log_in
from tests.factories import MembershipFactory, RankingTaskFactory, RoundFactory
from training.models import Round

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def ids(task) -> list[int]:
    return list(task.responses.order_by("position").values_list("id", flat=True))


def rank(task, labeler, order):
    assert task_lease_next(project=task.project, labeler=labeler).task_id == task.pk
    return ranking_submit(task=task, labeler=labeler, order=order, flags=None, time_spent_ms=9)


def no_dialogs(page) -> list[str]:
    seen: list[str] = []

    def on_dialog(dialog) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return seen


def test_a_labeler_revises_a_ranking_from_the_ranking_screen(page, project, labeler) -> None:
    round_ = RoundFactory(project=project, stage=Round.Stage.LABELING)
    task = RankingTaskFactory(project=project, round=round_)
    RankingTaskFactory(project=project, round=round_)  # the round keeps labeling
    a, b, c, d = ids(task)
    old = rank(task, labeler, [[a], [b], [c], [d]])
    log_in(page, labeler.username)
    page.goto(f"/projects/{project.slug}/label/")
    page.click("text=Recent submissions")
    page.wait_for_url(f"**/projects/{project.slug}/history/")
    page.click(f"tr[data-task='{task.pk}'] >> text=Revise")
    # Response 4 best, 2 and 3 tied, 1 last.
    for response_id, place in ((a, "3"), (b, "2"), (c, "2"), (d, "1")):
        page.select_option(f"#place-{response_id}", place)
    page.check(f"input[name='flags-{a}'][value='harmful']")
    page.click("button:has-text('Save revision')")
    page.wait_for_selector(".message-flash--success")
    assert "revised 1 time" in page.text_content(f"tr[data-task='{task.pk}']")
    revision = Ranking.objects.get(task=task, superseded_at__isnull=True)
    assert revision.tie_groups == [[d], [b, c], [a]] and revision.flags == {str(a): ["harmful"]}
    old.refresh_from_db()
    assert old.superseded_by_id == revision.pk and old.tie_groups == [[a], [b], [c], [d]]
    assert set(Comparison.objects.values_list("ranking_id", flat=True)) == {revision.pk}


def test_an_admin_rejects_a_ranking_on_the_review_screen(page, project, project_admin) -> None:
    project.overlap = 2
    project.save()
    task = RankingTaskFactory(project=project, overlap=2, responses=[HOSTILE, "b", "c", "d"])
    a, b, c, d = ids(task)
    first, second = (MembershipFactory(project=project).user for _ in range(2))
    kept = rank(task, first, [[a], [b], [c], [d]])
    rejected = rank(task, second, [[d], [c], [b], [a]])
    dialogs = no_dialogs(page)
    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")
    page.click("nav.subnav >> text=Review")
    page.select_option("select[name=agreement]", "0.5")
    page.click("button:has-text('Filter')")
    page.click(f"tr[data-task='{task.pk}'] >> text=#{task.pk}")
    assert page.text_content("[data-agreement]").strip() == "0%"
    assert HOSTILE in page.inner_text(".review-grid")  # shown as text, never run
    page.click(f"button[data-reject='{rejected.pk}']")
    page.wait_for_selector(".message-flash--success")
    assert "rejected by" in page.text_content(f"th[data-ranking='{rejected.pk}']")
    assert page.text_content("[data-agreement]").strip() == "—"  # one ranking left counts
    rejected.refresh_from_db()
    assert (rejected.review, rejected.reviewed_by_id) == ("rejected", project_admin.pk)
    assert set(Comparison.objects.values_list("ranking_id", flat=True)) == {kept.pk}
    page.click(f"button[data-accept='{kept.pk}']")
    page.wait_for_selector(f"button[data-accept='{kept.pk}'][disabled]")
    assert not dialogs
