"""``train-rm`` and ``eval-rm``: the reward model from the shell (PRODUCT.md 3).

Both read TRL explicit/implicit pair files and K-wise ranking files (JSONL or Parquet);
every record is checked before a model loads. ``--batch-size`` counts prompts per step
(a pair file has one prompt per pair, so it counts pairs there).
"""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

from training.ml.commands.common import (
    CommandError,
    add_model_args,
    add_training_args,
    check_out_dir,
    config_from_args,
    device_from_args,
    distributed_from_args,
    main_progress,
    precision_from_args,
    quiet_transformers,
    set_threads_from_env,
    weights_dtype,
)

FLAG_TO_FIELD = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "max_length": "max_length",
    "eval_fraction": "eval_fraction",
    "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay",
    "margin": "margin",
    "eval_every": "eval_every",
    "max_sequences_per_forward": "max_sequences_per_forward",
    "seed": "seed",
    "train_top_layers": "train_top_layers",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
}
CALIBRATION_SAMPLES = 512


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train-rm",
        help="train a reward model on pairs or K-wise rankings",
        description="Train a reward model with the K-wise loss (each response forwarded once).",
    )
    add_model_args(train)
    add_training_args(train, out_help="output save_pretrained folder (safetensors)")
    train.add_argument("--eval-data", metavar="FILE", help="held-out preference file")
    train.add_argument("--eval-fraction", type=float, default=None, help="held-out share")
    train.add_argument("--eval-every", type=int, default=None, metavar="STEPS")
    train.add_argument("--warmup-steps", type=int, default=None)
    train.add_argument("--weight-decay", type=float, default=None)
    train.add_argument(
        "--margin", type=float, default=None, help="margin per tie-group distance (0: none)"
    )
    train.add_argument(
        "--max-sequences-per-forward",
        type=int,
        default=None,
        metavar="N",
        help="split each step into forwards of at most N sequences",
    )
    train.add_argument(
        "--calibration-data",
        metavar="FILE",
        help="SFT samples {prompt, response} that should score 0 on average "
        "(default: the responses of the training file)",
    )
    train.set_defaults(handler=run_train)

    evaluate = subparsers.add_parser(
        "eval-rm",
        help="pairwise accuracy of a reward model on a preference file",
        description="Print JSON with accuracy, pairs, loss and accuracy by labeler.",
    )
    add_model_args(evaluate)
    evaluate.add_argument("--data", required=True, metavar="FILE", help="preference file")
    evaluate.add_argument("--batch-size", type=int, default=8, help="prompts per forward")
    evaluate.add_argument("--max-length", type=int, default=512, help="max tokens per sequence")
    evaluate.set_defaults(handler=run_eval)


def run_train(args: argparse.Namespace) -> dict[str, Any] | int:
    from training.ml.configs import RMConfig
    from training.ml.data import read_demonstrations
    from training.ml.preferences import read_preferences
    from training.ml.reward.evaluate import calibrate_offset
    from training.ml.reward.model import load_reward_model, save_reward_model
    from training.ml.reward.train import train_reward_model

    train = read_preferences(args.data)  # every line checked before the model loads
    eval_examples = read_preferences(args.eval_data) if args.eval_data else None
    calibration = None
    if args.calibration_data:
        calibration = [(d.prompt, d.response) for d in read_demonstrations(args.calibration_data)]
    out = check_out_dir(args.out)
    config = config_from_args(args, RMConfig, FLAG_TO_FIELD)
    set_threads_from_env()
    quiet_transformers()
    dist = distributed_from_args(args, global_batch=config.batch_size)
    import torch

    torch.manual_seed(config.seed)  # the new score head's init: same on 1 or N processes
    model, tokenizer = load_reward_model(
        args.model, device=device_from_args(args), dtype=weights_dtype(args, trained=True)
    )
    keys = ["rm/loss", "rm/accuracy", "rm/eval_accuracy", "charts/pairs_per_s"]
    with main_progress(dist, "train-rm", keys, args.metrics_jsonl) as progress:
        result = train_reward_model(
            model,
            tokenizer,
            train,
            config=config,
            eval=eval_examples,
            on_metrics=progress,
            precision=precision_from_args(args),
            dist=dist,
        )
    result["processes"] = dist.world_size
    saved = result["status"] == "completed"
    if saved and dist.is_main:  # every rank holds the same weights; rank 0 writes them
        samples = calibration or _training_responses(train, config.seed)
        offset = calibrate_offset(model, tokenizer, samples, max_length=config.max_length)
        result.update({"reward_offset": offset, "calibration_samples": len(samples)})
        summary = json.dumps({**result, "config": vars(config)}, indent=2, default=str)
        save_reward_model(model, tokenizer, out, extra_files={"rm_metrics.json": summary})
    dist.wait()
    if not dist.is_main:
        return 0  # rank 0 alone prints the result line
    return {**result, "out": str(out) if saved else None}


def _training_responses(train: list[Any], seed: int) -> list[tuple[Any, str]]:
    """Up to 512 (prompt, response) pairs of the training rankings: the policy's samples."""
    samples = [(e.prompt, text) for e in train for text in e.responses]
    random.Random(seed).shuffle(samples)
    return samples[:CALIBRATION_SAMPLES]


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    from training.ml.preferences import read_preferences
    from training.ml.reward.evaluate import evaluate_reward_model
    from training.ml.reward.model import load_reward_model

    examples = read_preferences(args.data)
    if args.batch_size < 1 or args.max_length < 8:
        raise CommandError("--batch-size must be >= 1 and --max-length >= 8")
    set_threads_from_env()
    quiet_transformers()
    model, tokenizer = load_reward_model(args.model, device=args.device, dtype=args.dtype)
    result = evaluate_reward_model(
        model, tokenizer, examples, max_length=args.max_length, batch_size=args.batch_size
    )
    return {**result, "prompts": len(examples), "model": args.model}
