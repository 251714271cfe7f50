"""The RLOO run (recipe "rloo"): REINFORCE with a leave-one-out baseline over N samples of
each of the round's train prompts, scored by the round's new RM minus the KL to the frozen
reference (PPO's KL controller), no critic (training.ml.rloo)."""

from typing import Any

from core.exceptions import ApplicationError
from training.models import ModelVersion, TrainingRun
from training.services import training_data
from training.services.registry import model_version_create, reference_policy
from training.services.run_bodies.common import (
    TRAINED_DTYPE,
    device_and_dtype,
    known_fields,
    precision,
    publish,
    required,
    round_of,
    saver,
    scalar_metrics,
)
from training.services.runs import RunCancelled, RunReporter


def rloo_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """RLOO from the SFT reference (as PPO's default `init_from`) against the round's RM.

    N (`num_samples`) defaults to the project's K, and the sampling settings to the
    project's. With `lora_r` the policy's base, adapters off, is the reference, and the RM
    is stored in RLHF_DTYPE (one policy copy instead of two)."""
    from training.ml.configs import RLOOConfig
    from training.ml.loading import load_causal_lm
    from training.ml.reward.model import load_reward_model
    from training.ml.rloo import train_rloo

    round_ = round_of(run, "project", "reward_model")
    project = run.project
    rm_version = required(round_.reward_model, "a reward model")
    prompts = training_data.round_train_prompts(round_=round_)
    if not prompts:
        raise ApplicationError("The round has no train prompts to sample for RLOO.")
    values = {"num_samples": project.k, "max_new_tokens": project.max_new_tokens,
              "temperature": project.temperature, "top_p": project.top_p,
              **run.config}  # fmt: skip
    config = RLOOConfig(**known_fields(RLOOConfig, values))
    start = reference_policy(project=project)
    device, dtype = device_and_dtype()
    lora = config.lora_r is not None
    # LoRA trains adapters on a frozen base, which may be stored in RLHF_DTYPE
    policy, tokenizer = load_causal_lm(
        start.artifact, device=device, dtype=dtype if lora else TRAINED_DTYPE
    )
    if lora:
        ref_policy = policy
    else:
        ref_policy, _ = load_causal_lm(start.artifact, device=device, dtype=dtype)
    reward_model, _ = load_reward_model(rm_version.artifact, device=device, dtype=dtype)
    reporter.progress(0, config.steps)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.train_step(step, config.steps)

    result = train_rloo(
        policy,
        ref_policy,
        reward_model,
        tokenizer,
        prompts,
        config,
        on_metrics=on_metrics,
        should_stop=reporter.should_stop,
        precision=precision(),
    )
    if result.get("status") == "cancelled":
        raise RunCancelled()
    metrics = scalar_metrics(result)
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.RLOO, parent=start, metrics=metrics
    )
    return publish(run, version, saver(policy, tokenizer), metrics)
