"""Recipes per round (ppo, dpo, best_of_n, rloo): chosen per project or per round, through
every door, and each one's round end to end on the real ML core with the `tiny` model.

The in-process rounds follow test_loop_tiny.py (eager Celery); the last test runs a DPO
round on a real Celery worker with PostgreSQL and Redis, as test_e2e_worker.py does.
"""

from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command

from core.exceptions import ApplicationError
from labeling.models import Ranking
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.factories import MembershipFactory, ProjectFactory, PromptFactory
from tests.training import test_e2e_worker as e2e
from tests.training.test_e2e_worker import start_worker  # noqa: F401  (the worker fixture)
from training.models import MetricPoint, ModelVersion, Round, TrainingRun
from training.services import registry, rounds
from training.services.config_schema import training_config_check

TINY = {
    "rm": {"batch_size": 2, "max_length": 64, "lr": 1e-3},
    "ppo": {
        "steps": 2, "batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1,
        "max_new_tokens": 6, "forward_batch_size": 4, "checkpoint_every": 0,
    },
    "dpo": {"batch_size": 2, "max_length": 64, "lr": 1e-2, "beta": 0.5},
    "best_of_n": {
        "n": 3, "batch_size": 2, "max_length": 64, "lr": 1e-2, "max_new_tokens": 6,
        "sample_batch_size": 6, "warmup_ratio": 0, "eval_fraction": 0,
    },
    "rloo": {"steps": 2, "batch_size": 2, "max_new_tokens": 6, "forward_batch_size": 6,
             "lr": 1e-2},
}  # fmt: skip


@pytest.fixture
def tiny_project(db, settings, tmp_path):
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    project = ProjectFactory(
        base_model="tiny", k=3, overlap=1, max_new_tokens=6, training_config=TINY
    )
    PromptFactory.create_batch(4, project=project)
    return project


def _label_everything(project, labeler) -> int:
    done = 0
    while (lease := task_lease_next(project=project, labeler=labeler)) is not None:
        ids = list(lease.task.responses.order_by("position").values_list("id", flat=True))
        order = [[ids[0]], ids[1:]]  # a tie in second place
        ranking_submit(task=lease.task, labeler=labeler, order=order, flags={}, time_spent_ms=900)
        done += 1
    return done


def _weights(artifact: str) -> dict[str, torch.Tensor]:
    from training.ml.loading import load_causal_lm

    model, _ = load_causal_lm(artifact, device="cpu", dtype="float32")
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# --------------------------------------------------------------------------- the doors


@pytest.mark.django_db
def test_a_rounds_recipe_comes_from_its_start_else_the_project(tiny_project, monkeypatch):
    from training import tasks

    monkeypatch.setattr(tasks.gpu_execute_run, "delay", lambda run_id: None)  # no worker
    assert rounds.round_start(project=tiny_project, num_prompts=1).recipe == "ppo"
    Round.objects.update(stage=Round.Stage.DONE)
    tiny_project.training_config = {**TINY, "recipe": "rloo"}
    tiny_project.save(update_fields=["training_config"])
    assert rounds.round_start(project=tiny_project, num_prompts=1).recipe == "rloo"
    Round.objects.update(stage=Round.Stage.DONE)
    assert rounds.round_start(project=tiny_project, num_prompts=1, recipe="dpo").recipe == "dpo"
    Round.objects.update(stage=Round.Stage.DONE)
    with pytest.raises(ApplicationError, match=r"^recipe: must be one of ppo, dpo, best_of_n"):
        rounds.round_start(project=tiny_project, num_prompts=1, recipe="grpo")
    assert Round.objects.count() == 3


def test_the_project_default_recipe_is_checked_at_the_door() -> None:
    assert training_config_check({"recipe": "best_of_n"}) == {"recipe": "best_of_n"}
    with pytest.raises(ApplicationError, match=r"^training_config\.recipe: must be one of"):
        training_config_check({"recipe": "grpo"})
    with pytest.raises(ApplicationError, match=r"^training_config\.dpo\.beta: must be > 0"):
        training_config_check({"dpo": {"beta": 0}})
    with pytest.raises(ApplicationError, match=r"^training_config\.rloo\.num_samples: must be"):
        training_config_check({"rloo": {"num_samples": 1}})
    with pytest.raises(ApplicationError, match=r"^training_config\.best_of_n\.nn: unknown key"):
        training_config_check({"best_of_n": {"nn": 4}})


@pytest.mark.django_db
def test_start_round_takes_a_recipe(tiny_project, on_commit, monkeypatch, capsys) -> None:
    from training import tasks

    monkeypatch.setattr(tasks.gpu_execute_run, "delay", lambda run_id: None)
    with on_commit():
        call_command("start_round", tiny_project.slug, "--prompts", "1", "--recipe", "best_of_n")
    assert Round.objects.get(project=tiny_project).recipe == "best_of_n"
    assert "recipe best_of_n" in capsys.readouterr().out
    Round.objects.update(stage=Round.Stage.DONE)
    with pytest.raises(CommandError, match="invalid choice: 'grpo'"):
        call_command("start_round", tiny_project.slug, "--recipe", "grpo")
    assert Round.objects.count() == 1


@pytest.mark.django_db
def test_the_rounds_api_takes_the_recipe_or_the_projects(
    admin_client_api, project, monkeypatch
) -> None:
    from training import tasks

    monkeypatch.setattr(tasks.gpu_execute_run, "delay", lambda run_id: None)
    PromptFactory.create_batch(2, project=project)
    tiny_project = project
    url = f"/api/v1/projects/{tiny_project.slug}/rounds/"
    response = admin_client_api.post(url, {"num_prompts": 1, "recipe": "grpo"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("recipe: ")
    response = admin_client_api.post(url, {"num_prompts": 1, "recipe": "rloo"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["recipe"] == "rloo"
    Round.objects.update(stage=Round.Stage.DONE)
    tiny_project.training_config = {**TINY, "recipe": "dpo"}
    tiny_project.save(update_fields=["training_config"])
    response = admin_client_api.post(url, {"num_prompts": 1}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["recipe"] == "dpo"
    listed = admin_client_api.get(url).json()
    assert sorted(r["recipe"] for r in listed) == ["dpo", "rloo"]


@pytest.mark.django_db
def test_the_dashboard_offers_the_recipes_and_names_the_projects_default(
    project, project_admin
) -> None:
    from django.test import Client

    project.training_config = {"recipe": "rloo"}
    project.save(update_fields=["training_config"])
    client = Client()
    client.force_login(project_admin)
    html = client.get(f"/projects/{project.slug}/rounds/").content.decode()
    assert '<option value="">Project default (rloo)</option>' in html
    for recipe in ("ppo", "dpo", "best_of_n", "rloo"):
        assert f'<option value="{recipe}">{recipe}</option>' in html
    assert ">Recipe</th>" in html


# --------------------------------------------------------------------------- whole rounds


def _run_round(project, recipe: str, on_commit) -> Round:
    labeler = MembershipFactory(project=project, role="labeler").user
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=3, recipe=recipe)
    round_.refresh_from_db()
    assert round_.stage == "labeling", round_.error
    with on_commit():
        assert _label_everything(project, labeler) == 3  # the last one advances the round
    return _through_the_gate(round_, on_commit)


def _through_the_gate(round_: Round, on_commit) -> Round:
    """An admin approves wherever the promotion gate stopped the round (the tiny model's
    figures are noise): the recipe's policy then goes through the same promotion as PPO's."""
    round_.refresh_from_db()
    while round_.stage == Round.Stage.NEEDS_REVIEW:
        with on_commit():
            rounds.round_approve(round_=round_)
        round_.refresh_from_db()
    return round_


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("recipe", ["dpo", "best_of_n", "rloo"])
def test_a_round_with_each_recipe_trains_the_rm_and_its_policy(tiny_project, on_commit, recipe):
    """The RM is trained in every round; the policy stage (training_ppo) runs the recipe's
    own run kind and publishes a policy version of that kind, with the same provenance as
    PPO's: parent, the round, metrics, ready and current."""
    base = registry.current_policy(project=tiny_project)
    round_ = _run_round(tiny_project, recipe, on_commit)
    assert round_.stage == "done", round_.error
    runs = {r.kind: r for r in round_.runs.all()}
    assert set(runs) - {"eval"} == {"generate", "rm", recipe}  # eval: the gate's figures
    assert all(r.status == TrainingRun.Status.SUCCEEDED for r in runs.values())
    rm, policy = round_.reward_model, round_.policy
    assert rm.kind == "rm" and rm.is_current
    assert policy.kind == recipe and policy.role == "policy" and policy.status == "ready"
    assert policy.is_current and registry.current_policy(project=tiny_project) == policy
    assert policy.parent == round_.sampling_policy == base  # the base is also the reference
    assert runs[recipe].output == policy and policy.metrics
    assert Path(policy.artifact).name == f"{recipe}-v{policy.version}"
    assert list(Path(policy.artifact).glob("*.safetensors"))
    assert MetricPoint.objects.filter(run=runs[recipe]).exists()
    assert any(key.startswith(f"{recipe}/") for key in round_.metrics)
    before, after = _weights(base.artifact), _weights(policy.artifact)
    assert any(not torch.equal(before[name], after[name]) for name in before), "untrained"
    # The next round samples from the recipe's policy.
    with on_commit():
        second = rounds.round_start(project=tiny_project, num_prompts=1)
    assert second.sampling_policy == policy and second.recipe == "ppo"


@pytest.mark.slow
@pytest.mark.django_db
def test_dpo_trains_on_current_rankings_only(tiny_project, on_commit, monkeypatch):
    """DPO reads the K-wise rankings with their tie groups: a superseded or rejected
    ranking is left out, like the RM leaves it out."""
    from training.ml import dpo

    seen: list[list] = []
    real = dpo.train_dpo

    def recording(policy, reference, tokenizer, rankings, config, **kwargs):
        seen.append([(r.prompt, r.tie_groups) for r in rankings])
        seen.append([(r.prompt, r.tie_groups) for r in kwargs["eval_rankings"]])
        return real(policy, reference, tokenizer, rankings, config, **kwargs)

    monkeypatch.setattr(dpo, "train_dpo", recording)
    labeler = MembershipFactory(project=tiny_project, role="labeler").user
    with on_commit():
        round_ = rounds.round_start(project=tiny_project, num_prompts=4, recipe="dpo")
    with on_commit():
        assert _label_everything(tiny_project, labeler) == 4
    round_ = _through_the_gate(round_, on_commit)
    assert round_.stage == "done", round_.error
    train, held = seen
    assert len(train) + len(held) == 4 and held  # every prompt once; some held out
    assert all(groups == [[0], [1, 2]] for _, groups in train + held)  # ties kept

    # A rejected and a superseded ranking are not read again.
    from django.utils import timezone

    first, second = Ranking.objects.order_by("id")[:2]
    Ranking.objects.filter(pk=first.pk).update(review=Ranking.Review.REJECTED)
    Ranking.objects.filter(pk=second.pk).update(superseded_at=timezone.now())
    from training.services import training_data

    prompts = {e.prompt_id for e in training_data.ranked_examples(project=tiny_project)}
    assert prompts == {str(r.task.prompt_id) for r in Ranking.objects.order_by("id")[2:]}


@pytest.mark.slow
def test_the_loop_efficacy_bench_gives_a_row_per_recipe(tmp_path) -> None:
    """`bench.loop_efficacy --recipe ...` at a test size on `tiny`: every recipe's round
    goes through the services and lands in the table with its figures."""
    import json
    import math
    import subprocess
    import sys

    out = tmp_path / "loop.json"
    command = [
        sys.executable, "-m", "bench.loop_efficacy", "--quick", "--model", "tiny",
        "--recipe", "ppo", "dpo", "best_of_n", "rloo", "--seeds", "0", "--threads", "1",
        "--prompts-per-round", "4", "--train-topics", "4", "--eval-topics", "2",
        "--max-new-tokens", "6", "--eval-samples", "1", "--ppo-steps", "1",
        "--ppo-batch", "4", "--rm-epochs", "1", "--labelers", "3", "--out", str(out),
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [row["recipe"] for row in result["table"]] == ["ppo", "dpo", "best_of_n", "rloo"]
    for row in result["table"]:
        assert all(math.isfinite(row[key]) for key in ("z", "rise", "kl_to_ref"))
        assert row["cpu_seconds_per_round"] > 0
    for one in result["results"]:
        assert one["eval_prompts"] == 4
        assert one["recipe"] in one["rounds"][0]["stage_seconds"]  # its policy stage ran
    assert "| best_of_n |" in done.stdout


# --------------------------------------------------------------------------- real worker


@pytest.mark.celery
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not (e2e.ON_POSTGRES and e2e.ON_REDIS),
    reason="needs PostgreSQL (DATABASE_URL) and Redis (CELERY_BROKER_URL)",
)
def test_a_dpo_round_runs_on_a_real_worker(start_worker) -> None:  # noqa: F811 (the fixture)
    """A DPO round (the project's default recipe) through Redis and a real `celery worker`
    on PostgreSQL: sampling, pairs, RM and DPO all in the worker process."""
    worker = start_worker()
    project = ProjectFactory(
        k=3, overlap=1, base_model="tiny", max_new_tokens=8,
        training_config={**e2e.FAST_CONFIG, "recipe": "dpo", "dpo": TINY["dpo"]},
    )  # fmt: skip
    PromptFactory.create_batch(6, project=project)
    round_ = e2e.run_round(project, worker)
    assert round_.recipe == "dpo"
    runs = {r.kind: r for r in round_.runs.all()}
    assert set(runs) - {"eval"} == {"generate", "rm", "dpo"}  # eval: the gate's figures
    assert runs["dpo"].status == TrainingRun.Status.SUCCEEDED and runs["dpo"].points.exists()
    assert all(r.worker for r in runs.values())  # executed by the worker, not in here
    assert round_.policy.kind == "dpo" and round_.policy.parent == round_.sampling_policy
    assert e2e.current_models(project) == {
        "policy": round_.policy.pk,
        "reward": round_.reward_model.pk,
    }
    assert ModelVersion.objects.get(pk=round_.policy.pk).status == "ready"
