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
from training.models import ModelVersion
from training.services.model_specs import base_artifact_check, model_spec_resolve
from training.services.runs import metrics_jsonable

_ROLE_OF_KIND = {
    ModelVersion.Kind.BASE: ModelVersion.Role.POLICY,
    ModelVersion.Kind.SFT: ModelVersion.Role.POLICY,
    ModelVersion.Kind.PPO: ModelVersion.Role.POLICY,
    ModelVersion.Kind.RM: ModelVersion.Role.REWARD,
}
# Specs the ML core resolves itself; everything else must be a verified folder.
BUILTIN_SPECS = {"default", "tiny"}


class ArtifactError(ApplicationError):
    """An artifact is missing, incomplete or not in safetensors format."""


def artifact_dir_for(*, project: Project, kind: str, version: int) -> Path:
    return Path(settings.RLHF_ARTIFACT_DIR) / project.slug / f"{kind}-v{version}"


def artifact_verify(*, artifact: str) -> None:
    """Check that an artifact folder is complete: config plus readable safetensors, no pickles.

    Reads only the safetensors headers (cheap); a truncated file fails here.
    """
    if artifact in BUILTIN_SPECS or artifact.startswith("tiny:"):
        return
    path = Path(artifact)
    if path.suffix == ".gguf" and path.is_file():
        return
    if not path.is_dir():
        raise ArtifactError(f"Model artifact {artifact} does not exist.")
    if not (path / "config.json").is_file():
        raise ArtifactError(f"Model artifact {artifact} has no config.json (incomplete).")
    pickles = [p.name for p in path.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl"}]
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
