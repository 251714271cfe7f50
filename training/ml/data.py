"""Prompt and demonstration files, validated in full before any training starts.

The shapes and every refusal are formats.prompts' and formats.demonstrations' (the Django
imports read prompts the same way): prompts are JSONL `{"prompt": str | chat}`, CSV with
a `prompt` column, or Parquet; demonstrations are JSONL or Parquet `{"prompt",
"response" | "completion"}` or TRL's `{"messages": [..., assistant]}`. A bad record
raises DataError naming the file and the line. Plain Python: no torch.
"""

from __future__ import annotations

import os

from formats.demonstrations import Demonstration, demonstration_rows
from formats.prompts import Chat, PromptInput, prompt_rows
from formats.records import read_file
from training.ml.preferences import DataError

__all__ = [
    "Chat",
    "DataError",
    "Demonstration",
    "PromptInput",
    "read_demonstrations",
    "read_prompts",
]


def read_prompts(path: str | os.PathLike[str]) -> list[PromptInput]:
    """All prompts of a JSONL, CSV or Parquet file; DataError at the first bad line."""
    return [row.content for _, row in read_file(path, prompt_rows)]


def read_demonstrations(path: str | os.PathLike[str]) -> list[Demonstration]:
    """All demonstrations of a JSONL or Parquet file; DataError at the first bad line."""
    return [demo for _, demo in read_file(path, demonstration_rows)]
