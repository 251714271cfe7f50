import json

import pytest
import torch
from safetensors.torch import save_file

from tests.factories import ModelVersionFactory, ProjectFactory
from training.models import ModelVersion
from training.services import registry


def _folder(tmp_path, name="m"):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_file({"w": torch.zeros(2)}, str(folder / "model.safetensors"))
    return folder


@pytest.mark.django_db
def test_base_model_becomes_the_first_current_policy() -> None:
    project = ProjectFactory(base_model="tiny")
    policy = registry.current_policy(project=project)
    assert (policy.kind, policy.artifact, policy.is_current) == ("base", "tiny", True)
    assert registry.current_policy(project=project) == policy  # not created twice
    assert registry.current_reward_model(project=project) is None


@pytest.mark.django_db
def test_promote_makes_exactly_one_current_per_role(tmp_path) -> None:
    project = ProjectFactory()
    first = registry.current_policy(project=project)
    new = registry.model_version_create(
        project=project, kind="ppo", artifact=str(_folder(tmp_path)), parent=first
    )
    assert new.status == "pending" and not new.is_current
    registry.model_version_promote(version=new, metrics={"reward": 1.5})
    current = ModelVersion.objects.filter(project=project, role="policy", is_current=True)
    assert list(current) == [new]
    new.refresh_from_db()
    assert new.status == "ready" and new.metrics["reward"] == 1.5


@pytest.mark.django_db
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "model.safetensors").write_bytes(b"\x00\x01garbage"), "unreadable"),
        (lambda f: (f / "pytorch_model.bin").write_bytes(b"pickle"), "pickled"),
        (lambda f: (f / "config.json").unlink(), "config.json"),
        (lambda f: (f / "model.safetensors").unlink(), "no safetensors"),
    ],
)
def test_incomplete_or_pickled_artifacts_never_become_current(tmp_path, damage, message) -> None:
    project = ProjectFactory()
    old = registry.current_policy(project=project)
    folder = _folder(tmp_path)
    damage(folder)
    version = registry.model_version_create(project=project, kind="ppo", artifact=str(folder))
    with pytest.raises(registry.ArtifactError, match=message):
        registry.model_version_promote(version=version)
    old.refresh_from_db()
    assert old.is_current
    assert not ModelVersion.objects.get(pk=version.pk).is_current


@pytest.mark.django_db
def test_reference_policy_prefers_newest_sft() -> None:
    project = ProjectFactory()
    base = registry.current_policy(project=project)
    assert registry.reference_policy(project=project) == base
    sft = ModelVersionFactory(project=project, kind="sft", version=7)
    ModelVersionFactory(project=project, kind="ppo", version=8)
    assert registry.reference_policy(project=project) == sft


@pytest.mark.django_db
def test_version_metrics_are_stored_json_safe(tmp_path) -> None:
    """A trainer's NaN (an eval with no pairs) is stored as null, as a run's metrics are,
    both when the version is created and when it is promoted."""
    project = ProjectFactory(base_model="tiny")
    version = registry.model_version_create(
        project=project,
        kind="rm",
        artifact=str(_folder(tmp_path)),
        metrics={"rm/eval_loss": float("nan"), "rm/loss": 0.5, "steps": 3},
    )
    version.refresh_from_db()
    assert version.metrics == {"rm/eval_loss": None, "rm/loss": 0.5, "steps": 3}
    registry.model_version_promote(version=version, metrics={"rm/accuracy": float("inf")})
    version.refresh_from_db()
    assert version.metrics["rm/accuracy"] is None and version.metrics["rm/loss"] == 0.5
