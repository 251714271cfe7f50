"""The DPO run (recipe "dpo"): listwise DPO on the project's K-wise rankings with their
tie groups (training.ml.dpo), from the SFT reference, whose log-probs are the implicit
reward's baseline. The round's RM is trained as in every round; DPO does not read it."""

from typing import Any

from core.exceptions import ApplicationError
from training.models import ModelVersion, TrainingRun
from training.services import progress, training_data
from training.services.registry import model_version_create, reference_policy
from training.services.run_bodies.common import (
    TRAINED_DTYPE,
    device_and_dtype,
    known_fields,
    precision,
    publish,
    round_of,
    saver,
    scalar_metrics,
)
from training.services.runs import RunCancelled, RunReporter


def dpo_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Fine-tune the reference policy with listwise DPO on every usable ranking of the
    project (current revisions, not rejected; `training_data.ranked_examples`).

    The held-out part is chosen as the RM's is (`training_data.split_rm_data`: the same
    prompts for the same `eval_fraction`, and a whole labeler when there are >= 3), and
    scored by the implicit reward's pairwise accuracy (`dpo/eval_accuracy`). The policy
    starts from the reference, so the reference's log-probs are taken from it before
    training (one model in memory, not two)."""
    from training.ml.configs import DPOConfig
    from training.ml.dpo import plan_steps, train_dpo
    from training.ml.loading import load_causal_lm

    round_of(run)  # a policy stage belongs to a round
    project = run.project
    config = DPOConfig(**known_fields(DPOConfig, run.config))
    data = training_data.split_rm_data(
        training_data.ranked_examples(project=project), eval_fraction=config.eval_fraction
    )
    if not data.train:
        raise ApplicationError("No usable rankings to train DPO on.")
    held_out = data.eval + data.heldout_labeler
    start = reference_policy(project=project)
    device, _ = device_and_dtype()
    reporter.phase(progress.LOADING)
    policy, tokenizer = load_causal_lm(start.artifact, device=device, dtype=TRAINED_DTYPE)
    total = plan_steps(len(data.train), config)
    reporter.progress(0, total)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.train_step(step, total)

    result = train_dpo(
        policy,
        None,  # the reference is the policy before training
        tokenizer,
        data.train,
        config,
        precision=precision(),
        progress=on_metrics,
        should_stop=reporter.should_stop,
        eval_rankings=held_out,
    )
    if result.status == "cancelled":
        raise RunCancelled()
    metrics = scalar_metrics(result.as_dict())
    if data.heldout_labeler_name:
        metrics["heldout_labeler"] = data.heldout_labeler_name
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.DPO, parent=start, metrics=metrics
    )
    return publish(run, version, saver(policy, tokenizer), metrics)
