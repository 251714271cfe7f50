"""The round dashboard and the playground in a real browser: plots drawn from metric
points and growing while a run goes on, Start creating a round (the eager generate run
samples with `tiny`), and a chat with thumbs and a better answer."""

import math
import os
from pathlib import Path

import pytest

from labeling.models import Demonstration, Feedback
from labeling.services.rankings import comparisons_from_ranking
from tests.browser.conftest import log_in
from tests.factories import (
    MembershipFactory,
    MetricPointFactory,
    ModelVersionFactory,
    PromptFactory,
    RankingFactory,
    RankingTaskFactory,
    RoundFactory,
    TrainingRunFactory,
)
from training.models import Round

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOT_DIR = os.environ.get("RLHF_SCREENSHOT_DIR")
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"


def screenshot(page, name: str) -> None:
    if SCREENSHOT_DIR:
        page.screenshot(path=str(Path(SCREENSHOT_DIR) / name), full_page=True)


def points(page, chart_id: str) -> int:
    return int(page.get_attribute(f"#{chart_id} svg.chart__svg", "data-points") or 0)


def rm_steps(run, steps: range) -> None:
    for step in steps:
        MetricPointFactory(
            run=run,
            step=step,
            values={
                "rm/loss": 0.69 * math.exp(-step / 25) + 0.25,
                "rm/accuracy": 0.5 + 0.3 * (1 - math.exp(-step / 15)),
                **(
                    {"rm/eval_accuracy": 0.5 + 0.22 * (1 - math.exp(-step / 15))}
                    if step % 10 == 0
                    else {}
                ),
            },
        )


def ppo_steps(run, steps: range) -> None:
    for step in steps:
        kl = 6.0 * (1 - math.exp(-step / 12))
        MetricPointFactory(
            run=run,
            step=step,
            values={
                "env/score_mean": -0.4 + 1.2 * (1 - math.exp(-step / 10)),
                "env/reward_mean": -0.4 + 1.2 * (1 - math.exp(-step / 10)) - 0.05 * kl,
                "objective/kl": kl,
                "objective/kl_coef": 0.2 * math.exp(-((step - 20) ** 2) / 400) + 0.05,
                "objective/entropy": 2.4 - 0.02 * step,
            },
        )


@pytest.fixture
def busy_project(project):
    """Two finished rounds with curves, models and labelers; a third round in labeling."""
    base = ModelVersionFactory(project=project, version=1, kind="base", role="policy")
    rm = ModelVersionFactory(
        project=project,
        version=2,
        kind="rm",
        role="reward",
        parent=base,
        is_current=True,
        metrics={"rm/eval_accuracy": 0.685, "heldout_labeler_accuracy": 0.66},
    )
    ppo = ModelVersionFactory(
        project=project,
        version=3,
        kind="ppo",
        role="policy",
        parent=base,
        is_current=True,
        metrics={"env/score_mean": 0.74, "objective/kl": 5.6},
    )
    done = RoundFactory(
        project=project,
        number=1,
        stage="done",
        num_prompts=16,
        sampling_policy=base,
        reward_model=rm,
        policy=ppo,
    )
    rm_steps(
        TrainingRunFactory(project=project, round=done, kind="rm", status="succeeded"), range(1, 61)
    )
    ppo_steps(
        TrainingRunFactory(project=project, round=done, kind="ppo", status="succeeded"),
        range(1, 41),
    )
    labelers = [MembershipFactory(project=project).user for _ in range(3)]
    for _ in range(4):
        task = RankingTaskFactory(project=project, round=done)
        ids = list(task.responses.order_by("position").values_list("id", flat=True))
        for n, user in enumerate(labelers):
            order = ids if n != 2 else [ids[1], ids[0], *ids[2:]]
            ranking = RankingFactory(task=task, labeler=user, tie_groups=[[i] for i in order])
            comparisons_from_ranking(ranking=ranking)
    current = RoundFactory(
        project=project,
        number=2,
        stage="labeling",
        num_prompts=8,
        sampling_policy=ppo,
        progress_done=5,
        progress_total=8,
    )
    return project, current


def test_the_dashboard_plots_metric_points_and_follows_a_running_run(
    page, busy_project, project_admin
):
    project, current = busy_project
    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")

    page.wait_for_selector('#rounds-table tbody tr[data-round="1"]')
    assert "Round 2" in page.text_content("#round-title")
    assert page.get_attribute(".progress-row progress", "value") == "5"
    # The curves show the newest round that trained something: round 1.
    assert page.input_value("#curve-round") == "1"
    page.wait_for_function(
        "() => document.querySelector('#chart-rm-loss svg').dataset.points === '60'"
    )
    assert points(page, "chart-ppo-kl") == 40
    assert page.locator("#chart-rm-loss path.chart__line").count() == 1
    page.wait_for_function(
        "() => document.querySelectorAll('#labelers-table tbody tr').length === 3"
    )
    assert "Kendall's W" in page.text_content("#agreement-summary")
    assert page.locator("#models-table .badge--current").count() == 2
    page.set_viewport_size({"width": 1366, "height": 2200})
    screenshot(page, "dashboard.png")

    # A running RM run in the current round: the curves switch to it by themselves and
    # new points appear without a reload.
    run = TrainingRunFactory(
        project=project,
        round=current,
        kind="rm",
        status="running",
        progress_done=3,
        progress_total=20,
    )
    current.stage = Round.Stage.TRAINING_RM
    current.save()
    rm_steps(run, range(1, 4))
    page.wait_for_function(
        "() => document.querySelector('#chart-rm-loss svg').dataset.points === '3'"
    )
    assert page.input_value("#curve-round") == "2"
    assert "RM run" in page.text_content("#progress-list")
    rm_steps(run, range(4, 9))
    page.wait_for_function(
        "() => document.querySelector('#chart-rm-loss svg').dataset.points === '8'"
    )
    assert page.is_disabled("#start-round")
    screenshot(page, "dashboard-running.png")


def test_start_creates_a_round_that_samples_with_tiny(page, project, project_admin) -> None:
    project.k, project.max_new_tokens = 2, 6
    project.save()
    PromptFactory.create_batch(2, project=project)
    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")
    page.wait_for_selector("#rounds-empty:not([hidden])")
    screenshot(page, "dashboard-empty.png")

    page.fill("#num-prompts", "2")
    page.click("#start-round")

    page.wait_for_selector('#rounds-table tbody tr[data-round="1"]', timeout=60_000)
    page.wait_for_function(
        "() => /labeling/i.test(document.getElementById('round-title').textContent)",
        timeout=60_000,
    )
    round_ = Round.objects.get(project=project)
    assert round_.stage == "labeling" and round_.tasks.count() == 2
    assert page.is_enabled("#advance-round") and page.is_enabled("#cancel-round")
    assert "base-v1" in page.text_content("#models-table")


def test_a_failed_round_shows_its_error_as_text(page, project, project_admin) -> None:
    RoundFactory(
        project=project, number=1, stage="failed", failed_stage="training_rm", error=HOSTILE
    )
    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")
    page.wait_for_selector("#round-error:not([hidden])")
    assert HOSTILE in page.text_content("#round-error")
    assert page.text_content("#advance-round").startswith("Retry")
    assert page.title() != "pwned"


def test_the_policy_stage_is_named_by_the_rounds_recipe(page, project, project_admin) -> None:
    RoundFactory(project=project, number=1, stage="training_ppo", recipe="dpo")
    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")
    page.wait_for_selector("#stages .stage.is-current")
    assert page.text_content("#stages .stage.is-current .stage__label") == "DPO"
    assert page.text_content("#round-title") == "Round 1 · Training DPO"
    assert "PPO" not in page.text_content("#stages")


def test_the_playground_chat_with_thumbs_and_a_better_answer(page, project, labeler) -> None:
    project.max_new_tokens = 10
    project.save()
    log_in(page, labeler.username)
    page.goto(f"/projects/{project.slug}/playground/")

    page.fill("#message", HOSTILE)
    page.press("#message", "Enter")
    page.wait_for_selector(".turn--assistant .turn__tools", timeout=60_000)
    assert page.text_content(".turn--user .turn__text") == HOSTILE  # text, never markup
    assert "base-v1" in page.text_content(".turn--assistant .turn__who")
    page.click(".turn__tools button:has-text('Good')")
    page.wait_for_selector(".turn__tools button[aria-pressed='true']:has-text('Good')")
    assert Feedback.objects.get().rating == 1

    page.click("button:has-text('Write a better answer')")
    page.fill(".better textarea", "A careful, helpful answer.")
    page.fill("#message", "And a second question?")
    screenshot(page, "playground.png")
    page.click("button:has-text('Save as demonstration')")
    page.wait_for_selector("text=Saved as a demonstration")
    demonstration = Demonstration.objects.get()
    assert demonstration.response == "A careful, helpful answer."
    assert demonstration.prompt.text == HOSTILE
    assert page.title() != "pwned"
