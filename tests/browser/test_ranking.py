"""The ranking screen in a real browser: keyboard, ties, drag and drop, skip, flags, "all
unacceptable", hostile model text, API errors, and a phone with taps."""

import os
from pathlib import Path

import pytest

from labeling.models import Assignment, Comparison, Ranking, RankingTask
from tests.browser.conftest import log_in
from tests.factories import RankingTaskFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
SCREENSHOT_DIR = os.environ.get("RLHF_SCREENSHOT_DIR")


def open_label_page(page, project) -> int:
    page.goto(f"/projects/{project.slug}/label/")
    page.wait_for_selector("#task:not([hidden]) .card")
    page.wait_for_load_state("networkidle")  # the background prefetch has settled
    return int(page.get_attribute("#task", "data-task-id"))


def numbering(page) -> dict[int, int]:
    """On-screen card number -> response id."""
    pairs = page.eval_on_selector_all(
        ".card", "cards => cards.map(c => [Number(c.dataset.number), Number(c.dataset.responseId)])"
    )
    return dict(pairs)


def wait_for_next_task(page, old_id: int) -> int:
    page.wait_for_function(
        """old => { const t = document.getElementById('task');
                    return !t.hidden && t.dataset.taskId && t.dataset.taskId !== old; }""",
        arg=str(old_id),
    )
    page.wait_for_load_state("networkidle")
    return int(page.get_attribute("#task", "data-task-id"))


def normalised(groups: list[list[int]]) -> list[list[int]]:
    return [sorted(group) for group in groups]


def test_keyboard_ranking_with_a_tie_is_stored_and_next_task_appears(
    page, project, labeler
) -> None:
    tasks = [RankingTaskFactory(project=project) for _ in range(2)]
    log_in(page, labeler.username)
    first = open_label_page(page, project)
    assert first in {t.pk for t in tasks}
    ids = numbering(page)
    assert sorted(ids) == [1, 2, 3, 4]
    assert set(ids.values()) == set(
        RankingTask.objects.get(pk=first).responses.values_list("id", flat=True)
    )

    for key in ["2", "=", "1", "3", "4"]:
        page.keyboard.press(key)
    assert page.text_content("#tray-status").startswith("All placed")
    assert page.locator(".groups .group").count() == 3
    page.keyboard.press("Enter")

    second = wait_for_next_task(page, first)
    assert second != first and page.locator(".card").count() == 4
    ranking = Ranking.objects.get(task_id=first, labeler=labeler)
    assert normalised(ranking.tie_groups) == normalised([[ids[2], ids[1]], [ids[3]], [ids[4]]])
    assert ranking.all_unacceptable is False and ranking.flags == {}
    assert ranking.time_spent_ms > 0
    assert Comparison.objects.filter(ranking=ranking).count() == 5  # 2*1 + 2*1 + 1*1
    assert page.text_content("[data-count=session]") == "1"
    assert page.text_content("[data-count=total]") == "1"


def test_backspace_removes_the_last_placed_card_and_enter_waits_for_all(
    page, project, labeler
) -> None:
    RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    task_id = open_label_page(page, project)
    ids = numbering(page)
    for key in ["3", "1", "Backspace", "4", "Enter"]:
        page.keyboard.press(key)
    assert "Place all 4 responses first (2 left)" in page.text_content("#notice")
    assert not Ranking.objects.exists()
    for key in ["2", "=", "1", "Enter"]:
        page.keyboard.press(key)
    page.wait_for_selector("#empty:not([hidden])")
    ranking = Ranking.objects.get(task_id=task_id)
    assert normalised(ranking.tie_groups) == [[ids[3]], [ids[4]], sorted([ids[2], ids[1]])]


def test_numbering_is_stable_per_labeler_and_task(page, project, labeler) -> None:
    RankingTaskFactory(project=project, responses=[f"answer {i}" for i in range(6)])
    log_in(page, labeler.username)
    open_label_page(page, project)
    before = numbering(page)
    page.reload()
    open_label_page(page, project)
    assert numbering(page) == before
    assert page.text_content(".card[data-number='1'] [data-role=text]").startswith("answer ")


def test_hostile_response_is_shown_as_text_and_runs_nothing(page, project, labeler) -> None:
    task = RankingTaskFactory(project=project, responses=[HOSTILE, "b", "c", "d"])
    task.prompt.text = "<script>document.title='pwned-prompt'</script><b>bold?</b>"
    task.prompt.save()
    log_in(page, labeler.username)
    page.goto(f"/projects/{project.slug}/label/")
    title = page.title()
    page.wait_for_selector("#task:not([hidden]) .card")
    page.wait_for_timeout(300)  # give an onerror handler every chance to fire

    hostile_id = task.responses.get(text=HOSTILE).pk
    card = page.locator(f".card[data-response-id='{hostile_id}']")
    assert card.locator("[data-role=text]").text_content() == HOSTILE
    assert card.locator("img").count() == 0
    assert page.locator("#cards img, #prompt img, #prompt script, #prompt b").count() == 0
    assert page.text_content("#prompt .message__content") == task.prompt.text
    assert page.title() == title and "pwned" not in page.title()


def test_chat_context_is_shown_message_by_message(page, project, labeler) -> None:
    task = RankingTaskFactory(project=project)
    task.prompt.chat = [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "What is <b>2+2</b>?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?"},
    ]
    task.prompt.text = "And 3+3?"
    task.prompt.save()
    log_in(page, labeler.username)
    open_label_page(page, project)
    roles = page.locator("#prompt .message__role").all_text_contents()
    contents = page.locator("#prompt .message__content").all_text_contents()
    assert roles == ["system", "user", "assistant", "user"]
    assert contents == [m["content"] for m in task.prompt.chat]
    assert page.locator("#prompt b").count() == 0


def test_drag_and_drop_ranking_with_a_tie(page, project, labeler) -> None:
    RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    task_id = open_label_page(page, project)
    ids = numbering(page)

    def card(number: int):
        return page.locator(f".card[data-number='{number}']")

    card(3).drag_to(page.locator(".gap--end"))
    card(1).drag_to(page.locator(".gap--end"))
    card(2).drag_to(page.locator(".group[data-group='1']"))  # tie with card 1
    card(4).drag_to(page.locator(".gap[data-gap='1']"))  # a rank between 3 and (1 = 2)
    assert page.locator(".group").count() == 3
    page.locator(f".slot[data-response-id='{ids[4]}']").drag_to(page.locator(".gap--end"))
    page.click("#submit")

    page.wait_for_selector("#empty:not([hidden])")
    ranking = Ranking.objects.get(task_id=task_id)
    assert normalised(ranking.tie_groups) == normalised([[ids[3]], [ids[1], ids[2]], [ids[4]]])


def test_skip_with_the_s_key_and_the_button(page, project, labeler) -> None:
    for _ in range(3):
        RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    first = open_label_page(page, project)
    page.keyboard.press("s")
    second = wait_for_next_task(page, first)
    page.click("#skip")
    wait_for_next_task(page, second)
    skipped = Assignment.objects.filter(labeler=labeler, status=Assignment.Status.SKIPPED)
    assert set(skipped.values_list("task_id", flat=True)) == {first, second}
    assert not Ranking.objects.exists()


def test_flags_and_all_unacceptable(page, project, labeler) -> None:
    RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    task_id = open_label_page(page, project)
    ids = numbering(page)
    page.check(".card[data-number='1'] input[data-flag='harmful']")
    page.check(".card[data-number='3'] input[data-flag='off-topic']")
    page.check("#all-unacceptable")
    page.keyboard.press("Enter")
    page.wait_for_selector("#empty:not([hidden])")
    ranking = Ranking.objects.get(task_id=task_id)
    assert ranking.all_unacceptable is True
    assert normalised(ranking.tie_groups) == [sorted(ids.values())]
    assert ranking.flags == {str(ids[1]): ["harmful"], str(ids[3]): ["off-topic"]}
    assert not Comparison.objects.filter(ranking=ranking).exists()


def test_api_error_detail_is_announced(page, project, labeler) -> None:
    RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    task_id = open_label_page(page, project)
    RankingTask.objects.filter(pk=task_id).update(status=RankingTask.Status.CLOSED)
    for key in ["1", "2", "3", "4", "Enter"]:
        page.keyboard.press(key)
    notice = page.locator("#notice[data-kind='error']")
    notice.wait_for()
    assert "no longer takes rankings" in notice.text_content()
    assert page.get_attribute("#notice", "aria-live") == "polite"
    assert not Ranking.objects.exists()


def test_typing_in_a_text_field_does_not_rank(page, project, labeler) -> None:
    RankingTaskFactory(project=project)
    log_in(page, labeler.username)
    open_label_page(page, project)
    page.evaluate(
        "() => { const i = document.createElement('input'); i.id = 'probe';"
        " document.body.append(i); }"
    )
    page.focus("#probe")
    page.keyboard.type("12s")
    assert page.locator(".groups .slot").count() == 0
    assert page.locator("#task").is_visible()


def test_phone_tap_to_place(phone_page, project, labeler) -> None:
    page = phone_page
    RankingTaskFactory(project=project, responses=[_long_text(i) for i in range(4)])
    log_in(page, labeler.username)
    task_id = open_label_page(page, project)
    ids = numbering(page)
    _screenshot(page, "rank-phone.png")
    for number in (4, 2, 1, 3):
        page.locator(f".card[data-number='{number}'] [data-action=place]").tap()
    _screenshot(page, "rank-phone-placed.png")
    page.locator("#submit").tap()
    page.wait_for_selector("#empty:not([hidden])")
    ranking = Ranking.objects.get(task_id=task_id)
    assert ranking.tie_groups == [[ids[4]], [ids[2]], [ids[1]], [ids[3]]]


def test_desktop_screenshot_with_long_responses(page, project, labeler) -> None:
    RankingTaskFactory(project=project, responses=[_long_text(i) for i in range(4)])
    log_in(page, labeler.username)
    open_label_page(page, project)
    # K = 4 on a wide screen: side by side by default, every card in one row.
    assert page.locator(".cards.cards--compare").count() == 1
    tops = page.eval_on_selector_all(".card", "cs => cs.map(c => c.getBoundingClientRect().top)")
    assert len(set(tops)) == 1
    page.keyboard.press("2")
    page.keyboard.press("=")
    page.keyboard.press("4")
    _screenshot(page, "rank-desktop-compare.png")
    page.click("#layout-toggle")
    assert page.locator(".cards.cards--compare").count() == 0
    assert page.locator(".card__expand:visible").count() == 4  # long texts are collapsed
    assert page.locator(".card__body.is-cut").count() == 4  # and faded
    _screenshot(page, "rank-desktop.png")


def _long_text(i: int) -> str:
    paragraph = (
        f"Answer {i}: Tides are caused mainly by the Moon's gravity pulling on the oceans. "
        "The side of the Earth facing the Moon bulges toward it, and a second bulge forms "
        "on the far side because the Earth is pulled away from the water there."
    )
    return "\n\n".join([paragraph] * (3 + i))


def _screenshot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=False)


def test_prefetched_task_is_shown_at_once_after_submitting(page, project, labeler) -> None:
    """While the labeler ranks, the page asks for the next task (`?exclude=` the current one)
    and shows it as soon as the submission is stored, with no further request."""
    task = RankingTaskFactory(project=project)
    upcoming = {
        "id": 987654,
        "prompt": "The prefetched prompt",
        "responses": [{"id": 900 + i, "text": f"prefetched {i}"} for i in range(4)],
        "expires_at": "2999-01-01T00:00:00Z",
    }
    plain_fetches: list[str] = []

    def next_task(route) -> None:
        url = route.request.url
        if f"exclude={task.pk}" in url:
            route.fulfill(status=200, json=upcoming)
        elif "exclude=" in url:
            route.fulfill(status=204)
        else:
            plain_fetches.append(url)
            route.continue_()

    page.route("**/tasks/next/**", next_task)
    log_in(page, labeler.username)
    assert open_label_page(page, project) == task.pk
    for key in ["1", "2", "3", "4", "Enter"]:
        page.keyboard.press(key)
    assert wait_for_next_task(page, task.pk) == upcoming["id"]
    assert page.text_content("#prompt .message__content") == "The prefetched prompt"
    assert len(plain_fetches) == 1  # only the first task was fetched on demand
    assert Ranking.objects.filter(task=task, labeler=labeler).exists()
