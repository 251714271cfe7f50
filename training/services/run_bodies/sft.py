"""The SFT run: supervised fine-tuning on the project's demonstrations (InstructGPT step 1)."""

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
    device, _ = device_and_dtype()
    model, tokenizer = load_causal_lm(parent.artifact, device=device, dtype=TRAINED_DTYPE)
    config = SFTConfig(**known_fields(SFTConfig, run.config))
    result = train_sft(
        model,
        tokenizer,
        demos,
        config,
        precision=precision(),
        on_metrics=reporter.metrics,
        should_stop=reporter.should_stop,
    )
    if result.get("status") == "cancelled":
        raise RunCancelled()
    metrics = scalar_metrics(result)
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.SFT, parent=parent, metrics=metrics
    )
    return publish(run, version, saver(model, tokenizer), metrics)
