"""The loop end to end on PostgreSQL + Redis with a REAL Celery worker process and `tiny`.

The test process plays the web app and the people: it starts rounds, and synthetic
labelers rank through the labeling services. Everything else happens in a separate
`celery worker` process that reads the same test database and takes tasks from Redis:
sampling, building pairs, RM and PPO training, and moving the round on. Nothing here
runs eagerly. The second test SIGKILLs that worker in the middle of RM training.

Runs when DATABASE_URL is PostgreSQL and CELERY_BROKER_URL is Redis (always in CI, where
tests/conftest.py refuses anything else); skipped otherwise.
"""

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection, transaction

from config.celery import app as celery_app
from formats.preferences import pairs_from_tie_groups
from labeling.models import Comparison, Project, Ranking, RankingTask, Response
from tests.factories import ProjectFactory, PromptFactory
from training.ml.reward.model import is_reward_model_folder
from training.models import ModelVersion, Round, TrainingRun
from training.services.rounds import round_advance, round_approve, round_start
from training.services.simulation import labelers_simulate
from training.tasks import gpu_execute_run

ON_POSTGRES = "postgresql" in settings.DATABASES["default"]["ENGINE"]
ON_REDIS = settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
# Seconds without a heartbeat before a run counts as abandoned: longer than the kill test
# takes, so only the restarted node's own recovery can fail the killed run there.
HEARTBEAT_TIMEOUT = 120
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.celery,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        not (ON_POSTGRES and ON_REDIS),
        reason="needs PostgreSQL (DATABASE_URL) and Redis (CELERY_BROKER_URL)",
    ),
]

# A tiny but complete loop: 4 prompts of K=3 short samples, 2 PPO steps.
FAST_CONFIG: dict[str, Any] = {
    "prompts_per_round": 4,
    "generate": {"prompts_per_batch": 4, "batch_size": 12},
    "rm": {"batch_size": 2, "epochs": 1, "max_length": 64, "lr": 1e-4},
    "ppo": {
        "steps": 2,
        "batch_size": 4,
        "mini_batch_size": 2,
        "ppo_epochs": 1,
        "max_new_tokens": 8,
        "forward_batch_size": 4,
    },
}
# Hundreds of RM steps (100 epochs, the most RMConfig allows): long enough to be killed in
# the middle.
SLOW_RM = {"batch_size": 1, "epochs": 100, "max_length": 64, "lr": 1e-5}


# --------------------------------------------------------------------------- the worker


class Worker:
    """A `celery -A config worker` subprocess on the test database; its log in a file."""

    _alive: set["Worker"] = set()  # killed at exit too, whatever happened to the test

    def __init__(self, env: dict[str, str], log: Path, name: str, beat: bool = False) -> None:
        self.log, self.name = log, name
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-Q",
                "default,gpu",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "-l",
                "info",
                "-n",
                name,
                *(["--beat"] if beat else []),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed as one
        )
        Worker._alive.add(self)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log_text():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"the worker exited at start:\n{self.log_tail()}")
            time.sleep(0.3)
        raise AssertionError(f"the worker was not ready after {timeout}s:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self._log_file.close()
        Worker._alive.discard(self)

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not exit within 10 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        self.kill()

    def exited(self) -> bool:
        return self.process.poll() is not None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 80) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- worker log ({self.log}) ---\n" + "\n".join(tail)


@atexit.register
def _kill_leftover_workers() -> None:
    for worker in list(Worker._alive):
        worker.kill()


def _database_url() -> str:
    """The URL of the test database pytest-django created (test_<name>), for the worker."""
    db = connection.settings_dict
    auth = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        auth += ":" + quote(db["PASSWORD"], safe="")
    host = f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgres://{auth + '@' if auth else ''}{host}/{db['NAME']}"


@pytest.fixture
def start_worker(transactional_db, tmp_path, settings) -> Iterator[Callable[..., Worker]]:
    """Start workers on demand; all are stopped before the database is flushed."""
    artifacts = tmp_path / "artifacts"
    settings.RLHF_ARTIFACT_DIR = artifacts
    settings.RLHF_HEARTBEAT_TIMEOUT = HEARTBEAT_TIMEOUT
    settings.CELERY_TASK_ALWAYS_EAGER = False
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False  # this process sends to Redis, never runs tasks
    celery_app.control.purge()  # messages left in the queues by an earlier run
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "RLHF_DEVICE": "cpu",
        "RLHF_DTYPE": "float32",
        "RLHF_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        "RLHF_PROGRESS_INTERVAL": "0.2",
        "RLHF_REAP_INTERVAL": "1",  # beat's reaper, for workers started with beat=True
        "RLHF_ARTIFACT_DIR": str(artifacts),
        "RLHF_STUDIO_VAR_DIR": str(tmp_path / "var"),
        "PYTHONUNBUFFERED": "1",
    }
    workers: list[Worker] = []

    def start(name: str | None = None, beat: bool = False) -> Worker:
        """A new worker; `name` restarts the node of an earlier one (its node name)."""
        name = name or f"e2e-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        worker = Worker(env, tmp_path / f"worker-{len(workers) + 1}.log", name, beat=beat)
        workers.append(worker)
        worker.wait_ready()
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            worker.stop()
            print(worker.log_tail(200))  # shown by pytest when the test failed
        celery_app.conf.task_always_eager = eager


# --------------------------------------------------------------------------- helpers


def _describe(round_id: int) -> str:
    round_ = Round.objects.get(pk=round_id)
    runs = [
        f"  {r.kind} run {r.pk}: {r.status} {r.progress_done}/{r.progress_total} {r.error}"
        for r in round_.runs.order_by("id")
    ]
    return "\n".join([f"round {round_.number}: {round_.stage} {round_.error}", *runs])


def wait_for(
    check: Callable[[], Any],
    *,
    what: str,
    round_id: int,
    worker: Worker,
    timeout: float = 300,
    poll: float = 0.5,
) -> Any:
    """Poll `check` until it returns something truthy; fail with the round and worker log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if worker.exited():
            break
        time.sleep(poll)
    status = "the worker exited" if worker.exited() else f"timed out after {timeout}s"
    raise AssertionError(f"{status} waiting for {what}\n{_describe(round_id)}\n{worker.log_tail()}")


def _stage_is(round_id: int, *stages: str) -> Callable[[], bool]:
    return lambda: Round.objects.get(pk=round_id).stage in stages


def _loop_project(**overrides: Any) -> Project:
    project = ProjectFactory(
        k=3,
        overlap=1,
        base_model="tiny",
        max_new_tokens=8,
        training_config=FAST_CONFIG,
        **overrides,
    )
    PromptFactory.create_batch(6, project=project)
    PromptFactory.create_batch(2, project=project, split="eval")
    return project


def run_round(project: Project, worker: Worker) -> Round:
    """Start a round, let synthetic labelers rank, and wait until it is done; where the
    promotion gate stops it (tiny random models), approve it as an admin would."""
    round_ = round_start(project=project)
    wait_for(
        _stage_is(round_.pk, Round.Stage.LABELING, Round.Stage.FAILED),
        what="samples (labeling stage)",
        round_id=round_.pk,
        worker=worker,
    )
    round_.refresh_from_db()
    assert round_.stage == Round.Stage.LABELING, _describe(round_.pk)
    assert round_.tasks.count() == 4
    summary = labelers_simulate(project=project, preference="length:longer", labelers=2)
    assert summary["rankings"] == 4 and summary["open_tasks_left"] == 0
    return finish_round(round_, worker)


def finish_round(round_: Round, worker: Worker, what: str = "RM and PPO (done)") -> Round:
    """Wait until the round is done, approving it where the promotion gate stops it."""
    resting = (Round.Stage.DONE, Round.Stage.FAILED, Round.Stage.NEEDS_REVIEW)
    while True:
        wait_for(_stage_is(round_.pk, *resting), what=what, round_id=round_.pk, worker=worker)
        round_.refresh_from_db()
        if round_.stage != Round.Stage.NEEDS_REVIEW:
            break
        round_approve(round_=round_)
    assert round_.stage == Round.Stage.DONE, _describe(round_.pk)
    return round_


def current_models(project: Project) -> dict[str, int]:
    return dict(
        ModelVersion.objects.filter(project=project, is_current=True).values_list("role", "pk")
    )


# --------------------------------------------------------------------------- tests


def test_a_round_runs_through_rm_and_ppo_on_a_real_worker(start_worker) -> None:
    worker = start_worker()
    project = _loop_project()

    first = run_round(project, worker)

    runs = {r.kind: r for r in first.runs.all()}
    assert set(runs) == {"generate", "rm", "ppo", "eval"}  # eval: the policy gate's figures
    assert all(r.status == TrainingRun.Status.SUCCEEDED for r in runs.values())
    assert all(r.worker for r in runs.values())  # executed by the worker, not in here
    assert runs["ppo"].points.count() == 2  # one metric point per PPO step
    assert first.reward_model.kind == "rm" and first.policy.kind == "ppo"
    assert first.policy.parent == first.sampling_policy
    assert current_models(project) == {"policy": first.policy.pk, "reward": first.reward_model.pk}
    assert Path(first.policy.artifact, "config.json").is_file()
    assert is_reward_model_folder(first.reward_model.artifact)  # a scalar head, not an LM
    # Every pair between different tie groups of each ranking (C(3,2) without ties).
    pairs = sum(len(pairs_from_tie_groups(r.tie_groups)) for r in Ranking.objects.all())
    assert 4 * 2 <= Comparison.objects.filter(round=first).count() == pairs <= 4 * 3

    second = round_start(project=project)
    wait_for(
        _stage_is(second.pk, Round.Stage.LABELING, Round.Stage.FAILED),
        what="round 2 samples",
        round_id=second.pk,
        worker=worker,
    )
    second.refresh_from_db()
    assert second.stage == Round.Stage.LABELING, _describe(second.pk)
    assert second.sampling_policy == first.policy
    responses = Response.objects.filter(task__round=second)
    assert responses.count() == 4 * 3
    assert set(responses.values_list("policy_version", flat=True)) == {first.policy.pk}
    assert set(responses.values_list("policy_name", flat=True)) == {first.policy.label}


def test_a_worker_killed_during_rm_training_fails_the_run_and_the_round_can_be_retried(
    start_worker,
) -> None:
    worker = start_worker()
    project = _loop_project()
    first = run_round(project, worker)
    before = current_models(project)

    project.training_config = {**FAST_CONFIG, "rm": SLOW_RM}
    project.save(update_fields=["training_config"])
    second = round_start(project=project)
    wait_for(
        _stage_is(second.pk, Round.Stage.LABELING),
        what="round 2 samples",
        round_id=second.pk,
        worker=worker,
    )
    labelers_simulate(project=project, preference="length:longer", labelers=2)
    comparisons = Comparison.objects.filter(project=project).count()

    def rm_run_in_progress() -> TrainingRun | None:
        return TrainingRun.objects.filter(
            round=second, kind="rm", status=TrainingRun.Status.RUNNING, progress_done__gte=3
        ).first()

    rm_run = wait_for(
        rm_run_in_progress, what="RM training steps", round_id=second.pk, worker=worker
    )
    worker.kill(signal.SIGKILL)

    rm_run.refresh_from_db()
    assert rm_run.status == TrainingRun.Status.RUNNING  # nobody is left to say otherwise
    assert 3 <= rm_run.progress_done < rm_run.progress_total
    # The retry should be quick: later RM runs copy the fast config again.
    project.training_config = FAST_CONFIG
    project.save(update_fields=["training_config"])
    # The same node comes back at once, well within the heartbeat timeout: it knows that
    # whatever it was running is dead, and fails it when it starts (worker_ready).
    assert rm_run.worker == worker.name
    worker = start_worker(worker.name)

    wait_for(
        _stage_is(second.pk, Round.Stage.FAILED),
        what="the reaped run to fail the round",
        round_id=second.pk,
        worker=worker,
    )
    rm_run.refresh_from_db()
    second.refresh_from_db()
    assert rm_run.status == TrainingRun.Status.FAILED
    assert f"{worker.name} was restarted" in rm_run.error, rm_run.error
    assert "nothing it produced" in rm_run.error
    assert second.failed_stage == Round.Stage.TRAINING_RM
    assert f"rm run {rm_run.pk} failed" in second.error
    # Nothing half-written became current: the previous RM and policy still are.
    assert (
        current_models(project)
        == before
        == {
            "policy": first.policy.pk,
            "reward": first.reward_model.pk,
        }
    )
    assert not ModelVersion.objects.filter(project=project, pk__gt=first.policy.pk).exists()

    # Retry the failed stage. Redis hands a killed worker's unacknowledged message out
    # again once its visibility timeout has passed; here that late copy of the dead run's
    # message arrives just before the retry's own, and must change nothing.
    with transaction.atomic():
        transaction.on_commit(lambda: gpu_execute_run.delay(rm_run.pk))
        round_advance(round_=second)

    finish_round(second, worker, what="the retried round")
    rm_runs = list(second.runs.filter(kind="rm").order_by("id").values_list("status", flat=True))
    assert rm_runs == [TrainingRun.Status.FAILED, TrainingRun.Status.SUCCEEDED]
    assert current_models(project) == {
        "policy": second.policy.pk,
        "reward": second.reward_model.pk,
    }
    assert second.reward_model.status == ModelVersion.Status.READY
    # The retry duplicated neither tasks nor pairs.
    assert RankingTask.objects.filter(round=second).count() == 4
    assert Comparison.objects.filter(project=project).count() == comparisons


def test_beat_fails_the_runs_of_a_worker_that_never_came_back(start_worker) -> None:
    """A GPU machine died mid-run and stays down: no worker of its name ever starts again.
    Celery beat's periodic reaper (here every second) fails its run and the round, once the
    run's heartbeat is older than RLHF_HEARTBEAT_TIMEOUT."""
    from datetime import timedelta

    from django.utils import timezone

    from training.services.registry import current_policy

    worker = start_worker(beat=True)
    project = _loop_project()
    round_ = Round.objects.create(
        project=project,
        number=1,
        stage=Round.Stage.TRAINING_RM,
        sampling_policy=current_policy(project=project),
    )
    # Created after the worker started: only the periodic reaper can find it, not the
    # reaping a worker does when it starts.
    stale = timezone.now() - timedelta(seconds=HEARTBEAT_TIMEOUT + 60)
    run = TrainingRun.objects.create(
        project=project,
        round=round_,
        kind="rm",
        status=TrainingRun.Status.RUNNING,
        worker="gpu@machine-that-died",
        started_at=stale,
        heartbeat_at=stale,
    )
    wait_for(
        _stage_is(round_.pk, Round.Stage.FAILED),
        what="beat's reaper",
        round_id=round_.pk,
        worker=worker,
        timeout=90,
    )
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "gpu@machine-that-died stopped responding" in run.error
    assert "beat: Starting" in worker.log_text()


def test_two_workers_sample_the_shards_of_one_round(start_worker) -> None:
    """generate.shards = 4: both workers take shard runs (prefetch 1, acks late: a busy
    worker holds one message), and the round reaches labeling with every task once."""
    first, second = start_worker(), start_worker()
    project = _loop_project()
    project.training_config = {
        **FAST_CONFIG,
        "generate": {"prompts_per_batch": 1, "batch_size": 3, "shards": 4},
    }
    project.save(update_fields=["training_config"])
    round_ = round_start(project=project)
    shards = list(round_.runs.filter(kind="generate").order_by("id"))
    assert [len(r.inputs["prompt_ids"]) for r in shards] == [1, 1, 1, 1]
    for worker in (first, second):
        wait_for(
            _stage_is(round_.pk, Round.Stage.LABELING, Round.Stage.FAILED),
            what="samples of 4 shards (labeling stage)",
            round_id=round_.pk,
            worker=worker,
        )
    round_.refresh_from_db()
    assert round_.stage == Round.Stage.LABELING, _describe(round_.pk)
    shards = list(round_.runs.filter(kind="generate").order_by("id"))
    assert all(r.status == TrainingRun.Status.SUCCEEDED for r in shards), _describe(round_.pk)
    assert {r.worker for r in shards} == {first.name, second.name}
    tasks = RankingTask.objects.filter(round=round_)
    assert tasks.count() == 4
    assert sorted(tasks.values_list("prompt_id", flat=True)) == sorted(
        pid for r in shards for pid in r.inputs["prompt_ids"]
    )
    assert Response.objects.filter(task__round=round_).count() == 4 * 3
    assert round_.metrics["generate/shards"] == 4


def test_a_round_cancelled_mid_generation_stops_sampling_and_serves_nothing(
    start_worker,
) -> None:
    """Cancel while the worker decodes the second of three batches: the sampler sees the
    cancel between decoding steps (the run says so in its log) instead of finishing the
    batch, the first batch's tasks are closed, and after a new round starts the labeler
    is served only the new round's tasks."""
    from labeling.services.leasing import task_lease_next
    from labeling.services.rankings import ranking_submit
    from tests.factories import MembershipFactory
    from training.services.rounds import round_cancel

    worker = start_worker()
    project = _loop_project()
    # A batch must outlast the poll below and the run's cancel checks (every 0.2 s): tiny
    # decodes 128 tokens in well under a second on a fast core.
    project.max_new_tokens = 1024
    project.training_config = {
        **FAST_CONFIG,
        "prompts_per_round": 3,
        "generate": {"prompts_per_batch": 1, "batch_size": 3},
    }
    project.save(update_fields=["training_config", "max_new_tokens"])
    labeler = MembershipFactory(project=project, role="labeler").user
    first = round_start(project=project)
    # Cancel once the second batch is decoding (its sub-step label is written at its first
    # token), not when the first batch's task appears: a cancel landing between batches is
    # seen by the loop, before the sampler, and would not test the sampler at all.
    wait_for(
        lambda: TrainingRun.objects.filter(
            round=first, kind="generate", progress_detail__step="batch 2/3"
        ).exists(),
        what="the second batch to start decoding",
        round_id=first.pk,
        worker=worker,
        poll=0.05,
    )
    round_cancel(round_=first)
    run = first.runs.get(kind="generate")
    wait_for(
        lambda: TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.CANCELLED,
        what="the generate run to stop",
        round_id=first.pk,
        worker=worker,
        timeout=30,
    )
    run.refresh_from_db()
    assert "stopped between decoding steps" in run.logs, run.logs
    stored = RankingTask.objects.filter(round=first)
    assert stored.count() < 3
    assert not stored.filter(status=RankingTask.Status.OPEN).exists()
    first.refresh_from_db()
    assert (first.stage, first.failed_stage) == ("cancelled", "generating")

    project.max_new_tokens = 8
    project.save(update_fields=["max_new_tokens"])
    second = round_start(project=project)
    wait_for(
        _stage_is(second.pk, Round.Stage.LABELING, Round.Stage.FAILED),
        what="round 2 samples",
        round_id=second.pk,
        worker=worker,
    )
    assert Round.objects.get(pk=second.pk).stage == Round.Stage.LABELING, _describe(second.pk)
    served = []
    while (lease := task_lease_next(project=project, labeler=labeler)) is not None:
        served.append(lease.task)
        ids = list(lease.task.responses.order_by("position").values_list("id", flat=True))
        ranking_submit(
            task=lease.task, labeler=labeler, order=[[i] for i in ids], flags={}, time_spent_ms=1
        )
    assert [t.round_id for t in served] == [second.pk] * 3
    assert stored.count() == RankingTask.objects.filter(round=first).count()  # nothing later
