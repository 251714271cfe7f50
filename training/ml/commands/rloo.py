"""``rloo``: REINFORCE with a leave-one-out baseline against a reward model (no critic).

Every input (prompts, rules, flags) is checked before a model loads. The policy is
written as a ``save_pretrained`` folder, atomically, with ``rloo_metrics.json`` (the
config and every step's metrics). The first Ctrl-C stops after the current step; the
policy is then not written (exit 130).

Under ``accelerate launch`` (DDP) ``--batch-size`` is the global number of prompts per
step and must split over the processes; each rank samples its slice; rank 0 writes.
With ``--lora-r N`` the policy is LoRA adapters on the --model base and the reference
that base with the adapters off (--ref-model, if given, must be --model): one base copy,
stored in --dtype. The adapters are merged into the saved policy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
    "num_samples": "num_samples",
    "lr": "lr",
    "forward_batch_size": "forward_batch_size",
    "seed": "seed",
}
METRIC_KEYS = ["env/score_mean", "objective/kl", "objective/kl_coef", "losses/policy_loss"]
EXIT_CANCELLED = 130


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rloo",
        help="RLOO: REINFORCE with a leave-one-out baseline, KL penalty to the reference",
        description="RLOO (Ahmadian et al. 2024): N samples per prompt, each one's baseline "
        "the mean reward of the others, no critic; writes the policy as a save_pretrained "
        "folder.",
    )
    add_model_args(parser)
    add = parser.add_argument
    add("--reward-model", metavar="RM", help="reward model folder (or any --model spec)")
    add("--ref-model", metavar="SFT", help="frozen KL reference (default: --model)")
    add("--data", required=True, metavar="FILE", help="prompts: JSONL {prompt}, CSV or Parquet")
    add("--out", required=True, metavar="DIR", help="output save_pretrained folder")
    add("--steps", type=int, help="RLOO steps (default: --epochs over the prompts, else 20)")
    add("--epochs", type=float, help="passes over the prompts (sets --steps)")
    add("--batch-size", type=int, help="prompts per step, global under accelerate launch")
    add("--num-samples", type=int, metavar="N", help="responses per prompt (>= 2)")
    add("--lr", type=float, help="learning rate of the policy")
    add_rl_args(parser, lora_help="LoRA adapters of rank N on a frozen base")
    add("--normalize-advantages", action="store_true", help="unit-std advantages per step")
    add("--forward-batch-size", type=int, help="episodes per forward pass")
    add(
        "--config",
        metavar="FILE",
        help="JSON object of RLOOConfig fields (as a project's training_config section); "
        "flags given override it",
    )
    add("--metrics-jsonl", metavar="FILE", help='append {"step", "values"} per step (rank 0)')
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict[str, Any] | int:
    from training.ml.data import read_prompts
    from training.ml.rules import parse_rules

    prompts = read_prompts(args.data)  # every line checked before a model loads
    try:
        rules = parse_rules(args.rule)
    except ValueError as error:
        raise CommandError(f"--rule: {error}") from None
    if args.reward_model is None and not rules:
        raise CommandError("give --reward-model, --rule, or both: nothing would score responses")
    out = check_out_dir(args.out)
    config = _config(args, len(prompts))
    set_threads_from_env()
    dist = distributed_from_args(args, global_batch=config.batch_size)
    quiet_transformers()
    import torch

    torch.manual_seed(config.seed)  # an RM head initialised from an LM: the same on every run
    policy, ref_policy, reward_model, tokenizer = _load_models(args)
    result = _train(policy, ref_policy, reward_model, tokenizer, prompts, config, rules, args, dist)
    history = result.pop("history")
    result["processes"] = dist.world_size
    if result["status"] != "completed":
        if dist.is_main:
            emit_result({**result, "out": None})
        return EXIT_CANCELLED
    if dist.is_main:  # every rank holds the same weights; rank 0 writes them
        _save(policy, tokenizer, out, result, history, config)
    dist.wait()
    if not dist.is_main:
        return 0  # rank 0 alone prints the result line
    return {**result, "out": str(out)}


def _config(args: argparse.Namespace, n_prompts: int) -> Any:
    """--config's fields, then the flags given (`common.config_from_args`)."""
    from training.ml.rloo import RLOOConfig

    if args.train_top_layers is not None and args.train_top_layers < 0:
        raise CommandError("--train-top-layers must be >= 0")
    if args.lora_r is not None:
        if args.ref_model is not None and args.ref_model != args.model:
            raise CommandError(
                "with --lora-r the reference is the --model base with the adapters off: "
                "drop --ref-model (or train without --lora-r)"
            )
    elif args.lora_alpha is not None or args.lora_target_modules is not None:
        raise CommandError("--lora-alpha and --lora-target-modules need --lora-r")
    try:
        config = config_from_args(args, RLOOConfig, FLAG_TO_FIELD)
        if hasattr(args, "kl_target"):  # given: a number, or None for a fixed beta
            config = dataclasses.replace(config, kl_target=args.kl_target)
        if args.normalize_advantages:
            config = dataclasses.replace(config, normalize_advantages=True)
        if args.steps is None and args.epochs is not None:
            steps = max(1, round(args.epochs * n_prompts / config.batch_size))
            config = dataclasses.replace(config, steps=steps)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    return config


def _load_models(args: argparse.Namespace) -> tuple[Any, Any, Any, Any]:
    """(policy, ref_policy, reward_model or None, tokenizer) on this rank's device. The
    policy loads in fp32 (master weights), or in --dtype as a LoRA base, which is then
    also the reference; the frozen models load in --dtype."""
    from training.ml.loading import load_causal_lm
    from training.ml.reward.model import load_reward_model

    device = device_from_args(args)
    lora = args.lora_r is not None
    policy, tokenizer = load_causal_lm(
        args.model, device=device, dtype=weights_dtype(args, trained=not lora)
    )
    if lora:
        ref_policy = policy
    else:
        ref_policy, _ = load_causal_lm(
            args.ref_model or args.model, device=device, dtype=args.dtype
        )
    reward_model = None
    if args.reward_model is not None:
        reward_model, rm_tokenizer = load_reward_model(
            args.reward_model, device=device, dtype=args.dtype
        )
        if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise CommandError(f"--reward-model {args.reward_model} has another tokenizer")
    return policy, ref_policy, reward_model, tokenizer


def _train(
    policy: Any,
    ref_policy: Any,
    reward_model: Any,
    tokenizer: Any,
    prompts: list[Any],
    config: Any,
    rules: list[Any],
    args: argparse.Namespace,
    dist: Any,
) -> dict[str, Any]:
    """train_rloo with a progress bar on rank 0; the first Ctrl-C stops after the step."""
    from training.ml.rloo import train_rloo

    stop = {"requested": False}

    def request_stop(signum: int, frame: Any) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        with main_progress(dist, "rloo", METRIC_KEYS, args.metrics_jsonl) as progress:
            return train_rloo(
                policy,
                ref_policy,
                reward_model,
                tokenizer,
                prompts,
                config,
                rules=rules,
                on_metrics=(lambda step, m: progress(step, {**m, "total_steps": config.steps}))
                if progress is not None
                else None,
                should_stop=lambda: stop["requested"],
                precision=precision_from_args(args),
                dist=dist,
            )
    finally:
        signal.signal(signal.SIGINT, previous)


def _save(policy: Any, tokenizer: Any, out: Path, result: dict, history: list, config: Any) -> None:
    from dataclasses import asdict

    from training.ml.saving import save_pretrained_atomic

    summary = json.dumps(
        {**result, "config": asdict(config), "history": history}, indent=2, default=str
    )
    save_pretrained_atomic(policy, tokenizer, out, extra_files={"rloo_metrics.json": summary})
