"""One whole round on the real ML core with the `tiny` model, tasks run in-process.

The real-worker version (Redis, a Celery process, SIGKILL) is test_e2e_worker.py.
"""

from pathlib import Path

import pytest

from labeling.models import Response
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
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
def tiny_project(db, settings, tmp_path):
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    project = ProjectFactory(
        base_model="tiny", k=3, overlap=1, max_new_tokens=6, training_config=TINY_CONFIG
    )
    PromptFactory.create_batch(4, project=project)
    PromptFactory.create_batch(2, project=project, split="eval")  # the policy gate's prompts
    return project


def _label_everything(project, labeler) -> int:
    done = 0
    while (lease := task_lease_next(project=project, labeler=labeler)) is not None:
        ids = list(lease.task.responses.order_by("position").values_list("id", flat=True))
        order = [[ids[0]], ids[1:]]  # a tie in second place
        ranking_submit(task=lease.task, labeler=labeler, order=order, flags={}, time_spent_ms=900)
        done += 1
    return done


@pytest.mark.slow
@pytest.mark.django_db
def test_round_on_tiny_samples_trains_and_hands_over_the_policy(
    tiny_project, on_commit, through_gate
):
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
    through_gate(round1)
    assert round1.stage == "done", round1.error
    # The gate measured both of its stages on the real bodies' figures.
    assert isinstance(round1.gate["training_rm"]["new"]["heldout_accuracy"], float)
    policy_gate = round1.gate["training_ppo"]
    assert policy_gate["new"]["eval_prompts"] == 2
    assert all(isinstance(policy_gate["new"][k], float) for k in ("score", "kl_to_ref"))

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

    # Round 2 trains a new RM on both rounds' rankings; its PPO starts again from the SFT
    # reference (init_from "reference", the default), not from round 1's policy.
    with on_commit():
        _label_everything(project, labeler)
    through_gate(round2)
    assert round2.stage == "done", round2.error
    # Round 1's RM was current: round 2's RM run measured it on the same split.
    assert round2.gate["training_rm"]["current"]["model"] == rm.label
    assert isinstance(round2.gate["training_rm"]["current"]["heldout_accuracy"], float)
    assert round2.policy.parent == registry.reference_policy(project=project) != policy
    assert round2.policy.is_current and not ModelVersion.objects.get(pk=policy.pk).is_current


@pytest.mark.slow
@pytest.mark.django_db
def test_sft_on_demonstrations_becomes_the_policy_and_the_reference(tiny_project, on_commit):
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


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("case", ["resume", "corrupt", "config changed"])
def test_a_retried_ppo_stage_resumes_from_the_failed_attempts_checkpoint(
    tiny_project, on_commit, through_gate, monkeypatch, case
):
    """The worker dies after step 2 of 4 (checkpoint every 2): the retry runs steps 3-4 only.
    A corrupt checkpoint, or one trained with another config (an admin changed the PPO
    settings after the failure), is set aside (kept) and the retry starts from the start."""
    from training.ml import ppo
    from training.models import TrainingRun
    from training.services.run_bodies.ppo import ppo_checkpoints

    project = tiny_project
    project.training_config = {
        **TINY_CONFIG, "ppo": {**TINY_CONFIG["ppo"], "steps": 4, "checkpoint_every": 2}
    }  # fmt: skip
    project.save(update_fields=["training_config"])
    labeler = MembershipFactory(project=project, role="labeler").user
    real_step, calls = ppo.ppo_step, []

    def dies_at_step_3(*args, **kwargs):
        step = args[5]
        calls.append(step)
        if step == 2 and calls.count(2) == 1:
            raise RuntimeError("worker lost")  # as a killed worker would leave it: failed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(ppo, "ppo_step", dies_at_step_3)
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=2)
    with on_commit():
        _label_everything(project, labeler)
    through_gate(round_)
    assert (round_.stage, round_.failed_stage) == ("failed", "training_ppo")
    assert calls == [0, 1, 2]
    saved = ppo_checkpoints(round_, registry.reference_policy(project=project))
    assert [p.name for p in saved.glob("step-*")] == ["step-000002"]
    if case == "corrupt":
        (saved / "step-000002" / "critic.safetensors").write_bytes(b"half a file")
    if case == "config changed":
        project.training_config["ppo"]["lr"] = 3e-4
        project.save(update_fields=["training_config"])

    with on_commit():
        rounds.round_advance(round_=round_)  # retry the failed stage
    through_gate(round_)
    assert round_.stage == "done", round_.error
    retry = TrainingRun.objects.filter(round=round_, kind="ppo").latest("id")
    if case in ("corrupt", "config changed"):
        assert calls == [0, 1, 2, 0, 1, 2, 3]
        assert retry.metrics["step"] == 4 and "resumed_from" not in retry.metrics
        kept = [p.name for p in saved.iterdir()]
        if case == "corrupt":
            assert "cannot resume from checkpoint" in retry.logs and "set aside" in retry.logs
            assert len(kept) == 1 and kept[0].startswith(".corrupt-step-000002")
        else:
            assert "step-000002 was trained with other lr; starting over" in retry.logs
            assert len(kept) == 1 and kept[0].startswith(".superseded-step-000002")
    else:
        assert calls == [0, 1, 2, 2, 3]  # steps 3 and 4 (0-based 2, 3) only
        assert retry.metrics["resumed_from"] == 2
        assert list(retry.points.values_list("step", flat=True)) == [3, 4]
        assert "resumed from the checkpoint of step 2" in retry.logs
        assert list(saved.iterdir()) == []  # cleaned up once the version was published


@pytest.mark.django_db
def test_ppo_starts_from_the_reference_or_the_rounds_policy(tiny_project) -> None:
    from core.exceptions import ApplicationError
    from training.models import Round
    from training.services.run_bodies.ppo import ppo_init_version

    reference = registry.reference_policy(project=tiny_project)
    previous = registry.model_version_create(project=tiny_project, kind="ppo")
    round_ = Round.objects.create(project=tiny_project, number=1, sampling_policy=previous)
    assert ppo_init_version(round_, {}) == reference
    assert ppo_init_version(round_, {"init_from": "reference"}) == reference
    assert ppo_init_version(round_, {"init_from": "policy"}) == previous
    with pytest.raises(ApplicationError, match="init_from must be one of reference, policy"):
        ppo_init_version(round_, {"init_from": "sft"})
