"""The best-of-N run (recipe "best_of_n"): the round's sampling policy samples N responses
per train prompt of the round, the round's new RM keeps the best of each, and the policy is
fine-tuned on the kept ones (Llama 2's rejection sampling, training.ml.best_of_n)."""

from typing import Any

from core.exceptions import ApplicationError
from training.models import ModelVersion, TrainingRun
from training.services import training_data
from training.services.registry import model_version_create
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


def best_of_n_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Sample `n` responses for `num_prompts` of the round's train prompts (all by default)
    from the policy that sampled the round, score them with the round's RM, and SFT that
    policy on the best of each prompt. The sampling settings default to the project's.

    Progress counts the sampled responses, then SFT's steps."""
    from training.ml.best_of_n import best_of_n
    from training.ml.configs import BestOfNConfig
    from training.ml.loading import load_causal_lm
    from training.ml.reward.model import load_reward_model

    round_ = round_of(run, "project", "sampling_policy", "reward_model")
    project = run.project
    start = required(round_.sampling_policy, "a sampling policy")
    rm_version = required(round_.reward_model, "a reward model")
    prompts = training_data.round_train_prompts(round_=round_)
    if not prompts:
        raise ApplicationError("The round has no train prompts to sample for best-of-N.")
    values = {"max_new_tokens": project.max_new_tokens, "temperature": project.temperature,
              "top_p": project.top_p, **run.config}  # fmt: skip
    config = BestOfNConfig(**known_fields(BestOfNConfig, values))
    device, dtype = device_and_dtype()
    policy, tokenizer = load_causal_lm(start.artifact, device=device, dtype=TRAINED_DTYPE)
    reward_model, _ = load_reward_model(rm_version.artifact, device=device, dtype=dtype)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        total = values.get("total_steps")
        if isinstance(total, int) and total > 0:
            reporter.train_step(step, total)

    result = best_of_n(
        policy,
        reward_model,
        tokenizer,
        prompts,
        config,
        on_metrics=on_metrics,
        on_progress=reporter.progress,
        should_stop=reporter.should_stop,
        precision=precision(),
    )
    if result.status == "cancelled":
        raise RunCancelled()
    del reward_model
    metrics = scalar_metrics(result.metrics)
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.BEST_OF_N, parent=start, metrics=metrics
    )
    return publish(run, version, saver(policy, tokenizer), metrics)
