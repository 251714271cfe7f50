"""``python -m training.ml {generate,sft,train-rm,eval-rm,ppo,bench,gpu-check}`` (PRODUCT.md 3).

Subcommands live in ``training/ml/commands/<module>.py`` (see that package's docstring).
Bad input stops with one ``error: ...`` line on stderr and exit code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

# Modules under training.ml.commands, in help order; each may register several commands.
COMMAND_MODULES = ("generate", "sft", "rm", "ppo", "dpo", "rloo", "best_of_n", "bench", "gpu_check")
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.ml",
        description="RLHF Studio ML core: sampling, SFT, reward models and PPO.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        module = _import_command_module(name)
        if module is not None:
            module.register(subparsers)
    return parser


def _import_command_module(name: str) -> Any:
    qualified = f"training.ml.commands.{name}"
    try:
        return importlib.import_module(qualified)
    except ModuleNotFoundError as error:
        if error.name != qualified:
            raise  # a real missing dependency inside the module: show it
        print(f"note: {qualified} is missing; its commands are unavailable", file=sys.stderr)
        return None


def _is_bad_input(error: BaseException) -> bool:
    """DataError, ModelLoadError or CommandError (checked without importing torch)."""
    from training.ml.commands.common import CommandError
    from training.ml.model_files import ModelLoadError  # standard library only
    from training.ml.preferences import DataError

    return isinstance(error, (DataError, CommandError, ModelLoadError))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.handler(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not _is_bad_input(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if isinstance(result, dict):
        from training.ml.commands.common import emit_result

        emit_result(result)
        return 0
    return int(result or 0)
