"""gpu-check's FSDP stage: a few optimizer steps of a random model of a real shape under
accelerate's FSDP with the shipped ``training/ml/accelerate/fsdp.yaml``, one process per GPU.

The product's trainers run DDP only (``training.ml.distributed`` refuses an FSDP launch), so
this stage trains the model with a plain loop of its own: it shows whether the machine runs
accelerate's FSDP2 (parameters, gradients and optimizer state sharded over the GPUs) with
the product's precision (fp32 master weights under bf16 autocast). Every rank's shard of
every trained matrix must move at lr 1e-5 and the loss must stay finite.

``fsdp_report`` (gpu-check's side) launches it and reads rank 0's JSON line; ``main`` is what
each rank runs (``python -m training.ml.fsdp_check``). Standard library, torch, transformers
and accelerate only.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FSDP_CONFIG = Path(__file__).with_name("accelerate") / "fsdp.yaml"
MIN_DEVICES = 2
ERROR_LINES = 15


def fsdp_command(*, processes: int, shape: str, steps: int, port: int) -> list[str]:
    """``accelerate launch --config_file fsdp.yaml --num_processes N -m training.ml.fsdp_check``."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(FSDP_CONFIG),
        "--num_processes", str(processes), "--main_process_port", str(port),
        "-m", "training.ml.fsdp_check", "--shape", shape, "--steps", str(steps),
    ]  # fmt: skip


def fsdp_report(*, devices: int, shape: str, steps: int, timeout: float = 1200) -> dict[str, Any]:
    """The FSDP stage's figures on ``devices`` GPUs, or why it was skipped (fewer than 2)."""
    if devices < MIN_DEVICES:
        return {
            "skipped": f"FSDP shards over {MIN_DEVICES}+ CUDA devices; this machine has {devices}"
        }
    command = fsdp_command(processes=devices, shape=shape, steps=steps, port=_free_port())
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "processes": devices, "error": f"no result within {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = done.stderr.strip().splitlines()[-ERROR_LINES:]
        error = f"the launch exited with code {done.returncode}: " + "\n".join(tail)
        return {"ok": False, "processes": devices, "error": error}
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- each rank


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.ml.fsdp_check")
    parser.add_argument("--shape", default="135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4, help="sequences per rank and step")
    parser.add_argument("--length", type=int, default=128, help="tokens per sequence")
    args = parser.parse_args(argv)

    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from training.ml.gpu_check import CHANGED_SHARE, LR, SHAPES, build_model, word_tokenizer
    from training.ml.precision import Precision

    accelerator = Accelerator(mixed_precision="no")  # ours: fp32 masters + autocast
    if accelerator.distributed_type != DistributedType.FSDP:
        kind = accelerator.distributed_type.value
        _emit(accelerator, {"ok": False, "error": f"accelerate set up {kind}, not FSDP"})
        return 1
    vocab = SHAPES[args.shape]["vocab_size"]
    model = build_model(args.shape, word_tokenizer(vocab), "cpu").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    before = _local_matrices(model)
    bf16 = torch.cuda.is_bf16_supported()
    precision = Precision(torch.bfloat16 if bf16 else torch.float32, "cuda")
    generator = torch.Generator().manual_seed(1 + accelerator.process_index)
    torch.cuda.reset_peak_memory_stats()
    started, losses = time.perf_counter(), []
    for _ in range(args.steps):
        ids = torch.randint(3, vocab - 3, (args.batch, args.length), generator=generator)
        ids = ids.to(accelerator.device)
        with precision.autocast():
            loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    changed = _min_changed(before, _local_matrices(model))
    figures = torch.tensor(
        [changed, -torch.cuda.max_memory_allocated() / 2**20], device=accelerator.device
    )
    torch.distributed.all_reduce(figures, op=torch.distributed.ReduceOp.MIN)
    changed, peak_mb = float(figures[0]), -float(figures[1])
    finite = all(math.isfinite(value) for value in losses)
    report = {
        "ok": finite and changed >= CHANGED_SHARE,
        "engine": f"FSDP{getattr(accelerator.state.fsdp_plugin, 'fsdp_version', '')}",
        "processes": accelerator.num_processes,
        "shape": args.shape,
        "dtype": precision.name,
        "steps": args.steps,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "min_changed": changed,
        "peak_mb_per_gpu": peak_mb,
        "tokens_per_s": args.steps * args.batch * args.length * accelerator.num_processes / seconds,
    }
    if not finite:
        report["error"] = "the loss is not finite"
    elif changed < CHANGED_SHARE:
        report["error"] = f"only {changed:.1%} of some matrix shard moved at lr {LR}"
    _emit(accelerator, report)
    accelerator.end_training()
    return 0 if report["ok"] else 1


def _local_matrices(model: Any) -> dict[str, Any]:
    """This rank's shard of each trained matrix (not the embedding), copied in fp32."""
    found = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or param.dim() < 2 or "embed" in name:
            continue
        local = param.to_local() if hasattr(param, "to_local") else param  # a DTensor shard
        found[name] = local.detach().float().clone()
    return found


def _min_changed(before: dict[str, Any], after: dict[str, Any]) -> float:
    """The smallest share of elements that moved in any non-empty shard (1.0 if none)."""
    shares = [
        float((after[name] != old).float().mean()) for name, old in before.items() if old.numel()
    ]
    return min(shares, default=1.0)


def _emit(accelerator: Any, report: dict[str, Any]) -> None:
    if accelerator.is_main_process:
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
