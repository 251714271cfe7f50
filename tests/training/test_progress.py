"""A run's progress: phases with done/total, elapsed and ETA, written by the reporter and
served by the API, the dashboard's data source and `--wait` alike."""

import io
import json
import re
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from tests.factories import (
    MembershipFactory,
    ProjectFactory,
    PromptFactory,
    RoundFactory,
    TrainingRunFactory,
)
from training.management.commands._rounds import duration, follow, progress_line
from training.models import Round, TrainingRun
from training.services import progress, rounds
from training.services.progress import eta_seconds, phase_detail, phase_rate
from training.services.runs import RunReporter

# --------------------------------------------------------------------------- ETA maths


def test_eta_is_null_until_the_phase_has_a_rate_then_counts_down() -> None:
    start = phase_detail(
        {}, phase="sampling", done=0, total=1000, unit="tokens", step="", now=100.0
    )
    assert (start["since"], start["since_done"]) == (100.0, 0)
    assert phase_rate(start) is None and eta_seconds(start, now=100.0) is None

    later = phase_detail(
        start, phase="sampling", done=250, total=1000, unit="tokens", step="", now=110.0
    )
    assert later["since"] == 100.0  # the same phase keeps its clock
    assert phase_rate(later) == pytest.approx(25.0)  # 250 tokens in 10 s
    assert eta_seconds(later, now=110.0) == pytest.approx(30.0)  # 750 left at 25/s
    assert eta_seconds(later, now=118.0) == pytest.approx(22.0)  # counts down between figures
    assert eta_seconds(later, now=200.0) == 0.0  # never below 0
    done = phase_detail(
        later, phase="sampling", done=1000, total=1000, unit="tokens", step="", now=140.0
    )
    assert eta_seconds(done, now=140.0) == 0.0


def test_a_new_phase_restarts_the_clock_and_the_rate() -> None:
    sampling = phase_detail({}, phase="training", done=2, total=10, unit="steps", step="", now=0.0)
    sampling = phase_detail(
        sampling, phase="training", done=6, total=10, unit="steps", step="", now=8.0
    )
    assert eta_seconds(sampling, now=8.0) == pytest.approx(8.0)  # 4 steps in 8 s; 4 left
    scoring = phase_detail(
        sampling, phase="scoring", done=0, total=0, unit="steps", step="", now=9.0
    )
    assert (scoring["since"], scoring["since_done"]) == (9.0, 0)
    assert eta_seconds(scoring, now=12.0) is None  # no total
    # resuming with work already done: the rate counts only what this phase did
    resumed = phase_detail(
        {}, phase="sampling", done=40, total=100, unit="tokens", step="", now=0.0
    )
    resumed = phase_detail(
        resumed, phase="sampling", done=50, total=100, unit="tokens", step="", now=5.0
    )
    assert eta_seconds(resumed, now=5.0) == pytest.approx(25.0)  # 10 in 5 s; 50 left


def test_durations_read_like_a_person_writes_them() -> None:
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]


# --------------------------------------------------------------------------- the sampler


def test_the_sampler_reports_its_token_budget_every_decoding_step() -> None:
    from training.ml.loading import load_causal_lm
    from training.ml.sampling import GenerationSettings, sample_responses

    model, tokenizer = load_causal_lm("tiny")
    settings = GenerationSettings(max_new_tokens=12, temperature=1.0, seed=5)
    figures: list[tuple[int, int]] = []
    forwards: list[int] = []
    handle = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        reported = sample_responses(
            model, tokenizer, ["Hi", "Tell me", "Why"], k=2, settings=settings, batch_size=4,
            on_tokens=lambda used, budget: figures.append((used, budget)),
        )  # fmt: skip
    finally:
        handle.remove()
    plain = sample_responses(
        model, tokenizer, ["Hi", "Tell me", "Why"], k=2, settings=settings, batch_size=4
    )
    assert [[s.text for s in row] for row in reported] == [[s.text for s in row] for row in plain]
    budget = 6 * 12
    assert {b for _, b in figures} == {budget}
    used = [u for u, _ in figures]
    assert used == sorted(used) and used[-1] == budget
    assert len(figures) >= len(forwards) - 2  # about one figure per forward of each batch
    assert (4 * 12) in used  # the first batch of 4 responses ends at its whole budget
    assert used[0] < 4 * 12  # the first figure comes after one step, not after the batch


# --------------------------------------------------------------------------- the reporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.django_db
def test_the_reporter_writes_phases_throttled_but_flushes_a_phase_change() -> None:
    run = TrainingRunFactory(status=TrainingRun.Status.RUNNING, started_at=timezone.now())
    clock = FakeClock()
    reporter = RunReporter(run_id=run.pk, min_interval=3600.0, clock=clock)

    def stored() -> dict:
        run.refresh_from_db()
        return run.progress_detail

    reporter.phase(progress.LOADING)
    assert stored()["phase"] == "loading model"  # a new phase: written at once
    clock.now += 5
    reporter.train_step(1, 4, step="rollout")
    assert stored()["phase"] == "training"
    assert (run.progress_done, run.progress_total) == (1, 4)  # train_step sets both
    clock.now += 5
    reporter.train_step(2, 4, step="rollout")
    assert stored()["done"] == 1  # same phase and sub-step within the interval: held back
    reporter.train_step(2, 4, step="update epoch 1/2")
    assert (stored()["done"], run.progress_detail["step"]) == (2, "update epoch 1/2")  # at once
    clock.now += 5
    reporter.train_step(4, 4)  # reaching the total is written at once
    detail = stored()
    assert (detail["done"], detail["total"], detail["since"], detail["at"]) == (
        4,
        4,
        1005.0,
        1015.0,
    )
    assert run.progress_done == 4
    reporter.phase(progress.SAVING)
    assert stored()["phase"] == "saving"


# --------------------------------------------------------------------------- the API


def _running_generate(round_, *, done, total, tokens, budget, since_s, at_s, shard=0, shards=1):
    now = timezone.now().timestamp()
    return TrainingRunFactory(
        project=round_.project,
        round=round_,
        kind=TrainingRun.Kind.GENERATE,
        status=TrainingRun.Status.RUNNING,
        started_at=timezone.now() - timedelta(seconds=since_s + 3),
        progress_done=done,
        progress_total=total,
        inputs={"shard": shard, "shards": shards, "prompt_ids": []},
        progress_detail={
            "phase": "sampling",
            "step": "batch 2/5",
            "unit": "tokens",
            "done": tokens,
            "total": budget,
            "since": now - since_s,
            "since_done": 0,
            "at": now - at_s,
        },
    )


@pytest.mark.django_db
def test_the_round_and_run_api_serve_phase_elapsed_and_eta(project, admin_client_api) -> None:
    round_ = RoundFactory(project=project, number=1, stage=Round.Stage.GENERATING)
    run = _running_generate(round_, done=16, total=84, tokens=400, budget=1000, since_s=20, at_s=0)

    body = admin_client_api.get(f"/api/v1/projects/{project.slug}/rounds/").json()[0]
    got = body["progress"]
    assert (got["done"], got["total"], got["unit"]) == (16, 84, "responses")  # as before
    assert (got["phase"], got["step"], got["phase_unit"]) == ("sampling", "batch 2/5", "tokens")
    assert (got["phase_done"], got["phase_total"]) == (400, 1000)
    assert got["elapsed_s"] == pytest.approx(23, abs=2)
    assert got["eta_s"] == pytest.approx(30, abs=2)  # 400 tokens in 20 s: 600 left at 20/s
    run_progress = body["runs"][0]["progress"]
    assert run_progress["phase"] == "sampling" and run_progress["eta_s"] == pytest.approx(30, abs=2)
    listed = admin_client_api.get(f"/api/v1/projects/{project.slug}/runs/").json()
    listed = listed["results"] if isinstance(listed, dict) else listed
    assert next(r for r in listed if r["id"] == run.pk)["progress"]["phase_total"] == 1000

    run.status, run.finished_at = TrainingRun.Status.SUCCEEDED, timezone.now()
    run.save()
    body = admin_client_api.get(f"/api/v1/rounds/{round_.pk}/").json()
    assert body["progress"]["eta_s"] is None and body["progress"]["done"] == 16
    assert body["runs"][0]["progress"]["phase"] == "succeeded"
    assert body["runs"][0]["progress"]["eta_s"] is None


@pytest.mark.django_db
def test_sharded_generation_sums_responses_and_waits_for_the_slowest_shard(project) -> None:
    round_ = RoundFactory(project=project, number=1, stage=Round.Stage.GENERATING)
    _running_generate(
        round_, done=8, total=40, tokens=100, budget=500, since_s=10, at_s=0, shards=2
    )
    _running_generate(
        round_, done=4, total=40, tokens=100, budget=500, since_s=40, at_s=0, shard=1, shards=2
    )
    got = progress.round_progress(round_)
    assert (got["done"], got["total"], got["shards"]) == (12, 80, 2)
    assert got["eta_s"] == pytest.approx(160, abs=2)  # shard 1: 100 tokens in 40 s, 400 left
    assert (got["phase_done"], got["phase_total"]) == (200, 1000)
    TrainingRunFactory(
        project=project, round=round_, kind="generate", inputs={"shard": 2, "shards": 3}
    )  # a third shard still waits for a worker: no honest ETA
    assert progress.round_progress(round_)["eta_s"] is None


@pytest.mark.django_db
def test_the_dashboard_polls_the_url_whose_progress_the_api_and_cli_compute(
    project, project_admin, admin_client_api, client, settings
) -> None:
    """The dashboard renders `progress` of the rounds URL its config names (no counters of
    its own): what it shows is what the API serves, and the CLI's line reads the same."""
    round_ = RoundFactory(project=project, number=1, stage=Round.Stage.GENERATING)
    _running_generate(round_, done=16, total=84, tokens=400, budget=1000, since_s=20, at_s=0)
    client.force_login(project_admin)
    page = client.get(f"/projects/{project.slug}/rounds/").content.decode()
    config = json.loads(
        re.search(r'<script id="dashboard-config" type="application/json">(.*?)</script>', page)[1]
    )
    served = admin_client_api.get(config["urls"]["rounds"]).json()[0]["progress"]
    assert (served["done"], served["total"]) == (16, 84)  # not the round's own 0 / 0
    computed = progress.round_progress(round_)
    assert {k: served[k] for k in ("done", "total", "unit", "phase", "step")} == {
        k: computed[k] for k in ("done", "total", "unit", "phase", "step")
    }
    assert "16/84 responses" in progress_line(round_, served)
    script = (settings.BASE_DIR / "frontend/static/training/dashboard.js").read_text()
    assert "round.progress" in script and "eta_s" in script  # what it renders


# --------------------------------------------------------------------------- a tiny round


TINY_CONFIG = {
    "rm": {"batch_size": 2, "max_length": 64, "lr": 1e-3},
    "ppo": {
        "steps": 2, "batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 2,
        "max_new_tokens": 6, "forward_batch_size": 4, "checkpoint_every": 0,
    },
}  # fmt: skip


@pytest.fixture
def tiny_project(db, settings, tmp_path):
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    project = ProjectFactory(
        base_model="tiny", k=3, overlap=1, max_new_tokens=6, training_config=TINY_CONFIG
    )
    PromptFactory.create_batch(4, project=project)
    PromptFactory.create_batch(2, project=project, split="eval")
    return project


@pytest.fixture
def phases(monkeypatch):
    """Every phase figure a run body reports, by run kind, through the real reporter."""
    seen: list[tuple[str, str, int, int, str, str]] = []
    original = RunReporter.phase

    def spy(self, name, done=0, total=0, *, unit="steps", step=""):
        kind = TrainingRun.objects.values_list("kind", flat=True).get(pk=self.run_id)
        seen.append((kind, name, done, total, unit, step))
        return original(self, name, done, total, unit=unit, step=step)

    monkeypatch.setattr(RunReporter, "phase", spy)
    return seen


@pytest.mark.slow
@pytest.mark.django_db
def test_a_tiny_rounds_runs_report_their_phases_to_the_end(
    tiny_project, on_commit, through_gate, phases
):
    from labeling.services.leasing import task_lease_next
    from labeling.services.rankings import ranking_submit

    project = tiny_project
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=3)
    round_.refresh_from_db()
    assert round_.stage == "labeling", round_.error
    generate = [p for p in phases if p[0] == "generate"]
    assert [p[1] for p in generate][:1] == ["loading model"]
    sampling = [p for p in generate if p[1] == "sampling"]
    budget = 3 * 3 * 6  # prompts x K x max_new_tokens
    assert {(p[3], p[4]) for p in sampling} == {(budget, "tokens")}
    assert len(sampling) > 3  # per decoding step, not once per call
    assert [p[2] for p in sampling] == sorted(p[2] for p in sampling)
    assert sampling[-1][2] == budget and sampling[-1][5].startswith("batch ")
    run = round_.runs.get(kind="generate")
    assert run.progress_detail["done"] == run.progress_detail["total"] == budget
    assert (run.progress_done, run.progress_total) == (9, 9)

    labeler = MembershipFactory(project=project, role="labeler").user
    with on_commit():
        while (lease := task_lease_next(project=project, labeler=labeler)) is not None:
            ids = list(lease.task.responses.order_by("position").values_list("id", flat=True))
            ranking_submit(
                task=lease.task, labeler=labeler, order=[[i] for i in ids], flags={},
                time_spent_ms=900,
            )  # fmt: skip
    rm = [p for p in phases if p[0] == "rm"]
    names = [p[1] for p in rm]
    assert names[0] == "loading model" and names[-2:] == ["scoring", "saving"]
    training = [p for p in rm if p[1] == "training"]
    assert training and training[-1][2] == training[-1][3] > 0  # done reached total
    rm_run = TrainingRun.objects.get(round=round_, kind="rm")
    assert rm_run.progress_done == rm_run.progress_total == training[-1][3]
    through_gate(round_)  # a tiny random RM may fail the gate: approve it, on to PPO
    ppo = [p for p in phases if p[0] == "ppo" and p[1] == "training"]
    labels = [p[5] for p in ppo]
    assert labels[:3] == [
        "rollout · step 1/2",
        "update epoch 1/2 · step 1/2",
        "update epoch 2/2 · step 1/2",
    ]
    assert "rollout · step 2/2" in labels and ppo[-1][2] == ppo[-1][3] == 2


# --------------------------------------------------------------------------- the CLI


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.slow
@pytest.mark.django_db
def test_start_round_wait_prints_a_line_per_phase_until_labeling(tiny_project, monkeypatch) -> None:
    """In-process: the queued run executes (eager) while `--wait` sleeps between polls."""
    from training import tasks
    from training.management.commands import _rounds

    queued: list[int] = []
    monkeypatch.setattr(tasks.gpu_execute_run, "delay", queued.append)

    def worker_between_polls(_seconds: float) -> None:
        while queued:
            tasks.gpu_execute_run(queued.pop(0))

    monkeypatch.setattr(_rounds.time, "sleep", worker_between_polls)
    # what services queue for after commit runs at once (the test's transaction never commits)
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())
    out = io.StringIO()
    call_command("start_round", tiny_project.slug, "--prompts", "2", "--wait", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("Round 1 of")
    assert lines[1] == "round 1 generating: queued 0/6 responses"
    assert lines[2].startswith("round 1 labeling: labeling 0/")
    assert lines[-1] == "Round 1 is labeling."


@pytest.mark.django_db
def test_wait_on_a_terminal_draws_a_bar_with_phase_elapsed_and_eta(project, monkeypatch) -> None:
    from training.management.commands import _rounds

    round_ = RoundFactory(project=project, number=1, stage=Round.Stage.GENERATING)
    run = _running_generate(round_, done=16, total=84, tokens=400, budget=1000, since_s=20, at_s=0)

    def generation_ends(_seconds: float) -> None:
        run.status = TrainingRun.Status.SUCCEEDED
        run.save()
        Round.objects.filter(pk=round_.pk).update(stage=Round.Stage.LABELING, progress_total=21)

    monkeypatch.setattr(_rounds.time, "sleep", generation_ends)
    screen, lines = Tty(), []
    follow(round_, write=lines.append, out=screen)
    drawn = screen.getvalue()
    assert "round 1 generating: sampling (batch 2/5)" in drawn
    assert "16/84 responses" in drawn and "elapsed 2" in drawn and "ETA 3" in drawn
    assert "round 1 labeling: labeling" in drawn and "0/21 rankings" in drawn
    assert lines == []  # a terminal gets the bar, not lines
