"""The dashboard's progress in a real browser: phase, done / total, elapsed and ETA as the
API serves them, following the run live without a reload."""

import os
import re
import time
from pathlib import Path

import pytest
from django.utils import timezone

from tests.browser.conftest import log_in
from tests.factories import ModelVersionFactory, RoundFactory, TrainingRunFactory
from training.models import Round

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOT_DIR = os.environ.get("RLHF_SCREENSHOT_DIR")


def _detail(done: int, total: int, since_s: float) -> dict:
    now = time.time()
    return {
        "phase": "sampling",
        "step": "batch 2/5",
        "unit": "tokens",
        "done": done,
        "total": total,
        "since": now - since_s,
        "since_done": 0,
        "at": now,
    }


def test_the_dashboard_shows_the_phase_and_eta_and_follows_the_api(
    page, project, project_admin, admin_client_api
) -> None:
    policy = ModelVersionFactory(project=project, is_current=True)
    round_ = RoundFactory(
        project=project, number=1, stage=Round.Stage.GENERATING, sampling_policy=policy
    )
    run = TrainingRunFactory(
        project=project,
        round=round_,
        kind="generate",
        status="running",
        started_at=timezone.now(),
        progress_done=16,
        progress_total=84,
        inputs={"shard": 0, "shards": 1, "prompt_ids": []},
        progress_detail=_detail(400, 1000, 20),
    )
    log_in(page, project_admin.username)
    page.goto(f"/projects/{project.slug}/rounds/")
    page.wait_for_selector(".progress-row__timing:not([hidden])")
    text = page.text_content("#progress-list")
    assert f"GENERATE run #{run.pk}" in text and "16 / 84" in text
    assert "sampling (batch 2/5)" in text and "400 / 1000 tokens" in text
    # 400 tokens in 20 s, 600 left: 30 s from the figure, counting down since
    assert re.search(r"ETA (30|2\d) s", text), text
    assert page.get_attribute(".progress-row progress", "value") == "400"  # tokens move the bar
    if SCREENSHOT_DIR:
        page.locator(".progress-list").screenshot(path=str(Path(SCREENSHOT_DIR) / "progress.png"))

    run.progress_done, run.progress_detail = 40, _detail(900, 1000, 45)
    run.save()
    page.wait_for_function(
        "() => document.getElementById('progress-list').textContent.includes('40 / 84')"
    )
    served = admin_client_api.get(f"/api/v1/rounds/{round_.pk}/").json()["progress"]
    text = page.text_content("#progress-list")
    assert f"{served['done']} / {served['total']}" in text
    assert f"{served['phase_done']} / {served['phase_total']} tokens" in text
