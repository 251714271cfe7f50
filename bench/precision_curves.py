"""bf16 autocast with fp32 master weights vs fp32, side by side: RM and SFT loss curves.

    .venv/bin/python -m bench.precision_curves [--steps 20] [--model default]

The default policy (SmolLM2-135M-Instruct) trains as a reward model on HH-RLHF harmless
pairs and as an SFT policy on their chosen replies, twice from the same weights: once in
fp32, once under bf16 autocast with fp32 masters (what `RLHF_DTYPE=bf16`, the GPU default,
runs). Every parameter trains, at the product's lr (1e-5). Reported per stage: the largest
per-step loss difference, the share of weight elements that moved (outside the embedding,
whose rows of unseen tokens get no gradient), and CPU-seconds.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.rm_vs_trl import OUT, ROOT, machine
from training.ml.configs import RMConfig, SFTConfig
from training.ml.data import Demonstration
from training.ml.loading import load_causal_lm
from training.ml.precision import FP32, Precision
from training.ml.preferences import read_preferences
from training.ml.reward.model import RewardModel
from training.ml.reward.train import train_reward_model
from training.ml.sft import train_sft

DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless" / "pairs.jsonl"
BF16 = Precision(torch.bfloat16, "cpu")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in model.named_parameters() if "embed" not in n}


def moved_share(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> float:
    params = dict(model.named_parameters())
    changed = sum(int((params[n].detach().float() != w).sum()) for n, w in before.items())
    return changed / sum(w.numel() for w in before.values())


def run(
    train: Callable[[torch.nn.Module, Precision, Callable[[int, dict], None]], None],
    model: torch.nn.Module,
    precision: Precision,
    key: str,
) -> dict[str, Any]:
    before = weights(model)
    curve: list[float] = []
    started = cpu_seconds()
    train(model, precision, lambda _s, m: curve.append(float(m[key])))
    return {"curve": curve, "cpu_s": cpu_seconds() - started,
            "moved": moved_share(model, before)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT / "precision_curves.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    examples = read_preferences(DATA)[: args.steps * 4]
    demos = [Demonstration(e.prompt, e.responses[e.tie_groups[0][0]]) for e in examples]
    rm_config = RMConfig(batch_size=4, max_length=128, length_bucketing=False)
    sft_config = SFTConfig(batch_size=4, max_length=128, eval_fraction=0.0, warmup_ratio=0.0)

    def rm_train(model: torch.nn.Module, precision: Precision, cb: Callable) -> None:
        assert isinstance(model, RewardModel)
        train_reward_model(
            model, tokenizer, examples, config=rm_config, precision=precision, on_metrics=cb
        )

    def sft_train(model: torch.nn.Module, precision: Precision, cb: Callable) -> None:
        train_sft(model, tokenizer, demos, sft_config, precision=precision, on_metrics=cb)

    report: dict[str, Any] = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    for stage, train, key in (("rm", rm_train, "rm/loss"), ("sft", sft_train, "sft/loss")):
        runs = {}
        for name, precision in (("fp32", FP32), ("bf16_autocast", BF16)):
            lm, tokenizer = load_causal_lm(args.model, dtype="float32")
            torch.manual_seed(0)
            model = RewardModel.from_causal_lm(lm) if stage == "rm" else lm
            runs[name] = run(train, model, precision, key)
            print(f"{stage} {name}: moved {runs[name]['moved']:.1%}, "
                  f"{runs[name]['cpu_s']:.0f} CPU-s", flush=True)  # fmt: skip
        fp32, bf16 = runs["fp32"]["curve"], runs["bf16_autocast"]["curve"]
        runs["max_step_loss_diff"] = max(abs(a - b) for a, b in zip(fp32, bf16, strict=True))
        report[stage] = runs
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({stage: {"max_step_loss_diff": report[stage]["max_step_loss_diff"],
                              **{n: {k: v for k, v in r.items() if k != "curve"}
                                 for n, r in report[stage].items() if isinstance(r, dict)}}
                      for stage in ("rm", "sft")}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
