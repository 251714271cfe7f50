"""Run bodies: the bridge from database rows to the ML core and back.

Each body takes a TrainingRun and a RunReporter, loads plain data from the database,
calls `training.ml` with callbacks, writes the artifact atomically and registers it.
A new model version becomes current only after its artifact is complete and verified.
torch is imported lazily here so the web process never loads it.
"""

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.exceptions import ApplicationError
from formats.text import storable_text
from labeling.models import Prompt, RankingTask, Response
from training.models import ModelVersion, Round, TrainingRun
from training.services import datasets
from training.services.registry import (
    model_version_create,
    model_version_fail,
    model_version_promote,
    reference_policy,
)
from training.services.runs import RunCancelled, RunReporter

Body = Callable[[TrainingRun, RunReporter], dict[str, Any]]


def body_for(kind: str) -> Body:
    bodies: dict[str, Body] = {
        TrainingRun.Kind.GENERATE: generate_body,
        TrainingRun.Kind.RM: rm_body,
        TrainingRun.Kind.PPO: ppo_body,
        TrainingRun.Kind.SFT: sft_body,
    }
    if kind not in bodies:
        raise ApplicationError(f"Unknown run kind {kind!r}.")
    return bodies[kind]


def _round_of(run: TrainingRun, *related: str) -> Round:
    if run.round_id is None:
        raise ApplicationError(f"The {run.kind} run {run.pk} belongs to no round.")
    return Round.objects.select_related(*related).get(pk=run.round_id)


def _required(version: ModelVersion | None, what: str) -> ModelVersion:
    if version is None:
        raise ApplicationError(f"The round has no {what.removeprefix('a ')} yet.")
    return version


def _device_and_dtype() -> tuple[str, str]:
    return settings.RLHF_DEVICE, settings.RLHF_DTYPE


# Trained models load in fp32 (master weights); RLHF_DTYPE is their autocast dtype and the
# storage dtype of frozen ones (training.ml.precision).
TRAINED_DTYPE = "float32"


def _precision() -> Any:
    from training.ml.models import resolve_device
    from training.ml.precision import resolve_precision

    device, dtype = _device_and_dtype()
    return resolve_precision(dtype, resolve_device(device))


def _check_cancel(reporter: RunReporter) -> None:
    if reporter.should_stop():
        raise RunCancelled()


def _stable_seed(*parts: object) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big")


# --------------------------------------------------------------------------- generate


def _prompts_for_round(round_: Round) -> list[Prompt]:
    """Train prompts not yet tasked in this round, preferring prompts never ranked before."""
    project = round_.project
    already = RankingTask.objects.filter(round=round_).values_list("prompt_id", flat=True)
    missing = round_.num_prompts - len(already)
    if missing <= 0:
        return []
    candidates = Prompt.objects.filter(project=project, split=Prompt.Split.TRAIN).exclude(
        pk__in=already
    )
    used = set(RankingTask.objects.filter(project=project).values_list("prompt_id", flat=True))
    fresh = [p for p in candidates.order_by("id") if p.pk not in used]
    reused = [p for p in candidates.order_by("id") if p.pk in used]
    return (fresh + reused)[:missing]


def generate_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Sample K responses per prompt from the round's policy; each prompt becomes a task.

    Model text is stored as `storable_text` makes it (a policy may learn to emit the byte
    token that decodes to NUL); `text/replaced_chars` counts the characters replaced.
    """
    from training.ml.models import load_causal_lm
    from training.ml.sampling import GenerationSettings, sample_responses

    round_ = _round_of(run, "project", "sampling_policy")
    project, policy = round_.project, _required(round_.sampling_policy, "a sampling policy")
    prompts = _prompts_for_round(round_)
    if not prompts and not round_.tasks.exists():
        raise ApplicationError("The project has no train prompts: import prompts first.")
    device, dtype = _device_and_dtype()
    model, tokenizer = load_causal_lm(policy.artifact, device=device, dtype=dtype)
    batch = int(run.config.get("prompts_per_batch", 4))
    total = len(prompts) * project.k  # progress counts responses
    reporter.progress(0, total)
    replaced = 0
    for start in range(0, len(prompts), batch):
        _check_cancel(reporter)
        chunk = prompts[start : start + batch]
        gen = GenerationSettings(
            max_new_tokens=project.max_new_tokens,
            temperature=project.temperature,
            top_p=project.top_p,
            seed=_stable_seed(project.pk, round_.number, chunk[0].pk),
        )
        done_before = start * project.k

        def on_progress(done: int, _chunk_total: int, base: int = done_before) -> None:
            reporter.progress(base + done, total)

        samples = sample_responses(
            model, tokenizer, [p.as_input for p in chunk], k=project.k, settings=gen,
            batch_size=int(run.config.get("batch_size", 8)), on_progress=on_progress,
        )  # fmt: skip
        replaced += _store_tasks(round_, chunk, samples, gen)
        reporter.progress(done_before + len(chunk) * project.k, total)
    if replaced:
        reporter.log(f"replaced {replaced} NUL or lone-surrogate characters in sampled text")
    return {
        "tasks": round_.tasks.count(),
        "policy": policy.label,
        "text/replaced_chars": replaced,
    }


def _store_tasks(round_: Round, prompts: list[Prompt], samples: list, gen: Any) -> int:
    """One task per prompt with its K responses; return how many characters of the
    responses `storable_text` replaced."""
    policy = _required(round_.sampling_policy, "a sampling policy")
    generation = {
        "max_new_tokens": gen.max_new_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
    }
    replaced = 0
    for prompt, responses in zip(prompts, samples, strict=True):
        texts = [storable_text(s.text) for s in responses]
        try:
            with transaction.atomic():
                task = RankingTask.objects.create(
                    project=round_.project, prompt=prompt, round=round_,
                    overlap=round_.project.overlap, source="policy",
                )  # fmt: skip
                Response.objects.bulk_create(
                    Response(
                        task=task, position=i, text=text, token_count=len(s.token_ids),
                        finished=s.finished, policy_version=policy,
                        policy_name=policy.label, generation=generation,
                        seed=s.seed,
                    )
                    for i, (s, (text, _)) in enumerate(zip(responses, texts, strict=True))
                )  # fmt: skip
        except IntegrityError:
            continue  # a retried run: this prompt already has its task in this round
        replaced += sum(count for _, count in texts)
    return replaced


# --------------------------------------------------------------------------- reward model


def rm_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Train a fresh RM from the SFT policy on every ranking of the project."""
    from training.ml.models import load_causal_lm
    from training.ml.rm import RewardModel, RMConfig, evaluate_reward_model, train_reward_model

    project = run.project
    round_ = Round.objects.get(pk=run.round_id) if run.round_id else None
    data = datasets.split_rm_data(
        datasets.ranked_examples(project=project),
        eval_fraction=float(run.config.get("eval_fraction", 0.1)),
    )
    if not data.train:
        raise ApplicationError("No usable rankings to train the reward model on.")
    init = reference_policy(project=project)
    device, _ = _device_and_dtype()
    lm, tokenizer = load_causal_lm(init.artifact, device=device, dtype=TRAINED_DTYPE)
    model = RewardModel.from_causal_lm(lm)
    del lm
    config = RMConfig(**_known_fields(RMConfig, run.config))
    per_epoch = math.ceil(len(data.train) / config.batch_size)
    steps_total = max(1, round(per_epoch * config.epochs))  # as training.ml.rm plans them
    reporter.progress(0, steps_total)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.progress(min(step, steps_total), steps_total)

    result = train_reward_model(
        model, tokenizer, data.train, config=config, eval=data.eval or None,
        on_metrics=on_metrics, should_stop=reporter.should_stop, precision=_precision(),
    )  # fmt: skip
    if result.get("status") == "cancelled":
        raise RunCancelled()
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float | str)}
    if data.heldout_labeler:
        held = evaluate_reward_model(model, tokenizer, data.heldout_labeler)
        metrics["heldout_labeler_accuracy"] = held["accuracy"]
        metrics["heldout_labeler"] = data.heldout_labeler_name or ""
    if round_ is not None:
        _calibrate_on_round_samples(model, tokenizer, round_)
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.RM, parent=init, metrics=metrics
    )
    from training.ml.rm import save_reward_model

    # The RM's own saver: its folder pads with a non-EOS token, so TRL and transformers'
    # pad-token pooling read the same last token as we do.
    return _publish(run, version, lambda out: save_reward_model(model, tokenizer, out), metrics)


def _calibrate_on_round_samples(model: Any, tokenizer: Any, round_: Round) -> None:
    """Shift the RM so the policy's own samples of this round score 0 on average."""
    from training.ml.rm import calibrate_offset

    samples = [
        (r.task.prompt.as_input, r.text)
        for r in Response.objects.filter(task__round=round_).select_related("task__prompt")[:256]
    ]
    if samples:
        calibrate_offset(model, tokenizer, samples)


def _publish(
    run: TrainingRun, version: ModelVersion, save: Callable[[Path], Any], metrics: dict
) -> dict[str, Any]:
    """Write the artifact atomically, verify it, then make it current.

    Promotion holds the run's row lock and requires the run to be still `running`: a run
    the reaper failed meanwhile (its heartbeats stalled) must not make its model current
    behind a round that already says it failed.
    """
    try:
        save(Path(version.artifact))
        with transaction.atomic():
            alive = TrainingRun.objects.select_for_update().filter(
                pk=run.pk, status=TrainingRun.Status.RUNNING
            )
            if not alive.exists():
                raise ApplicationError(
                    f"Run {run.pk} was marked failed while it worked (no heartbeat in time); "
                    "its model was not made current."
                )
            version = model_version_promote(version=version, metrics=metrics)
            # In the same locked write: the run owns its output, and its fresh heartbeat
            # keeps the reaper off until run_execute records the success.
            alive.update(output=version, heartbeat_at=timezone.now())
    except Exception as exc:
        model_version_fail(version=version, error=str(exc))
        raise
    run.output = version
    return {**metrics, "model_version": version.label}


def _saver(model: Any, tokenizer: Any) -> Callable[[Path], Any]:
    from training.ml.models import save_pretrained_atomic

    return lambda out: save_pretrained_atomic(model, tokenizer, out)


def _known_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of trainer config `cls` in a run's config; an unknown key fails the run
    (config_schema.run_config_fields)."""
    from training.services.config_schema import run_config_fields  # it imports this module

    return run_config_fields(cls, values)


# --------------------------------------------------------------------------- PPO


def ppo_checkpoints(round_: Round, start: ModelVersion, rules: Any = ()) -> Path:
    """Where the round's PPO writes resumable checkpoints: one folder per round, RM,
    initial policy and reward rules, so a retried PPO stage continues where the failed
    attempt stopped, and never on top of another reward (a retried RM stage makes a new
    RM; rules are part of the reward but not of PPOConfig)."""
    name = f"round-{round_.pk}-rm-{round_.reward_model_id}-from-{start.pk}"
    if rules:
        digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:10]
        name += f"-rules-{digest}"
    return Path(settings.RLHF_ARTIFACT_DIR) / "checkpoints" / name


PPO_INIT_CHOICES = ("reference", "policy")


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
        return _required(round_.sampling_policy, "a sampling policy")
    return reference_policy(project=round_.project)


def ppo_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """PPO against the round's new RM, KL to the frozen SFT reference, starting from the
    reference or the round's policy (`ppo_init_version`).

    Checkpoints every `checkpoint_every` steps (default: a quarter of the run) and resumes
    from the newest one when the stage is retried after a failure (a killed worker). An
    unreadable checkpoint is moved aside (`.corrupt-...`, kept for inspection) and the run
    goes on from the one before it, or from the start.
    """
    from training.ml.models import load_causal_lm, release_memory
    from training.ml.ppo import PPOConfig, train_ppo
    from training.ml.ppo_checkpoint import CheckpointError
    from training.ml.rm import load_reward_model
    from training.ml.rules import parse_rules

    round_ = _round_of(run, "project", "sampling_policy", "reward_model")
    project = run.project
    start = ppo_init_version(round_, run.config)
    rm_version = _required(round_.reward_model, "a reward model")
    device, dtype = _device_and_dtype()

    def load_trained() -> tuple[Any, Any, Any]:
        """The two modules PPO changes (and a checkpoint overwrites): policy and critic."""
        policy, tokenizer = load_causal_lm(start.artifact, device=device, dtype=TRAINED_DTYPE)
        critic, _ = load_reward_model(rm_version.artifact, device=device, dtype=TRAINED_DTYPE)
        return policy, tokenizer, critic

    policy, tokenizer, critic = load_trained()
    ref_version = reference_policy(project=project)
    ref_policy, _ = load_causal_lm(ref_version.artifact, device=device, dtype=dtype)
    reward_model, _ = load_reward_model(rm_version.artifact, device=device, dtype=dtype)
    values = {"max_new_tokens": project.max_new_tokens, "temperature": project.temperature,
              "top_p": project.top_p, **run.config}  # fmt: skip
    config = PPOConfig(**_known_fields(PPOConfig, values))
    if "checkpoint_every" not in run.config:
        config.checkpoint_every = max(1, config.steps // 4)
    rules = parse_rules(run.config.get("rules", []))
    prompts = datasets.training_prompts(project=project)
    ptx = datasets.demonstration_pairs(project=project) if config.ptx_coef else None
    checkpoints = ppo_checkpoints(round_, start, run.config.get("rules"))
    _set_aside_foreign_checkpoints(checkpoints, config, reporter)
    reporter.progress(0, config.steps)

    def on_metrics(step: int, values: dict[str, Any]) -> None:
        reporter.metrics(step, values)
        reporter.progress(step, config.steps)

    while True:
        try:
            result = train_ppo(
                policy, ref_policy, critic, reward_model, tokenizer, prompts, config,
                rules=rules, ptx_texts=ptx, on_metrics=on_metrics,
                should_stop=reporter.should_stop, checkpoint_dir=str(checkpoints),
                precision=_precision(),
            )  # fmt: skip
            break
        except CheckpointError as exc:
            _set_aside_newest_checkpoint(checkpoints, reporter, exc)
        # The failed load may have half-written policy and critic: load them again, after
        # letting go of the old ones (and of the traceback that held them) to fit in memory.
        del policy, critic
        release_memory()
        policy, tokenizer, critic = load_trained()
    if result.get("resumed_from"):
        reporter.log(f"resumed from the checkpoint of step {result['resumed_from']}")
    if result.get("status") == "cancelled":
        raise RunCancelled()
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float | str)}
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.PPO, parent=start, metrics=metrics
    )
    published = _publish(run, version, _saver(policy, tokenizer), metrics)
    for done in checkpoints.glob("step-*"):  # the published version is the final state
        shutil.rmtree(done, ignore_errors=True)
    return published


# What a resumed run may change (how long, how often it saves, how it batches a forward
# pass); any other difference means the checkpoint trained something else.
# (gradient checkpointing and the frozen-trunk cache save memory, the resumed controller
# takes its beta from the checkpoint).
_RESUMABLE_CHANGES = {
    "steps", "checkpoint_every", "keep_checkpoints", "forward_batch_size",
    "gradient_checkpointing", "cache_frozen_trunk", "init_kl_coef",
}  # fmt: skip


def _set_aside_foreign_checkpoints(root: Path, config: Any, reporter: RunReporter) -> None:
    """Checkpoints written under another PPO config (an admin changed training_config
    after the failure) are renamed `.superseded-...`: the retry starts over instead of
    resuming weights and optimizer state that belong to a different run."""
    from dataclasses import asdict

    from training.ml.ppo_checkpoint import CHECKPOINT_PATTERN

    wanted = {k: v for k, v in asdict(config).items() if k not in _RESUMABLE_CHANGES}
    for folder in sorted(root.glob(CHECKPOINT_PATTERN)):
        try:
            saved = json.loads((folder / "state.json").read_text()).get("config") or {}
        except (OSError, ValueError):
            continue  # unreadable: train_ppo reports it and it is set aside as corrupt
        changed = sorted(k for k, v in wanted.items() if k in saved and saved[k] != v)
        if changed:
            _set_aside(folder, "superseded", reporter, f"checkpoint {folder.name} was trained "
                       f"with other {', '.join(changed)}; starting over")  # fmt: skip


def _set_aside_newest_checkpoint(root: Path, reporter: RunReporter, error: Exception) -> None:
    from training.ml.ppo_checkpoint import latest_checkpoint

    newest = latest_checkpoint(root)
    if newest is None:  # nothing left to set aside: the error is not the checkpoint's
        raise error
    message = f"{error}; set aside, going on from the checkpoint before it (or the start)"
    _set_aside(newest, "corrupt", reporter, message)


def _set_aside(folder: Path, why: str, reporter: RunReporter, message: str) -> None:
    """Rename a checkpoint `.{why}-step-N-TIME`: no longer resumed from, kept to inspect."""
    folder.rename(folder.with_name(f".{why}-{folder.name}-{int(time.time())}"))
    reporter.log(message)


# --------------------------------------------------------------------------- SFT


def sft_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Fine-tune the current policy on the project's demonstrations."""
    from training.ml.models import load_causal_lm
    from training.ml.sft import Demonstration, SFTConfig, train_sft

    project = run.project
    demos = [
        Demonstration(prompt=p, response=r)
        for p, r in datasets.demonstration_pairs(project=project)
    ]
    if not demos:
        raise ApplicationError("The project has no demonstrations to fine-tune on.")
    parent = reference_policy(project=project)
    device, _ = _device_and_dtype()
    model, tokenizer = load_causal_lm(parent.artifact, device=device, dtype=TRAINED_DTYPE)
    config = SFTConfig(**_known_fields(SFTConfig, run.config))
    result = train_sft(
        model, tokenizer, demos, config, precision=_precision(),
        on_metrics=reporter.metrics, should_stop=reporter.should_stop,
    )  # fmt: skip
    if result.get("status") == "cancelled":
        raise RunCancelled()
    metrics = {k: v for k, v in result.items() if isinstance(v, int | float | str)}
    version = model_version_create(
        project=project, kind=ModelVersion.Kind.SFT, parent=parent, metrics=metrics
    )
    return _publish(run, version, _saver(model, tokenizer), metrics)
