"""The PPO run: the policy against the round's new RM, KL to the frozen reference,
resuming from the checkpoints of a failed attempt (training.ml.ppo_checkpoint)."""

from pathlib import Path
from typing import Any

from django.conf import settings

from core.exceptions import ApplicationError
from training.models import ModelVersion, Round, TrainingRun
from training.services import launcher, progress, training_data
from training.services.config_schema import PPO_INIT_CHOICES
from training.services.registry import model_version_create, reference_policy
from training.services.run_bodies.common import (
    TRAINED_DTYPE,
    device_and_dtype,
    known_fields,
    precision,
    publish,
    required,
    round_of,
    saver,
    scalar_metrics,
)
from training.services.runs import RunCancelled, RunReporter


def ppo_checkpoints(round_: Round, start: ModelVersion, rules: Any = ()) -> Path:
    """The round's checkpoint folder under RLHF_ARTIFACT_DIR/checkpoints (named by
    `training.ml.ppo_checkpoint.run_checkpoint_dir`)."""
    from training.ml.ppo_checkpoint import run_checkpoint_dir

    return run_checkpoint_dir(
        Path(settings.RLHF_ARTIFACT_DIR) / "checkpoints",
        round_id=round_.pk,
        reward_model_id=round_.reward_model_id,
        init_id=start.pk,
        rules=rules,
    )


def ppo_init_version(round_: Round, config: dict[str, Any]) -> ModelVersion:
    """The weights a round's PPO starts from: `init_from` in training_config["ppo"].

    "reference" (the default) starts every round's PPO from the SFT reference, as iterated
    online RLHF does (Bai et al. 2022 retrain each week's policy from the same snapshot):
    the rounds improve the reward model and the data, and each PPO run moves at most its
    KL budget away from SFT. "policy" continues from the policy that sampled the round,
    so the KL to SFT accumulates over rounds (the controller's target is then exceeded
    unless beta is raised).
    """
    init_from = config.get("init_from", "reference")
    if init_from not in PPO_INIT_CHOICES:
        raise ApplicationError(
            f"training_config.ppo.init_from must be one of {', '.join(PPO_INIT_CHOICES)}, "
            f"not {init_from!r}."
        )
    if init_from == "policy":
        return required(round_.sampling_policy, "a sampling policy")
    return reference_policy(project=round_.project)


def ppo_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """PPO against the round's new RM, KL to the frozen SFT reference, starting from the
    reference or the round's policy (`ppo_init_version`).

    Checkpoints every `checkpoint_every` steps (default: a quarter of the run) and resumes
    from the newest one when the stage is retried after a failure (a killed worker). An
    unreadable checkpoint is moved aside (`.corrupt-...`, kept for inspection) and the run
    goes on from the one before it, or from the start.

    With `lora_r` (LoRA PPO) two base copies load, in RLHF_DTYPE: the start policy, whose
    adapters-off base is the reference when PPO starts from the reference, and the RM,
    whose adapters-off base scores (a policy-started run loads the reference as a third).

    With RLHF_GPUS_PER_RUN > 1 the run launches the `ppo` command on that many processes
    (`launcher.ppo_launched`, the same checkpoint folder), except LoRA PPO started from the
    policy, whose third copy the command does not load: that one trains in-process.
    """
    from training.ml.devices import release_memory
    from training.ml.loading import load_causal_lm
    from training.ml.ppo import PPOConfig, train_ppo
    from training.ml.ppo_checkpoint import (
        CheckpointError,
        set_aside_foreign_checkpoints,
        set_aside_newest_checkpoint,
    )
    from training.ml.reward.model import load_reward_model
    from training.ml.rules import parse_rules

    round_ = round_of(run, "project", "sampling_policy", "reward_model")
    project = run.project
    start = ppo_init_version(round_, run.config)
    rm_version = required(round_.reward_model, "a reward model")
    device, dtype = device_and_dtype()
    values = {"max_new_tokens": project.max_new_tokens, "temperature": project.temperature,
              "top_p": project.top_p, **run.config}  # fmt: skip
    fields = known_fields(PPOConfig, values)
    config = PPOConfig(**fields)
    lora = config.lora_r is not None
    ref_version = reference_policy(project=project)
    shares_reference = lora and ref_version.pk == start.pk
    if "checkpoint_every" not in run.config:
        config.checkpoint_every = max(1, config.steps // 4)
    checkpoints = ppo_checkpoints(round_, start, run.config.get("rules"))
    set_aside_foreign_checkpoints(checkpoints, config, reporter.log)
    if launcher.is_launched() and (shares_reference or not lora):
        fields["checkpoint_every"] = config.checkpoint_every
        launched = (start, ref_version, config, fields, checkpoints)
        return _ppo_launched(run, reporter, round_, *launched)
    if launcher.is_launched():
        launcher.log_in_process(
            reporter, "ppo", "LoRA PPO from the policy loads its reference as a third copy"
        )
    # LoRA trains adapters on frozen bases, which may be stored in RLHF_DTYPE
    base_dtype = dtype if lora else TRAINED_DTYPE

    def load_trained() -> tuple[Any, Any, Any]:
        """The two modules PPO changes (and a checkpoint overwrites): policy and critic."""
        policy, tokenizer = load_causal_lm(start.artifact, device=device, dtype=base_dtype)
        critic, _ = load_reward_model(rm_version.artifact, device=device, dtype=base_dtype)
        return policy, tokenizer, critic

    def load_frozen(policy: Any, critic: Any) -> tuple[Any, Any]:
        """The reference and the RM scorer: with LoRA the policy and critic themselves
        (their bases under the adapters, `training.ml.ppo.share_bases`)."""
        if shares_reference:
            ref_policy = policy
        else:
            ref_policy, _ = load_causal_lm(ref_version.artifact, device=device, dtype=dtype)
        if lora:
            return ref_policy, critic
        reward_model, _ = load_reward_model(rm_version.artifact, device=device, dtype=dtype)
        return ref_policy, reward_model

    reporter.phase(progress.LOADING)
    policy, tokenizer, critic = load_trained()
    ref_policy, reward_model = load_frozen(policy, critic)
    rules = parse_rules(run.config.get("rules", []))
    prompts = training_data.training_prompts(project=project)
    ptx = training_data.demonstration_pairs(project=project) if config.ptx_coef else None
    reporter.progress(0, config.steps)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.train_step(step, config.steps)

    def on_substep(step: int, label: str) -> None:  # step: the one in progress, 1-based
        reporter.train_step(step - 1, config.steps, step=f"{label} · step {step}/{config.steps}")

    while True:
        try:
            result = train_ppo(
                policy,
                ref_policy,
                critic,
                reward_model,
                tokenizer,
                prompts,
                config,
                rules=rules,
                ptx_texts=ptx,
                on_metrics=on_metrics,
                on_substep=on_substep,
                should_stop=reporter.should_stop,
                checkpoint_dir=str(checkpoints),
                precision=precision(),
            )
            break
        except CheckpointError as exc:
            set_aside_newest_checkpoint(checkpoints, exc, reporter.log)
        # The failed load may have half-written policy and critic: load them again, after
        # letting go of the old ones (and of the traceback that held them) to fit in memory.
        # With LoRA they already carry adapters, and the reference and RM are their bases.
        del policy, critic
        if lora:
            del ref_policy, reward_model
        release_memory()
        policy, tokenizer, critic = load_trained()
        if lora:
            ref_policy, reward_model = load_frozen(policy, critic)
    return _publish(run, reporter, start, result, saver(policy, tokenizer), checkpoints)


def _ppo_launched(
    run: TrainingRun,
    reporter: RunReporter,
    round_: Round,
    start: ModelVersion,
    ref_version: ModelVersion,
    config: Any,
    fields: dict[str, Any],
    checkpoints: Path,
) -> dict[str, Any]:
    """The PPO run on RLHF_GPUS_PER_RUN processes: `ppo` launched as a child (launcher),
    its config file the run's PPOConfig fields. A newest checkpoint the command cannot
    load is set aside (as in-process) and the launch starts again from the one before."""
    from training.ml.ppo_checkpoint import latest_checkpoint, set_aside_newest_checkpoint

    project = run.project
    rm_version = required(round_.reward_model, "a reward model")
    ptx = training_data.demonstration_pairs(project=project) if config.ptx_coef else None
    reporter.progress(0, config.steps)
    while True:
        try:
            return _launch_and_publish(run, reporter, start, ref_version, rm_version,
                                       config, fields, checkpoints, ptx)  # fmt: skip
        except launcher.LaunchFailed as exc:
            # the command refuses a checkpoint it cannot load, naming it: go on without it
            newest = latest_checkpoint(checkpoints)
            refused = f"error: cannot resume from checkpoint {newest}:"
            if newest is None or not any(line.startswith(refused) for line in exc.refusals):
                raise
            set_aside_newest_checkpoint(checkpoints, exc, reporter.log)


def _launch_and_publish(
    run: TrainingRun,
    reporter: RunReporter,
    start: ModelVersion,
    ref_version: ModelVersion,
    rm_version: ModelVersion,
    config: Any,
    fields: dict[str, Any],
    checkpoints: Path,
    ptx: Any,
) -> dict[str, Any]:
    project = run.project

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.train_step(step, config.steps)

    with launcher.ppo_launched(
        run=run,
        reporter=reporter,
        init=start.artifact,
        reference=ref_version.artifact,
        reward_model=rm_version.artifact,
        prompts=training_data.training_prompts(project=project),
        rules=run.config.get("rules", []),
        ptx=ptx,
        checkpoints=checkpoints,
        values=fields,
        on_metrics=on_metrics,
    ) as (saved, result):
        return _publish(run, reporter, start, result, launcher.move_into_place(saved), checkpoints)


def _publish(
    run: TrainingRun,
    reporter: RunReporter,
    start: ModelVersion,
    result: dict[str, Any],
    save: Any,
    checkpoints: Path,
) -> dict[str, Any]:
    """The trained policy as a new, ready PPO version of `start`, written by `save` (the
    round's promotion gate decides whether it becomes current); then the checkpoints go."""
    from training.ml.ppo_checkpoint import remove_checkpoints

    if result.get("resumed_from"):
        reporter.log(f"resumed from the checkpoint of step {result['resumed_from']}")
    if result.get("status") == "cancelled":
        raise RunCancelled()
    metrics = scalar_metrics(result)
    version = model_version_create(
        project=run.project, kind=ModelVersion.Kind.PPO, parent=start, metrics=metrics
    )
    reporter.phase(progress.SAVING)
    published = publish(run, version, save, metrics)
    remove_checkpoints(checkpoints)  # the published version is the final state
    return published
