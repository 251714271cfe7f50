"""The SFT run: supervised fine-tuning on the project's demonstrations (InstructGPT step 1)."""

from typing import Any

from core.exceptions import ApplicationError
from training.models import ModelVersion, TrainingRun
from training.services import launcher, progress, training_data
from training.services.registry import model_version_create, reference_policy
from training.services.run_bodies.common import (
    TRAINED_DTYPE,
    device_and_dtype,
    known_fields,
    precision,
    publish,
    saver,
    scalar_metrics,
)
from training.services.runs import RunCancelled, RunReporter


def sft_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Fine-tune the reference policy (the newest SFT version, else the base model) on the
    project's demonstrations; the result becomes the current policy and the next reference.
    """
    from training.ml.loading import load_causal_lm
    from training.ml.sft import Demonstration, SFTConfig, train_sft

    project = run.project
    demos = [
        Demonstration(prompt=p, response=r)
        for p, r in training_data.demonstration_pairs(project=project)
    ]
    if not demos:
        raise ApplicationError("The project has no demonstrations to fine-tune on.")
    parent = reference_policy(project=project)
    fields = known_fields(SFTConfig, run.config)
    config = SFTConfig(**fields)
    if launcher.is_launched():  # RLHF_GPUS_PER_RUN processes, `sft` as a child
        with launcher.sft_launched(
            run=run,
            reporter=reporter,
            init=parent.artifact,
            demonstrations=demos,
            values=fields,
            on_metrics=reporter.metrics,
        ) as (saved, result):
            return _publish(run, parent, result, launcher.move_into_place(saved))
    device, _ = device_and_dtype()
    reporter.phase(progress.LOADING)
    model, tokenizer = load_causal_lm(parent.artifact, device=device, dtype=TRAINED_DTYPE)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.train_step(step, int(values.get("total_steps") or 0))

    result = train_sft(
        model,
        tokenizer,
        demos,
        config,
        precision=precision(),
        on_metrics=on_metrics,
        should_stop=reporter.should_stop,
    )
    if result.get("status") == "cancelled":
        raise RunCancelled()
    return _publish(run, parent, result, saver(model, tokenizer))


def _publish(
    run: TrainingRun, parent: ModelVersion, result: dict[str, Any], save: Any
) -> dict[str, Any]:
    """The fine-tuned policy as a new SFT version of `parent`, written by `save`."""
    metrics = scalar_metrics(result)
    version = model_version_create(
        project=run.project, kind=ModelVersion.Kind.SFT, parent=parent, metrics=metrics
    )
    return publish(run, version, save, metrics)
