"""The reward-model run: a fresh RM from the reference policy on every ranking of the
project, calibrated on the round's own samples."""

from typing import Any

from core.exceptions import ApplicationError
from labeling.models import Response
from training.models import ModelVersion, Round, TrainingRun
from training.services import training_data
from training.services.registry import model_version_create, reference_policy
from training.services.run_bodies.common import (
    TRAINED_DTYPE,
    device_and_dtype,
    known_fields,
    precision,
    publish,
    scalar_metrics,
)
from training.services.runs import RunCancelled, RunReporter


def rm_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Train a fresh RM, initialised from the reference policy (the newest SFT version,
    else the base model), on every ranking of the project."""
    from training.ml.configs import RMConfig
    from training.ml.loading import load_causal_lm
    from training.ml.reward.evaluate import evaluate_reward_model
    from training.ml.reward.model import RewardModel, save_reward_model
    from training.ml.reward.train import plan_steps, train_reward_model

    project = run.project
    round_ = Round.objects.get(pk=run.round_id) if run.round_id else None
    data = training_data.split_rm_data(
        training_data.ranked_examples(project=project),
        eval_fraction=float(run.config.get("eval_fraction", 0.1)),
    )
    if not data.train:
        raise ApplicationError("No usable rankings to train the reward model on.")
    init = reference_policy(project=project)
    device, _ = device_and_dtype()
    lm, tokenizer = load_causal_lm(init.artifact, device=device, dtype=TRAINED_DTYPE)
    model = RewardModel.from_causal_lm(lm)
    del lm
    config = RMConfig(**known_fields(RMConfig, run.config))
    steps_total = plan_steps(len(data.train), config)  # each ranked example has a pair
    reporter.progress(0, steps_total)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.progress(min(step, steps_total), steps_total)

    result = train_reward_model(
        model,
        tokenizer,
        data.train,
        config=config,
        eval=data.eval or None,
        on_metrics=on_metrics,
        should_stop=reporter.should_stop,
        precision=precision(),
    )
    if result.get("status") == "cancelled":
        raise RunCancelled()
    metrics = scalar_metrics(result)
    if data.heldout_labeler:
        held = evaluate_reward_model(model, tokenizer, data.heldout_labeler)
        metrics["heldout_labeler_accuracy"] = held["accuracy"]
        metrics["heldout_labeler"] = data.heldout_labeler_name or ""
    if round_ is not None:
        _calibrate_on_round_samples(model, tokenizer, round_)
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.RM, parent=init, metrics=metrics
    )
    # The RM's own saver: its folder pads with a non-EOS token, so TRL and transformers'
    # pad-token pooling read the same last token as we do.
    return publish(run, version, lambda out: save_reward_model(model, tokenizer, out), metrics)


def _calibrate_on_round_samples(model: Any, tokenizer: Any, round_: Round) -> None:
    """Shift the RM so the policy's own samples of this round score 0 on average."""
    from training.ml.reward.evaluate import calibrate_offset

    samples = [
        (r.task.prompt.as_input, r.text)
        for r in Response.objects.filter(task__round=round_).select_related("task__prompt")[:256]
    ]
    if samples:
        calibrate_offset(model, tokenizer, samples)
