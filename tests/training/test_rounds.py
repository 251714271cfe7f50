"""The round state machine, with the ML bodies replaced by small recorders.

The real bodies are exercised end to end in test_loop_tiny.py and test_e2e_worker.py; here
the point is the transitions, failures, retries, cancellation and reaping.
"""

import json
from datetime import timedelta

import pytest
import torch
from django.utils import timezone
from safetensors.torch import save_file

from core.exceptions import ConflictError
from tests.factories import PromptFactory, RankingTaskFactory
from training.models import ModelVersion, Round, TrainingRun
from training.services import registry, rounds, run_bodies, runs
from training.services.run_bodies.common import publish


def _artifact(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(1)}, str(path / "model.safetensors"))
    return path


class Bodies:
    """Stand-ins for the ML bodies that follow the same contract: produce a verified
    artifact through the registry, or fail. Their figures pass the promotion gate (the
    gate itself: test_gate.py)."""

    RM_METRICS = {"accuracy": 0.75, "rm/heldout_accuracy": 0.75, "rm/heldout_pairs": 6}
    EVAL_METRICS = {
        "gate/eval_prompts": 2, "gate/new_score": 1.0, "gate/baseline_score": 0.5,
        "gate/score_gain": 0.5, "gate/kl_to_ref": 1.0,
    }  # fmt: skip

    def __init__(self, tmp_path) -> None:
        self.tmp_path, self.calls, self.fail = tmp_path, [], set()

    def __call__(self, kind: str):
        def body(run: TrainingRun, reporter: runs.RunReporter) -> dict:
            self.calls.append(kind)
            if kind in self.fail:
                raise RuntimeError(f"{kind} exploded")
            reporter.metrics(1, {"loss": 0.5})
            if kind == "generate":
                round_ = run.round
                for prompt in run.project.prompts.all()[: round_.num_prompts]:
                    RankingTaskFactory(project=run.project, prompt=prompt, round=round_)
                return {"tasks": round_.tasks.count()}
            if kind == "eval":
                return dict(self.EVAL_METRICS)
            version = registry.model_version_create(project=run.project, kind=kind)
            _artifact(self.tmp_path / f"{kind}-{version.version}")
            version.artifact = str(self.tmp_path / f"{kind}-{version.version}")
            version.save()
            metrics = {**self.RM_METRICS, **({"kl_coef": 0.08} if kind == "ppo" else {})}
            current = registry.current_reward_model(project=run.project)
            if kind == "rm" and current is not None:  # measured on the same split, as rm_body
                metrics.update(
                    {"rm/current_model": current.label, "rm/current_heldout_accuracy": 0.75}
                )
            return publish(run, version, lambda out: None, metrics)

        return body


@pytest.fixture
def bodies(monkeypatch, tmp_path, settings):
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    recorder = Bodies(tmp_path)
    monkeypatch.setattr(run_bodies, "body_for", recorder)
    return recorder


@pytest.fixture
def project_with_prompts(project):
    PromptFactory.create_batch(3, project=project)
    return project


def _rank_all(round_: Round) -> None:
    from labeling.models import Ranking

    for task in round_.tasks.all():
        ids = list(task.responses.values_list("id", flat=True))
        Ranking.objects.create(task=task, tie_groups=[[i] for i in ids], source="imported")
        task.status = "complete"
        task.save()


@pytest.mark.django_db
def test_a_round_walks_every_stage(bodies, project_with_prompts, on_commit):
    project = project_with_prompts
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=2)
    round_.refresh_from_db()
    assert round_.stage == "labeling"
    assert round_.tasks.count() == 2
    assert round_.sampling_policy.kind == "base"
    with pytest.raises(ConflictError, match="still labeling"):
        rounds.round_start(project=project)

    _rank_all(round_)
    with on_commit():
        rounds.round_advance(round_=round_)
    round_.refresh_from_db()
    assert round_.stage == "done", round_.error
    assert bodies.calls == ["generate", "rm", "ppo", "eval"]  # eval: the policy gate's figures
    assert round_.reward_model.is_current and round_.policy.is_current
    assert round_.policy.kind == "ppo"
    assert round_.metrics["rm/accuracy"] == 0.75

    # The next round samples from the new policy.
    with on_commit():
        second = rounds.round_start(project=project, num_prompts=1)
    assert second.sampling_policy == round_.policy


@pytest.mark.django_db
def test_a_failed_stage_keeps_old_models_and_can_be_retried(
    bodies, project_with_prompts, on_commit
):
    project = project_with_prompts
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=2)
    _rank_all(round_)
    base = registry.current_policy(project=project)
    bodies.fail.add("rm")
    with on_commit():
        rounds.round_advance(round_=round_)
    round_.refresh_from_db()
    assert (round_.stage, round_.failed_stage) == ("failed", "training_rm")
    assert "rm exploded" in round_.error
    assert registry.current_policy(project=project) == base
    assert registry.current_reward_model(project=project) is None

    bodies.fail.clear()
    with on_commit():
        rounds.round_advance(round_=round_)
    round_.refresh_from_db()
    assert round_.stage == "done"
    assert round_.runs.filter(kind="rm").count() == 2  # the failed one is kept as a record
    assert round_.tasks.count() == 2  # retrying did not duplicate tasks


@pytest.mark.django_db
def test_cancel_stops_queued_runs_and_closes_tasks(bodies, project_with_prompts, on_commit):
    with on_commit():
        round_ = rounds.round_start(project=project_with_prompts, num_prompts=2)
    rounds.round_cancel(round_=round_)
    round_.refresh_from_db()
    assert round_.stage == "cancelled"
    assert not round_.tasks.filter(status="open").exists()
    with pytest.raises(ConflictError):
        rounds.round_advance(round_=round_)


@pytest.mark.django_db
def test_run_execute_is_idempotent_on_the_run_id(bodies, project) -> None:
    run = TrainingRun.objects.create(project=project, kind="rm")
    runs.run_execute(run_id=run.pk, body=bodies("rm"))
    runs.run_execute(run_id=run.pk, body=bodies("rm"))  # a redelivered message
    assert bodies.calls == ["rm"]
    assert ModelVersion.objects.filter(project=project, kind="rm").count() == 1


@pytest.mark.django_db
def test_a_cancel_flag_is_seen_by_the_body(project) -> None:
    run = TrainingRun.objects.create(project=project, kind="rm")

    def body(run: TrainingRun, reporter: runs.RunReporter) -> dict:
        TrainingRun.objects.filter(pk=run.pk).update(cancel_requested=True)
        reporter._last_cancel_check = -1e9
        if reporter.should_stop():
            raise runs.RunCancelled()
        return {}

    assert runs.run_execute(run_id=run.pk, body=body).status == "cancelled"


@pytest.mark.django_db
def test_reaping_fails_runs_of_a_dead_worker(bodies, project_with_prompts, settings) -> None:
    from training.tasks import reap_stale_runs

    round_ = Round.objects.create(
        project=project_with_prompts,
        number=1,
        stage="training_rm",
        sampling_policy=registry.current_policy(project=project_with_prompts),
    )
    stale = TrainingRun.objects.create(
        project=round_.project,
        round=round_,
        kind="rm",
        status="running",
        worker="w1",
        heartbeat_at=timezone.now() - timedelta(seconds=settings.RLHF_HEARTBEAT_TIMEOUT + 5),
    )
    fresh = TrainingRun.objects.create(
        project=round_.project, kind="ppo", status="running", heartbeat_at=timezone.now()
    )
    assert reap_stale_runs() == [stale.pk]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    round_.refresh_from_db()
    assert stale.status == "failed" and "stopped responding" in stale.error
    assert fresh.status == "running"
    assert (round_.stage, round_.failed_stage) == ("failed", "training_rm")


@pytest.mark.django_db
def test_advancing_a_round_reaps_its_dead_stage_run_and_retries_it(
    bodies, project_with_prompts, settings, on_commit
):
    """The worker died under the RM run and beat has not reaped it yet: "next" fails the
    run (and the round), then retries the stage; another project's runs are left alone."""
    from tests.factories import ProjectFactory

    round_ = Round.objects.create(
        project=project_with_prompts,
        number=1,
        stage="training_rm",
        sampling_policy=registry.current_policy(project=project_with_prompts),
    )
    old = timezone.now() - timedelta(seconds=settings.RLHF_HEARTBEAT_TIMEOUT + 5)
    stale = TrainingRun.objects.create(
        project=round_.project, round=round_, kind="rm", status="running", heartbeat_at=old
    )
    elsewhere = TrainingRun.objects.create(
        project=ProjectFactory(), kind="rm", status="running", heartbeat_at=old
    )
    with on_commit():
        rounds.round_advance(round_=round_)
    stale.refresh_from_db()
    elsewhere.refresh_from_db()
    round_.refresh_from_db()
    assert stale.status == "failed" and "stopped responding" in stale.error
    assert elsewhere.status == "running"
    assert round_.stage == "done", round_.error
    assert bodies.calls == ["rm", "ppo", "eval"]


@pytest.mark.django_db
def test_a_restarted_worker_fails_its_own_runs_at_once(bodies, project_with_prompts) -> None:
    """A worker back up within the heartbeat timeout: its node's runs are dead anyway."""
    from types import SimpleNamespace

    from training.tasks import _recover_on_start

    mine = TrainingRun.objects.create(
        project=project_with_prompts,
        kind="rm",
        status="running",
        worker="gpu@box-1",
        heartbeat_at=timezone.now(),
    )
    other = TrainingRun.objects.create(
        project=project_with_prompts,
        kind="ppo",
        status="running",
        worker="gpu@box-2",
        heartbeat_at=timezone.now(),
    )
    consumer = SimpleNamespace(
        hostname="gpu@box-1",
        app=SimpleNamespace(amqp=SimpleNamespace(queues=SimpleNamespace(consume_from={}))),
    )
    _recover_on_start(sender=consumer)
    mine.refresh_from_db()
    other.refresh_from_db()
    assert mine.status == "failed" and "gpu@box-1 was restarted" in mine.error
    assert other.status == "running"  # another machine's worker, beating: left alone


@pytest.mark.django_db
def test_a_starting_gpu_worker_resends_queued_runs(project_with_prompts, monkeypatch) -> None:
    from types import SimpleNamespace

    from training import tasks

    queued = TrainingRun.objects.create(project=project_with_prompts, kind="rm")
    TrainingRun.objects.create(project=project_with_prompts, kind="rm", status="succeeded")
    TrainingRun.objects.create(project=project_with_prompts, kind="ppo", cancel_requested=True)
    sent: list[int] = []
    monkeypatch.setattr(tasks.gpu_execute_run, "delay", sent.append)

    def consumer(*queues: str) -> SimpleNamespace:
        consume_from = {q: object() for q in queues}
        amqp = SimpleNamespace(queues=SimpleNamespace(consume_from=consume_from))
        return SimpleNamespace(hostname="w@h", app=SimpleNamespace(amqp=amqp))

    tasks._recover_on_start(sender=consumer("default"))
    assert sent == []  # a bookkeeping worker does not take gpu work
    tasks._recover_on_start(sender=consumer("default", "gpu"))
    assert sent == [queued.pk]


def test_beat_schedules_the_reaper() -> None:
    from django.conf import settings

    from config.celery import app

    app.loader.import_default_modules()  # what a worker or beat does at start (autodiscovery)
    entry = settings.CELERY_BEAT_SCHEDULE["reap-stale-runs"]
    assert entry["task"] in app.tasks  # a typo would schedule nothing
    assert app.conf.beat_schedule["reap-stale-runs"]["schedule"] == settings.RLHF_REAP_INTERVAL


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("ppo", "carry"),
    [
        ({"init_from": "policy"}, True),  # continues the policy: continues its controller
        ({}, False),  # starts from the reference at KL 0: starts at init_kl_coef
        ({"init_from": "policy", "continue_kl_controller": False}, False),
        ({"continue_kl_controller": True}, True),
    ],
)
def test_the_next_rounds_ppo_continues_the_kl_controller_when_it_continues_the_policy(
    bodies, project_with_prompts, on_commit, ppo, carry
):
    project = project_with_prompts
    project.training_config = {"ppo": {"init_kl_coef": 0.05, **ppo}}
    project.save(update_fields=["training_config"])
    for _ in range(2):
        with on_commit():
            round_ = rounds.round_start(project=project, num_prompts=1)
        _rank_all(round_)
        with on_commit():
            rounds.round_advance(round_=round_)
        round_.refresh_from_db()
        assert round_.stage == "done", round_.error
    first, second = TrainingRun.objects.filter(project=project, kind="ppo").order_by("id")
    assert first.config["init_kl_coef"] == 0.05  # nothing to continue yet
    # Where the first run's controller ended (its kl_coef metric), unless told otherwise.
    assert second.config["init_kl_coef"] == (0.08 if carry else 0.05)


@pytest.mark.django_db
def test_a_run_reaped_while_still_working_cannot_make_its_model_current(
    project_with_prompts, tmp_path
):
    """Its heartbeats stalled (say a long model load), the reaper failed it, then the body
    finished after all: the reaper's verdict stands and the new model is not promoted."""
    project = project_with_prompts
    run = TrainingRun.objects.create(project=project, kind="rm")
    produced = []

    def body(run: TrainingRun, reporter: runs.RunReporter) -> dict:
        later = timezone.now() + timedelta(hours=1)  # the heartbeat looks an hour old
        assert runs.runs_reap_stale(now=later) == [run.pk]
        version = registry.model_version_create(project=project, kind="rm")
        version.artifact = str(_artifact(tmp_path / "rm-late"))
        version.save()
        produced.append(version)
        return publish(run, version, lambda out: None, {"accuracy": 0.9})

    finished = runs.run_execute(run_id=run.pk, body=body)
    assert finished.status == "failed" and "stopped responding" in finished.error
    produced[0].refresh_from_db()
    assert produced[0].status == "failed" and not produced[0].is_current
    assert "was not made current" in produced[0].metrics["error"]
    assert registry.current_reward_model(project=project) is None


@pytest.mark.django_db
def test_a_reaped_run_is_told_to_stop(project_with_prompts) -> None:
    """A stalled run the reaper failed stops at its next check instead of training on."""
    run = TrainingRun.objects.create(project=project_with_prompts, kind="ppo")
    seen = []

    def body(run: TrainingRun, reporter: runs.RunReporter) -> dict:
        reporter._last_cancel_check = -1e9
        seen.append(reporter.should_stop())  # running: go on
        runs.runs_reap_stale(now=timezone.now() + timedelta(hours=1))
        reporter._last_cancel_check = -1e9
        seen.append(reporter.should_stop())  # reaped: stop
        raise runs.RunCancelled()

    finished = runs.run_execute(run_id=run.pk, body=body)
    assert seen == [False, True]
    assert finished.status == "failed" and "stopped responding" in finished.error


def test_ppo_checkpoints_live_under_the_artifact_dir(settings, tmp_path) -> None:
    from types import SimpleNamespace

    from training.services.run_bodies.ppo import ppo_checkpoints

    settings.RLHF_ARTIFACT_DIR = tmp_path
    round_ = SimpleNamespace(pk=3, reward_model_id=7)
    start = SimpleNamespace(pk=2)
    plain = ppo_checkpoints(round_, start)  # type: ignore[arg-type]
    assert plain == tmp_path / "checkpoints" / "round-3-rm-7-from-2"


# --- How many prompts a round may ask for (issue 9 item 7) -----------------------------------


def test_round_start_refuses_more_prompts_than_the_project_has(project, bodies) -> None:
    from django.core.management import CommandError, call_command

    from core.exceptions import ApplicationError

    PromptFactory.create_batch(21, project=project)
    PromptFactory.create_batch(3, project=project, split="eval")  # never sampled by a round
    expected = "num_prompts: 5000 asked, 21 train prompts available"
    with pytest.raises(ApplicationError) as error:
        rounds.round_start(project=project, num_prompts=5000)
    assert error.value.message == expected
    with pytest.raises(CommandError, match=expected):
        call_command("start_round", project.slug, "--prompts", "5000")
    with pytest.raises(CommandError, match="num_prompts: must be a positive integer"):
        call_command("start_round", project.slug, "--prompts", "0")
    assert not Round.objects.filter(project=project).exists()
    assert rounds.round_start(project=project, num_prompts=21).num_prompts == 21


def test_prompts_ranked_in_an_earlier_round_still_count(project, bodies) -> None:
    """The generate run reuses ranked prompts after the fresh ones (selectors.prompts_for_round)."""
    prompts = PromptFactory.create_batch(2, project=project)
    RankingTaskFactory(project=project, prompt=prompts[0])
    assert rounds.round_start(project=project, num_prompts=2).num_prompts == 2


def test_round_start_api_answers_400_with_the_count(admin_client_api, project, bodies) -> None:
    PromptFactory.create_batch(21, project=project)
    url = f"/api/v1/projects/{project.slug}/rounds/"
    response = admin_client_api.post(url, {"num_prompts": 5000}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"] == "num_prompts: 5000 asked, 21 train prompts available"
    for bad in (0, -3, 10**6, "many", True, 2.5):
        response = admin_client_api.post(url, {"num_prompts": bad}, format="json")
        assert response.status_code == 400, bad
        assert response.json()["detail"].startswith("num_prompts: "), bad
    assert not Round.objects.filter(project=project).exists()


def test_without_num_prompts_a_round_takes_at_most_the_train_prompts(project, bodies) -> None:
    from core.exceptions import ApplicationError

    with pytest.raises(ApplicationError, match="16 asked, 0 train prompts available"):
        rounds.round_start(project=project)
    PromptFactory.create_batch(5, project=project)
    assert rounds.round_start(project=project).num_prompts == 5  # prompts_per_round is 16


def test_a_round_records_its_recipe_and_refuses_unknown_ones(
    admin_client_api, project, bodies
) -> None:
    """PRODUCT.md's `{"num_prompts": N, "recipe": "dpo"}`: the round shows its recipe; an
    unknown recipe is a 400 naming the field, never a silent PPO round."""
    PromptFactory.create_batch(3, project=project)
    url = f"/api/v1/projects/{project.slug}/rounds/"
    for recipe in ("sft", "DPO", "", None, 3):
        response = admin_client_api.post(url, {"num_prompts": 2, "recipe": recipe}, format="json")
        assert response.status_code == 400, recipe
        assert response.json()["detail"].startswith("recipe: "), recipe
    assert not Round.objects.filter(project=project).exists()
    response = admin_client_api.post(url, {"num_prompts": 2, "recipe": "dpo"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["recipe"] == "dpo"
    detail = admin_client_api.get(f"/api/v1/rounds/{response.json()['id']}/")
    assert detail.json()["recipe"] == "dpo"
