"""Our batched sampler against Hugging Face `model.generate`, side by side in one run.

    .venv/bin/python -m bench.sampling_vs_hf [--model default] [--prompts 8] [--k 4]
        [--batch-size 8] [--max-new-tokens 128] [--repeats 2] [--threads 1]

Both sides get the same model (loaded once), the same rows (each prompt's chat template
encoded by `training.ml.chat.encode_prompt`, K copies, longest first), at most
`--batch-size` rows decoding at once, and the same settings. `model.generate` takes the
rows in consecutive left-padded batches of `--batch-size` and runs each batch until its
longest row ends; `training.ml.sampling.sample_responses` keeps `--batch-size` lines busy
(a row that ends gives its line to the next waiting row) and forwards a prompt once for
its K rows. The settings are the product's defaults (max_new_tokens 128, temperature 1,
top_p 1; HF's own top_k of 50 turned off), and greedy decoding, where both sides produce
the same tokens. A response's tokens are counted up to and including its EOS. Ours also computes
each token's log-prob (PPO needs them); HF is asked for none. The sides alternate
`--repeats` times after one warm-up each; figures are the totals over the repeats:
new tokens per wall second and per CPU second of the process (`time.process_time`, all
threads). Writes bench/out/sampling_vs_hf.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.ppo_throughput import bench_prompts
from bench.rm_vs_trl import machine
from training.ml.chat import encode_prompt
from training.ml.commands.common import quiet_transformers
from training.ml.devices import resolve_device
from training.ml.loading import load_causal_lm
from training.ml.sampling import GenerationSettings, eos_token_ids, left_pad, sample_responses

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4, help="responses per prompt")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--out", default=str(OUT / "sampling_vs_hf.json"))
    return parser.parse_args(argv)


def batches(tokenizer: Any, prompts: list[str], k: int, size: int, max_prompt: int) -> list:
    """The rows in `sample_responses`' order (K copies per prompt, longest first), cut
    into `model.generate` calls of `size` rows."""
    encoded = [encode_prompt(tokenizer, p, max_prompt) for p in prompts]
    order = sorted(range(len(prompts) * k), key=lambda r: -len(encoded[r // k]))
    rows = [encoded[r // k] for r in order]
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def ours(model: Any, tokenizer: Any, args: argparse.Namespace, settings: GenerationSettings):
    prompts = bench_prompts(args.prompts)

    def run() -> list[int]:
        samples = sample_responses(
            model, tokenizer, prompts, k=args.k, settings=settings, batch_size=args.batch_size
        )
        return [s.token_count for group in samples for s in group]

    return run


def hf(model: Any, tokenizer: Any, args: argparse.Namespace, settings: GenerationSettings):
    eos = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    device = next(model.parameters()).device
    rows = batches(
        tokenizer, bench_prompts(args.prompts), args.k, args.batch_size, settings.max_prompt_tokens
    )
    sampled = settings.temperature > 0
    options: dict[str, Any] = {
        "do_sample": sampled,
        "max_new_tokens": settings.max_new_tokens,
        "pad_token_id": pad_id,
        "eos_token_id": sorted(eos),
        **(
            {"temperature": settings.temperature, "top_p": settings.top_p, "top_k": 0}
            if sampled
            else {}
        ),
    }

    @torch.inference_mode()
    def run() -> list[int]:
        counts = []
        for batch in rows:
            ids, mask = left_pad(batch, pad_id, device)
            out = model.generate(input_ids=ids, attention_mask=mask, **options)
            for row in out[:, ids.shape[1] :].tolist():
                ends = [i for i, token in enumerate(row) if token in eos]
                counts.append(ends[0] + 1 if ends else len(row))
        return counts

    return run


def timed(run: Callable[[], list[int]]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    counts = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"tokens": sum(counts), "rows": len(counts), "wall_s": wall, "cpu_s": cpu}


def compare(model: Any, tokenizer: Any, args: argparse.Namespace, settings: GenerationSettings):
    sides = {
        "ours": ours(model, tokenizer, args, settings),
        "hf": hf(model, tokenizer, args, settings),
    }
    warm = argparse.Namespace(**{**vars(args), "prompts": 1, "k": 1})
    short = GenerationSettings(max_new_tokens=2, temperature=settings.temperature, seed=0)
    ours(model, tokenizer, warm, short)()
    hf(model, tokenizer, warm, short)()
    totals = {name: {"tokens": 0.0, "rows": 0.0, "wall_s": 0.0, "cpu_s": 0.0} for name in sides}
    for repeat in range(args.repeats):
        for name, run in sides.items():
            torch.manual_seed(repeat)  # HF samples from the global generator
            figures = timed(run)
            print(f"{name} repeat {repeat}: {json.dumps(figures)}", file=sys.stderr, flush=True)
            for key, value in figures.items():
                totals[name][key] += value
    result: dict[str, Any] = {}
    for name, t in totals.items():
        result[name] = {
            **t,
            "tokens_per_s": t["tokens"] / t["wall_s"],
            "tokens_per_cpu_s": t["tokens"] / t["cpu_s"],
            "mean_response_tokens": t["tokens"] / t["rows"],
        }
    result["ratio_ours_over_hf"] = {
        "tokens_per_s": result["ours"]["tokens_per_s"] / result["hf"]["tokens_per_s"],
        "tokens_per_cpu_s": result["ours"]["tokens_per_cpu_s"] / result["hf"]["tokens_per_cpu_s"],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    quiet_transformers()
    info = machine()
    device = resolve_device(args.device)
    model, tokenizer = load_causal_lm(args.model, device=device, dtype=args.dtype)
    results = {
        "sampling": compare(
            model, tokenizer, args, GenerationSettings(max_new_tokens=args.max_new_tokens, seed=0)
        ),
        "greedy": compare(
            model,
            tokenizer,
            args,
            GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.0),
        ),
    }
    info["loadavg_end"] = os.getloadavg()[0]
    report = {
        "benchmark": "sampling_vs_hf",
        "machine": info,
        "command": "python -m bench.sampling_vs_hf "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "setup": {
            "model": args.model,
            "device": str(device),
            "dtype": args.dtype,
            "prompts": args.prompts,
            "k": args.k,
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "repeats": args.repeats,
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
