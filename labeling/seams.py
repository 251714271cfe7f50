"""The one place where labeling reaches the training app, which it never imports.

Two project settings are only meaningful to training: the model spec (`base_model`,
which may name a model version of the project) and `training_config` (checked against the
trainers' configs). `training.apps.TrainingConfig.ready()` registers the checks here;
labeling's services call `check_model_spec` and `check_training_config`.

Without a registration (labeling installed without training) only the built-in specs
`default` and `tiny` and an empty `training_config` are accepted: nothing could check or
use anything else.
"""

from collections.abc import Callable
from typing import Any

from core.exceptions import ApplicationError
from labeling.models import Project

ModelSpecCheck = Callable[[Project | None, str], str]
TrainingConfigCheck = Callable[[Any], dict[str, Any]]

BUILTIN_MODEL_SPECS = ("default", "tiny")
MODEL_SPEC_REFUSED = (
    "base_model: not an allowed model: use default, tiny, version:N (a policy version of "
    "this project) or a model under the operator's model roots (RLHF_MODEL_ROOTS)"
)

_checks: dict[str, Any] = {}


def register_project_validators(
    *, model_spec: ModelSpecCheck, training_config: TrainingConfigCheck
) -> None:
    """Install training's checks (called once, from training's AppConfig.ready)."""
    _checks["model_spec"] = model_spec
    _checks["training_config"] = training_config


def check_model_spec(project: Project | None, spec: str) -> str:
    """The value to store as `base_model` of `project` (None: a project being created);
    ApplicationError(MODEL_SPEC_REFUSED) if the spec is not allowed."""
    check: ModelSpecCheck | None = _checks.get("model_spec")
    if check is not None:
        return check(project, spec)
    if spec in BUILTIN_MODEL_SPECS:
        return spec
    raise ApplicationError(MODEL_SPEC_REFUSED)


def check_training_config(value: Any) -> dict[str, Any]:
    """The `training_config` to store; ApplicationError naming the field path if invalid."""
    check: TrainingConfigCheck | None = _checks.get("training_config")
    if check is not None:
        return check(value)
    if value == {}:
        return {}
    raise ApplicationError("training_config: cannot be checked (the training app is not installed)")
