"""The dashboard's promotion gate and cancel in a real browser: a round stopped in
needs_review shows its checks with the new and current figures side by side and is
approved with its button; a cancelled round marks the stage it was cancelled in."""

import pytest

from tests.browser.conftest import log_in
from tests.browser.test_dashboard_browser import HOSTILE, screenshot
from tests.factories import ModelVersionFactory, RoundFactory, TrainingRunFactory
from training.models import ModelVersion, Round
from training.services import gate

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _stage_classes(page) -> dict[str, str]:
    """Stage label -> its state class (is-done, is-current, is-cancelled, ...)."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#stages .stage')].map(
            (li) => [li.querySelector('.stage__label').textContent,
                     [...li.classList].filter((c) => c.startsWith('is-')).join(' ')]))"""
    )


def test_an_admin_approves_a_policy_the_gate_stopped(page, project, project_admin) -> None:
    base = ModelVersionFactory(project=project, kind="base", role="policy", is_current=True)
    rm = ModelVersionFactory(
        project=project,
        kind="rm",
        role="reward",
        is_current=True,
        metrics={"rm/eval_accuracy": 0.7, "rm/heldout_accuracy": 0.68},
    )
    new = ModelVersionFactory(project=project, kind="ppo", role="policy", parent=base)
    round_ = RoundFactory(
        project=project,
        number=1,
        stage="needs_review",
        review_stage="training_ppo",
        sampling_policy=base,
        reward_model=rm,
        policy=new,
    )
    result = gate.gate_check_policy(
        round_=round_,
        kind="ppo",
        metrics={
            "gate/eval_prompts": 8,
            "gate/new_score": 0.31,
            "gate/baseline_score": 0.42,
            "gate/score_gain": -0.11,
            "gate/score_gain_se": 0.05,
            "gate/kl_to_ref": 3.2,
            "gate/policy": new.label,
            "gate/baseline": base.label,
        },
    )
    result["checks"][1]["detail"] = HOSTILE  # whatever a check says is shown as text
    round_.gate = {"training_ppo": result}
    round_.save()

    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")
    page.wait_for_selector("#review-panel:not([hidden])")
    checks = page.text_content("#review-body .review-checks")
    assert "Failed: New policy scores higher than the sampling policy" in checks
    assert "Passed: New policy's KL to the reference within the bound" in checks
    assert HOSTILE in checks and page.title() != "pwned"
    figures = page.locator("#review-body .review-figures tbody tr")
    assert figures.nth(0).text_content() == f"Model{new.label}{base.label}"
    assert figures.nth(1).text_content() == "Mean RM score on held-out prompts0.310.42"
    assert _stage_classes(page)["PPO"] == "is-review"
    # The header and the per-round chart read the same held-out accuracy.
    assert "RM held-out accuracy 70.0%" in page.text_content("#round-subtitle")
    assert page.is_enabled("#approve-round") and page.is_enabled("#reject-round")
    screenshot(page, "dashboard-review.png")

    page.click("#approve-round")
    page.wait_for_function("() => /done/i.test(document.getElementById('round-title').textContent)")
    page.wait_for_selector("#review-panel[hidden]", state="attached")
    assert "approved by" in page.text_content("#round-subtitle")
    assert set(_stage_classes(page).values()) == {"is-done"}
    round_.refresh_from_db()
    assert (round_.stage, round_.review_decision, round_.reviewed_by) == (
        "done",
        "approved",
        project_admin,
    )
    assert ModelVersion.objects.get(pk=new.pk).is_current
    assert not ModelVersion.objects.get(pk=base.pk).is_current


def test_cancel_marks_the_stage_the_round_was_cancelled_in(page, project, project_admin) -> None:
    base = ModelVersionFactory(project=project, kind="base", role="policy", is_current=True)
    round_ = RoundFactory(
        project=project, number=1, stage="generating", num_prompts=4, sampling_policy=base
    )
    run = TrainingRunFactory(project=project, round=round_, kind="generate", status="queued")
    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")
    page.wait_for_function(
        "() => /generating/i.test(document.getElementById('round-title').textContent)"
    )
    assert _stage_classes(page)["Generate samples"] == "is-current"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-round")
    page.wait_for_function(
        "() => /cancelled/i.test(document.getElementById('round-title').textContent)"
    )
    stages = _stage_classes(page)
    assert stages["Generate samples"] == "is-cancelled"
    assert {v for k, v in stages.items() if k != "Generate samples"} == {""}
    assert page.is_disabled("#cancel-round") and page.is_enabled("#start-round")
    screenshot(page, "dashboard-cancelled.png")
    round_.refresh_from_db()
    run.refresh_from_db()
    assert (round_.stage, round_.failed_stage, run.status) == (
        "cancelled",
        "generating",
        "cancelled",
    )
    assert Round.objects.filter(project=project, stage="cancelled").count() == 1
