"""A project's model spec (issue 9 item 2, PRODUCT.md section 5): `default`, `tiny`,
`version:N` of the same project, or a model under RLHF_MODEL_ROOTS; never a server path
outside them, a pickle, a fake GGUF or another project's artifacts. Every refusal is one
400 message that shows no path, and a spec stored before the rules fails where it is used.
"""

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.exceptions import ApplicationError
from labeling import seams
from labeling.models import Project
from labeling.seams import MODEL_SPEC_REFUSED
from tests.factories import ModelVersionFactory, ProjectFactory
from training.models import ModelVersion
from training.services.registry import current_policy, reference_policy

API = "/api/v1"
pytestmark = pytest.mark.django_db


def model_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    save_file({"w": np.zeros(2, dtype=np.float32)}, str(path / "model.safetensors"))
    return path


@pytest.fixture
def layout(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, settings) -> dict[str, Path]:
    """A wide model root (tmp_path) holding the artifacts root (var/models) and models."""
    settings.RLHF_MODEL_ROOTS = [str(tmp_path)]
    settings.RLHF_ARTIFACT_DIR = tmp_path / "var" / "models"
    models = tmp_path / "models"
    pickled = models / "pickled"
    pickled.mkdir(parents=True)
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    (models / "x.gguf").write_text("just text, named like a model")
    outside = model_folder(tmp_path_factory.mktemp("outside") / "model")
    (models / "escape").symlink_to(outside, target_is_directory=True)
    other_artifact = model_folder(settings.RLHF_ARTIFACT_DIR / "other" / "ppo-v2")
    borrowed = models / "borrowed"  # a real folder whose weights link to another project's
    borrowed.mkdir()
    (borrowed / "config.json").write_text('{"model_type": "llama"}')
    (borrowed / "model.safetensors").symlink_to(other_artifact / "model.safetensors")
    return {
        "root": tmp_path,
        "allowed": model_folder(models / "good"),
        "pickled": pickled,
        "fake_gguf": models / "x.gguf",
        "escape": models / "escape",
        "other_artifact": other_artifact,
        "borrowed": borrowed,
    }


def refused_payloads(layout: dict[str, Path]) -> dict[str, str]:
    return {
        "etc": "/etc",
        "root home": "/root",
        "relative climb": "../../../../etc",
        "proc cwd": "/proc/self/cwd",
        "pickle-only folder": str(layout["pickled"]),
        "text file named .gguf": str(layout["fake_gguf"]),
        "another project's artifact": str(layout["other_artifact"]),
        "symlink out of the root": str(layout["escape"]),
        "weights linked from another project": str(layout["borrowed"]),
        "missing under the root": str(layout["root"] / "models" / "missing"),
        "climb out of the root": f"{layout['allowed']}/../../../../../../etc",
        "home": "~",
        "version of no project": "version:1",
        "a URL (no import by URL: SSRF)": "http://169.254.169.254/latest/meta-data/",
        "a hub id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    }


def test_every_refused_spec_gets_the_same_400_and_no_path(
    layout, admin_client_api, project
) -> None:
    ModelVersionFactory(project=ProjectFactory(slug="other"), version=1)
    url = f"{API}/projects/{project.slug}/"
    for name, spec in refused_payloads(layout).items():
        response = admin_client_api.patch(url, {"base_model": spec}, format="json")
        assert response.status_code == 400, name
        assert response.json() == {"detail": MODEL_SPEC_REFUSED}, name
        body = response.content.decode()
        assert spec not in body and str(layout["root"]) not in body and "/etc" not in body, name
    project.refresh_from_db()
    assert project.base_model == "tiny"


def test_refused_at_creation_too(layout, settings) -> None:
    from labeling.services.projects import project_create

    for spec in ("/etc", str(layout["other_artifact"]), "version:1"):
        with pytest.raises(ApplicationError) as error:
            project_create(slug="new", base_model=spec)
        assert error.value.message == MODEL_SPEC_REFUSED
    assert not Project.objects.filter(slug="new").exists()


def test_allowed_models_are_stored_as_typed(layout, admin_client_api, project) -> None:
    gguf = layout["root"] / "models" / "real.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    typed_through_dots = f"{layout['allowed']}/../good"
    ModelVersionFactory(project=project, version=3, kind="ppo", artifact=str(layout["allowed"]))
    url = f"{API}/projects/{project.slug}/"
    for spec in (str(layout["allowed"]), typed_through_dots, str(gguf), "version:3", "default"):
        response = admin_client_api.patch(url, {"base_model": spec}, format="json")
        assert response.status_code == 200, (spec, response.content)
        assert response.json()["base_model"] == spec


def test_version_spec_is_a_ready_policy_of_the_same_project(
    layout, admin_client_api, project
) -> None:
    ModelVersionFactory(project=project, version=2, kind="rm", role="reward")
    ModelVersionFactory(project=project, version=4, kind="ppo", status="failed")
    url = f"{API}/projects/{project.slug}/"
    for spec in ("version:2", "version:4", "version:0", "version:01", "version:x"):
        response = admin_client_api.patch(url, {"base_model": spec}, format="json")
        assert response.json() == {"detail": MODEL_SPEC_REFUSED}, spec


def test_first_policy_from_an_allowed_folder_is_its_resolved_path(layout) -> None:
    project = ProjectFactory(base_model=f"{layout['allowed']}/../good")
    policy = current_policy(project=project)
    assert (policy.kind, policy.artifact) == ("base", str(layout["allowed"].resolve()))


def test_a_spec_stored_before_the_rules_is_refused_where_it_is_used(layout) -> None:
    for spec in ("/etc", str(layout["other_artifact"])):
        project = ProjectFactory(base_model=spec)  # as stored before the check existed
        with pytest.raises(ApplicationError) as error:
            current_policy(project=project)
        assert error.value.message == MODEL_SPEC_REFUSED
        assert not ModelVersion.objects.filter(project=project).exists()


def test_a_base_version_registered_before_the_rules_is_not_loaded(layout) -> None:
    """Another project's PPO folder registered as this project's base (the old hole)."""
    project = ProjectFactory()
    ModelVersionFactory(
        project=project, version=1, artifact=str(layout["other_artifact"]), is_current=True
    )
    for lookup in (current_policy, reference_policy):
        with pytest.raises(ApplicationError, match="is not an allowed model"):
            lookup(project=project)


def test_the_roots_are_resolved_and_an_empty_list_allows_no_path(
    layout, settings, admin_client_api, project
) -> None:
    link = layout["root"].parent / f"{layout['root'].name}-link"
    os.symlink(layout["root"], link)
    settings.RLHF_MODEL_ROOTS = [str(link)]
    url = f"{API}/projects/{project.slug}/"
    ok = admin_client_api.patch(url, {"base_model": str(layout["allowed"])}, format="json")
    assert ok.status_code == 200
    settings.RLHF_MODEL_ROOTS = []
    refused = admin_client_api.patch(url, {"base_model": str(layout["allowed"])}, format="json")
    assert refused.json() == {"detail": MODEL_SPEC_REFUSED}


def test_labeling_alone_allows_only_builtin_models_and_no_training_config(monkeypatch) -> None:
    monkeypatch.setattr(seams, "_checks", {})
    assert seams.check_model_spec(None, "tiny") == "tiny"
    for spec in ("version:1", "/models/x"):
        with pytest.raises(ApplicationError, match="not an allowed model"):
            seams.check_model_spec(None, spec)
    assert seams.check_training_config({}) == {}
    with pytest.raises(ApplicationError, match="training_config: cannot be checked"):
        seams.check_training_config({"prompts_per_round": 4})
