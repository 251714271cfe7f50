"""The ranking screen's second pass (issue 11): flag and "all unacceptable" keys, a
half-finished ranking that survives a reload, notices that never move the cards, the
guidelines side panel, the round's progress, the near-duplicate badge, the next task at the
top of the page, and a phone tray that covers no card."""

import os
from pathlib import Path

import pytest

from labeling.models import Ranking, Response
from tests.browser.conftest import log_in
from tests.browser.test_ranking import numbering, open_label_page, wait_for_next_task
from tests.factories import RankingTaskFactory, RoundFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOT_DIR = os.environ.get("RLHF_SCREENSHOT_DIR")
LONG = "\n\n".join(["A long paragraph about tides and the Moon's pull on the oceans."] * 30)


def _screenshot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=False)


def test_f_then_digit_flags_the_card_placed_last(page, project, labeler) -> None:
    project.flag_vocabulary = ["harmful", "untruthful", "off-topic"]
    project.save()
    task = RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    open_label_page(page, project)
    ids = numbering(page)
    assert "flag" in page.text_content(".keys").lower()
    page.keyboard.press("3")
    page.keyboard.press("f")
    page.keyboard.press("2")  # flag 2 = untruthful, on response 3; not a placement
    card3 = page.locator(f'.card[data-response-id="{ids[3]}"]')
    assert card3.locator('input[data-flag="untruthful"]').is_checked()
    assert page.locator(".groups .slot").count() == 1
    page.keyboard.press("1")
    page.keyboard.press("f")
    page.keyboard.press("1")
    page.keyboard.press("f")
    page.keyboard.press("1")  # toggled twice: off again
    for key in ["2", "4", "Enter"]:
        page.keyboard.press(key)
    page.wait_for_selector("#empty:not([hidden])")
    ranking = Ranking.objects.get(task=task, labeler=labeler)
    assert ranking.flags == {str(ids[3]): ["untruthful"]}
    assert ranking.all_unacceptable is False


def test_u_marks_all_unacceptable(page, project, labeler) -> None:
    task = RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    open_label_page(page, project)
    page.keyboard.press("u")
    assert page.is_checked("#all-unacceptable")
    page.keyboard.press("u")
    assert not page.is_checked("#all-unacceptable")
    page.keyboard.press("u")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty:not([hidden])")
    assert Ranking.objects.get(task=task, labeler=labeler).all_unacceptable is True


def test_half_finished_ranking_survives_a_reload(page, project, labeler) -> None:
    task = RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    open_label_page(page, project)
    ids = numbering(page)
    for key in ["2", "=", "4"]:
        page.keyboard.press(key)
    page.keyboard.press("f")
    page.keyboard.press("1")
    page.reload()
    page.wait_for_selector("#task:not([hidden]) .card")
    assert int(page.get_attribute("#task", "data-task-id")) == task.pk
    assert page.locator(".groups .group").count() == 1
    assert page.locator(".groups .slot").count() == 2
    flag = project.flag_vocabulary[0]
    card4 = page.locator(f'.card[data-response-id="{ids[4]}"]')
    assert card4.locator(f'input[data-flag="{flag}"]').is_checked()
    for key in ["1", "3", "Enter"]:
        page.keyboard.press(key)
    page.wait_for_selector("#empty:not([hidden])")
    ranking = Ranking.objects.get(task=task, labeler=labeler)
    assert [sorted(g) for g in ranking.tie_groups] == [
        sorted([ids[2], ids[4]]),
        [ids[1]],
        [ids[3]],
    ]
    assert ranking.flags == {str(ids[4]): [flag]}
    stored = page.evaluate("Object.keys(sessionStorage).filter(k => k.includes('draft'))")
    assert stored == []  # the submitted task's draft is gone


def test_error_notice_floats_over_the_cards_and_clears_when_resolved(
    page, project, labeler
) -> None:
    RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    open_label_page(page, project)
    top = page.eval_on_selector(".card", "c => c.getBoundingClientRect().top")
    page.keyboard.press("Backspace")  # nothing placed: an error notice
    assert "Nothing placed" in page.text_content("#notice")
    assert page.eval_on_selector(".card", "c => c.getBoundingClientRect().top") == top
    assert page.eval_on_selector("#notice", "n => getComputedStyle(n).position") == "fixed"
    page.keyboard.press("1")  # the labeler acted: the error is resolved
    assert page.text_content("#notice") == ""


def test_guidelines_side_panel_opens_at_any_time(page, project, labeler) -> None:
    log_in(page, labeler.username)
    page.goto(f"/projects/{project.slug}/label/")
    page.wait_for_selector("#empty:not([hidden])")  # no task: the panel still opens
    page.keyboard.press("g")
    panel = page.locator("#guidelines-panel")
    assert panel.is_visible()
    assert "helpful" in panel.locator(".prose strong").text_content()
    page.keyboard.press("Escape")
    assert not panel.is_visible()
    page.click("#guidelines-toggle")
    assert panel.is_visible()
    page.click("#guidelines-close")
    assert not panel.is_visible()


def test_round_progress_and_near_duplicate_badge(page, project, labeler) -> None:
    round_ = RoundFactory(project=project, number=3, progress_done=312, progress_total=400)
    task = RankingTaskFactory(project=project, round=round_)
    first, second = task.responses.order_by("position")[:2]
    Response.objects.filter(pk=second.pk).update(duplicate_of=first)
    log_in(page, labeler.username)
    open_label_page(page, project)
    assert page.text_content("#round-progress") == "312 / 400 rankings in round 3"
    ids = {response_id: number for number, response_id in numbering(page).items()}
    badges = page.locator("[data-role=duplicate]")
    assert badges.count() == 1
    assert badges.text_content() == f"nearly identical to response {ids[first.pk]}"
    card = page.locator(f'.card[data-response-id="{second.pk}"]')
    assert card.locator("[data-role=duplicate]").count() == 1


def test_fade_only_on_a_card_whose_text_is_cut(page, project, labeler) -> None:
    RankingTaskFactory(project=project, responses=[LONG, "Short.", "Short too.", "Also short."])
    log_in(page, labeler.username)
    open_label_page(page, project)
    assert page.locator(".card__body.is-cut").count() == 1
    assert page.locator(".card__expand:visible").count() == 1
    _screenshot(page, "rank-polish-desktop.png")


def test_next_task_starts_at_the_top(page, project, labeler) -> None:
    for _ in range(2):
        RankingTaskFactory(project=project, responses=[LONG] * 4)
    page.set_viewport_size({"width": 900, "height": 700})  # one column: the page scrolls
    log_in(page, labeler.username)
    first = open_label_page(page, project)
    for key in ["1", "2", "3", "4"]:
        page.keyboard.press(key)
    page.mouse.wheel(0, 3000)
    page.wait_for_function("() => window.scrollY > 200")
    page.keyboard.press("Enter")
    wait_for_next_task(page, first)
    assert page.evaluate("window.scrollY") == 0


def test_phone_tray_leaves_the_last_card_visible_and_says_tap_submit(
    phone_page, project, labeler
) -> None:
    page = phone_page
    RankingTaskFactory(project=project, responses=[LONG] * 4)
    log_in(page, labeler.username)
    open_label_page(page, project)
    for button in page.locator(".card__place").all():
        button.tap()
    assert "Tap Submit" in page.text_content("#tray-status")
    # The tray's height reaches the page's bottom padding through a ResizeObserver (after
    # layout), so scroll to the bottom until the layout settles; the card must end up clear.
    clear = """() => {
        window.scrollTo(0, document.documentElement.scrollHeight);
        const card = document.querySelector(".card:last-child").getBoundingClientRect();
        return card.bottom <= document.querySelector("#tray").getBoundingClientRect().top;
    }"""
    page.wait_for_function(clear, timeout=5000, polling=100)
    _screenshot(page, "rank-polish-phone.png")
