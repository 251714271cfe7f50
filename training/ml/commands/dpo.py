"""``dpo``: train a policy on K-wise rankings with ties by listwise DPO; writes a
``save_pretrained`` folder (safetensors, LoRA merged into plain weights).

Reads K-wise ranking files and TRL explicit/implicit pair files (JSONL or Parquet);
every record is checked before a model loads. ``--batch-size`` counts prompts per step,
the global batch under ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from training.ml.commands.common import (
    CommandError,
    add_model_args,
    add_training_args,
    check_out_dir,
    device_from_args,
    distributed_from_args,
    load_model_from_args,
    main_progress,
    overrides,
    precision_from_args,
    set_threads_from_env,
    weights_dtype,
)

FLAG_TO_FIELD = {
    "beta": "beta",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "max_length": "max_length",
    "eval_fraction": "eval_fraction",
    "eval_every": "eval_every",
    "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay",
    "max_sequences_per_forward": "max_sequences_per_forward",
    "seed": "seed",
    "train_top_layers": "train_top_layers",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dpo",
        help="listwise DPO on K-wise rankings with ties",
        description="Train a policy with listwise DPO: Plackett-Luce over tie groups with "
        "the implicit reward beta * (log pi - log pi_ref); each response forwarded once.",
    )
    add_model_args(parser)
    add_training_args(parser, out_help="output save_pretrained folder (safetensors)")
    parser.add_argument(
        "--reference",
        metavar="MODEL",
        help="the frozen reference (loaded in --dtype); default: --model before training",
    )
    parser.add_argument("--beta", type=float, default=None, help="DPO's beta")
    parser.add_argument("--eval-data", metavar="FILE", help="held-out rankings")
    parser.add_argument("--eval-fraction", type=float, default=None, help="held-out share")
    parser.add_argument("--eval-every", type=int, default=None, metavar="STEPS")
    parser.add_argument("--warmup-steps", type=int, default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument(
        "--max-sequences-per-forward",
        type=int,
        default=None,
        metavar="N",
        help="split each step into forwards of at most N sequences",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict[str, Any] | int:
    from training.ml.preferences import read_preferences

    rankings = read_preferences(args.data)  # every record checked before torch loads
    eval_rankings = read_preferences(args.eval_data) if args.eval_data else None
    if not any(len(example.tie_groups) > 1 for example in rankings):
        raise CommandError(f"{args.data}: no ranking orders anything (each is one tie group)")
    out = check_out_dir(args.out)

    from training.ml.configs import DPOConfig

    config = DPOConfig(**overrides(args, FLAG_TO_FIELD))
    config.gradient_checkpointing = args.gradient_checkpointing
    try:
        config.validate()
    except ValueError as error:
        raise CommandError(str(error)) from None
    set_threads_from_env()
    dist = distributed_from_args(args, global_batch=config.batch_size)

    from training.ml.dpo import train_dpo
    from training.ml.loading import load_causal_lm
    from training.ml.saving import save_pretrained_atomic

    policy, tokenizer = load_model_from_args(args, trained=True)
    reference = None
    if args.reference:
        reference, _ = load_causal_lm(
            args.reference, device=device_from_args(args), dtype=weights_dtype(args, trained=False)
        )
        reference.requires_grad_(False)
    keys = ["dpo/loss", "dpo/accuracy", "dpo/eval_accuracy", "dpo/lr"]
    with main_progress(dist, "dpo", keys) as progress:
        result = train_dpo(
            policy,
            reference,
            tokenizer,
            rankings,
            config,
            precision=precision_from_args(args),
            progress=progress,
            dist=dist,
            eval_rankings=eval_rankings,
        ).as_dict()
    result["processes"] = dist.world_size
    saved = result["status"] == "completed"
    if saved and dist.is_main:  # every rank holds the same weights; rank 0 writes them
        metrics = json.dumps({**result, "config": vars(config)}, indent=2, default=str)
        save_pretrained_atomic(policy, tokenizer, out, extra_files={"dpo_metrics.json": metrics})
    dist.wait()
    if not dist.is_main:
        return 0  # rank 0 alone prints the result line
    return {**result, "out": str(out) if saved else None}
