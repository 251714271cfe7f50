"""The model registry: versions of policies and reward models, and which one is current.

A version becomes current only after its artifact is complete and verified, so a run that
dies half-way never leaves a partial model in use (PRODUCT.md section 6, reliability).
"""

from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from core.exceptions import ApplicationError
from labeling.models import Project
from labeling.seams import BUILTIN_MODEL_SPECS
from training.ml.model_files import PICKLE_SUFFIXES
from training.models import ModelVersion
from training.services.model_specs import base_artifact_check, model_root_path, model_spec_resolve
from training.services.runs import metrics_jsonable

_ROLE_OF_KIND = {
    ModelVersion.Kind.BASE: ModelVersion.Role.POLICY,
    ModelVersion.Kind.SFT: ModelVersion.Role.POLICY,
    ModelVersion.Kind.PPO: ModelVersion.Role.POLICY,
    ModelVersion.Kind.DPO: ModelVersion.Role.POLICY,
    ModelVersion.Kind.BEST_OF_N: ModelVersion.Role.POLICY,
    ModelVersion.Kind.RLOO: ModelVersion.Role.POLICY,
    ModelVersion.Kind.RM: ModelVersion.Role.REWARD,
}
# Specs the ML core resolves itself; everything else must be a verified folder.


class ArtifactError(ApplicationError):
    """An artifact is missing, incomplete or not in safetensors format."""


def artifact_dir_for(*, project: Project, kind: str, version: int) -> Path:
    return Path(settings.RLHF_ARTIFACT_DIR) / project.slug / f"{kind}-v{version}"


def artifact_verify(*, artifact: str) -> None:
    """Check that an artifact folder is complete: config plus readable safetensors, no pickles.

    Reads only the safetensors headers (cheap); a truncated file fails here.
    """
    if artifact in BUILTIN_MODEL_SPECS or artifact.startswith("tiny:"):
        return
    path = Path(artifact)
    if path.suffix == ".gguf" and path.is_file():
        return
    if not path.is_dir():
        raise ArtifactError(f"Model artifact {artifact} does not exist.")
    if not (path / "config.json").is_file():
        raise ArtifactError(f"Model artifact {artifact} has no config.json (incomplete).")
    pickles = [p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ArtifactError(f"Model artifact {artifact} contains pickled files {pickles}; refused.")
    tensors = sorted(path.glob("*.safetensors"))
    if not tensors:
        raise ArtifactError(f"Model artifact {artifact} has no safetensors weights.")
    from safetensors import safe_open

    for file in tensors:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # a truncated or corrupt file
            raise ArtifactError(f"Model artifact {file} is unreadable: {exc}") from exc


def _next_version(project: Project) -> int:
    current = ModelVersion.objects.filter(project=project).aggregate(m=Max("version"))["m"]
    return (current or 0) + 1


@transaction.atomic
def model_version_create(
    *,
    project: Project,
    kind: str,
    artifact: str = "",
    parent: ModelVersion | None = None,
    metrics: dict | None = None,
) -> ModelVersion:
    """A new PENDING version; its artifact folder is reserved by its number. `metrics` are
    stored JSON-safe (`runs.metrics_jsonable`: NaN becomes null)."""
    Project.objects.select_for_update().get(pk=project.pk)  # serialise version numbers
    version = _next_version(project)
    return ModelVersion.objects.create(
        project=project,
        kind=kind,
        role=_ROLE_OF_KIND[ModelVersion.Kind(kind)],
        version=version,
        parent=parent,
        artifact=artifact or str(artifact_dir_for(project=project, kind=kind, version=version)),
        metrics=metrics_jsonable(metrics or {}),
    )


@transaction.atomic
def model_version_promote(*, version: ModelVersion, metrics: dict | None = None) -> ModelVersion:
    """Verify the artifact, mark the version ready and make it the current one of its role."""
    artifact_verify(artifact=version.artifact)
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    ModelVersion.objects.filter(
        project_id=locked.project_id, role=locked.role, is_current=True
    ).exclude(pk=locked.pk).update(is_current=False)
    locked.status = ModelVersion.Status.READY
    locked.is_current = True
    if metrics:
        locked.metrics = {**locked.metrics, **metrics_jsonable(metrics)}
    locked.save(update_fields=["status", "is_current", "metrics", "updated_at"])
    return locked


@transaction.atomic
def model_version_ready(*, version: ModelVersion, metrics: dict | None = None) -> ModelVersion:
    """Verify the artifact and mark the version ready without making it current (a round's
    model waits for the promotion gate, `training.services.gate`)."""
    artifact_verify(artifact=version.artifact)
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    locked.status = ModelVersion.Status.READY
    if metrics:
        locked.metrics = {**locked.metrics, **metrics_jsonable(metrics)}
    locked.save(update_fields=["status", "metrics", "updated_at"])
    return locked


def model_version_fail(*, version: ModelVersion, error: str) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.FAILED, metrics={**version.metrics, "error": error[:2000]}
    )


def current_policy(*, project: Project) -> ModelVersion:
    """The project's current sampling policy; the base model becomes version 1 on first use.

    The base model spec is checked again here (model_specs), and so is a registered base
    version, so a spec stored before the rules existed never reaches a run."""
    found = ModelVersion.objects.filter(
        project=project, role=ModelVersion.Role.POLICY, is_current=True
    ).first()
    if found:
        base_artifact_check(version=found)
        return found
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        found = ModelVersion.objects.filter(
            project=project, role=ModelVersion.Role.POLICY, is_current=True
        ).first()
        if found:
            base_artifact_check(version=found)
            return found
        artifact = model_spec_resolve(project=project, spec=project.base_model)
        base = model_version_create(project=project, kind=ModelVersion.Kind.BASE, artifact=artifact)
        return model_version_promote(version=base)


def current_reward_model(*, project: Project) -> ModelVersion | None:
    return ModelVersion.objects.filter(
        project=project, role=ModelVersion.Role.REWARD, is_current=True
    ).first()


def reference_policy(*, project: Project) -> ModelVersion:
    """PPO's frozen reference: the newest SFT version, else the base model."""
    sft = (
        ModelVersion.objects.filter(
            project=project,
            kind__in=[ModelVersion.Kind.SFT, ModelVersion.Kind.BASE],
            status=ModelVersion.Status.READY,
        )
        .order_by("-kind", "-version")  # "sft" sorts after "base"
        .first()
    )
    if sft is None:
        return current_policy(project=project)
    base_artifact_check(version=sft)
    return sft


# --------------------------------------------------------------------------- registration

_KIND_OF_ROLE = {
    ModelVersion.Role.POLICY: ModelVersion.Kind.BASE,
    ModelVersion.Role.REWARD: ModelVersion.Kind.RM,
}


@transaction.atomic
def model_version_register(
    *, project: Project, path: str, role: str, make_current: bool = False
) -> ModelVersion:
    """Register a model folder trained elsewhere as a READY version of `project` (an operator
    action): a reward model (a ``*ForSequenceClassification`` with one label, e.g. saved by
    TRL's RewardTrainer) or a policy (a ``*ForCausalLM``). The folder must lie under
    RLHF_MODEL_ROOTS and outside the artifacts root (the model-spec rules), hold a config,
    a tokenizer and safetensors weights only. The stored artifact is the resolved path;
    with `make_current` the version becomes the project's current one of its role.
    Raises ArtifactError with a one-line reason."""
    folder = _registrable_folder(path)
    _check_architecture(folder, ModelVersion.Role(role))
    version = model_version_create(
        project=project,
        kind=_KIND_OF_ROLE[ModelVersion.Role(role)],
        artifact=str(folder),
        metrics={"registered_from": path},
    )
    if make_current:
        return model_version_promote(version=version)
    artifact_verify(artifact=version.artifact)
    version.status = ModelVersion.Status.READY
    version.save(update_fields=["status", "updated_at"])
    return version


def _registrable_folder(path: str) -> Path:
    """The resolved folder of `path` if the model-spec rules allow it and it is complete."""
    from training.ml.model_files import ModelLoadError, check_safetensors_folder
    from training.ml.tokenization import tokenizer_from_folder

    if not Path(path).is_absolute():
        raise ArtifactError(f"{path} is not an absolute path.")
    resolved = model_root_path(path)  # the model-spec rules
    if resolved is None:
        raise ArtifactError(_refusal(path))
    if not resolved.is_dir():
        raise ArtifactError(f"{path} is not a folder (register a save_pretrained folder).")
    try:
        check_safetensors_folder(resolved)  # refuses a pickle-only checkpoint
        tokenizer_from_folder(resolved)
    except ModelLoadError as exc:
        raise ArtifactError(str(exc).splitlines()[0]) from exc
    artifact_verify(artifact=str(resolved))  # no pickles beside the safetensors, all readable
    return resolved


def _refusal(path: str) -> str:
    """Why the model-spec rules refuse `path` (an operator sees the paths, a user never)."""
    if not Path(path).exists():
        return f"{path} does not exist."
    if Path(path).resolve().is_relative_to(Path(settings.RLHF_ARTIFACT_DIR).resolve()):
        return (
            f"{path} is inside RLHF_ARTIFACT_DIR, where the projects' own models live; "
            "copy it under RLHF_MODEL_ROOTS to register it."
        )
    roots = ", ".join(root for root in settings.RLHF_MODEL_ROOTS if root) or "empty"
    return f"{path} is not under RLHF_MODEL_ROOTS ({roots})."


def _check_architecture(folder: Path, role: ModelVersion.Role) -> None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder))
    except Exception as exc:  # an unknown model type or a broken config.json
        raise ArtifactError(f"{folder}: unreadable config.json ({exc})".splitlines()[0]) from exc
    names = list(config.architectures or [])
    architectures = ", ".join(names) or "no architecture"
    if role == ModelVersion.Role.REWARD:
        reward = any(name.endswith("ForSequenceClassification") for name in names)
        if not reward or config.num_labels != 1:
            raise ArtifactError(
                f"{folder} is {architectures} with {config.num_labels} labels, not a reward "
                "model (a *ForSequenceClassification with num_labels=1)."
            )
    elif not any(name.endswith("ForCausalLM") for name in names):
        raise ArtifactError(f"{folder} is {architectures}, not a policy (a *ForCausalLM).")
