"""A round whose PPO stage trains LoRA (training_config ppo.lora_r) on the `tiny` model,
tasks in-process: two base copies, a resumed retry, a plain published policy."""

from pathlib import Path

import pytest

from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.factories import MembershipFactory, ProjectFactory, PromptFactory
from training.services import registry, rounds

LORA_CONFIG = {
    "rm": {"batch_size": 2, "max_length": 64, "lr": 1e-3},
    "ppo": {
        "steps": 4, "batch_size": 2, "mini_batch_size": 1, "ppo_epochs": 1,
        "max_new_tokens": 6, "forward_batch_size": 4, "checkpoint_every": 2,
        "lora_r": 4, "lora_alpha": 8, "lr": 1e-3,
    },
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.django_db
def test_a_lora_round_shares_the_bases_resumes_and_publishes_a_merged_policy(
    db, settings, tmp_path, on_commit, through_gate, monkeypatch
) -> None:
    from training.ml import ppo
    from training.ml.loading import load_causal_lm
    from training.models import TrainingRun
    from training.services.run_bodies.ppo import ppo_checkpoints

    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    project = ProjectFactory(
        base_model="tiny", k=3, overlap=1, max_new_tokens=6, training_config=LORA_CONFIG
    )
    PromptFactory.create_batch(4, project=project)
    labeler = MembershipFactory(project=project, role="labeler").user
    real_train, real_step = ppo.train_ppo, ppo.ppo_step
    shared: list[bool] = []
    calls: list[int] = []

    def recording(policy, ref_policy, critic, reward_model, *args, **kwargs):
        shared.append(policy is ref_policy and critic is reward_model)
        return real_train(policy, ref_policy, critic, reward_model, *args, **kwargs)

    def dies_at_step_3(*args, **kwargs):
        calls.append(args[5])
        if args[5] == 2 and calls.count(2) == 1:
            raise RuntimeError("worker lost")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(ppo, "train_ppo", recording)
    monkeypatch.setattr(ppo, "ppo_step", dies_at_step_3)
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=2)
    with on_commit():
        while (lease := task_lease_next(project=project, labeler=labeler)) is not None:
            ids = list(lease.task.responses.order_by("position").values_list("id", flat=True))
            ranking_submit(task=lease.task, labeler=labeler, order=[[i] for i in ids],
                           flags={}, time_spent_ms=900)  # fmt: skip
    through_gate(round_)  # the RM gate may stop the round: approved
    assert (round_.stage, round_.failed_stage) == ("failed", "training_ppo")
    saved = ppo_checkpoints(round_, registry.reference_policy(project=project))
    assert (saved / "step-000002" / "policy.safetensors").is_file()  # adapters only

    with on_commit():
        rounds.round_advance(round_=round_)  # retry: resumes from the adapter checkpoint
    through_gate(round_)
    assert round_.stage == "done", round_.error
    assert shared == [True, True]  # reference = policy base, RM scorer = critic base
    assert calls == [0, 1, 2, 2, 3]
    retry = TrainingRun.objects.filter(round=round_, kind="ppo").latest("id")
    assert retry.metrics["resumed_from"] == 2 and retry.metrics["step"] == 4
    policy = round_.policy
    assert not Path(policy.artifact, "adapter_config.json").exists()
    loaded, _ = load_causal_lm(policy.artifact)  # what the product's other stages load
    assert not any("lora" in name for name, _ in loaded.named_parameters())
