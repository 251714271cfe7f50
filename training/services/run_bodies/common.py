"""What the run bodies share: their round, the device and precision, the seed hash, the
metrics a model version keeps, and publishing a model version under the run's row lock."""

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.exceptions import ApplicationError
from training.models import ModelVersion, Round, TrainingRun
from training.services.config_schema import run_config_fields
from training.services.registry import (
    model_version_fail,
    model_version_promote,
    model_version_ready,
)
from training.services.runs import RunCancelled, RunReporter

# Trained models load in fp32 (master weights); RLHF_DTYPE is their autocast dtype and the
# storage dtype of frozen ones (training.ml.precision).
TRAINED_DTYPE = "float32"


def round_of(run: TrainingRun, *related: str) -> Round:
    if run.round_id is None:
        raise ApplicationError(f"The {run.kind} run {run.pk} belongs to no round.")
    return Round.objects.select_related(*related).get(pk=run.round_id)


def required(version: ModelVersion | None, what: str) -> ModelVersion:
    if version is None:
        raise ApplicationError(f"The round has no {what.removeprefix('a ')} yet.")
    return version


def device_and_dtype() -> tuple[str, str]:
    return settings.RLHF_DEVICE, settings.RLHF_DTYPE


def precision() -> Any:
    """The training precision of RLHF_DTYPE on RLHF_DEVICE (training.ml.precision)."""
    from training.ml.devices import resolve_device
    from training.ml.precision import resolve_precision

    device, dtype = device_and_dtype()
    return resolve_precision(dtype, resolve_device(device))


def check_cancel(reporter: RunReporter) -> None:
    if reporter.should_stop():
        raise RunCancelled()


def stable_seed(*parts: object) -> int:
    """A 32-bit seed fixed by ``parts`` in every process (Python's hash() is salted)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def known_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of trainer config `cls` in a run's config; an unknown key fails the run
    (config_schema.run_config_fields)."""
    return run_config_fields(cls, values)


def scalar_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The entries of a trainer's result that a model version keeps as its metrics: numbers
    and strings (nested reports such as the RM's per-labeler "eval" are left out). The
    registry stores them JSON-safe (`runs.metrics_jsonable`)."""
    return {k: v for k, v in result.items() if isinstance(v, int | float | str)}


def publish(
    run: TrainingRun, version: ModelVersion, save: Callable[[Path], Any], metrics: dict
) -> dict[str, Any]:
    """Write the artifact atomically, verify it and mark it ready; a run outside a round
    (SFT) also makes it current.

    A round's run never promotes its model: the round does, once the promotion gate passed
    or an admin approved (`rounds`, `gate`), so the previous models stay current until then.
    The write holds the run's row lock and requires the run to be still `running` (a run
    the reaper failed meanwhile must not leave a ready model behind a round that says it
    failed) and its round not cancelled (under the round's lock, taken first as
    `round_cancel` does): a model finished after a cancel is marked failed, never ready.
    """
    try:
        save(Path(version.artifact))
        with transaction.atomic():
            if run.round_id is not None:
                stage = (
                    Round.objects.select_for_update()
                    .values_list("stage", flat=True)
                    .get(pk=run.round_id)
                )
                if stage == Round.Stage.CANCELLED:
                    raise RunCancelled()
            alive = TrainingRun.objects.select_for_update().filter(
                pk=run.pk, status=TrainingRun.Status.RUNNING
            )
            if not alive.exists():
                raise ApplicationError(
                    f"Run {run.pk} was marked failed while it worked (no heartbeat in time); "
                    "its model was not made current."
                )
            if run.round_id is None:
                version = model_version_promote(version=version, metrics=metrics)
            else:
                version = model_version_ready(version=version, metrics=metrics)
            # In the same locked write: the run owns its output, and its fresh heartbeat
            # keeps the reaper off until run_execute records the success.
            alive.update(output=version, heartbeat_at=timezone.now())
    except RunCancelled:
        model_version_fail(version=version, error="Its round was cancelled before it finished.")
        raise
    except Exception as exc:
        model_version_fail(version=version, error=str(exc))
        raise
    run.output = version
    return {**metrics, "model_version": version.label}


def saver(model: Any, tokenizer: Any) -> Callable[[Path], Any]:
    """Save a policy as a safetensors folder (training.ml.saving)."""
    from training.ml.saving import save_pretrained_atomic

    return lambda out: save_pretrained_atomic(model, tokenizer, out)
