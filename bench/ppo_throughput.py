"""PPO throughput (rollout + update) and peak memory on the default policy.

    .venv/bin/python -m bench.ppo_throughput [--model default] [--prompts 8]
        [--max-new-tokens 32] [--train-top-layers 2] [--steps 3] [--threads 2]

Real PPO steps of `training.ml.ppo` on SmolLM2-135M-Instruct: policy and frozen reference
from --model, critic and reward model initialised from it (the head is untrained, which
does not change the cost; pass --reward-model for a trained one). Each step samples one
response per prompt, runs the four scoring forwards (policy, reference, critic, RM), then
`--ppo-epochs` passes of minibatch updates of policy and critic. The first step warms up
and is not timed. TRL 1.16 ships no PPO trainer, so there is no outside anchor; side by
side in the same run are our trainer with and without the frozen-trunk cache (the
frozen bottom blocks run once per rollout instead of in every update pass), and the
generation rate inside the same rollouts. Writes bench/out/ppo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from bench.rm_vs_trl import machine
from training.ml.commands.common import quiet_transformers
from training.ml.devices import resolve_device
from training.ml.loading import load_causal_lm
from training.ml.ppo import PPOConfig, bench_ppo
from training.ml.reward.model import RewardModel, load_reward_model

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
HH_RLHF = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless" / "pairs.jsonl"
FALLBACK_PROMPTS = [
    "How do I keep basil alive on a windowsill?",
    "Explain what a reward model is in two sentences.",
    "Write a haiku about trains at night.",
    "What should I pack for a day hike?",
    "Give me three tips for a first job interview.",
    "Why is the sky blue?",
    "Suggest a name for a small bakery.",
    "How can I fall asleep faster?",
]


def bench_prompts(n: int) -> list[str]:
    """The first human turns of HH-RLHF harmless (real prompts), else a fixed list."""
    prompts: list[str] = []
    if HH_RLHF.is_file():
        with HH_RLHF.open(encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line).get("chosen", "")
                first = text.split("\n\nHuman: ", 1)[-1].split("\n\nAssistant:", 1)[0].strip()
                if first and first not in prompts:
                    prompts.append(first)
                if len(prompts) == n:
                    return prompts
    prompts += FALLBACK_PROMPTS
    return (prompts * (n // len(prompts) + 1))[:n]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--reward-model", default=None, help="RM folder (default: from --model)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per rollout")
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--train-top-layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="PPO steps (the first is warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the run without the trunk cache"
    )
    parser.add_argument("--out", default=str(OUT / "ppo.json"))
    return parser.parse_args(argv)


def load_models(args: argparse.Namespace) -> tuple[Any, ...]:
    quiet_transformers()
    device = resolve_device(args.device)
    policy, tokenizer = load_causal_lm(args.model, device=device, dtype=args.dtype)
    ref_policy, _ = load_causal_lm(args.model, device=device, dtype=args.dtype)
    if args.reward_model:
        reward_model, _ = load_reward_model(args.reward_model, device=device, dtype=args.dtype)
        critic, _ = load_reward_model(args.reward_model, device=device, dtype=args.dtype)
    else:
        torch.manual_seed(0)
        reward_model = RewardModel.from_causal_lm(policy).eval()
        critic = RewardModel.from_causal_lm(policy)
    return policy, ref_policy, critic, reward_model, tokenizer


def run(args: argparse.Namespace, *, cache: bool) -> dict[str, float]:
    """Fresh models, then `args.steps` timed PPO steps."""
    policy, ref_policy, critic, reward_model, tokenizer = load_models(args)
    config = PPOConfig(
        steps=args.steps,
        batch_size=args.prompts,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        max_new_tokens=args.max_new_tokens,
        train_top_layers=args.train_top_layers,
        cache_frozen_trunk=cache,
        lr=1e-5,
        seed=0,
    )
    prompts = bench_prompts(args.prompts)
    figures = bench_ppo(policy, ref_policy, critic, reward_model, tokenizer, prompts, config)
    print(f"trunk cache {cache}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    results = {"trunk_cache": run(args, cache=True)}
    if not args.no_compare:
        results["no_trunk_cache"] = run(args, cache=False)
        results["speedup_of_trunk_cache"] = {
            "ppo_tokens_per_s": results["trunk_cache"]["ppo_tokens_per_s"]
            / results["no_trunk_cache"]["ppo_tokens_per_s"],
            "update_tokens_per_s": results["trunk_cache"]["update_tokens_per_s"]
            / results["no_trunk_cache"]["update_tokens_per_s"],
        }
    info["loadavg_end"] = os.getloadavg()[0]
    report = {
        "benchmark": "ppo_throughput",
        "machine": info,
        "setup": {
            "model": args.model,
            "reward_model": args.reward_model or "head on --model (untrained)",
            "device": args.device,
            "dtype": args.dtype,
            "prompts_per_rollout": args.prompts,
            "max_new_tokens": args.max_new_tokens,
            "mini_batch_size": args.mini_batch_size,
            "ppo_epochs": args.ppo_epochs,
            "train_top_layers": args.train_top_layers,
            "steps": args.steps,
            "warmup_steps": 1,
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
