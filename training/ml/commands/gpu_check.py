"""``gpu-check``: generation, SFT, RM and PPO in bf16 on CUDA, a few steps each, then FSDP
over every GPU through accelerate when there are 2+ (one JSON line; its ``fsdp`` entry says
why FSDP was skipped on one GPU).

Exits 3 with one line when there is no CUDA device; 1 when a stage's check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_NO_GPU = 3
EXIT_CHECK_FAILED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gpu-check",
        help="bf16 steps of every stage on CUDA (exits 3 without a GPU)",
        description="Random-init models of real shapes (SmolLM2-135M, a 1B Llama) through "
        "generation, SFT, RM and PPO in bf16 autocast with fp32 master weights; asserts the "
        "weights move and nothing is NaN; prints tokens/s and peak memory per stage.",
    )
    parser.add_argument(
        "--shapes", default="135m,1b", help="comma-separated: 135m, 1b (default both)"
    )
    parser.add_argument("--device", default="cuda", help="a CUDA device, e.g. cuda:1")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per stage")
    parser.add_argument(
        "--no-fsdp", action="store_true", help="skip the FSDP stage (2+ GPUs, the first shape)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device is available here; nothing was run.", file=sys.stderr)
        return EXIT_NO_GPU
    from training.ml.fsdp_check import fsdp_report
    from training.ml.gpu_check import SHAPES, CheckFailed, CheckSettings, run_checks

    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        print(f"gpu-check: unknown shape {unknown[0]!r}", file=sys.stderr)
        return 2
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        settings = CheckSettings(device=args.device, dtype=dtype, steps=args.steps)
        report = run_checks(shapes, settings)
    except CheckFailed as error:
        print(json.dumps({"ok": False, "error": str(error)}))
        return EXIT_CHECK_FAILED
    if args.no_fsdp:
        report["fsdp"] = {"skipped": "--no-fsdp"}
    else:
        devices = torch.cuda.device_count()
        report["fsdp"] = fsdp_report(devices=devices, shape=shapes[0], steps=args.steps)
    ok = report["fsdp"].get("ok", True)  # a skipped stage does not fail the check
    print(json.dumps({"ok": ok, **report}))
    return 0 if ok else EXIT_CHECK_FAILED
