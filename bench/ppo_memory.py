"""Peak memory of PPO: four model copies vs LoRA on two base copies (issue 13 item 3).

    .venv/bin/python -m bench.ppo_memory [--model default] [--prompts 8] [--steps 2]
        [--max-new-tokens 32] [--train-top-layers 2] [--lora-r 16] [--threads 1]
        [--dtype float32|bfloat16] [--frozen-dtype auto|float32|bfloat16]

Each configuration runs real PPO steps (`training.ml.ppo.bench_ppo`) in its own
interpreter, so no run inherits another's heap, on the same model, prompts, batch and
steps:

- ``four_copies_top_layers``: policy, reference, critic and RM as four copies, only the
  top --train-top-layers blocks (and heads) of policy and critic training (trunk cache on);
- ``four_copies_full``: the same four copies, every parameter of policy and critic training;
- ``lora_two_copies``: LoRA adapters (rank --lora-r on q/k/v/o) on the policy and critic
  bases; the reference and RM are those bases with the adapters off.

With --gradient-checkpointing every configuration recomputes block activations in
backward (LoRA backpropagates through every block, the top-layers run through two).

--dtype is the training precision of every configuration (`training.ml.precision`):
float32, or bfloat16 = bf16 autocast over fp32 trained weights (policy, critic, LoRA
adapters and value head) and their fp32 Adam state. Frozen weights (the four-copies
reference and RM, LoRA's two bases) are stored in `Precision.frozen_dtype(--frozen-dtype)`
(auto: the compute dtype under bf16 autocast, fp32 under fp32) and loaded directly in
it, in every configuration alike. The
figure on CPU is the peak resident set
size of the process (Linux VmHWM, reset after the models load, so it counts the loaded
models plus everything the run allocates, not the loader's transient copies); on CUDA the
allocator's peak. The critic and RM start from an untrained head on --model (the cost is
the same as a trained RM's). Writes bench/out/ppo_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CONFIGS = ("four_copies_top_layers", "four_copies_full", "lora_two_copies")
# LoRA's peak at most (issue 13: 0.6 of four copies, 0.3 of full; PRODUCT.md 6: 0.5 of four)
TARGETS = {"four_copies_top_layers": 0.6, "four_copies_full": 0.3}
PRODUCT_TARGET = 0.5  # of four_copies_top_layers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per rollout")
    parser.add_argument("--mini-batch-size", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--train-top-layers", type=int, default=2)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute block activations in backward, in every configuration",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="training precision: float32, or bf16 autocast over fp32 trained weights",
    )
    parser.add_argument(
        "--frozen-dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="storage of the frozen weights (auto: the compute dtype of --dtype)",
    )
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(OUT / "ppo_memory.json"))
    return parser.parse_args(argv)


def rss_mb() -> float:
    """The current resident set size of this process (Linux), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in this process: load its models, run PPO, report memory."""
    import torch

    from bench.ppo_throughput import bench_prompts
    from training.ml.commands.common import quiet_transformers
    from training.ml.devices import resolve_device
    from training.ml.loading import load_causal_lm
    from training.ml.ppo import PPOConfig, bench_ppo
    from training.ml.precision import resolve_precision
    from training.ml.reward.model import RewardModel

    torch.set_num_threads(args.threads)
    quiet_transformers()
    baseline = rss_mb()  # Python, torch and transformers imported, no model yet
    device = resolve_device(args.device)
    precision = resolve_precision(args.dtype, device)
    frozen = precision.frozen_dtype(args.frozen_dtype) or torch.float32  # None: as loaded
    lora = args.child == "lora_two_copies"
    # LoRA: the policy and critic bases are frozen, so they load in the frozen dtype (their
    # adapters and the value head become fp32 in train_ppo); four copies: policy and
    # critic fp32 (trained), reference and RM in the frozen dtype.
    policy, tokenizer = load_causal_lm(
        args.model, device=device, dtype=frozen if lora else torch.float32
    )
    torch.manual_seed(0)  # the RM head's init; the critic starts from the RM
    critic = RewardModel.from_causal_lm(policy)  # in the policy's dtype
    if lora:
        ref_policy, reward_model = policy, critic
    else:
        ref_policy, _ = load_causal_lm(args.model, device=device, dtype=frozen)
        torch.manual_seed(0)
        reward_model = RewardModel.from_causal_lm(ref_policy).eval()  # in the frozen dtype
    loaded = rss_mb()
    config = PPOConfig(
        steps=args.steps,
        batch_size=args.prompts,
        mini_batch_size=args.mini_batch_size,
        ppo_epochs=args.ppo_epochs,
        max_new_tokens=args.max_new_tokens,
        train_top_layers=args.train_top_layers if args.child == "four_copies_top_layers" else None,
        lora_r=args.lora_r if lora else None,
        lora_alpha=2 * args.lora_r,
        gradient_checkpointing=args.gradient_checkpointing,
        frozen_dtype=args.frozen_dtype,
        lr=1e-5,
        seed=0,
    )
    figures = bench_ppo(
        policy,
        ref_policy,
        critic,
        reward_model,
        tokenizer,
        bench_prompts(args.prompts),
        config,
        precision=precision,
    )
    return {
        "peak_mb": figures["peak_memory_mb"],
        "peak_is_run_only": bool(figures["peak_memory_is_run_only"]),
        "baseline_rss_mb": baseline,
        "rss_after_load_mb": loaded,
        "trainable_params": figures["trainable_params"],
        "frozen_dtype": str(frozen).removeprefix("torch."),
        "seconds_per_step": figures["seconds_per_step"],
        "ppo_tokens_per_s": figures["ppo_tokens_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    import torch

    from bench.rm_vs_trl import machine

    torch.set_num_threads(args.threads)
    info = machine()
    results: dict[str, Any] = {}
    passed = list(argv if argv is not None else sys.argv[1:])  # the child writes no file
    for name in CONFIGS:
        command = [sys.executable, "-m", "bench.ppo_memory", *passed, "--child", name]
        done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"{name} failed (exit {done.returncode})")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    lora = results["lora_two_copies"]["peak_mb"]
    ratios = {f"lora_vs_{name}": lora / results[name]["peak_mb"] for name in TARGETS}
    info["loadavg_end"] = os.getloadavg()[0]
    report = {
        "benchmark": "ppo_memory",
        "machine": info,
        "measure": "peak RSS of the process (CPU)" if args.device == "cpu" else "CUDA peak",
        "setup": {
            "model": args.model,
            "device": args.device,
            "dtype": args.dtype,
            "frozen_dtype": args.frozen_dtype,
            "prompts_per_rollout": args.prompts,
            "mini_batch_size": args.mini_batch_size,
            "ppo_epochs": args.ppo_epochs,
            "max_new_tokens": args.max_new_tokens,
            "steps": args.steps,
            "train_top_layers": args.train_top_layers,
            "lora_r": args.lora_r,
            "lora_alpha": 2 * args.lora_r,
            "gradient_checkpointing": args.gradient_checkpointing,
        },
        "results": results,
        "ratios": ratios,
        "targets": {f"lora_vs_{name}": bound for name, bound in TARGETS.items()},
        "meets_targets": all(ratios[f"lora_vs_{n}"] <= b for n, b in TARGETS.items()),
        "meets_product_target": ratios["lora_vs_four_copies_top_layers"] <= PRODUCT_TARGET,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
