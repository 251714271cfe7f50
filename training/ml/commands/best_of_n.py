"""``best-of-n``: sample N responses per prompt, keep the best-scored, SFT on the kept ones.

Rejection-sampling fine-tuning (Llama 2): the policy from --model samples, the reward
model (and any --rule) scores, and the policy is fine-tuned on each prompt's best
response. Writes the policy as a ``save_pretrained`` folder, atomically, with
``best_of_n_samples.jsonl`` (one row per prompt: the kept response, its score and every
candidate's score) and ``best_of_n_metrics.json``.

Under ``accelerate launch`` (DDP) each rank samples its slice of the prompts and SFT's
``--batch-size`` is the global micro-batch; rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from training.ml.commands.common import (
    CommandError,
    add_model_args,
    add_training_args,
    check_out_dir,
    config_from_args,
    device_from_args,
    distributed_from_args,
    load_model_from_args,
    main_progress,
    precision_from_args,
    set_threads_from_env,
)
from training.ml.commands.sft import FLAG_TO_FIELD as SFT_FLAG_TO_FIELD

FLAG_TO_FIELD = {
    "n": "n",
    "num_prompts": "num_prompts",
    "max_new_tokens": "max_new_tokens",
    "max_prompt_length": "max_prompt_length",
    "temperature": "temperature",
    "top_p": "top_p",
    "sample_batch_size": "sample_batch_size",
    **SFT_FLAG_TO_FIELD,  # the SFT on the picks takes sft's flags
}
METRIC_KEYS = ["sft/loss", "sft/eval_loss", "sft/lr"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "best-of-n",
        help="best-of-N: SFT on the best of N sampled responses per prompt",
        description="Rejection sampling (Llama 2): sample N responses per prompt, score them "
        "with the reward model and rules, fine-tune on each prompt's best.",
    )
    add_model_args(parser)
    add_training_args(parser, out_help="output save_pretrained folder (safetensors)")
    add = parser.add_argument
    add("--reward-model", metavar="RM", help="reward model folder (or any --model spec)")
    add(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help='reward rule, repeatable: "regex:PATTERN:W", "length:<=64:W", or JSON',
    )
    add("--n", type=int, help="responses sampled per prompt")
    add("--num-prompts", type=int, help="prompts sampled (a seeded subset; default: all)")
    add("--max-new-tokens", type=int)
    add("--max-prompt-length", type=int, help="prompt tokens kept while sampling")
    add("--temperature", type=float)
    add("--top-p", type=float)
    add("--sample-batch-size", type=int, help="responses per forward pass while sampling")
    add("--eval-fraction", type=float, help="share of the kept samples held out in SFT")
    add("--warmup-ratio", type=float)
    add("--grad-accum-steps", type=int)
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
    config = _config(args)
    set_threads_from_env()
    dist = distributed_from_args(args, global_batch=config.batch_size)

    import torch

    from training.ml.best_of_n import best_of_n
    from training.ml.reward.model import load_reward_model
    from training.ml.saving import save_pretrained_atomic

    torch.manual_seed(config.seed)  # an RM head initialised from an LM: the same on every run
    policy, tokenizer = load_model_from_args(args, trained=True)
    reward_model = None
    if args.reward_model is not None:
        reward_model, rm_tokenizer = load_reward_model(
            args.reward_model, device=device_from_args(args), dtype=args.dtype
        )
        if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise CommandError(f"--reward-model {args.reward_model} has another tokenizer")
    with main_progress(dist, "best-of-n sft", METRIC_KEYS, args.metrics_jsonl) as progress:
        result = best_of_n(
            policy,
            reward_model,
            tokenizer,
            prompts,
            config,
            rules=rules,
            on_metrics=progress,
            precision=precision_from_args(args),
            dist=dist,
        )
    metrics = {**result.metrics, "processes": dist.world_size}
    saved = result.status == "completed"
    if saved and dist.is_main:  # every rank holds the same weights; rank 0 writes them
        rows = "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in result.chosen)
        summary = json.dumps({**metrics, "config": asdict(config)}, indent=2, default=str)
        save_pretrained_atomic(
            policy,
            tokenizer,
            out,
            extra_files={"best_of_n_samples.jsonl": rows, "best_of_n_metrics.json": summary},
        )
    dist.wait()
    if not dist.is_main:
        return 0  # rank 0 alone prints the result line
    return {**metrics, "out": str(out) if saved else None}


def _config(args: argparse.Namespace) -> Any:
    """--config's fields, then the flags given (`common.config_from_args`)."""
    from training.ml.best_of_n import BestOfNConfig

    if args.train_top_layers is not None and args.train_top_layers < 0:
        raise CommandError("--train-top-layers must be >= 0")
    try:
        return config_from_args(args, BestOfNConfig, FLAG_TO_FIELD)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
