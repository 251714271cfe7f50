"""One whole round on the real ML core with the `tiny` model, tasks run in-process.

The real-worker version (Redis, a Celery process, SIGKILL) is test_e2e_worker.py.
"""

from pathlib import Path

import pytest

from labeling.models import Response
from labeling.services.rankings import ranking_submit
from labeling.services.tasks import task_lease_next
from tests.factories import MembershipFactory, ProjectFactory, PromptFactory
from training.models import MetricPoint, ModelVersion
from training.services import registry, rounds

TINY_CONFIG = {
    "rm": {"batch_size": 2, "max_length": 64, "lr": 1e-3},
    "ppo": {
        "steps": 2, "batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1,
        "max_new_tokens": 6, "forward_batch_size": 4, "checkpoint_every": 0,
    },
}  # fmt: skip


@pytest.fixture
def tiny_project(db, settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    project = ProjectFactory(
        base_model="tiny", k=3, overlap=1, max_new_tokens=6, training_config=TINY_CONFIG
    )
    PromptFactory.create_batch(4, project=project)
    return project


def _label_everything(project, labeler) -> int:  # type: ignore[no-untyped-def]
    done = 0
    while (lease := task_lease_next(project=project, labeler=labeler)) is not None:
        ids = list(lease.task.responses.order_by("position").values_list("id", flat=True))
        order = [[ids[0]], ids[1:]]  # a tie in second place
        ranking_submit(task=lease.task, labeler=labeler, order=order, flags={}, time_spent_ms=900)
        done += 1
    return done


@pytest.mark.slow
@pytest.mark.django_db
def test_round_on_tiny_samples_trains_and_hands_over_the_policy(tiny_project, on_commit):  # type: ignore[no-untyped-def]
    project = tiny_project
    labeler = MembershipFactory(project=project, role="labeler").user
    with on_commit():
        round1 = rounds.round_start(project=project, num_prompts=3)
    round1.refresh_from_db()
    assert round1.stage == "labeling", round1.error
    responses = Response.objects.filter(task__round=round1)
    assert responses.count() == 3 * 3
    assert {r.policy_version_id for r in responses} == {round1.sampling_policy_id}
    assert all(r.seed is not None and r.generation["max_new_tokens"] == 6 for r in responses)

    with on_commit():
        assert _label_everything(project, labeler) == 3  # the last one advances the round
    round1.refresh_from_db()
    assert round1.stage == "done", round1.error

    rm, policy = round1.reward_model, round1.policy
    assert rm.kind == "rm" and rm.is_current and rm.status == "ready"
    assert policy.kind == "ppo" and policy.is_current and policy.parent == round1.sampling_policy
    for version in (rm, policy):
        assert Path(version.artifact, "config.json").is_file()
        assert list(Path(version.artifact).glob("*.safetensors"))
    assert MetricPoint.objects.filter(run__round=round1, run__kind="rm").exists()
    ppo_points = MetricPoint.objects.filter(run__round=round1, run__kind="ppo")
    assert ppo_points.count() == 2
    assert "objective/kl" in ppo_points.first().values
    assert round1.metrics["comparisons_total"] == 3 * 2  # K=3 with one tie: 2 pairs each

    with on_commit():
        round2 = rounds.round_start(project=project, num_prompts=1)
    assert round2.sampling_policy == policy
    assert set(
        Response.objects.filter(task__round=round2).values_list("policy_version", flat=True)
    ) == {policy.pk}
    assert registry.current_policy(project=project) == policy
    assert ModelVersion.objects.filter(project=project, is_current=True).count() == 2


@pytest.mark.slow
@pytest.mark.django_db
def test_sft_on_demonstrations_becomes_the_policy_and_the_reference(tiny_project, on_commit):  # type: ignore[no-untyped-def]
    from core.exceptions import ApplicationError
    from tests.factories import DemonstrationFactory
    from training.services.sft import sft_start

    with pytest.raises(ApplicationError, match="no demonstrations"):
        sft_start(project=tiny_project)
    DemonstrationFactory.create_batch(4, project=tiny_project)
    base = registry.current_policy(project=tiny_project)
    with on_commit():
        run = sft_start(project=tiny_project, config={"epochs": 1, "batch_size": 2})
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    sft = run.output
    assert sft.kind == "sft" and sft.parent == base and sft.is_current
    assert registry.reference_policy(project=tiny_project) == sft
    assert MetricPoint.objects.filter(run=run).exists()
