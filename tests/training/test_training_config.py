"""A project's training_config has one schema (issue 9 item 6): every door refuses unknown
keys, wrong types and values out of range, naming the field path; the docs table is the
schema's own output, and every key the services read is in it."""

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.exceptions import ApplicationError
from labeling.admin import ProjectForm
from labeling.models import Project
from training.management.commands.demo import DEMO_TRAINING_CONFIG
from training.ml.configs import PPOConfig, RMConfig, SFTConfig
from training.services.config_schema import (
    SECTIONS,
    TOP_LEVEL,
    run_config_fields,
    schema_markdown,
    training_config_check,
)
from training.services.run_bodies.common import known_fields

ROOT = Path(__file__).resolve().parents[2]
API = "/api/v1"
pytestmark = pytest.mark.django_db

REFUSED = [
    ({"prompts_per_round": -5}, "training_config.prompts_per_round: must be >= 1"),
    ("abc", "training_config: must be an object"),
    ({"prompts_per_round": 10**12}, "training_config.prompts_per_round: must be <= 100000"),
    ({"ppo": {"lerning_rate": 1e-5}}, "training_config.ppo.lerning_rate: unknown key"),
    ({"rm": {"batch_size": True}}, "training_config.rm.batch_size: must be an integer"),
    ({"rm": {"batch_size": 2.0}}, "training_config.rm.batch_size: must be an integer"),
    ({"ppo": {"lr": "fast"}}, "training_config.ppo.lr: must be a number"),
    ({"ppo": {"lr": 0}}, "training_config.ppo.lr: must be > 0"),
    ({"ppo": {"kl_target": True}}, "training_config.ppo.kl_target: must be a number or null"),
    ({"sft": {"eval_fraction": 1}}, "training_config.sft.eval_fraction: must be < 1"),
    ({"ppo": {"init_from": "scratch"}}, "training_config.ppo.init_from: must be one of"),
    ({"ppo": {"rules": "length:<=3:-1"}}, "training_config.ppo.rules: must be a list"),
    ({"ppo": {"rules": ["shout:x:1"]}}, "training_config.ppo.rules: rule 'shout:x:1'"),
    ({"rm": [1]}, "training_config.rm: must be an object"),
    ({"eval": {}}, "training_config.eval: unknown key"),
    ({"generate": {"prompts_per_batch": 0}}, "training_config.generate.prompts_per_batch:"),
    ({"prompts_per_round": None}, "training_config.prompts_per_round: must not be null"),
]
ACCEPTED = {
    "prompts_per_round": 8,
    "generate": {"prompts_per_batch": 2, "batch_size": 4},
    "rm": {"lr": 1, "eval_fraction": 0.2, "max_grad_norm": None, "train_top_layers": 2},
    "ppo": {"kl_target": None, "init_from": "policy", "rules": ["length:<=64:-1"], "steps": 3},
    "sft": {"epochs": 0.5, "lora_r": 8},
}


@pytest.mark.parametrize(("value", "message"), REFUSED)
def test_the_api_refuses_naming_the_field(admin_client_api, project, value, message) -> None:
    url = f"{API}/projects/{project.slug}/"
    response = admin_client_api.patch(url, {"training_config": value}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith(message)
    project.refresh_from_db()
    assert project.training_config == {}


def test_the_api_stores_and_returns_a_valid_config(admin_client_api, project) -> None:
    url = f"{API}/projects/{project.slug}/"
    response = admin_client_api.patch(url, {"training_config": ACCEPTED}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["training_config"] == ACCEPTED
    assert admin_client_api.get(url).json()["training_config"] == ACCEPTED
    project.refresh_from_db()
    assert project.training_config == ACCEPTED


def test_project_creation_checks_it_too(admin_client_api, project_admin) -> None:
    project_admin.is_staff = True
    project_admin.save()
    body = {"slug": "new", "training_config": {"ppo": {"lerning_rate": 1}}}
    response = admin_client_api.post(f"{API}/projects/", body, format="json")
    assert response.json()["detail"] == "training_config.ppo.lerning_rate: unknown key"
    body["training_config"] = ACCEPTED
    response = admin_client_api.post(f"{API}/projects/", body, format="json")
    assert response.status_code == 201 and response.json()["training_config"] == ACCEPTED


def test_the_django_admin_form_uses_the_same_checks(project) -> None:
    data = {"base_model": "/etc", "training_config": json.dumps({"ppo": {"lerning_rate": 1}})}
    form = ProjectForm(data=data, instance=project)
    assert not form.is_valid()
    assert form.errors["training_config"] == ["training_config.ppo.lerning_rate: unknown key"]
    assert form.errors["base_model"][0].startswith("base_model: not an allowed model")
    form = ProjectForm(
        data={"base_model": "tiny", "training_config": json.dumps(ACCEPTED)}, instance=project
    )
    assert form.is_valid(), form.errors


def test_create_project_reads_and_checks_a_training_config_file(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rm": {"batch_size": -1}}))
    with pytest.raises(CommandError, match=r"training_config\.rm\.batch_size: must be >= 1"):
        call_command("create_project", "cli", "--training-config", str(bad), stdout=io.StringIO())
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(CommandError, match="is not JSON"):
        call_command("create_project", "cli", "--training-config", str(broken))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ACCEPTED))
    call_command("create_project", "cli", "--training-config", str(good), stdout=io.StringIO())
    assert Project.objects.get(slug="cli").training_config == ACCEPTED


def test_the_demo_config_fits_the_schema() -> None:
    assert training_config_check(DEMO_TRAINING_CONFIG) == DEMO_TRAINING_CONFIG


def test_a_run_with_a_key_stored_before_the_schema_fails_naming_it() -> None:
    with pytest.raises(ApplicationError, match=r"training_config\.ppo\.lerning_rate: unknown"):
        known_fields(PPOConfig, {"steps": 2, "lerning_rate": 1e-5})
    values = {"steps": 2, "init_from": "policy", "rules": [], "continue_kl_controller": True}
    assert known_fields(PPOConfig, values) == {"steps": 2}
    assert run_config_fields(RMConfig, {"eval_fraction": 0.2, "lr": 1e-4}) == {
        "eval_fraction": 0.2,
        "lr": 1e-4,
    }
    assert run_config_fields(SFTConfig, {}) == {}


def test_the_trainers_refuse_the_same_values() -> None:
    with pytest.raises(ValueError, match=r"PPOConfig\.batch_size must be >= 1, got 0"):
        PPOConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"RMConfig\.lr must be a number"):
        RMConfig(lr=True).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"SFTConfig\.eval_fraction must be < 1"):
        SFTConfig(eval_fraction=1.0).validate()


def test_the_docs_table_is_the_schema() -> None:
    text = (ROOT / "docs" / "concepts.md").read_text()
    found = re.search(
        r"<!-- training-config-schema:start -->\n(.*)<!-- training-config-schema:end -->",
        text,
        re.S,
    )
    assert found, "docs/concepts.md lost its training_config table markers"
    assert found.group(1) == schema_markdown(), (
        "docs/concepts.md is out of date: paste training.services.config_schema."
        "schema_markdown() between the markers"
    )


def _schema_keys() -> set[str]:
    import dataclasses

    classes = [*TOP_LEVEL, *(cls for section in SECTIONS.values() for cls in section)]
    return {f.name for cls in classes for f in dataclasses.fields(cls)} | {"rules"}


def test_every_key_the_services_read_is_in_the_schema() -> None:
    read = set()
    for path in (ROOT / "training" / "services").glob("*.py"):
        read |= set(re.findall(r"config\.get\(\s*\"(\w+)\"", path.read_text()))
        read |= set(re.findall(r"config\[\"(\w+)\"\]", path.read_text()))
    read -= set(SECTIONS)  # a section, read as training_config.get(kind)
    assert read, "the scan found nothing: the pattern no longer matches the services"
    assert read <= _schema_keys(), sorted(read - _schema_keys())


def test_checking_a_config_does_not_load_torch(tmp_path) -> None:
    """The web process checks training_config and model specs without the ML stack."""
    probe = (
        "import django, sys; django.setup()\n"
        "from labeling import seams\n"
        f"seams.check_training_config({ACCEPTED!r})\n"
        "seams.check_model_spec(None, 'tiny')\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "RLHF_STUDIO_VAR_DIR": str(tmp_path),
            "PYTHONPATH": str(ROOT),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"ppo": {"lora_r": 4, "train_top_layers": 2}}, "exclude each other"),
        ({"rm": {"lora_r": 4, "train_top_layers": 2}}, "exclude each other"),
        ({"sft": {"lora_r": 4, "train_top_layers": 2}}, "exclude each other"),
        ({"dpo": {"lora_r": 4, "train_top_layers": 2}}, "exclude each other"),
        ({"best_of_n": {"lora_r": 4, "train_top_layers": 2}}, "exclude each other"),
        ({"rloo": {"lora_r": 4, "train_top_layers": 2}}, "exclude each other"),
        ({"ppo": {"lora_target_modules": " , "}}, "at least one layer"),
        ({"rm": {"seed": 10**40}}, "rm.seed: must be <="),
        ({"ppo": {"seed": 2**31}}, "ppo.seed: must be <="),
    ],
)
def test_the_door_refuses_what_the_trainer_config_would(config, message) -> None:
    """Checks across fields (PPOConfig.__post_init__) and seed bounds run at the door, not
    hours later in a worker."""
    with pytest.raises(ApplicationError, match=message):
        training_config_check(config)


def test_sft_lora_r_zero_is_off_and_mixes_with_top_layers() -> None:
    training_config_check({"sft": {"lora_r": 0, "train_top_layers": 2}})
