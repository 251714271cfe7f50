"""The round state machine of the loop (PRODUCT.md section 1.5).

    generating -> labeling -> building_pairs -> training_rm -> training_ppo -> done
          \\______________\\_____________\\_____________\\______-> failed | cancelled
                                            training_rm | training_ppo -> needs_review

The promotion gate (`gate`) runs after the RM stage and after the policy stage (on the
figures of the stage's eval run): a round's new models become current only when it
passes, or when an admin approves the round it stopped in needs_review (`round_approve`;
`round_reject` ends the round as done, its models never current).

Each stage that needs a GPU is a TrainingRun on the `gpu` queue (the generate stage one
per shard of its prompts, `generate_stage`); when it finishes, `round_on_run_finished`
moves the round on (the generate stage once its last shard has). A failed stage leaves
the previous models current; `round_advance` on a failed round retries the stage that
failed, and a retried stage never duplicates tasks or pairs (unique constraints +
idempotent bodies).
"""

from django.db import transaction
from django.db.models import Count, F, Max, Q, Sum

from core.exceptions import ApplicationError, ConflictError
from labeling.models import Comparison, Project, Ranking, RankingTask
from labeling.services.task_slots import of_self
from training import dispatch
from training.models import ModelVersion, Round, TrainingRun
from training.selectors import round_prompts
from training.services import gate
from training.services.generate_stage import (
    generate_stage_finished,
    generate_stage_metrics,
    generate_stage_retry,
    generate_stage_start,
)
from training.services.registry import current_policy, model_version_promote
from training.services.runs import run_create, run_request_cancel, runs_reap_stale

Stage = Round.Stage
ACTIVE = {
    Stage.GENERATING,
    Stage.LABELING,
    Stage.BUILDING_PAIRS,
    Stage.TRAINING_RM,
    Stage.TRAINING_PPO,
    Stage.NEEDS_REVIEW,  # waits for an admin: a new round waits too
}
_RUN_OF_STAGE = {
    Stage.GENERATING: TrainingRun.Kind.GENERATE,
    Stage.TRAINING_RM: TrainingRun.Kind.RM,
    Stage.TRAINING_PPO: TrainingRun.Kind.PPO,  # the round's recipe decides: _stage_kind
}
# The policy stage (training_ppo, whatever the recipe) runs the kind of the round's recipe.
_KIND_OF_RECIPE = {
    Round.Recipe.PPO: TrainingRun.Kind.PPO,
    Round.Recipe.DPO: TrainingRun.Kind.DPO,
    Round.Recipe.BEST_OF_N: TrainingRun.Kind.BEST_OF_N,
    Round.Recipe.RLOO: TrainingRun.Kind.RLOO,
}
_STAGE_OF_KIND = {
    **{kind: stage for stage, kind in _RUN_OF_STAGE.items()},
    **{kind: Stage.TRAINING_PPO for kind in _KIND_OF_RECIPE.values()},
    TrainingRun.Kind.EVAL: Stage.TRAINING_PPO,  # the policy gate's figures (run_bodies.eval)
}
RECIPES = tuple(Round.Recipe.values)
DEFAULT_RECIPE = Round.Recipe.PPO.value
DEFAULT_PROMPTS_PER_ROUND = 16
MAX_PROMPTS_PER_ROUND = 100_000


def _lock(round_: Round) -> Round:
    return Round.objects.select_for_update().select_related("project").get(pk=round_.pk)


@transaction.atomic
def round_start(
    *,
    project: Project,
    num_prompts: int | None = None,
    recipe: str | None = None,
    user=None,
) -> Round:
    """Open the next round: the current policy samples K responses for `num_prompts` prompts.

    Without `num_prompts`, the round takes `prompts_per_round` of training_config, or all
    the train prompts if there are fewer; a `num_prompts` above them is refused (400).
    Without `recipe`, the policy stage trains with training_config's `recipe` (ppo)."""
    Project.objects.select_for_update().get(pk=project.pk)
    active = Round.objects.filter(project=project, stage__in=ACTIVE).first()
    if active:
        raise ConflictError(
            f"Round {active.number} is still {active.stage}: advance or cancel it first."
        )
    wanted = _prompt_count(project, num_prompts)
    policy = current_policy(project=project)
    number = (Round.objects.filter(project=project).aggregate(m=Max("number"))["m"] or 0) + 1
    round_ = Round.objects.create(
        project=project,
        number=number,
        recipe=_recipe(project, recipe),
        stage=Stage.GENERATING,
        num_prompts=wanted,
        sampling_policy=policy,
        created_by=user,
        progress_total=wanted,
    )
    _start_stage_run(round_, Stage.GENERATING)
    return round_


def _recipe(project: Project, recipe: str | None) -> Round.Recipe:
    chosen = recipe if recipe is not None else project.training_config.get("recipe")
    if chosen is None:
        return Round.Recipe(DEFAULT_RECIPE)
    if chosen not in RECIPES:
        raise ApplicationError(
            f"recipe: must be one of {', '.join(RECIPES)}, not {chosen!r}",
            extra={"field": "recipe"},
        )
    return Round.Recipe(chosen)


def _stage_kind(round_: Round, stage: str) -> str:
    """The run kind of a stage: the policy stage's is the round's recipe's."""
    if stage == Stage.TRAINING_PPO:
        return _KIND_OF_RECIPE[Round.Recipe(round_.recipe)]
    return _RUN_OF_STAGE[Stage(stage)]


def _prompt_count(project: Project, num_prompts: int | None) -> int:
    """How many prompts a new round samples. The generate run may take every train prompt
    of the project (fresh ones first, then ones ranked before: selectors.prompts_for_round), so
    that count is the limit."""
    available = round_prompts(project=project).count()
    default = project.training_config.get("prompts_per_round", DEFAULT_PROMPTS_PER_ROUND)
    if num_prompts is not None and num_prompts < 1:
        raise ApplicationError("num_prompts: must be a positive integer")
    wanted = num_prompts if num_prompts is not None else (min(default, available) or default)
    if wanted > available:
        raise ApplicationError(
            f"num_prompts: {wanted} asked, {available} train prompts available",
            extra={"available": available},
        )
    return int(wanted)


def _start_stage_run(round_: Round, stage: str, *, retry: bool = False) -> None:
    """Queue the stage's run (the generate stage: its shards; a retry of it, the shards
    that failed)."""
    kind = _stage_kind(round_, stage)
    config = dict(round_.project.training_config.get(kind, {}))
    if kind == TrainingRun.Kind.GENERATE:
        (generate_stage_retry if retry else generate_stage_start)(round_=round_, config=config)
        return
    continues_policy = config.get("init_from", "reference") == "policy"
    if kind == TrainingRun.Kind.PPO and config.get("continue_kl_controller", continues_policy):
        beta = _last_kl_coef(round_)
        if beta is not None:
            config["init_kl_coef"] = beta
    run_create(project=round_.project, round=round_, kind=kind, config=config)


def _last_kl_coef(round_: Round) -> float | None:
    """The adaptive KL controller's beta where the project's last PPO run left it.

    Used when a round's PPO continues the policy of the round before (`init_from:
    "policy"`): that policy already sits near the KL target, and starting again from the
    initial beta would let the KL to the reference overshoot while beta climbs back
    (Ziegler et al. 2019 keep one controller for the whole run). With the default
    `init_from: "reference"` every PPO run starts at KL 0 and at `init_kl_coef`, like the
    first one; `continue_kl_controller` overrides either choice.
    """
    last = (
        TrainingRun.objects.filter(
            project=round_.project, kind=TrainingRun.Kind.PPO, status=TrainingRun.Status.SUCCEEDED
        )
        .exclude(round=round_)
        .exclude(round__review_decision=gate.REJECTED)  # its policy never sampled
        .order_by("-finished_at")
        .values_list("metrics", flat=True)
        .first()
    )
    value = (last or {}).get("kl_coef")
    return float(value) if isinstance(value, int | float) and value > 0 else None


@transaction.atomic
def round_advance(*, round_: Round, user=None) -> Round:
    """Admin's "next": end labeling early, or retry the stage that failed.

    The project's runs whose worker died are reaped first (`rounds_reap_stale_runs`), so a
    stage whose worker was killed fails now and is retried, instead of waiting for beat."""
    rounds_reap_stale_runs(project=round_.project)
    round_ = _lock(round_)
    if round_.stage == Stage.LABELING:
        return _enter_building_pairs(round_)
    if round_.stage == Stage.FAILED:
        return _retry(round_)
    if round_.stage in (Stage.DONE, Stage.CANCELLED):
        raise ConflictError(f"Round {round_.number} is {round_.stage}; start a new round.")
    if round_.stage == Stage.NEEDS_REVIEW:
        raise ConflictError(f"Round {round_.number} needs review: approve or reject it.")
    raise ConflictError(
        f"Round {round_.number} is {round_.stage}; it moves on by itself when that finishes."
    )


def _retry(round_: Round) -> Round:
    stage = round_.failed_stage or Stage.GENERATING
    round_.stage, round_.error, round_.failed_stage = stage, "", ""
    round_.save(update_fields=["stage", "error", "failed_stage", "updated_at"])
    if stage == Stage.BUILDING_PAIRS:
        _queue_build_pairs(round_)
    elif stage == Stage.TRAINING_PPO and _policy_trained(round_):
        _start_policy_eval(round_)  # only the gate's eval run failed: the policy stands
    elif stage in _RUN_OF_STAGE:
        _start_stage_run(round_, stage, retry=True)
    return round_


def _enter_building_pairs(round_: Round) -> Round:
    # Unfinished tasks of this round are closed: no new leases. Rankings already
    # submitted are kept and their pairs are used.
    RankingTask.objects.filter(round=round_, status=RankingTask.Status.OPEN).update(
        status=RankingTask.Status.CLOSED
    )
    round_.stage = Stage.BUILDING_PAIRS
    round_.save(update_fields=["stage", "updated_at"])
    _queue_build_pairs(round_)
    return round_


def _queue_build_pairs(round_: Round) -> None:
    dispatch.enqueue_on_commit(dispatch.ROUND_BUILD_PAIRS, round_.pk)


@transaction.atomic
def round_build_pairs(*, round_: Round) -> Round:
    """Make sure every ranking of the project has its pairs, then train the RM.

    Pairs are normally built when a ranking is submitted; this step backfills any that
    are missing (idempotent) and records the counts.
    """
    from labeling.services.rankings import comparisons_from_ranking

    round_ = _lock(round_)
    if round_.stage != Stage.BUILDING_PAIRS:
        return round_
    rankings = Ranking.objects.filter(
        task__project=round_.project, all_unacceptable=False, comparisons__isnull=True
    )
    for ranking in rankings.select_related("task"):
        comparisons_from_ranking(ranking=ranking)
    counts = Comparison.objects.filter(project=round_.project).aggregate(
        total=Count("id"), this_round=Count("id", filter=Q(round=round_))
    )
    round_.metrics = {
        **round_.metrics,
        "comparisons_total": counts["total"],
        "comparisons_round": counts["this_round"],
    }
    if not counts["total"]:
        return _fail(round_, Stage.BUILDING_PAIRS, "No comparisons to train on: rank tasks first.")
    round_.stage = Stage.TRAINING_RM
    round_.save(update_fields=["stage", "metrics", "updated_at"])
    _start_stage_run(round_, Stage.TRAINING_RM)
    return round_


def _fail(round_: Round, stage: str, error: str) -> Round:
    round_.stage, round_.failed_stage, round_.error = Stage.FAILED, stage, error[:5000]
    round_.save(update_fields=["stage", "failed_stage", "error", "metrics", "updated_at"])
    return round_


@transaction.atomic
def round_cancel(*, round_: Round, user=None) -> Round:
    round_ = _lock(round_)
    if round_.stage not in ACTIVE and round_.stage != Stage.FAILED:
        raise ConflictError(f"Round {round_.number} is {round_.stage}; nothing to cancel.")
    for run in round_.runs.all():
        run_request_cancel(run=run)
    RankingTask.objects.filter(round=round_, status=RankingTask.Status.OPEN).update(
        status=RankingTask.Status.CLOSED
    )
    if round_.stage != Stage.FAILED:
        round_.failed_stage = round_.stage  # where it stopped (a failed round keeps its own)
    round_.stage = Stage.CANCELLED
    round_.save(update_fields=["stage", "failed_stage", "updated_at"])
    return round_


@transaction.atomic
def round_on_run_finished(*, run: TrainingRun) -> Round | None:
    """Move the run's round on after the run ended (called by the Celery door). A failed
    shard fails the generate stage; the stage moves on when its last shard succeeded."""
    if run.round_id is None:
        return None
    round_ = _lock(run.round)  # type: ignore[arg-type]
    expected = _STAGE_OF_KIND.get(TrainingRun.Kind(run.kind))
    if round_.stage != expected:
        return round_  # cancelled meanwhile, or a stale redelivery
    if _superseded(run):
        # A superseded run (its stage or shard was retried): e.g. Redis redelivering the
        # message of a run whose worker was killed, after the round already retried it.
        return round_
    if run.status == TrainingRun.Status.FAILED:
        return _fail(round_, round_.stage, f"{run.kind} run {run.pk} failed: {run.error}")
    if run.status != TrainingRun.Status.SUCCEEDED:
        return round_
    metrics = run.metrics
    if round_.stage == Stage.GENERATING:
        if not generate_stage_finished(round_=round_, run=run):
            return round_  # other shards are still sampling
        metrics = generate_stage_metrics(round_=round_)
    round_.metrics = {**round_.metrics, **{f"{run.kind}/{k}": v for k, v in metrics.items()}}
    if round_.stage == Stage.GENERATING:
        round_.stage = Stage.LABELING
        round_labeling_progress(round_=round_, save=False)
    elif round_.stage == Stage.TRAINING_RM:
        round_.reward_model = run.output
        result = gate.gate_check_reward_model(round_=round_, version=run.output)
        if gate.gate_record(round_=round_, stage=gate.RM_GATE, result=result):
            _promote(run.output)
            round_.stage = Stage.TRAINING_PPO
    elif run.kind == TrainingRun.Kind.EVAL:
        kind = _stage_kind(round_, Stage.TRAINING_PPO)
        result = gate.gate_check_policy(round_=round_, kind=kind, metrics=run.metrics)
        if gate.gate_record(round_=round_, stage=gate.POLICY_GATE, result=result):
            _promote(round_.policy)
            round_.stage = Stage.DONE
    elif round_.stage == Stage.TRAINING_PPO:
        round_.policy = run.output  # not current: the gate's eval run comes first
    round_.save()
    if round_.stage == Stage.TRAINING_PPO and run.kind == TrainingRun.Kind.RM:
        _start_stage_run(round_, Stage.TRAINING_PPO)
    elif round_.stage == Stage.TRAINING_PPO and run.kind != TrainingRun.Kind.EVAL:
        _start_policy_eval(round_)
    elif round_.stage == Stage.LABELING and round_.progress_total == 0:
        return _enter_building_pairs(round_)
    return round_


def _promote(version: ModelVersion | None) -> None:
    if version is None:
        raise ApplicationError("The round has no model to promote.")
    model_version_promote(version=version)


def _policy_trained(round_: Round) -> bool:
    """Whether the policy stage's latest training run succeeded (so only its eval remains)."""
    kind = _stage_kind(round_, Stage.TRAINING_PPO)
    latest = TrainingRun.objects.filter(round=round_, kind=kind).order_by("-pk").first()
    return (
        round_.policy_id is not None
        and latest is not None
        and latest.status == TrainingRun.Status.SUCCEEDED
    )


def _start_policy_eval(round_: Round) -> None:
    """Queue the policy gate's eval run: the new policy against the sampling policy on
    held-out prompts (`run_bodies.eval`)."""
    run_create(project=round_.project, round=round_, kind=TrainingRun.Kind.EVAL)


@transaction.atomic
def round_approve(*, round_: Round, user=None) -> Round:
    """An admin's approval of a round the gate stopped: after the RM gate the new RM
    becomes current and the policy stage starts; after the policy gate the new policy
    becomes current and the round is done. Who and when are kept (`gate.gate_decide`)."""
    round_ = _lock(round_)
    if round_.stage != Stage.NEEDS_REVIEW:
        raise ConflictError(
            f"Round {round_.number} is {round_.stage}; only a round in needs_review is approved."
        )
    reviewed = round_.review_stage
    gate.gate_decide(round_=round_, decision=gate.APPROVED, user=user)
    if reviewed == gate.RM_GATE:
        _promote(round_.reward_model)
        round_.stage = Stage.TRAINING_PPO
    else:
        _promote(round_.policy)
        round_.stage = Stage.DONE
    round_.save()
    if round_.stage == Stage.TRAINING_PPO:
        _start_stage_run(round_, Stage.TRAINING_PPO)
    return round_


@transaction.atomic
def round_reject(*, round_: Round, user=None) -> Round:
    """An admin's rejection of a round the gate stopped: the round ends `done` with
    `review_decision` "rejected"; its new models are kept as ready versions, never made
    current, so the current policy and RM stay what they were."""
    round_ = _lock(round_)
    if round_.stage != Stage.NEEDS_REVIEW:
        raise ConflictError(
            f"Round {round_.number} is {round_.stage}; only a round in needs_review is rejected."
        )
    gate.gate_decide(round_=round_, decision=gate.REJECTED, user=user)
    round_.stage = Stage.DONE
    round_.save()
    return round_


def _superseded(run: TrainingRun) -> bool:
    """Whether a later run of the round retried this run's stage (for a generate shard: the
    same shard)."""
    later = TrainingRun.objects.filter(round=run.round_id, kind=run.kind, pk__gt=run.pk)
    if "shard" in run.inputs:
        later = later.filter(inputs__shard=run.inputs["shard"])
    return later.exists()


def rounds_reap_stale_runs(
    *, project: Project | None = None, dead_worker: str | None = None
) -> list[int]:
    """Fail the runs whose worker died (`runs.runs_reap_stale`, of `project` if given) and
    move their rounds on (a stage run that failed fails its round). Returns the run ids."""
    failed = runs_reap_stale(dead_worker=dead_worker, project=project)
    for run in TrainingRun.objects.filter(pk__in=failed).order_by("id"):
        round_on_run_finished(run=run)
    return failed


def round_labeling_progress(*, round_: Round, save: bool = True) -> Round:
    """Progress of labeling = rankings submitted / rankings wanted (tasks x overlap), from
    the tasks' counters (a revision is no new ranking). One aggregate over the round's
    tasks, when labeling starts; each submission then adds one (round_on_ranking_submitted)."""
    agg = RankingTask.objects.filter(round=round_).aggregate(
        done=Sum("rankings_count"), wanted=Sum("overlap")
    )
    round_.progress_done, round_.progress_total = agg["done"] or 0, agg["wanted"] or 0
    if save:
        round_.save(update_fields=["progress_done", "progress_total", "updated_at"])
    return round_


def round_on_ranking_submitted(*, task: RankingTask) -> None:
    """A ranking of `task` committed: count it in its round's progress, and move the round
    on when no task of it is open any more (every task has its overlap).

    `task` is the row `ranking_submit` saved (its status is the committed one). The
    labeler's request runs this after the submission committed, so it takes no lock on the
    project and none on the round while labeling goes on: the progress is one
    `UPDATE ... SET progress_done = progress_done + 1` (in autocommit: the row is locked
    for that statement only). Only a submission that completed its task can have ended
    labeling (the last open task is closed by its own last ranking); it counts the round's
    open tasks on the (round, status) index. A COUNT, not EXISTS ... LIMIT 1: PostgreSQL
    plans the latter as a sequential scan that walks every older round's tasks, since a
    round's tasks lie together at the end of the table. Two last submissions at once may
    both count none open; the round's row lock and the stage re-check under it let one
    advance.
    """
    if task.round_id is None:
        return
    # Counted whatever the stage: the ranking was stored while its task was open, and the
    # round may have moved on since then (another labeler's last submission committed
    # after ours but counted first, an admin's early advance or cancel).
    Round.objects.filter(pk=task.round_id).update(progress_done=F("progress_done") + 1)
    if task.status == RankingTask.Status.OPEN:
        return
    if RankingTask.objects.filter(round_id=task.round_id, status=RankingTask.Status.OPEN).count():
        return
    with transaction.atomic():
        round_ = Round.objects.select_for_update(of=of_self()).get(pk=task.round_id)
        if round_.stage == Stage.LABELING:
            _enter_building_pairs(round_)
