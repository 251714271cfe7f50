"""``bench``: our own throughput figures on this machine, as one JSON line.

- ``rm``: reward-model training pairs/s on a synthetic K-wise preference (more of a
  keyword is better, distinct counts), each response forwarded once per prompt.
- ``sample``: tokens/s of batched sampling (``training.ml.sampling.bench_sampling``).
- ``ppo``: PPO tokens/s, rollout and update, and peak memory (``training.ml.ppo.bench_ppo``).

The side-by-side comparisons with TRL live in ``bench/`` (``make bench``).
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from training.ml.commands.common import (
    CommandError,
    add_model_args,
    quiet_transformers,
    set_threads_from_env,
)
from training.ml.preferences import RankedExample

WHAT = ("rm", "sample", "ppo")
FILLER_TEXT = (
    "the a of and to in is it that for on with as was at by this be from or have an are "
    "but not we they you all can there one so what about which when more some time will"
)
TOPICS_TEXT = "rivers bread music winter cities gardens trains oceans paper lamps"
KEYWORD = "please"


def keyword_rankings(n: int, *, k: int = 4, words: int = 24, seed: int = 0) -> list[RankedExample]:
    """n prompts with K responses of ``words`` words; response i holds a distinct number
    (0..K-1) of KEYWORD and more is better: full rankings, C(K, 2) pairs, no ties."""
    rng = random.Random(seed)
    filler, topics = FILLER_TEXT.split(), TOPICS_TEXT.split()
    examples = []
    for _ in range(n):
        counts = list(range(k))
        rng.shuffle(counts)
        texts = []
        for count in counts:
            tokens = [KEYWORD] * count + [rng.choice(filler) for _ in range(words - count)]
            rng.shuffle(tokens)
            texts.append(" ".join(tokens).capitalize() + ".")
        order = sorted(range(k), key=lambda i: -counts[i])
        prompt = f"Write a short note about {rng.choice(topics)}."
        examples.append(RankedExample(prompt, texts, [[i] for i in order]))
    return examples


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="throughput of RM training, sampling and PPO on this machine",
        description="Measure our throughput figures and print them as JSON.",
    )
    add_model_args(parser, model_default="tiny")
    parser.add_argument("--what", choices=[*WHAT, "all"], default="all")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per figure")
    parser.add_argument("--k", type=int, default=4, help="responses per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    parser.add_argument("--max-length", type=int, default=128, help="RM tokens per sequence")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="sampled tokens")
    parser.add_argument("--ppo-steps", type=int, default=3, help="PPO steps (first untimed)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if min(args.prompts, args.batch_size, args.max_new_tokens, args.ppo_steps) < 1:
        raise CommandError("--prompts, --batch-size, --max-new-tokens, --ppo-steps must be >= 1")
    if not 2 <= args.k <= 9:
        raise CommandError("--k must be in 2..9")
    set_threads_from_env()
    quiet_transformers()
    import torch

    chosen = WHAT if args.what == "all" else (args.what,)
    runners = {"rm": bench_rm, "sample": bench_sample, "ppo": bench_ppo}
    result: dict[str, Any] = {"model": args.model, "threads": torch.get_num_threads()}
    for name in chosen:
        result[name] = runners[name](args)
    return result


def bench_rm(args: argparse.Namespace) -> dict[str, Any]:
    """One epoch of K-wise RM training on ``--prompts`` synthetic rankings."""
    from training.ml.configs import RMConfig
    from training.ml.reward.model import load_reward_model
    from training.ml.reward.train import train_reward_model

    model, tokenizer = load_reward_model(args.model, device=args.device, dtype=args.dtype)
    examples = keyword_rankings(args.prompts, k=args.k, seed=args.seed or 0)
    config = RMConfig(lr=1e-5, batch_size=args.batch_size, max_length=args.max_length)
    result = train_reward_model(model, tokenizer, examples, config=config)
    sequences = args.prompts * args.k
    return {
        "k": args.k,
        "prompts": args.prompts,
        "pairs": result["pairs"],
        "seconds": result["seconds"],
        "pairs_per_s": result["charts/pairs_per_s"],
        "sequences_per_s": sequences / result["seconds"],
        "device": str(model.device),
    }


def bench_sample(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from training.ml.sampling import GenerationSettings, bench_sampling
    except ImportError as error:
        return {"skipped": f"training.ml.sampling.bench_sampling unavailable ({error})"}
    from training.ml.loading import load_causal_lm

    model, tokenizer = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
    prompts = [example.prompt for example in keyword_rankings(args.prompts, k=2, seed=1)]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed or 0)
    return dict(
        bench_sampling(
            model,
            tokenizer,
            prompts=prompts,
            k=args.k,
            settings=settings,
            batch_size=args.batch_size,
        )
    )


def bench_ppo(args: argparse.Namespace) -> dict[str, Any]:
    try:
        from training.ml.ppo import PPOConfig
        from training.ml.ppo import bench_ppo as run_ppo_bench
    except ImportError as error:
        return {"skipped": f"training.ml.ppo.bench_ppo unavailable ({error})"}
    from training.ml.loading import load_causal_lm
    from training.ml.reward.model import load_reward_model

    policy, tokenizer = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
    reference, _ = load_causal_lm(args.model, device=args.device, dtype=args.dtype)
    critic, _ = load_reward_model(args.model, device=args.device, dtype=args.dtype)
    reward_model, _ = load_reward_model(args.model, device=args.device, dtype=args.dtype)
    prompts = [example.prompt for example in keyword_rankings(args.prompts, k=2, seed=2)]
    config = PPOConfig(
        steps=args.ppo_steps,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed or 0,
    )
    started = time.perf_counter()
    figures = run_ppo_bench(policy, reference, critic, reward_model, tokenizer, prompts, config)
    return {**figures, "wall_seconds": time.perf_counter() - started}
