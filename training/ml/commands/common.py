"""Flags shared by every ``python -m training.ml`` command, and their plumbing.

Heavy imports (torch, transformers) happen inside the helpers, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any


class CommandError(Exception):
    """Bad command-line input; the CLI prints the message on one line and exits 2."""


def add_model_args(parser: argparse.ArgumentParser, *, model_default: str = "default") -> None:
    """``--model``, ``--device``, ``--dtype``, ``--seed``."""
    parser.add_argument(
        "--model",
        default=model_default,
        help="default (SmolLM2-135M-Instruct), tiny[:SEED], a .gguf file or a "
        "save_pretrained folder (safetensors)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="auto (bf16 on CUDA, else float32), float32, bf16 or fp16; a trained model "
        "keeps fp32 weights and computes in this dtype under autocast",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed")


def add_training_args(parser: argparse.ArgumentParser, *, out_help: str) -> None:
    """``--data``, ``--out``, hyperparameters and the memory options.

    Hyperparameters default to None: each command fills in its config's own default.
    """
    parser.add_argument("--data", required=True, metavar="FILE", help="training data file")
    parser.add_argument("--out", required=True, metavar="DIR", help=out_help)
    parser.add_argument("--epochs", type=float, default=None, help="passes over the data")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--max-length", type=int, default=None, help="max tokens per sequence")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="JSON object of config fields (as a project's training_config section); "
        "flags given override it",
    )
    parser.add_argument(
        "--metrics-jsonl",
        metavar="FILE",
        help='append one line {"step", "values"} per optimizer step (rank 0), for a '
        "supervising process",
    )
    add_memory_args(parser)


def kl_target(value: str) -> float | None:
    """A positive float, or "none"/"fixed" for a constant beta."""
    if value.lower() in {"none", "fixed"}:
        return None
    try:
        target = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number or 'none'") from None
    if not target > 0:
        raise argparse.ArgumentTypeError("must be > 0 (or 'none' for a fixed beta)")
    return target


# The flags of the RL commands (ppo, rloo) that set the same config fields, flag -> field.
RL_FLAG_TO_FIELD = {
    "init_kl_coef": "init_kl_coef",
    "kl_horizon": "kl_horizon",
    "missing_eos_penalty": "missing_eos_penalty",
    "max_new_tokens": "max_new_tokens",
    "max_length": "max_prompt_length",
    "temperature": "temperature",
    "top_p": "top_p",
    "train_top_layers": "train_top_layers",
    "lora_r": "lora_r",
    "lora_alpha": "lora_alpha",
    "lora_target_modules": "lora_target_modules",
}


def add_rl_args(parser: argparse.ArgumentParser, *, lora_help: str) -> None:
    """The flags the RL commands share: the KL controller, sampling, reward rules and what
    trains (``RL_FLAG_TO_FIELD``, plus ``--kl-target``, ``--rule`` and
    ``--gradient-checkpointing``, which each command reads itself)."""
    add = parser.add_argument
    add(
        "--kl-target",
        type=kl_target,
        default=argparse.SUPPRESS,
        help="KL target in nats, or 'none' for a fixed beta (default 6)",
    )
    add("--init-kl-coef", type=float, help="initial beta of the KL penalty")
    add("--kl-horizon", type=int, help="adaptive KL horizon, in episodes")
    add("--max-new-tokens", type=int)
    add("--max-length", type=int, help="prompt tokens kept (the last ones)")
    add("--temperature", type=float)
    add("--top-p", type=float)
    add(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help='reward rule, repeatable: "regex:PATTERN:W", "length:<=64:W", or JSON',
    )
    add("--missing-eos-penalty", type=float, help="subtracted when a response lacks EOS")
    add("--train-top-layers", type=int, metavar="N", help="train only the top N blocks")
    add("--lora-r", type=int, metavar="N", help=lora_help)
    add("--lora-alpha", type=int, metavar="A", help="LoRA alpha (adapters scale by A / N)")
    add("--lora-target-modules", metavar="NAMES", help="comma-separated layers, or all-linear")
    add("--gradient-checkpointing", action="store_true")


def add_memory_args(parser: argparse.ArgumentParser) -> None:
    """``--train-top-layers``, ``--gradient-checkpointing``, ``--lora-r``."""
    parser.add_argument(
        "--train-top-layers",
        type=int,
        default=None,
        metavar="N",
        help="freeze all but the top N blocks, the final norm and the head (a CPU budget)",
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in backward"
    )
    parser.add_argument("--lora-r", type=int, default=None, help="train LoRA adapters of rank R")
    parser.add_argument("--lora-alpha", type=int, default=16, help="LoRA alpha")


def memory_from_args(args: argparse.Namespace, **extra: Any) -> Any:
    """A ``MemoryConfig`` from the memory flags (``extra`` sets further fields)."""
    from training.ml.memory import MemoryConfig

    top = getattr(args, "train_top_layers", None)
    if top is not None and top < 0:
        raise CommandError("--train-top-layers must be >= 0")
    return MemoryConfig(
        train_top_layers=top,
        gradient_checkpointing=bool(getattr(args, "gradient_checkpointing", False)),
        lora_r=getattr(args, "lora_r", None),
        lora_alpha=getattr(args, "lora_alpha", 16),
        **extra,
    )


def quiet_transformers() -> None:
    """Keep stderr for our own bars: no transformers info logs or weight-loading bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def distributed_from_args(args: argparse.Namespace, *, global_batch: int | None = None) -> Any:
    """This process's ``training.ml.distributed.Distributed`` (``SINGLE`` without a
    launcher); ``global_batch`` must split evenly over the processes, which is checked
    before they form a group."""
    from training.ml.devices import resolve_device
    from training.ml.distributed import (
        Distributed,
        DistributedError,
        init_distributed,
        launched_world_size,
    )

    try:
        if global_batch is not None:
            Distributed(world_size=launched_world_size()).check_global_batch(global_batch)
        dist = init_distributed(cpu=resolve_device(args.device).type == "cpu")
    except (DistributedError, ValueError) as error:
        raise CommandError(str(error)) from None
    return dist


def config_from_args(
    args: argparse.Namespace,
    cls: type,
    flag_to_field: dict[str, str],
    flag_fields: dict[str, Any] | None = None,
) -> Any:
    """A validated trainer config ``cls``: ``--config``'s fields, then the flags given
    (``flag_to_field``, and ``flag_fields``: fields a command derived from its flags); an
    unknown field or a value out of range is a CommandError."""
    import dataclasses

    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            values = json.loads(Path(args.config).expanduser().read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise CommandError(f"--config {args.config}: {error}") from None
        if not isinstance(values, dict):
            raise CommandError(f"--config {args.config} must hold a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            name = f"{cls.__name__} field {unknown[0]!r}"
            raise CommandError(f"--config {args.config}: unknown {name}")
    values.update(overrides(args, flag_to_field))
    values.update(flag_fields or {})
    if getattr(args, "gradient_checkpointing", False):
        values["gradient_checkpointing"] = True
    try:
        config = cls(**values)  # a config without validate() checks its fields here
        if hasattr(config, "validate"):
            config.validate()
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None
    return config


class MetricsLines:
    """An ``on_metrics`` callback that appends ``{"step", "values"}`` as one JSON line per
    call to a file (flushed at once, so a supervising process can tail it), then calls
    ``inner`` (the progress bar)."""

    def __init__(self, path: str, inner: Any) -> None:
        self.file = Path(path).expanduser().open("a", encoding="utf-8")
        self.inner = inner

    def __call__(self, step: int, values: dict[str, Any]) -> None:
        line = {"step": step, "values": _jsonable(values)}
        self.file.write(json.dumps(line, sort_keys=True) + "\n")
        self.file.flush()
        self.inner(step, values)

    def __enter__(self) -> MetricsLines:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        self.inner.__exit__(*exc)


def main_progress(
    dist: Any,
    desc: str,
    keys: list[str],
    metrics_jsonl: str | None = None,
    total: int | None = None,
) -> Any:
    """A context giving the ``on_metrics`` callback: on rank 0 a ``MetricsProgress`` bar
    (of ``total`` steps when known; it also appends each step to ``metrics_jsonl`` when
    given), None on the other ranks (one bar and one metrics file per run)."""
    import contextlib

    from training.ml.progress import MetricsProgress

    if not dist.is_main:
        return contextlib.nullcontext()
    bar = MetricsProgress(desc, total=total, keys=keys)
    return MetricsLines(metrics_jsonl, bar) if metrics_jsonl else bar


def device_from_args(args: argparse.Namespace) -> Any:
    """``--device``, or this rank's device under a multi-process launcher."""
    from training.ml.devices import resolve_device
    from training.ml.distributed import launched_world_size

    if launched_world_size() > 1:
        return distributed_from_args(args).device
    return resolve_device(args.device)


def load_model_from_args(args: argparse.Namespace, *, trained: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for ``--model`` on ``--device`` (this rank's device under a
    launcher): in ``--dtype``, or in fp32 (master weights) for a model that will be
    ``trained``."""
    from training.ml.loading import load_causal_lm

    quiet_transformers()
    device = device_from_args(args)
    return load_causal_lm(args.model, device=device, dtype=weights_dtype(args, trained=trained))


def weights_dtype(args: argparse.Namespace, *, trained: bool) -> str:
    """The dtype to load a model in: fp32 for trained ones, ``--dtype`` for frozen ones."""
    return "float32" if trained else args.dtype


def precision_from_args(args: argparse.Namespace) -> Any:
    """The training precision (autocast dtype) of ``--dtype`` on ``--device``."""
    from training.ml.precision import resolve_precision

    return resolve_precision(args.dtype, device_from_args(args))


def set_threads_from_env() -> None:
    """Honour ``RLHF_STUDIO_THREADS`` (torch intra-op threads) when it is set."""
    threads = os.environ.get("RLHF_STUDIO_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def overrides(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    """Config fields from flags that were given: ``{flag_dest: field_name}``."""
    return {
        field: getattr(args, dest)
        for dest, field in names.items()
        if getattr(args, dest, None) is not None
    }


def check_out_dir(out: str) -> Path:
    """The parent of ``--out`` must exist or be creatable; refuse an existing file."""
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise CommandError(f"--out {path} exists and is not a folder")
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a file via a temporary sibling renamed into place when complete."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        return _jsonable(value.item())
    return value if isinstance(value, str | int | float | bool | None) else str(value)


def emit_result(metrics: dict[str, Any]) -> None:
    """The final metrics as ONE JSON line on stdout."""
    sys.stdout.write(json.dumps(_jsonable(metrics), sort_keys=True) + "\n")
    sys.stdout.flush()
