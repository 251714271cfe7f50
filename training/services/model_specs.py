"""Which models a project may use (PRODUCT.md section 5).

A model spec (a project's `base_model`) is one of:
- `default` or `tiny`, which the ML core builds itself;
- `version:N`, the ready policy version N of the same project;
- an absolute path under one of the operator's `RLHF_MODEL_ROOTS`, after resolving `..`
  and symlinks, and never inside the artifacts root (`RLHF_ARTIFACT_DIR`, where every
  project's models live): a save_pretrained folder with safetensors weights, or a file
  with the GGUF magic bytes (the ML core's `training.ml.model_files` checks the format).

Every refusal is the same message, whether the path is missing, outside the roots or not a
model, so the check never tells a project admin what exists on the server; and no path the
user did not type is ever shown. The typed spec is what is stored; it is checked again
where a policy is registered from it, so a spec stored before these rules is refused there.
"""

import re
from pathlib import Path

from django.conf import settings

from core.exceptions import ApplicationError
from labeling.models import Project
from labeling.seams import BUILTIN_MODEL_SPECS, MODEL_SPEC_REFUSED
from training.ml.model_files import ModelLoadError, check_gguf_file, check_safetensors_folder
from training.models import ModelVersion

VERSION_SPEC = re.compile(r"^version:([1-9][0-9]{0,9})$")


class ModelSpecRefused(ApplicationError):
    """The spec is not a model this project may use (one message for every reason)."""

    def __init__(self) -> None:
        super().__init__(MODEL_SPEC_REFUSED)


def model_spec_check(*, project: Project | None, spec: str) -> str:
    """The spec to store as `base_model` of `project` (None: a project being created)."""
    model_spec_resolve(project=project, spec=spec)
    return spec


def model_spec_resolve(*, project: Project | None, spec: str) -> str:
    """What the ML core loads for `spec`: a built-in name, a version's artifact, or the
    resolved path under a model root. Raises ModelSpecRefused."""
    if spec in BUILTIN_MODEL_SPECS:
        return spec
    match = VERSION_SPEC.match(spec)
    if match:
        return _version_artifact(project, int(match.group(1)))
    path = model_root_path(spec)
    if path is None or not _is_model(path):
        raise ModelSpecRefused()
    return str(path)


def base_artifact_check(*, version: ModelVersion) -> None:
    """Refuse a registered base version whose artifact is no longer an allowed model (it was
    registered before these rules, or a root was removed): a run must not load it.

    A base version's artifact is a built-in name, a resolved path under a model root, or
    (from `version:N`) a folder in this project's own artifacts."""
    if version.kind != ModelVersion.Kind.BASE or version.artifact in BUILTIN_MODEL_SPECS:
        return
    own = (Path(settings.RLHF_ARTIFACT_DIR) / version.project.slug).resolve()
    path = _resolved(Path(version.artifact)) if Path(version.artifact).is_absolute() else None
    if path is not None and path.is_relative_to(own) and _is_model(path):
        return
    if path is not None and model_root_path(str(path)) is not None and _is_model(path):
        return
    raise ApplicationError(
        f"The base model of project {version.project.slug} ({version.label}) is not an "
        f"allowed model; set the project's base_model again. {MODEL_SPEC_REFUSED}"
    )


def _version_artifact(project: Project | None, number: int) -> str:
    if project is None:
        raise ModelSpecRefused()
    version = ModelVersion.objects.filter(
        project=project,
        version=number,
        role=ModelVersion.Role.POLICY,
        status=ModelVersion.Status.READY,
    ).first()
    if version is None:
        raise ModelSpecRefused()
    base_artifact_check(version=version)
    return version.artifact


def model_root_path(spec: str) -> Path | None:
    """The resolved path of an absolute `spec` under a model root and outside the
    artifacts root, or None."""
    if "\x00" in spec or not Path(spec).is_absolute():
        return None
    path = _resolved(Path(spec))
    artifacts = Path(settings.RLHF_ARTIFACT_DIR).resolve()
    roots = [Path(root).resolve() for root in settings.RLHF_MODEL_ROOTS if root]
    if path is None or not _allowed(path, roots, artifacts):
        return None
    if path.is_dir():
        # a file of the folder may be a link (an HF cache snapshot links to its blobs): it
        # must resolve under the roots too, never into another project's artifacts
        entries = [_resolved(entry) for entry in path.iterdir()]
        if not all(e is not None and _allowed(e, roots, artifacts) for e in entries):
            return None
    return path


def _allowed(path: Path, roots: list[Path], artifacts: Path) -> bool:
    """Under a model root and outside the artifacts root (both resolved)."""
    return not path.is_relative_to(artifacts) and any(path.is_relative_to(r) for r in roots)


def _resolved(path: Path) -> Path | None:
    """`path` with `..` and symlinks resolved, or None if it does not exist."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, unreadable, or a symlink loop
        return None


def _is_model(path: Path) -> bool:
    try:
        if path.is_dir():
            check_safetensors_folder(path)
        elif path.suffix == ".gguf":
            check_gguf_file(path)
        else:
            return False
    except (ModelLoadError, OSError):
        return False
    return True
