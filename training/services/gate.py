"""The promotion gate: whether a round's new models may become current by themselves.

After the RM stage (`gate_check_reward_model`):
  - `rm_accuracy`: the new RM's pairwise accuracy on the round's held-out split (the
    held-out prompts and the held-out labeler, `run_bodies.rm`) reaches
    `project.gate_min_rm_accuracy`;
  - `rm_vs_current`: where the project has a current RM, the new one scores at most
    `project.gate_max_rm_drop` below it, both measured on that same split by the RM run.
After the policy stage (`gate_check_policy`, on the figures of the stage's eval run,
`run_bodies.eval`, whatever recipe trained the policy):
  - `policy_better`: the new policy's samples on the project's eval prompts score higher
    under the new RM than the sampling policy's samples of the same prompts and seeds;
  - `kl_bound`: its KL to the reference on those samples is at most
    `project.gate_kl_factor` x the KL target of the policy stage's config.

A figure that was not measured (no held-out rankings, no eval prompts, no KL target) fails
its check: the gate never passes on a number nobody measured. A failed check stops the
round in `needs_review`; `rounds.round_approve` / `round_reject` record the admin's
decision here (`gate_decide`). The result of each gate is kept in `Round.gate` under its
stage's name: {"passed", "checks": [{"name", "passed", "value", "bound", "detail"}],
"new": {...}, "current": {...}, and once reviewed "decision", "decided_by", "decided_at"}.
"""

import math
from typing import Any

from django.utils import timezone

from training.ml.configs import PPOConfig
from training.models import ModelVersion, Round
from training.services.registry import current_policy, current_reward_model

RM_GATE = Round.Stage.TRAINING_RM
POLICY_GATE = Round.Stage.TRAINING_PPO
APPROVED, REJECTED = "approved", "rejected"


def _number(value: Any) -> float | None:
    """A measured figure, or None (missing, null, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _check(name: str, passed: bool, value: float | None, bound: float | None, detail: str) -> dict:
    return {"name": name, "passed": passed, "value": value, "bound": bound, "detail": detail}


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def gate_check_reward_model(*, round_: Round, version: ModelVersion | None) -> dict[str, Any]:
    """The RM gate's result for the round's new RM `version` (its metrics come from the RM
    run: `rm/heldout_accuracy`, and `rm/current_heldout_accuracy` of `rm/current_model`)."""
    project = round_.project
    metrics = version.metrics if version is not None else {}
    new = _number(metrics.get("rm/heldout_accuracy"))
    least = project.gate_min_rm_accuracy
    if new is None:
        first = _check(
            "rm_accuracy", False, None, least, "No held-out rankings to measure the new RM on."
        )
    else:
        first = _check(
            "rm_accuracy",
            new >= least,
            new,
            least,
            f"Held-out accuracy {_pct(new)}; the project asks for at least {_pct(least)}.",
        )
    current = current_reward_model(project=project)
    old = _number(metrics.get("rm/current_heldout_accuracy"))
    if current is None:
        second = _check("rm_vs_current", True, new, None, "No current reward model to beat.")
    elif old is None or new is None or metrics.get("rm/current_model") != current.label:
        second = _check(
            "rm_vs_current",
            False,
            new,
            None,
            f"The current reward model {current.label} was not measured on this split.",
        )
    else:
        bound = old - project.gate_max_rm_drop
        second = _check(
            "rm_vs_current",
            new >= bound - 1e-12,  # float noise of the subtraction
            new,
            bound,
            f"{current.label} scores {_pct(old)} on the same split; the new RM may be at "
            f"most {_pct(project.gate_max_rm_drop)} below it.",
        )
    return {
        "passed": first["passed"] and second["passed"],
        "checks": [first, second],
        "new": {
            "model": version.label if version is not None else None,
            "heldout_accuracy": new,
            "heldout_pairs": metrics.get("rm/heldout_pairs"),
            "eval_accuracy": _number(metrics.get("rm/eval_accuracy")),
            "heldout_labeler_accuracy": _number(metrics.get("heldout_labeler_accuracy")),
        },
        "current": {
            "model": current.label if current is not None else None,
            "heldout_accuracy": old if current is not None else None,
        },
    }


def policy_kl_target(*, round_: Round, kind: str) -> float | None:
    """The KL target of the policy stage: its run kind's section of training_config if it
    names one, else the "ppo" section's, else PPOConfig's default (None: a fixed beta)."""
    config = round_.project.training_config
    for section in (kind, "ppo"):
        values = config.get(section)
        if isinstance(values, dict) and "kl_target" in values:
            return _number(values["kl_target"])
    return _number(PPOConfig.__dataclass_fields__["kl_target"].default)


def gate_check_policy(*, round_: Round, kind: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """The policy gate's result from the stage's eval run `metrics` (`run_bodies.eval`);
    `kind` is the run kind that trained the policy (its config holds the KL target)."""
    project = round_.project
    prompts = int(metrics.get("gate/eval_prompts") or 0)
    new, old = _number(metrics.get("gate/new_score")), _number(metrics.get("gate/baseline_score"))
    gain = _number(metrics.get("gate/score_gain"))
    if not prompts or new is None or old is None or gain is None:
        better = _check(
            "policy_better",
            False,
            new,
            old,
            "No eval prompts (split eval) to compare the policies on.",
        )
    else:
        better = _check(
            "policy_better",
            gain > 0,
            new,
            old,
            f"Mean RM score on {prompts} held-out prompts: {new:.3f} for the new policy, "
            f"{old:.3f} for the sampling policy (gain {gain:+.3f}).",
        )
    kl = _number(metrics.get("gate/kl_to_ref"))
    target = policy_kl_target(round_=round_, kind=kind)
    if target is None or kl is None:
        why = "No KL target (fixed beta) to bound by." if target is None else "KL not measured."
        kl_check = _check("kl_bound", False, kl, None, why)
    else:
        bound = project.gate_kl_factor * target
        kl_check = _check(
            "kl_bound",
            kl <= bound,
            kl,
            bound,
            f"KL to the reference {kl:.2f} nats; at most {project.gate_kl_factor:g} x the "
            f"target {target:g}.",
        )
    current = current_policy(project=project)
    return {
        "passed": better["passed"] and kl_check["passed"],
        "checks": [better, kl_check],
        "new": {
            "model": metrics.get("gate/policy"),
            "score": new,
            "kl_to_ref": kl,
            "score_gain": gain,
            "score_gain_se": _number(metrics.get("gate/score_gain_se")),
            "eval_prompts": prompts,
        },
        "current": {
            "model": current.label,
            "score": old,
            "sampled_by": metrics.get("gate/baseline"),
        },
    }


def gate_record(*, round_: Round, stage: str, result: dict[str, Any]) -> bool:
    """Keep the gate's `result` on the round (not saved here); when it failed, stop the
    round in needs_review. Returns whether it passed. Call holding the round's row lock."""
    round_.gate = {**round_.gate, stage: result}
    if not result["passed"]:
        round_.stage = Round.Stage.NEEDS_REVIEW
        round_.review_stage = stage
    return bool(result["passed"])


def gate_decide(*, round_: Round, decision: str, user: Any) -> None:
    """Record an admin's decision on the gate that stopped the round (not saved here):
    who and when on the round and in that gate's result."""
    now = timezone.now()
    stage = round_.review_stage
    result = dict(round_.gate.get(stage, {}))
    result.update(
        decision=decision,
        decided_by=getattr(user, "username", None),
        decided_at=now.isoformat(),
    )
    round_.gate = {**round_.gate, stage: result}
    round_.reviewed_by = user if getattr(user, "pk", None) else None
    round_.reviewed_at = now
    round_.review_decision = decision
