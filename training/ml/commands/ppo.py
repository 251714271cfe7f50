"""``ppo``: PPO of an SFT policy against a reward model, with a KL penalty to the SFT policy.

Every input (prompts, demonstrations, rules, flags, the checkpoint folder) is checked
before a model loads. The policy is written as a ``save_pretrained`` folder, atomically.
With ``--checkpoint-every N`` the run saves safetensors checkpoints (and one on Ctrl-C);
``--resume`` continues from the newest. They are removed after a successful run unless
``--keep-checkpoints``.

With ``--lora-r N`` the policy is LoRA adapters on the --model base and the critic LoRA
adapters plus its head on the --reward-model base (--critic, if given, must be that RM);
the reference is the --model base with the adapters off (--ref-model, if given, must be
--model) and the RM scorer the RM base with them off: two base copies, not four, stored
in --dtype. The adapters are merged into the saved policy.

Under ``accelerate launch --num_processes N`` (DDP) ``--batch-size`` is the global batch of
prompts (divisible by N): each rank rolls out and trains on its slice of every step and the
run is the one-process run (``training.ml.ppo_ranks``); rank 0 alone shows progress,
writes checkpoints and the policy, and prints the result line. ``--config`` and
``--metrics-jsonl`` work as for ``train-rm`` and ``sft`` (``common.config_from_args``): the
gpu worker launches the command with them when RLHF_GPUS_PER_RUN > 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
from pathlib import Path
from typing import Any

from training.ml.commands.common import (
    RL_FLAG_TO_FIELD,
    CommandError,
    add_model_args,
    add_rl_args,
    check_out_dir,
    config_from_args,
    device_from_args,
    distributed_from_args,
    emit_result,
    main_progress,
    precision_from_args,
    quiet_transformers,
    set_threads_from_env,
    weights_dtype,
)

FLAG_TO_FIELD = {
    **RL_FLAG_TO_FIELD,
    "steps": "steps",
    "batch_size": "batch_size",
    "mini_batch_size": "mini_batch_size",
    "ppo_epochs": "ppo_epochs",
    "lr": "lr",
    "cliprange": "cliprange",
    "cliprange_value": "cliprange_value",
    "vf_coef": "vf_coef",
    "gamma": "gamma",
    "lam": "lam",
    "ptx_coef": "ptx_coef",
    "seed": "seed",
    "checkpoint_every": "checkpoint_every",
}
METRIC_KEYS = ["env/score_mean", "objective/kl", "objective/kl_coef", "charts/tokens_per_s"]
EXIT_CANCELLED = 130


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ppo",
        help="PPO against a reward model with a KL penalty to the SFT policy",
        description="PPO (InstructGPT 1.4): policy and reference from --model, critic from "
        "the reward model; writes the policy as a save_pretrained folder.",
    )
    add_model_args(parser)
    add = parser.add_argument
    add("--reward-model", metavar="RM", help="reward model folder (or any --model spec)")
    add("--critic", metavar="RM", help="critic initialisation (default: --reward-model)")
    add("--ref-model", metavar="SFT", help="frozen KL reference (default: --model)")
    add("--data", required=True, metavar="FILE", help="prompts: JSONL {prompt} or CSV")
    add("--out", required=True, metavar="DIR", help="output save_pretrained folder")
    add("--steps", type=int, help="PPO steps (default: --epochs over the prompts, else 20)")
    add("--epochs", type=float, help="passes over the prompts (sets --steps)")
    add("--batch-size", type=int, help="prompts per rollout")
    add("--mini-batch-size", type=int, help="episodes per gradient step")
    add("--ppo-epochs", type=int, help="passes over each rollout")
    add("--lr", type=float, help="learning rate of policy and critic")
    add_rl_args(parser, lora_help="LoRA PPO: adapters of rank N, two base copies")
    add("--cliprange", type=float)
    add("--cliprange-value", type=float)
    add("--vf-coef", type=float)
    add("--gamma", type=float, help="GAE discount")
    add("--lam", type=float, help="GAE lambda")
    add("--whiten-rewards", action="store_true")
    add("--ptx-data", metavar="FILE", help="demonstrations for the PPO-ptx term")
    add("--ptx-coef", type=float, help="gamma of PPO-ptx")
    add("--checkpoint-every", type=int, metavar="STEPS", help="save a checkpoint every N steps")
    add("--checkpoint-dir", metavar="DIR", help="checkpoint folder (default: OUT.checkpoints)")
    add("--resume", action="store_true", help="continue from the newest checkpoint")
    add("--keep-checkpoints", action="store_true", help="keep checkpoints after success")
    add(
        "--config",
        metavar="FILE",
        help="JSON object of PPOConfig fields (as a project's training_config.ppo); "
        "flags given override it",
    )
    add(
        "--metrics-jsonl",
        metavar="FILE",
        help='append one line {"step", "values"} per PPO step (rank 0), for a supervising process',
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict[str, Any] | int:
    from training.ml.data import read_demonstrations, read_prompts
    from training.ml.rules import parse_rules

    prompts = read_prompts(args.data)  # every line checked before a model loads
    ptx = read_demonstrations(args.ptx_data) if args.ptx_data else None
    try:
        rules = parse_rules(args.rule)
    except ValueError as error:
        raise CommandError(f"--rule: {error}") from None
    if args.reward_model is None and not rules:
        raise CommandError("give --reward-model, --rule, or both: nothing would score responses")
    out = check_out_dir(args.out)
    config = _config(args, len(prompts))
    if (ptx is None) != (not config.ptx_coef):
        raise CommandError("--ptx-data and --ptx-coef > 0 go together")
    checkpoints = _checkpoint_dir(args, out, config)
    set_threads_from_env()
    quiet_transformers()
    dist = distributed_from_args(args, global_batch=config.batch_size)
    import torch

    torch.manual_seed(config.seed)  # a new value head's init: the same on every run
    models = _load_models(args, lora=config.lora_r is not None)
    result = _train(
        models,
        prompts,
        config,
        rules,
        ptx,
        checkpoints,
        resume=args.resume,
        precision=precision_from_args(args),
        dist=dist,
        metrics_jsonl=args.metrics_jsonl,
    )
    result["processes"] = dist.world_size
    if result["status"] != "completed":
        if dist.is_main:
            emit_result({**result, "out": None, "checkpoint_dir": str(checkpoints or "")})
        return EXIT_CANCELLED
    if dist.is_main:  # every rank holds the same weights; rank 0 writes them
        _save(models[0], models[4], out, result, config)
        if checkpoints is not None and not args.keep_checkpoints:
            shutil.rmtree(checkpoints, ignore_errors=True)
    dist.wait()
    if not dist.is_main:
        return 0  # rank 0 alone prints the result line
    return {**result, "out": str(out)}


def _config(args: argparse.Namespace, n_prompts: int) -> Any:
    """``--config``'s fields, then the flags (common.config_from_args); ``--epochs`` sets
    the steps from the batch size either gives."""
    import dataclasses

    from training.ml.ppo import PPOConfig

    if args.train_top_layers is not None and args.train_top_layers < 0:
        raise CommandError("--train-top-layers must be >= 0")
    derived: dict[str, Any] = {}
    if hasattr(args, "kl_target"):  # given: a number, or None for a fixed beta
        derived["kl_target"] = args.kl_target
    if args.whiten_rewards:
        derived["whiten_rewards"] = True
    config = config_from_args(args, PPOConfig, FLAG_TO_FIELD, derived)
    if args.steps is None and args.epochs is not None:
        steps = max(1, round(args.epochs * n_prompts / max(config.batch_size, 1)))
        try:
            config = dataclasses.replace(config, steps=steps)
        except ValueError as error:
            raise CommandError(str(error)) from None
    if config.lora_r is not None:
        _check_lora_models(args)
    elif args.lora_alpha is not None or args.lora_target_modules is not None:
        raise CommandError("--lora-alpha and --lora-target-modules need --lora-r")
    return config


def _check_lora_models(args: argparse.Namespace) -> None:
    """With LoRA the reference is the --model base and the RM scorer the critic's base."""
    if args.ref_model is not None and args.ref_model != args.model:
        raise CommandError(
            "with --lora-r the reference is the --model base with the adapters off: "
            "drop --ref-model (or train without --lora-r)"
        )
    if args.critic is not None and args.critic != (args.reward_model or args.model):
        raise CommandError(
            "with --lora-r the critic is LoRA on the --reward-model base, which also "
            "scores: drop --critic (or train without --lora-r)"
        )


def _checkpoint_dir(args: argparse.Namespace, out: Path, config: Any) -> Path | None:
    """The checkpoint folder, or None when checkpointing is off; refuses stale ones."""
    from training.ml.ppo_checkpoint import latest_checkpoint

    if not (config.checkpoint_every or args.resume or args.checkpoint_dir):
        return None
    folder = Path(args.checkpoint_dir or f"{out}.checkpoints").expanduser()
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"--checkpoint-dir {folder} exists and is not a folder")
    if not args.resume and folder.is_dir() and latest_checkpoint(folder) is not None:
        raise CommandError(
            f"checkpoints exist in {folder}: pass --resume to continue, or remove the folder"
        )
    return folder


def _load_models(args: argparse.Namespace, *, lora: bool) -> tuple[Any, Any, Any, Any, Any]:
    """(policy, ref_policy, critic, reward_model or None, tokenizer) on --device/--dtype."""
    from training.ml.loading import load_causal_lm
    from training.ml.reward.model import load_reward_model

    device = device_from_args(args)  # this rank's device under a launcher
    if lora:  # frozen bases under the adapters, in --dtype
        return _load_lora_models(args, device)
    trained = weights_dtype(args, trained=True)  # policy and critic: fp32 master weights
    policy, tokenizer = load_causal_lm(args.model, device=device, dtype=trained)
    ref_policy, _ = load_causal_lm(args.ref_model or args.model, device=device, dtype=args.dtype)
    reward_model = None
    if args.reward_model is not None:
        reward_model, rm_tokenizer = load_reward_model(
            args.reward_model, device=device, dtype=args.dtype
        )
        if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise CommandError(f"--reward-model {args.reward_model} has another tokenizer")
    critic_spec = args.critic or args.reward_model or args.model
    critic, _ = load_reward_model(critic_spec, device=device, dtype=trained)
    return policy, ref_policy, critic, reward_model, tokenizer


def _load_lora_models(args: argparse.Namespace, device: Any) -> tuple[Any, Any, Any, Any, Any]:
    """(policy, policy, critic, critic or None, tokenizer): the reference and the RM are
    the same objects as policy and critic (`training.ml.ppo.share_bases`)."""
    from training.ml.loading import load_causal_lm
    from training.ml.reward.model import load_reward_model

    frozen = weights_dtype(args, trained=False)
    policy, tokenizer = load_causal_lm(args.model, device=device, dtype=frozen)
    critic, rm_tokenizer = load_reward_model(
        args.reward_model or args.model, device=device, dtype=frozen
    )
    if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise CommandError(f"--reward-model {args.reward_model} has another tokenizer")
    reward_model = critic if args.reward_model is not None else None
    return policy, policy, critic, reward_model, tokenizer


def _train(
    models: tuple[Any, ...],
    prompts: list[Any],
    config: Any,
    rules: list[Any],
    ptx: list[Any] | None,
    checkpoints: Path | None,
    *,
    resume: bool,
    precision: Any,
    dist: Any,
    metrics_jsonl: str | None,
) -> dict[str, Any]:
    """train_ppo with progress bars (rank 0's, which also appends each step to
    ``metrics_jsonl`` when given); the first Ctrl-C stops after the current step."""
    from training.ml.ppo import train_ppo
    from training.ml.ppo_checkpoint import CheckpointError

    stop = {"requested": False}

    def request_stop(signum: int, frame: Any) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    previous = signal.signal(signal.SIGINT, request_stop)
    policy, ref_policy, critic, reward_model, tokenizer = models
    try:
        bar = main_progress(dist, "ppo", METRIC_KEYS, metrics_jsonl, total=config.steps)
        with bar as progress:
            return train_ppo(
                policy,
                ref_policy,
                critic,
                reward_model,
                tokenizer,
                prompts,
                config,
                rules=rules,
                ptx_texts=ptx,
                on_metrics=progress,
                should_stop=lambda: stop["requested"],
                checkpoint_dir=checkpoints,
                resume=resume,
                precision=precision,
                dist=dist,
            )
    except CheckpointError as error:
        raise CommandError(str(error)) from None
    finally:
        signal.signal(signal.SIGINT, previous)


def _save(policy: Any, tokenizer: Any, out: Path, result: dict, config: Any) -> None:
    from dataclasses import asdict

    from training.ml.saving import save_pretrained_atomic

    summary = json.dumps({**result, "config": asdict(config)}, indent=2, default=str)
    save_pretrained_atomic(policy, tokenizer, out, extra_files={"ppo_metrics.json": summary})
