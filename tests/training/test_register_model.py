"""register_model: a reward model trained elsewhere (a TRL-shaped folder) becomes a
project's RM, and every folder the rules refuse is refused in one line."""

from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tests.factories import ModelVersionFactory
from training.ml.loading import load_tokenizer
from training.ml.reward.model import load_reward_model
from training.ml.tiny import tiny_config
from training.models import ModelVersion
from training.services.registry import current_reward_model


def save_model(folder: Path, *, num_labels: int | None = 1) -> Path:
    """A tiny Llama saved like TRL's RewardTrainer saves one (num_labels=1 head), or as a
    causal LM (``num_labels=None``), with the tiny tokenizer."""
    tokenizer = load_tokenizer("tiny")
    config = tiny_config(tokenizer)
    torch.manual_seed(0)
    if num_labels is None:
        model = AutoModelForCausalLM.from_config(config)
    else:
        config.num_labels = num_labels
        model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def pickle_only(folder: Path) -> Path:
    """A checkpoint folder with a config and only pickled weights."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama", "num_labels": 1}')
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    return folder


@pytest.fixture
def roots(tmp_path: Path, settings) -> Path:
    settings.RLHF_MODEL_ROOTS = [str(tmp_path / "models")]
    settings.RLHF_ARTIFACT_DIR = tmp_path / "var" / "models"
    return tmp_path / "models"


@pytest.mark.django_db
def test_a_trl_reward_model_becomes_the_projects_rm_and_scores(project, roots, capsys) -> None:
    folder = save_model(roots / "trl-rm")
    call_command("register_model", project.slug, str(folder), "--role", "reward", "--make-current")

    version = current_reward_model(project=project)
    assert version is not None and version.artifact == str(folder.resolve())
    assert (version.kind, version.status, version.version) == ("rm", "ready", 1)
    assert f"Registered {project.slug}/rm-v1 (current)" in capsys.readouterr().out

    model, tokenizer = load_reward_model(version.artifact)  # what a round's PPO loads
    reference = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = tokenizer(["A short and kind answer."], return_tensors="pt")
    with torch.no_grad():
        ours = model(ids["input_ids"], ids["attention_mask"])
        theirs = reference(**ids).logits[:, 0]
    torch.testing.assert_close(ours, theirs)


@pytest.mark.django_db
def test_without_make_current_the_version_is_ready_but_not_current(project, roots) -> None:
    current = ModelVersionFactory(project=project, kind="rm", role="reward", is_current=True)
    call_command("register_model", project.slug, str(save_model(roots / "rm")), "--role", "reward")
    registered = ModelVersion.objects.get(project=project, version=current.version + 1)
    assert (registered.status, registered.is_current) == ("ready", False)
    assert current_reward_model(project=project) == current


@pytest.mark.django_db
def test_a_causal_lm_registers_as_a_policy(project, roots) -> None:
    folder = save_model(roots / "policy", num_labels=None)
    call_command("register_model", project.slug, str(folder), "--role", "policy")
    version = ModelVersion.objects.get(project=project)
    assert (version.kind, version.role, version.status) == ("base", "policy", "ready")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "role", "message"),
    [
        ("outside", "reward", r"is not under RLHF_MODEL_ROOTS \("),
        ("missing", "reward", "does not exist"),
        ("artifact", "reward", "is inside RLHF_ARTIFACT_DIR"),
        ("pickle", "reward", "refusing pickled checkpoint"),
        ("causal_lm", "reward", "LlamaForCausalLM with .* not a reward model"),
        ("two_labels", "reward", "with 2 labels, not a reward model"),
        ("reward_as_policy", "policy", "LlamaForSequenceClassification, not a policy"),
        ("relative", "reward", "is not an absolute path"),
    ],
)
def test_refusals_are_one_line_and_register_nothing(
    project, roots, tmp_path, settings, case, role, message
) -> None:
    artifacts = Path(settings.RLHF_ARTIFACT_DIR)
    folders = {  # built on demand: each save takes a second
        "outside": lambda: save_model(tmp_path / "elsewhere"),
        "missing": lambda: roots / "nope",
        "artifact": lambda: save_model(artifacts / "other-project" / "rm-v3"),
        "pickle": lambda: pickle_only(roots / "pickled"),
        "causal_lm": lambda: save_model(roots / "lm", num_labels=None),
        "two_labels": lambda: save_model(roots / "two", num_labels=2),
        "reward_as_policy": lambda: save_model(roots / "rm"),
        "relative": lambda: Path("models/rm"),
    }
    path = folders[case]()
    with pytest.raises(CommandError, match=message) as refused:
        call_command("register_model", project.slug, str(path), "--role", role)
    assert "\n" not in str(refused.value)
    assert not ModelVersion.objects.filter(project=project).exists()
