"""``sft``: fine-tune a policy on demonstrations; writes a ``save_pretrained`` folder."""

from __future__ import annotations

import argparse
import json
from typing import Any

from training.ml.commands.common import (
    add_model_args,
    add_training_args,
    check_out_dir,
    config_from_args,
    distributed_from_args,
    load_model_from_args,
    main_progress,
    precision_from_args,
    set_threads_from_env,
)

FLAG_TO_FIELD = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "max_length": "max_length",
    "eval_fraction": "eval_fraction",
    "warmup_ratio": "warmup_ratio",
    "grad_accum_steps": "grad_accum_steps",
    "seed": "seed",
    "train_top_layers": "train_top_layers",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sft",
        help="supervised fine-tuning on demonstrations",
        description="Fine-tune on {prompt, response} demonstrations (loss on responses only).",
    )
    add_model_args(parser)
    add_training_args(parser, out_help="output save_pretrained folder (safetensors)")
    parser.add_argument("--eval-data", metavar="FILE", help="held-out demonstrations")
    parser.add_argument("--eval-fraction", type=float, default=None, help="held-out share")
    parser.add_argument("--warmup-ratio", type=float, default=None)
    parser.add_argument("--grad-accum-steps", type=int, default=None)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict[str, Any] | int:
    from training.ml.data import read_demonstrations

    demos = read_demonstrations(args.data)  # every line checked before torch is even imported
    eval_demos = read_demonstrations(args.eval_data) if args.eval_data else None
    out = check_out_dir(args.out)

    from training.ml.saving import save_pretrained_atomic
    from training.ml.sft import SFTConfig, train_sft

    config = config_from_args(args, SFTConfig, FLAG_TO_FIELD)
    set_threads_from_env()
    dist = distributed_from_args(args, global_batch=config.batch_size)
    model, tokenizer = load_model_from_args(args, trained=True)
    keys = ["sft/loss", "sft/eval_loss", "sft/lr"]
    with main_progress(dist, "sft", keys, args.metrics_jsonl) as progress:
        result = train_sft(
            model,
            tokenizer,
            demos,
            config,
            eval_demos=eval_demos,
            on_metrics=progress,
            precision=precision_from_args(args),
            dist=dist,
        )
    result["processes"] = dist.world_size
    saved = result["status"] == "completed"
    if saved and dist.is_main:  # every rank holds the same weights; rank 0 writes them
        metrics = json.dumps({**result, "config": vars(config)}, indent=2, default=str)
        save_pretrained_atomic(model, tokenizer, out, extra_files={"sft_metrics.json": metrics})
    dist.wait()
    if not dist.is_main:
        return 0  # rank 0 alone prints the result line
    return {**result, "out": str(out) if saved else None}
