"""Reward-model training throughput: ours (K-wise) vs TRL's RewardTrainer (pairs), K=4.

    .venv/bin/python -m bench.rm_vs_trl [--prompts 480] [--eval-prompts 120] [--threads 2]
        [--train-top-layers 0] [--ties] [--precision bf16]

Both train in ONE run on the same model folder, the same token ids, the same device and
hyperparameters (lr, cosine to 10%, no warmup, no weight decay, grad clip 1.0, one
epoch, the same optimizer steps: B prompts per step for us, the 6B pairs of the same
number of prompts for TRL). Ours forwards each response of a prompt once (K = 4
sequences per prompt); TRL forwards chosen and rejected of each of the C(4,2) = 6 pairs
(12 sequences per prompt), so the sequence-forward ratio is 12 / 4 = 3 (the
``ratio_limit`` below). Ours also forwards each prompt's shared prefix once for its K
responses (``training.ml.reward.batches.SharedPrefix``), so it computes fewer positions
than K full sequences: ``positions_ratio`` is TRL's forwarded positions over ours. Both score
at the last real token, both group batches by length (our buckets; TRL's
``group_by_length`` sampler), and both are evaluated by the same code on the same
held-out rankings. Model: a random-init Llama saved from a scaled-up ``tiny`` config
(hidden 256, 4 blocks) with the real SmolLM2 tokenizer, every block and the head trained,
the embedding frozen (for both; ``--train-top-layers 0`` trains every parameter, the
49k-token embedding included); data: a synthetic preference it can learn (more of a
keyword is better, K distinct counts, no ties; ``--ties`` draws each response's count
from 0..K independently, so equal counts tie and a prompt has fewer pairs). TRL's batch
is the pairs of B prompts (rounded up so both take the same number of steps), and the
limit is the ratio of sequence forwards on the data: 2 x pairs for TRL, K a prompt for
us. ``--precision bf16`` runs both under bf16 autocast over fp32 weights (ours through
``training.ml.precision``, TRL's ``bf16=True``, its ``RewardConfig`` default). Besides
wall-clock pairs/s we report pairs per CPU-second of the process: on a machine shared
with other jobs that is the figure that measures work rather than the scheduler.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from training.ml.commands.bench import FILLER_TEXT, KEYWORD, TOPICS_TEXT, keyword_rankings
from training.ml.configs import RMConfig
from training.ml.loading import load_tokenizer
from training.ml.memory import count_trainable, freeze_all_but_top_layers
from training.ml.precision import Precision, resolve_precision
from training.ml.preferences import RankedExample
from training.ml.reward.batches import encode_rankings
from training.ml.reward.evaluate import evaluate_reward_model
from training.ml.reward.model import RewardModel, load_reward_model
from training.ml.reward.train import plan_steps, train_reward_model
from training.ml.saving import save_pretrained_atomic
from training.ml.tiny import tiny_config

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"

# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    """CPU model, cores, threads, versions, date and load (the figures' context)."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next(
            (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line),
            platform.processor(),
        )
    except OSError:
        cpu = platform.processor()
    import transformers

    try:
        import trl

        trl_version: str | None = trl.__version__
    except ImportError:  # only the TRL comparisons need it (requirements-bench.txt)
        trl_version = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl_version,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_start": os.getloadavg()[0],
    }


# --------------------------------------------------------------------------- data, model


def build_model_folder(folder: Path, *, hidden: int, layers: int, seed: int) -> Path:
    """A random-init Llama (``tiny`` scaled up) with the real SmolLM2 tokenizer, saved once."""
    if (folder / "config.json").is_file():
        return folder
    tokenizer = load_tokenizer("tiny")
    config = tiny_config(tokenizer)
    config.hidden_size, config.num_hidden_layers = hidden, layers
    config.intermediate_size, config.num_attention_heads = hidden * 3, max(4, hidden // 64)
    config.num_key_value_heads = config.num_attention_heads // 2
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return save_pretrained_atomic(model, tokenizer, folder)


def tied_keyword_rankings(n: int, *, k: int, words: int, seed: int) -> list[RankedExample]:
    """Like ``keyword_rankings`` but each response holds 0..K keywords drawn independently:
    equal counts are one tie group (more is better), so a prompt has C(K, 2) pairs or
    fewer; prompts whose responses all tie have none (the trainers skip them)."""
    rng = random.Random(seed)
    filler, topics = FILLER_TEXT.split(), TOPICS_TEXT.split()
    examples = []
    for _ in range(n):
        counts = [rng.randint(0, k) for _ in range(k)]
        texts = []
        for count in counts:
            tokens = [KEYWORD] * count + [rng.choice(filler) for _ in range(words - count)]
            rng.shuffle(tokens)
            texts.append(" ".join(tokens).capitalize() + ".")
        groups = [
            [i for i in range(k) if counts[i] == level]
            for level in sorted(set(counts), reverse=True)
        ]
        prompt = f"Write a short note about {rng.choice(topics)}."
        examples.append(RankedExample(prompt, texts, groups))
    return examples


# --------------------------------------------------------------------------- runners


def run_ours(
    folder: str,
    train: list[RankedExample],
    held_out: list[RankedExample],
    config: RMConfig,
    *,
    precision: Precision,
) -> dict[str, Any]:
    """Our trainer from the folder (RM initialised from the LM): throughput and accuracy."""
    model, tokenizer = load_reward_model(folder, device="cpu", dtype="float32")
    wall, cpu = time.perf_counter(), time.process_time()
    result = train_reward_model(model, tokenizer, train, config=config, precision=precision)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    evaluation = evaluate_reward_model(
        model, tokenizer, held_out, max_length=config.max_length, batch_size=config.batch_size
    )
    figures = _figures(result["pairs"], result["steps"], wall, cpu, evaluation)
    tokens = {"tokens": result["tokens"], "padded_tokens": result["padded_tokens"]}
    return {**figures, **tokens, "trainable_params": count_trainable(model)}


def trl_pair_rows(
    tokenizer: Any, examples: list[RankedExample], max_length: int
) -> list[dict[str, Any]]:
    """TRL's pre-tokenised preference rows: every pair of every ranking, with exactly the
    token ids our trainer uses (so both see identical sequences)."""
    rows = []
    for example, encoded in zip(
        examples, encode_rankings(tokenizer, examples, max_length), strict=True
    ):
        for winner, loser, _ in example.pairs:
            chosen, rejected = encoded.sequences[winner], encoded.sequences[loser]
            rows.append(
                {
                    "chosen_ids": chosen,
                    "rejected_ids": rejected,
                    "length": max(len(chosen), len(rejected)),
                }
            )
    return rows


def run_trl(
    folder: str,
    train: list[RankedExample],
    held_out: list[RankedExample],
    config: RMConfig,
    *,
    pairs_per_step: int,
    bf16: bool,
    self_eval: bool = True,
) -> dict[str, Any]:
    """TRL 1.16 RewardTrainer on the same folder, ids and budget; ``self_eval`` also runs
    TRL's own evaluation on the held-out pairs (a cross-check of our evaluation code)."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    tokenizer = load_tokenizer(folder)
    tokenizer.pad_token = tokenizer.unk_token  # != EOS: pad-id pooling reads the EOS token
    tokenizer.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=1, dtype=torch.float32
    )
    if config.train_top_layers is not None:
        freeze_all_but_top_layers(model, config.train_top_layers)
    dataset = Dataset.from_list(trl_pair_rows(tokenizer, train, config.max_length))
    with tempfile.TemporaryDirectory() as out:
        args = RewardConfig(
            output_dir=out,
            per_device_train_batch_size=pairs_per_step,
            learning_rate=config.lr,
            num_train_epochs=config.epochs,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": config.min_lr_ratio},
            warmup_steps=config.warmup_steps,
            weight_decay=config.weight_decay,
            max_grad_norm=config.max_grad_norm or 0.0,
            max_length=None,  # the ids are already cut to config.max_length
            train_sampling_strategy="group_by_length" if config.length_bucketing else "random",
            remove_unused_columns=False,  # keep "length" for the sampler
            gradient_checkpointing=config.gradient_checkpointing,
            bf16=bf16,
            use_cpu=True,
            seed=config.seed,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        collator, tokens = counting_collator(tokenizer.pad_token_id)
        trainer = RewardTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            data_collator=collator,
        )
        wall, cpu = time.perf_counter(), time.process_time()
        output = trainer.train()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        tokens = dict(tokens)  # the training batches only
        trl_metrics: dict[str, float] = {}
        if self_eval:
            held_rows = Dataset.from_list(trl_pair_rows(tokenizer, held_out, config.max_length))
            trl_metrics = trainer.evaluate(held_rows)
    evaluation = evaluate_reward_model(
        RewardModel(model.eval()),
        tokenizer,
        held_out,
        max_length=config.max_length,
        batch_size=config.batch_size,
    )
    figures = _figures(len(dataset), output.global_step, wall, cpu, evaluation)
    figures["trl_eval_accuracy"] = trl_metrics.get("eval_accuracy")
    return {**figures, **tokens, "trainable_params": count_trainable(model)}


def counting_collator(pad_id: int) -> tuple[Any, dict[str, int]]:
    """TRL's own preference collator, counting attended and padded tokens of its batches."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    collate = DataCollatorForPreference(pad_token_id=pad_id)
    counts = {"tokens": 0, "padded_tokens": 0}

    def counted(examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = collate(examples)
        counts["tokens"] += int(batch["attention_mask"].sum())
        counts["padded_tokens"] += batch["attention_mask"].numel()
        return batch

    return counted, counts


def _figures(
    pairs: int, steps: int, wall: float, cpu: float, evaluation: dict[str, Any]
) -> dict[str, Any]:
    return {
        "pairs": pairs,
        "steps": steps,
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "pairs_per_s": pairs / wall,
        "pairs_per_cpu_s": pairs / cpu,
        "held_out_accuracy": evaluation["accuracy"],
        "held_out_pairs": evaluation["pairs"],
    }


# --------------------------------------------------------------------------- main


def compare(ours: dict[str, Any], trl: dict[str, Any], limit: float) -> dict[str, Any]:
    ratio = ours["pairs_per_s"] / trl["pairs_per_s"]
    gap = 100 * (ours["held_out_accuracy"] - trl["held_out_accuracy"])
    return {
        "ratio_pairs_per_s": ratio,
        "ratio_pairs_per_cpu_s": ours["pairs_per_cpu_s"] / trl["pairs_per_cpu_s"],
        "ratio_limit": limit,
        "positions_ratio": trl["padded_tokens"] / ours["padded_tokens"],
        "share_of_limit": ratio / limit,
        "accuracy_gap_points": gap,
        "meets_bar": ratio >= 0.9 * limit and abs(gap) <= 1.0,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=480, help="training prompts (K=4 each)")
    parser.add_argument("--eval-prompts", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--words", type=int, default=32, help="words per response")
    parser.add_argument(
        "--train-top-layers",
        type=int,
        default=4,
        help="train the top N blocks, final norm and head; the 49k x hidden embedding stays "
        "frozen (default 4: every block of the default model); 0 trains every parameter, "
        "the embedding included",
    )
    parser.add_argument("--ties", action="store_true", help="tied responses (0..K keywords)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="both trainers in fp32, or both under bf16 autocast over fp32 weights",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bucketing", action="store_true", help="random batches for both")
    parser.add_argument("--out", default=str(OUT / "rm_vs_trl.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    info = machine()
    k = 4
    folder = str(
        build_model_folder(
            OUT / f"rm-bench-llama-h{args.hidden}-l{args.layers}",
            hidden=args.hidden,
            layers=args.layers,
            seed=args.seed,
        )
    )
    rankings = tied_keyword_rankings if args.ties else keyword_rankings
    train = rankings(args.prompts, k=k, words=args.words, seed=args.seed)
    held_out = rankings(args.eval_prompts, k=k, words=args.words, seed=args.seed + 1)
    config = RMConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        seed=args.seed,
        train_top_layers=args.train_top_layers or None,  # 0: every parameter trains
        length_bucketing=not args.no_bucketing,
    )
    ranked = [e for e in train if e.pairs]  # the prompts both trainers learn from
    n_pairs = sum(len(e.pairs) for e in ranked)
    pairs_per_step = math.ceil(n_pairs / plan_steps(len(ranked), config))
    precision = resolve_precision(args.precision, "cpu")
    ours = run_ours(folder, train, held_out, config, precision=precision)
    print(f"ours: {json.dumps(ours)}", file=sys.stderr, flush=True)
    trl = run_trl(
        folder,
        train,
        held_out,
        config,
        pairs_per_step=pairs_per_step,
        bf16=args.precision == "bf16",
    )
    print(f"trl:  {json.dumps(trl)}", file=sys.stderr, flush=True)
    limit = 2 * n_pairs / (k * len(ranked))  # sequence forwards: TRL 2 a pair, ours K a prompt
    info["loadavg_end"] = os.getloadavg()[0]
    report = {
        "benchmark": "rm_vs_trl",
        "machine": info,
        "setup": {
            "k": k,
            "model_folder": folder,
            "hidden": args.hidden,
            "layers": args.layers,
            "train_prompts": args.prompts,
            "eval_prompts": args.eval_prompts,
            "ties": args.ties,
            "precision": args.precision,
            "train_prompts_with_pairs": len(ranked),
            "train_pairs": n_pairs,
            "trl_pairs_per_step": pairs_per_step,
            "config": vars(config),
        },
        "ours": ours,
        "trl": trl,
        **compare(ours, trl, limit),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
