"""The reward-model run: a fresh RM from the reference policy on every ranking of the
project, calibrated on the round's own samples."""

from typing import Any

from core.exceptions import ApplicationError
from labeling.models import Response
from training.models import ModelVersion, Round, TrainingRun
from training.services import launcher, progress, training_data
from training.services.registry import (
    current_reward_model,
    model_version_create,
    reference_policy,
)
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
    from training.ml.reward.evaluate import evaluate_reward_model
    from training.ml.reward.model import save_reward_model
    from training.ml.reward.train import plan_steps

    project = run.project
    round_ = Round.objects.get(pk=run.round_id) if run.round_id else None
    data = training_data.split_rm_data(
        training_data.ranked_examples(project=project),
        eval_fraction=float(run.config.get("eval_fraction", 0.1)),
    )
    if not data.train:
        raise ApplicationError("No usable rankings to train the reward model on.")
    init = reference_policy(project=project)
    fields = known_fields(RMConfig, run.config)
    config = RMConfig(**fields)
    steps_total = plan_steps(len(data.train), config)  # each ranked example has a pair
    reporter.progress(0, steps_total)
    last: dict[str, Any] = {"step": 0, "values": {}}

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.train_step(min(step, steps_total), steps_total)
        last.update(step=step, values=values)

    if launcher.is_launched():  # RLHF_GPUS_PER_RUN processes, `train-rm` as a child
        model, tokenizer, result = launcher.rm_launched(
            run=run,
            reporter=reporter,
            init=init.artifact,
            train=data.train,
            eval=data.eval,
            values=fields,
            on_metrics=on_metrics,
        )
    else:
        model, tokenizer, result = _train_in_process(init, data, config, on_metrics, reporter)
    metrics = scalar_metrics(result)
    reporter.phase(progress.SCORING, step="held-out accuracy and calibration")
    if data.heldout_labeler:
        held = evaluate_reward_model(model, tokenizer, data.heldout_labeler)
        metrics["heldout_labeler_accuracy"] = held["accuracy"]
        metrics["heldout_labeler"] = data.heldout_labeler_name or ""
    metrics.update(_gate_split_metrics(model, tokenizer, data, config, project))
    # The final held-out figures as the last point of the series, so the curves show what
    # the round's summary and the gate read.
    final: dict[str, Any] = {
        k: metrics[k] for k in ("rm/eval_accuracy", "rm/heldout_accuracy") if k in metrics
    }
    if last["step"] and final:
        reporter.metrics(last["step"], {**last["values"], **final})
    if round_ is not None:
        _calibrate_on_round_samples(model, tokenizer, round_)
    reporter.phase(progress.SAVING)
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.RM, parent=init, metrics=metrics
    )
    # The RM's own saver: its folder pads with a non-EOS token, so TRL and transformers'
    # pad-token pooling read the same last token as we do.
    return publish(run, version, lambda out: save_reward_model(model, tokenizer, out), metrics)


def _train_in_process(
    init: ModelVersion,
    data: training_data.RMData,
    config: Any,
    on_metrics: Any,
    reporter: RunReporter,
) -> tuple[Any, Any, dict[str, Any]]:
    """A fresh RM from `init` trained in this process. Its new head's init is seeded by
    `config.seed` before the load, as `train-rm` seeds it, so a launched run starts alike."""
    import torch

    from training.ml.loading import load_causal_lm
    from training.ml.reward.model import RewardModel
    from training.ml.reward.train import train_reward_model

    device, _ = device_and_dtype()
    reporter.phase(progress.LOADING)
    torch.manual_seed(config.seed)
    lm, tokenizer = load_causal_lm(init.artifact, device=device, dtype=TRAINED_DTYPE)
    model = RewardModel.from_causal_lm(lm)
    del lm
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
    return model, tokenizer, result


def _gate_split_metrics(
    model: Any, tokenizer: Any, data: training_data.RMData, config: Any, project: Any
) -> dict[str, Any]:
    """Accuracy on the promotion gate's split (the held-out prompts and the held-out
    labeler together) of the new RM and of the project's current RM, on the same rankings
    (`training.services.gate`). Empty split: no figures, and the gate cannot pass."""
    from training.ml.devices import release_memory
    from training.ml.reward.evaluate import evaluate_reward_model
    from training.ml.reward.model import load_reward_model

    split = [*data.eval, *data.heldout_labeler]
    if not split:
        return {"rm/heldout_pairs": 0}
    sizes = {"max_length": config.max_length, "batch_size": config.batch_size}
    new = evaluate_reward_model(model, tokenizer, split, **sizes)
    metrics: dict[str, Any] = {
        "rm/heldout_accuracy": new["accuracy"],
        "rm/heldout_pairs": new["pairs"],
    }
    current = current_reward_model(project=project)
    if current is not None:
        device, dtype = device_and_dtype()
        old, old_tokenizer = load_reward_model(current.artifact, device=device, dtype=dtype)
        metrics["rm/current_heldout_accuracy"] = evaluate_reward_model(
            old, old_tokenizer, split, **sizes
        )["accuracy"]
        metrics["rm/current_model"] = current.label
        del old
        release_memory()
    return metrics


def _calibrate_on_round_samples(model: Any, tokenizer: Any, round_: Round) -> None:
    """Shift the RM so the policy's own samples of this round score 0 on average."""
    from training.ml.reward.evaluate import calibrate_offset

    samples = [
        (r.task.prompt.as_input, r.text)
        for r in Response.objects.filter(task__round=round_).select_related("task__prompt")[:256]
    ]
    if samples:
        calibrate_offset(model, tokenizer, samples)
