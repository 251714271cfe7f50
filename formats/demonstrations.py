"""Demonstrations: a prompt and the ideal response (InstructGPT's SFT data).

Shapes (a JSONL line or a Parquet row): `{"prompt": str | chat, "response" | "completion":
str}` (formats.prompts' rules for the prompt), and TRL's conversational forms: a
`completion` holding one assistant message, or `{"messages": [..., assistant]}` whose
messages before the last are the prompt. The response is never blank.
"""

from dataclasses import dataclass
from typing import Any

from formats.errors import FormatError, json_type
from formats.prompts import PromptInput, check_chat, check_chat_prompt, check_prompt, response_text
from formats.records import file_records, parse_numbered


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the labeler-written ideal response."""

    prompt: PromptInput
    response: str


def demonstration_rows(data: bytes, filename: str) -> list[tuple[int, Demonstration]]:
    """(line, demonstration) for each record of a JSONL or Parquet file; FormatError at the
    first bad record, or if the file holds none."""
    rows = parse_numbered(file_records(data, filename), demonstration_from_record)
    if not rows:
        raise FormatError("the file holds no demonstrations")
    return rows


def demonstration_from_record(record: Any) -> Demonstration:
    """One decoded record of either shape as a Demonstration."""
    if not isinstance(record, dict):
        raise FormatError(f"expected a JSON object, got {json_type(record)}")
    if "messages" in record and "prompt" not in record:
        return _from_messages(record["messages"])
    if "prompt" not in record:
        raise FormatError("expected 'prompt' with 'response' (or 'completion'), or 'messages'")
    prompt = check_prompt(record["prompt"])
    key = "response" if "response" in record else "completion"
    if key not in record:
        raise FormatError("a demonstration needs 'response' (or 'completion')")
    return Demonstration(prompt, _non_blank(response_text(record[key], key), key))


def _from_messages(messages: Any) -> Demonstration:
    ending = "'messages' must end with an assistant message after the prompt"
    if not isinstance(messages, list) or len(messages) < 2:
        raise FormatError(ending)
    chat = check_chat(messages)
    if chat[-1]["role"] != "assistant":
        raise FormatError(ending)
    prompt = check_chat_prompt(chat[:-1])
    return Demonstration(prompt, _non_blank(chat[-1]["content"], "messages"))


def _non_blank(text: str, key: str) -> str:
    if not text.strip():
        raise FormatError(f"'{key}' must be a non-empty string")
    return text
