"""The generate stage split into shard runs: the real generate body on the `tiny` model,
Celery eager (the real-worker version with two workers is in test_e2e_worker.py)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from core.exceptions import ApplicationError
from labeling.models import RankingTask, Response
from tests.factories import ProjectFactory, PromptFactory
from training.api.serializers import RoundOut
from training.models import Round, TrainingRun
from training.services import rounds, run_bodies
from training.services.config_schema import training_config_check
from training.services.generate_stage import shard_prompt_ids
from training.services.run_bodies.common import stable_seed
from training.services.run_bodies.generate import generate_body
from training.services.runs import run_execute
from training.tasks import gpu_execute_run

K = 2
PROMPTS = 6


def _project(shards: int):
    project = ProjectFactory(
        k=K,
        max_new_tokens=5,
        training_config={
            "prompts_per_round": PROMPTS,
            "generate": {"prompts_per_batch": 2, "batch_size": 3, "shards": shards},
        },
    )
    PromptFactory.create_batch(PROMPTS + 1, project=project)
    return project


def _set_shards(project, shards: int) -> None:
    project.training_config = {
        **project.training_config,
        "generate": {**project.training_config["generate"], "shards": shards},
    }
    project.save(update_fields=["training_config"])


def _stored(round_: Round) -> dict[int, list[tuple[int, int, str, bool]]]:
    """prompt id -> its responses as (position, seed, text, finished)."""
    out: dict[int, list] = {}
    for r in Response.objects.filter(task__round=round_).select_related("task"):
        out.setdefault(r.task.prompt_id, []).append((r.position, r.seed, r.text, r.finished))
    return {pid: sorted(rows) for pid, rows in out.items()}


def _shard_runs(round_: Round) -> list[TrainingRun]:
    return list(round_.runs.filter(kind="generate").order_by("id"))


def test_shards_are_contiguous_whole_batches() -> None:
    ids = list(range(10))
    assert shard_prompt_ids(ids, shards=3, batch=2) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert shard_prompt_ids(ids, shards=1, batch=4) == [ids]
    assert shard_prompt_ids(ids, shards=8, batch=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert shard_prompt_ids([], shards=4, batch=2) == [[]]


@pytest.mark.django_db
def test_the_shard_count_is_checked() -> None:
    assert training_config_check({"generate": {"shards": 4}}) == {"generate": {"shards": 4}}
    for bad in (0, 257, 1.5, "2"):
        with pytest.raises(ApplicationError, match=r"training_config\.generate\.shards"):
            training_config_check({"generate": {"shards": bad}})


@pytest.mark.slow
@pytest.mark.django_db
def test_three_shards_store_exactly_what_one_run_does(on_commit) -> None:
    project = _project(shards=1)
    with on_commit():
        one = rounds.round_start(project=project)
    one.refresh_from_db()
    assert one.stage == "labeling", one.error
    assert len(_shard_runs(one)) == 1
    single = _stored(one)
    assert len(single) == PROMPTS and all(len(rows) == K for rows in single.values())
    for prompt_id, rows in single.items():  # a prompt's own seeds, whatever shares its batch
        assert [seed for _, seed, _, _ in rows] == [
            stable_seed(project.pk, 1, prompt_id) + j for j in range(K)
        ]

    # The same round again (same project, number and prompts, so the same seeds), in 3 shards.
    RankingTask.objects.filter(project=project).delete()
    one.delete()
    _set_shards(project, 3)
    with on_commit():
        three = rounds.round_start(project=project)
    three.refresh_from_db()
    assert (three.number, three.stage) == (1, "labeling"), three.error
    shards = _shard_runs(three)
    assert [r.inputs["shard"] for r in shards] == [0, 1, 2]
    assert [len(r.inputs["prompt_ids"]) for r in shards] == [2, 2, 2]
    assert all(r.status == "succeeded" and r.metrics["tasks"] == 2 for r in shards)
    assert _stored(three) == single
    assert three.metrics["generate/tasks"] == PROMPTS
    assert three.metrics["generate/shards"] == 3


def _counts(progress: dict) -> dict:
    """done/total of a progress (phase, elapsed and ETA: test_progress.py)."""
    return {"done": progress["done"], "total": progress["total"]}


@pytest.mark.slow
@pytest.mark.django_db
def test_the_round_waits_for_its_last_shard_and_sums_their_progress(
    django_capture_on_commit_callbacks,
) -> None:
    project = _project(shards=3)
    with django_capture_on_commit_callbacks(execute=False):
        round_ = rounds.round_start(project=project)
    shards = _shard_runs(round_)
    assert len(shards) == 3
    assert _counts(RoundOut(round_).data["progress"]) == {"done": 0, "total": PROMPTS * K}

    for done, run in enumerate(shards, start=1):
        gpu_execute_run(run.pk)
        round_.refresh_from_db()
        assert round_.tasks.count() == 2 * done
        if done < len(shards):
            assert round_.stage == "generating"
            progress = RoundOut(round_).data["progress"]
            assert _counts(progress) == {"done": 2 * done * K, "total": PROMPTS * K}
    assert round_.stage == "labeling", round_.error
    assert _counts(RoundOut(round_).data["progress"]) == {"done": 0, "total": PROMPTS}  # rankings


@pytest.mark.slow
@pytest.mark.django_db
def test_a_shard_run_twice_adds_nothing(on_commit) -> None:
    project = _project(shards=2)
    with on_commit():
        round_ = rounds.round_start(project=project)
    round_.refresh_from_db()
    before = _stored(round_)
    task_ids = set(round_.tasks.values_list("id", flat=True))
    first = _shard_runs(round_)[0]

    # A duplicated shard: the same prompts again, e.g. a retry whose original also finished.
    again = TrainingRun.objects.create(
        project=project, round=round_, kind="generate", config=first.config, inputs=first.inputs
    )
    again = run_execute(run_id=again.pk, body=generate_body)
    assert again.status == "succeeded", again.error
    size = len(first.inputs["prompt_ids"])
    assert size == 4  # two of the three batches of 2 prompts
    assert again.metrics["tasks"] == size
    assert (again.progress_done, again.progress_total) == (size * K, size * K)  # none sampled
    assert set(round_.tasks.values_list("id", flat=True)) == task_ids
    assert _stored(round_) == before
    rounds.round_on_run_finished(run=again)
    round_.refresh_from_db()
    assert round_.stage == "labeling"


@pytest.mark.slow
@pytest.mark.django_db
def test_a_failed_shard_fails_the_stage_and_a_retry_runs_only_that_shard(
    monkeypatch, on_commit
) -> None:
    project = _project(shards=3)
    failing = {1}

    def body_for(kind: str):
        def body(run, reporter):
            if run.inputs["shard"] in failing:
                raise RuntimeError("CUDA out of memory")
            return generate_body(run, reporter)

        return body

    monkeypatch.setattr(run_bodies, "body_for", body_for)
    with on_commit():
        round_ = rounds.round_start(project=project)
    round_.refresh_from_db()
    failed = _shard_runs(round_)[1]
    assert (round_.stage, round_.failed_stage) == ("failed", "generating")
    assert f"generate run {failed.pk} failed: RuntimeError: CUDA out of memory" in round_.error
    assert round_.tasks.count() == 4  # the other two shards stored theirs

    failing.clear()
    with on_commit():
        rounds.round_advance(round_=round_)
    round_.refresh_from_db()
    assert round_.stage == "labeling", round_.error
    shards = _shard_runs(round_)
    assert [(r.inputs["shard"], r.status) for r in shards] == [
        (0, "succeeded"),
        (1, "failed"),
        (2, "succeeded"),
        (1, "succeeded"),
    ]
    assert shards[3].inputs == failed.inputs
    assert round_.tasks.count() == PROMPTS
    assert Response.objects.filter(task__round=round_).count() == PROMPTS * K


@pytest.mark.slow
@pytest.mark.django_db
def test_a_shard_whose_worker_died_is_reaped_and_retried(
    settings, django_capture_on_commit_callbacks, on_commit
) -> None:
    project = _project(shards=2)
    with django_capture_on_commit_callbacks(execute=False):
        round_ = rounds.round_start(project=project)
    done, dead = _shard_runs(round_)
    gpu_execute_run(done.pk)
    stale = timezone.now() - timedelta(seconds=settings.RLHF_HEARTBEAT_TIMEOUT + 5)
    TrainingRun.objects.filter(pk=dead.pk).update(
        status="running", worker="gpu@gone", started_at=stale, heartbeat_at=stale
    )
    round_.refresh_from_db()
    assert round_.stage == "generating"

    with on_commit():
        rounds.round_advance(round_=round_)  # reaps the dead shard, fails and retries it
    round_.refresh_from_db()
    dead.refresh_from_db()
    assert dead.status == "failed" and "gpu@gone stopped responding" in dead.error
    assert round_.stage == "labeling", round_.error
    assert [r.status for r in _shard_runs(round_)] == ["succeeded", "failed", "succeeded"]
    assert round_.tasks.count() == PROMPTS


@pytest.mark.django_db
def test_cancel_cancels_every_shard_and_a_cancelled_round_gets_no_tasks(
    django_capture_on_commit_callbacks,
) -> None:
    project = _project(shards=3)
    with django_capture_on_commit_callbacks(execute=False):
        round_ = rounds.round_start(project=project)
    rounds.round_cancel(round_=round_)
    assert [r.status for r in _shard_runs(round_)] == ["cancelled"] * 3

    # A shard that was already past its last cancel check when the round was cancelled:
    # storing its tasks under the round's lock stops it instead.
    late = TrainingRun.objects.create(
        project=project, round=round_, kind="generate", inputs=_shard_runs(round_)[0].inputs
    )
    assert run_execute(run_id=late.pk, body=generate_body).status == "cancelled"
    assert not round_.tasks.exists()
