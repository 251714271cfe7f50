"""The promotion gate (training.services.gate): each check, the rounds it stops in
needs_review, approve and reject over REST and the CLI, and that the previous models stay
current until an admin approves. The ML bodies are test_rounds.py's recorders, with the
figures each test needs; the real bodies' figures are checked in test_loop_tiny.py."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.exceptions import ConflictError
from tests.factories import (
    MembershipFactory,
    ModelVersionFactory,
    PromptFactory,
    RoundFactory,
)
from tests.training.test_rounds import Bodies, _rank_all
from training.models import ModelVersion, Round, TrainingRun
from training.services import gate, registry, rounds, run_bodies, runs
from training.services.run_bodies.common import publish

PASSING_EVAL = dict(Bodies.EVAL_METRICS)


@pytest.fixture
def bodies(monkeypatch, tmp_path, settings):
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    recorder = Bodies(tmp_path)
    recorder.RM_METRICS = dict(Bodies.RM_METRICS)
    recorder.EVAL_METRICS = dict(PASSING_EVAL)
    monkeypatch.setattr(run_bodies, "body_for", recorder)
    return recorder


@pytest.fixture
def loop_project(project):
    PromptFactory.create_batch(3, project=project)
    return project


def _to_the_gate(project, on_commit) -> Round:
    """Start a round, rank its tasks, advance: the RM (and maybe the policy) stage runs."""
    with on_commit():
        round_ = rounds.round_start(project=project, num_prompts=2)
    _rank_all(round_)
    with on_commit():
        rounds.round_advance(round_=round_)
    round_.refresh_from_db()
    return round_


def _current(project) -> dict[str, int]:
    return dict(
        ModelVersion.objects.filter(project=project, is_current=True).values_list("role", "pk")
    )


def _rm(project, **metrics) -> ModelVersion:
    return ModelVersionFactory(project=project, kind="rm", role="reward", metrics=metrics)


# --------------------------------------------------------------------------- the checks


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("accuracy", "passed"), [(0.5, False), (0.599, False), (0.6, True), (0.9, True)]
)
def test_the_rm_must_reach_the_projects_accuracy(project, accuracy, passed) -> None:
    round_ = RoundFactory(project=project, stage="training_rm")
    result = gate.gate_check_reward_model(
        round_=round_, version=_rm(project, **{"rm/heldout_accuracy": accuracy})
    )
    assert result["passed"] is passed
    first, second = result["checks"]
    assert (first["name"], first["passed"], first["bound"]) == ("rm_accuracy", passed, 0.6)
    assert second["passed"] and "No current reward model" in second["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(("new", "passed"), [(0.789, False), (0.79, True), (0.85, True)])
def test_the_rm_may_be_at_most_a_point_below_the_current_one_on_the_same_split(
    project, new, passed
) -> None:
    current = _rm(project)
    registry.model_version_promote(version=current)
    round_ = RoundFactory(project=project, stage="training_rm")
    version = _rm(
        project,
        **{
            "rm/heldout_accuracy": new,
            "rm/current_heldout_accuracy": 0.80,
            "rm/current_model": current.label,
        },
    )
    result = gate.gate_check_reward_model(round_=round_, version=version)
    check = result["checks"][1]
    assert (check["name"], check["passed"], result["passed"]) == ("rm_vs_current", passed, passed)
    assert check["bound"] == pytest.approx(0.79)
    assert result["current"] == {"model": current.label, "heldout_accuracy": 0.80}


@pytest.mark.django_db
def test_figures_nobody_measured_fail_the_rm_gate(project) -> None:
    round_ = RoundFactory(project=project, stage="training_rm")
    empty = gate.gate_check_reward_model(round_=round_, version=_rm(project))
    assert not empty["passed"] and "No held-out rankings" in empty["checks"][0]["detail"]
    registry.model_version_promote(version=_rm(project))  # a current RM nobody compared
    unmeasured = gate.gate_check_reward_model(
        round_=round_, version=_rm(project, **{"rm/heldout_accuracy": 0.9})
    )
    assert unmeasured["checks"][0]["passed"] and not unmeasured["checks"][1]["passed"]
    assert "was not measured on this split" in unmeasured["checks"][1]["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("changes", "failed"),
    [
        ({}, set()),
        ({"gate/new_score": 0.5, "gate/score_gain": 0.0}, {"policy_better"}),
        ({"gate/new_score": 0.4, "gate/score_gain": -0.1}, {"policy_better"}),
        ({"gate/kl_to_ref": 12.01}, {"kl_bound"}),  # 2 x the default target 6
        ({"gate/kl_to_ref": 12.0}, set()),
        ({"gate/eval_prompts": 0}, {"policy_better"}),  # no eval prompts: not measured
        ({"gate/kl_to_ref": None}, {"kl_bound"}),
    ],
)
def test_the_policy_must_beat_the_sampling_policy_within_the_kl_bound(
    project, changes, failed
) -> None:
    round_ = RoundFactory(project=project, stage="training_ppo")
    result = gate.gate_check_policy(round_=round_, kind="ppo", metrics={**PASSING_EVAL, **changes})
    assert {c["name"] for c in result["checks"] if not c["passed"]} == failed
    assert result["passed"] is not failed


@pytest.mark.django_db
def test_the_kl_bound_follows_the_projects_target_and_factor(project) -> None:
    project.gate_kl_factor = 1.5
    project.training_config = {"ppo": {"kl_target": 2.0}}
    project.save()
    round_ = RoundFactory(project=project, stage="training_ppo")
    metrics = {**PASSING_EVAL, "gate/kl_to_ref": 3.5}
    check = gate.gate_check_policy(round_=round_, kind="ppo", metrics=metrics)["checks"][1]
    assert (check["passed"], check["bound"]) == (False, 3.0)
    # A recipe whose own section names a target is bounded by it.
    project.training_config = {"ppo": {"kl_target": 2.0}, "rloo": {"kl_target": 4.0}}
    project.save()
    check = gate.gate_check_policy(round_=round_, kind="rloo", metrics=metrics)["checks"][1]
    assert (check["passed"], check["bound"]) == (True, 6.0)
    project.training_config = {"ppo": {"kl_target": None}}  # a fixed beta: nothing to bound by
    project.save()
    check = gate.gate_check_policy(round_=round_, kind="ppo", metrics=metrics)["checks"][1]
    assert not check["passed"] and "No KL target" in check["detail"]


# --------------------------------------------------------------------------- the rounds


@pytest.mark.django_db
def test_an_rm_below_the_threshold_stops_the_round_before_the_policy_stage(
    bodies, loop_project, on_commit, admin_client_api, project_admin
) -> None:
    bodies.RM_METRICS["rm/heldout_accuracy"] = 0.5
    base = registry.current_policy(project=loop_project)
    round_ = _to_the_gate(loop_project, on_commit)
    assert (round_.stage, round_.review_stage) == ("needs_review", "training_rm")
    assert bodies.calls == ["generate", "rm"]  # no policy stage run
    assert not round_.reward_model.is_current and round_.reward_model.status == "ready"
    assert _current(loop_project) == {"policy": base.pk}
    assert round_.gate["training_rm"]["checks"][0]["value"] == 0.5
    with pytest.raises(ConflictError, match="still needs_review"):
        rounds.round_start(project=loop_project)  # a round in review waits for an admin
    with pytest.raises(ConflictError, match="approve or reject"):
        rounds.round_advance(round_=round_)

    body = admin_client_api.get(f"/api/v1/rounds/{round_.pk}/").json()
    assert body["stage"] == "needs_review" and body["review_stage"] == "training_rm"
    assert body["gate"]["training_rm"]["passed"] is False

    with on_commit():
        response = admin_client_api.post(f"/api/v1/rounds/{round_.pk}/approve/")
    assert response.status_code == 200, response.content
    round_.refresh_from_db()
    assert round_.stage == "done", round_.error  # approved RM, then a policy that passed
    assert bodies.calls == ["generate", "rm", "ppo", "eval"]
    assert _current(loop_project) == {"policy": round_.policy.pk, "reward": round_.reward_model.pk}
    assert (round_.review_decision, round_.reviewed_by) == ("approved", project_admin)
    assert round_.reviewed_at is not None
    decided = round_.gate["training_rm"]
    assert (decided["decision"], decided["decided_by"]) == ("approved", project_admin.username)
    assert round_.gate["training_ppo"]["passed"] is True


@pytest.mark.django_db
def test_a_policy_that_fails_its_gate_waits_and_only_approval_makes_it_current(
    bodies, loop_project, on_commit, admin_client_api
) -> None:
    bodies.EVAL_METRICS.update({"gate/new_score": 0.4, "gate/score_gain": -0.1})
    base = registry.current_policy(project=loop_project)
    round_ = _to_the_gate(loop_project, on_commit)
    assert (round_.stage, round_.review_stage) == ("needs_review", "training_ppo")
    assert round_.reward_model.is_current  # the RM passed its gate
    assert not round_.policy.is_current
    assert registry.current_policy(project=loop_project) == base  # still samples the old one
    assert round_.metrics["eval/gate/score_gain"] == -0.1

    response = admin_client_api.post(f"/api/v1/rounds/{round_.pk}/approve/")
    assert response.status_code == 200, response.content
    assert response.json()["stage"] == "done"
    round_.refresh_from_db()
    assert registry.current_policy(project=loop_project) == round_.policy
    conflict = admin_client_api.post(f"/api/v1/rounds/{round_.pk}/approve/")
    assert conflict.status_code == 409  # done: nothing to approve


@pytest.mark.django_db
def test_reject_ends_the_round_and_keeps_the_previous_models(
    bodies, loop_project, on_commit, admin_client_api, project_admin
) -> None:
    first = _to_the_gate(loop_project, on_commit)
    assert first.stage == "done"
    before = _current(loop_project)
    assert before == {"policy": first.policy.pk, "reward": first.reward_model.pk}

    bodies.RM_METRICS["rm/heldout_accuracy"] = 0.70  # the current one: 0.75 on the same split
    second = _to_the_gate(loop_project, on_commit)
    assert (second.stage, second.review_stage) == ("needs_review", "training_rm")
    check = second.gate["training_rm"]["checks"][1]
    assert (check["name"], check["passed"]) == ("rm_vs_current", False)
    assert _current(loop_project) == before

    response = admin_client_api.post(f"/api/v1/rounds/{second.pk}/reject/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["stage"], body["review_decision"]) == ("done", "rejected")
    assert body["reviewed_by"] == project_admin.username and body["reviewed_at"]
    assert _current(loop_project) == before
    with on_commit():
        third = rounds.round_start(project=loop_project, num_prompts=1)
    assert third.sampling_policy_id == first.policy.pk


@pytest.mark.django_db
def test_approve_and_reject_are_for_admins_only(project, labeler_client, outsider) -> None:
    from rest_framework.test import APIClient

    round_ = RoundFactory(project=project, stage="needs_review", review_stage="training_ppo")
    for action in ("approve", "reject"):
        assert labeler_client.post(f"/api/v1/rounds/{round_.pk}/{action}/").status_code == 403
        stranger = APIClient()
        stranger.force_authenticate(outsider)
        assert stranger.post(f"/api/v1/rounds/{round_.pk}/{action}/").status_code == 404
    round_.refresh_from_db()
    assert (round_.stage, round_.review_decision) == ("needs_review", "")


@pytest.mark.django_db
def test_a_failed_gate_eval_is_retried_alone(bodies, loop_project, on_commit) -> None:
    bodies.fail.add("eval")
    round_ = _to_the_gate(loop_project, on_commit)
    assert (round_.stage, round_.failed_stage) == ("failed", "training_ppo")
    assert not round_.policy.is_current
    bodies.fail.clear()
    with on_commit():
        rounds.round_advance(round_=round_)
    round_.refresh_from_db()
    assert round_.stage == "done", round_.error
    assert bodies.calls == ["generate", "rm", "ppo", "eval", "eval"]  # PPO did not rerun
    assert round_.policy.is_current


@pytest.mark.django_db
def test_approve_and_reject_from_the_shell(project, capsys) -> None:
    admin = MembershipFactory(project=project, role="admin").user
    policy = ModelVersionFactory(project=project, kind="ppo", role="policy")
    round_ = RoundFactory(
        project=project, stage="needs_review", review_stage="training_ppo", policy=policy
    )
    call_command("approve_round", project.slug, "--by", admin.username)
    round_.refresh_from_db()
    assert (round_.stage, round_.review_decision, round_.reviewed_by) == ("done", "approved", admin)
    assert ModelVersion.objects.get(pk=policy.pk).is_current
    assert "is done (approved)" in capsys.readouterr().out
    with pytest.raises(CommandError, match="no round to advance"):
        call_command("reject_round", project.slug)
    RoundFactory(project=project, stage="needs_review", review_stage="training_rm")
    call_command("reject_round", project.slug)
    assert "is done (rejected)" in capsys.readouterr().out


# --------------------------------------------------------------------------- after a cancel


@pytest.mark.django_db
def test_a_model_finished_after_its_round_was_cancelled_is_never_ready(
    project, tmp_path, settings
) -> None:
    """The RM or policy body was past its last cancel check when the admin cancelled: its
    model is marked failed under the round's lock, the run ends cancelled."""
    settings.RLHF_ARTIFACT_DIR = tmp_path
    round_ = RoundFactory(project=project, stage="training_rm")
    run = TrainingRun.objects.create(project=project, round=round_, kind="rm")
    made = []

    def body(run: TrainingRun, reporter: runs.RunReporter) -> dict:
        rounds.round_cancel(round_=round_)  # while the body works
        version = registry.model_version_create(project=project, kind="rm")
        made.append(version)
        return publish(run, version, lambda out: None, {})

    assert runs.run_execute(run_id=run.pk, body=body).status == "cancelled"
    version = ModelVersion.objects.get(pk=made[0].pk)
    assert (version.status, version.is_current) == ("failed", False)
    assert "cancelled" in version.metrics["error"]
    round_.refresh_from_db()
    assert (round_.stage, round_.failed_stage) == ("cancelled", "training_rm")
