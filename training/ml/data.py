"""Prompt and demonstration files, validated in full before any training starts.

Formats:
- prompts: JSONL ``{"prompt": str | chat}`` (one object a line), or CSV with a
  ``prompt`` column; a chat is ``[{"role": str, "content": str}, ...]``.
- demonstrations: JSONL ``{"prompt": str | chat, "response" | "completion": str}``;
  TRL's conversational forms are accepted too: ``{"messages": [..., assistant]}`` and a
  ``completion`` holding one assistant message.

A bad record raises :class:`DataError` naming the file and the line. Preference and
ranking files are read by :mod:`training.ml.preferences` (same ``DataError``).
Plain Python: no torch, so Django code can validate uploads with it.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.ml.preferences import DataError, iter_records

Chat = list[dict[str, str]]
PromptInput = str | Chat

__all__ = [
    "Chat",
    "DataError",
    "Demonstration",
    "PromptInput",
    "check_prompt",
    "read_demonstrations",
    "read_prompts",
]


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the labeler-written ideal response (InstructGPT's SFT data)."""

    prompt: PromptInput
    response: str


def check_prompt(value: Any) -> PromptInput:
    """Return ``value`` if it is a non-empty string or a well-formed chat, else ValueError."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError('"prompt" is empty')
        return value
    if isinstance(value, list) and value:
        for position, message in enumerate(value):
            if not (
                isinstance(message, dict)
                and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)
            ):
                raise ValueError(f'chat message {position} must be {{"role": str, "content": str}}')
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise ValueError('"prompt" must be a non-empty string or a list of chat messages')


def read_prompts(path: str | os.PathLike[str]) -> list[PromptInput]:
    """All prompts of a JSONL or CSV file; DataError at the first bad line."""
    if str(path).lower().endswith(".csv"):
        prompts = _read_csv_prompts(path)
    else:
        prompts = [_parse_prompt_record(rec, path, line) for line, rec in iter_records(path)]
    if not prompts:
        raise DataError(path, 0, "the file holds no prompts")
    return prompts


def _parse_prompt_record(record: Any, path: str | os.PathLike[str], line: int) -> PromptInput:
    if not isinstance(record, dict) or "prompt" not in record:
        raise DataError(path, line, 'expected a JSON object with a "prompt" key')
    try:
        return check_prompt(record["prompt"])
    except ValueError as error:
        raise DataError(path, line, str(error)) from None


def _read_csv_prompts(path: str | os.PathLike[str]) -> list[PromptInput]:
    if not Path(path).is_file():
        raise DataError(path, 0, "no such file")
    prompts: list[PromptInput] = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "prompt" not in reader.fieldnames:
            raise DataError(path, 1, 'the CSV header has no "prompt" column')
        for row in reader:
            try:
                prompts.append(check_prompt(row.get("prompt") or ""))
            except ValueError as error:
                raise DataError(path, reader.line_num, str(error)) from None
    return prompts


def read_demonstrations(path: str | os.PathLike[str]) -> list[Demonstration]:
    """All demonstrations of a JSONL (or Parquet) file; DataError at the first bad line."""
    demos = [_parse_demonstration(rec, path, line) for line, rec in iter_records(path)]
    if not demos:
        raise DataError(path, 0, "the file holds no demonstrations")
    return demos


def _parse_demonstration(record: Any, path: str | os.PathLike[str], line: int) -> Demonstration:
    try:
        return parse_demonstration(record)
    except ValueError as error:
        raise DataError(path, line, str(error)) from None


def parse_demonstration(record: Any) -> Demonstration:
    """One decoded record -> Demonstration; ValueError says what is wrong."""
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    if "messages" in record and "prompt" not in record:
        return _from_messages(record["messages"])
    if "prompt" not in record:
        raise ValueError('expected "prompt" with "response" (or "completion"), or "messages"')
    prompt = check_prompt(record["prompt"])
    key = "response" if "response" in record else "completion"
    if key not in record:
        raise ValueError('a demonstration needs "response" (or "completion")')
    return Demonstration(prompt=prompt, response=_response_text(record[key], key))


def _from_messages(messages: Any) -> Demonstration:
    chat = check_prompt(messages)
    if isinstance(chat, str) or len(chat) < 2 or chat[-1]["role"] != "assistant":
        raise ValueError('"messages" must end with an assistant message after the prompt')
    return Demonstration(prompt=chat[:-1], response=_response_text(chat[-1]["content"], "messages"))


def _response_text(value: Any, key: str) -> str:
    is_message = isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
    if is_message and value[0].get("role") == "assistant":
        value = value[0].get("content")
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f'"{key}" must be a non-empty string')
    return value
