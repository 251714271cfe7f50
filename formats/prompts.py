"""Prompts and chats: the one rule every door applies (imports, the API, the ML core).

A prompt is a non-blank string, or a chat: a non-empty list of `{"role", "content"}`
(exactly those two keys) with roles system/user/assistant and string content, whose last
turn is a non-blank user message, because the policy answers next. Text is kept verbatim
(HTML in a prompt is text, never markup) and must be storable (formats.text).

A prompt row (a JSONL line, a CSV row, an item of the API's list, a Parquet row) is
`{"prompt": str | chat, "split"?: "train" | "eval", "metadata"?: {...}, ...}`; its other
keys (other CSV columns) are kept in the metadata.

A response to a prompt (in preference and demonstration records) is a string, or, in
TRL's conversational form, a chat list of exactly one assistant message.
"""

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from formats.errors import FormatError, json_type
from formats.records import file_records, parse_numbered
from formats.text import unstorable_reason

Chat = list[dict[str, str]]
PromptInput = str | Chat

CHAT_ROLES = ("system", "user", "assistant")
SPLITS = ("train", "eval")
PROMPT_ROW_KEYS = {"prompt", "split", "metadata"}


@dataclass
class PromptRow:
    """One prompt as a file or a list gives it: content, split and metadata."""

    content: PromptInput
    split: str = "train"
    metadata: dict[str, Any] = field(default_factory=dict)


def check_prompt(value: Any) -> PromptInput:
    """`value` if it is a non-blank string, or the chat it is (only role and content kept)."""
    if isinstance(value, str):
        if not value.strip():
            raise FormatError("'prompt' is empty")
        _check_text(value, "'prompt'")
        return value
    if isinstance(value, list):
        return check_chat_prompt(value)
    raise FormatError("'prompt' must be a string or a chat list")


def check_chat_prompt(messages: list[Any]) -> Chat:
    """A chat the policy can answer: well-formed messages, the last a non-blank user turn."""
    chat = check_chat(messages)
    if chat[-1]["role"] != "user" or not chat[-1]["content"].strip():
        raise FormatError("a chat prompt must end with a non-empty user message")
    return chat


def check_chat(messages: list[Any]) -> Chat:
    """A non-empty list of well-formed messages, copied with only role and content."""
    if not messages:
        raise FormatError("a chat prompt needs at least one message")
    return [check_message(message, position) for position, message in enumerate(messages)]


def check_message(message: Any, position: int) -> dict[str, str]:
    """One chat message `{"role", "content"}`; `position` names it in the refusal."""
    where = f"chat message {position}"
    if not isinstance(message, dict) or set(message) != {"role", "content"}:
        raise FormatError(f'{where} must be {{"role", "content"}}')
    if message["role"] not in CHAT_ROLES:
        raise FormatError(f"{where}: role must be one of {', '.join(CHAT_ROLES)}")
    if not isinstance(message["content"], str):
        raise FormatError(f"{where}: content must be a string")
    _check_text(message["content"], f"{where}: content")
    return {"role": message["role"], "content": message["content"]}


def response_text(value: Any, key: str) -> str:
    """A response: a string, or a chat list of exactly one assistant message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) == 1 and check_message(value[0], 0)["role"] == "assistant":
            return str(value[0]["content"])
        raise FormatError(f"'{key}' must hold exactly one assistant message after the prompt")
    raise FormatError(f"'{key}' must be a string or a chat list, got {json_type(value)}")


def _check_text(value: str, what: str) -> None:
    # Records from files and JSON bodies were checked whole already (formats.records);
    # this covers prompts that reach a door another way (a web form, a direct call).
    reason = unstorable_reason(value)
    if reason is not None:
        raise FormatError(f"{what} {reason}")


def prompt_text(content: PromptInput) -> str:
    """The text shown for a prompt: the string itself, or the chat's last user turn."""
    if isinstance(content, str):
        return content
    user_turns = [m["content"] for m in content if m["role"] == "user"]
    return user_turns[-1] if user_turns else content[-1]["content"]


def content_hash(content: PromptInput) -> str:
    """sha256 of a canonical JSON of the content: the dedup key of a prompt in a project."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompt_row(record: Any) -> PromptRow:
    """One prompt row `{"prompt": str | chat, "split"?, "metadata"?, ...}`."""
    if not isinstance(record, dict):
        raise FormatError(f"expected a JSON object, got {json_type(record)}")
    if "prompt" not in record:
        raise FormatError("missing 'prompt'")
    content = check_prompt(record["prompt"])
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise FormatError("'metadata' must be an object")
    extra = {key: value for key, value in record.items() if key not in PROMPT_ROW_KEYS}
    return PromptRow(content, _check_split(record.get("split")), {**extra, **metadata})


def prompt_row_from_csv(row: dict[str, str]) -> PromptRow:
    """One CSV row with a `prompt` column; an empty `split` cell is the default split,
    and every column but prompt and split is metadata."""
    metadata = {key: value for key, value in row.items() if key not in PROMPT_ROW_KEYS}
    return PromptRow(
        check_prompt(row.get("prompt")), _check_split(row.get("split") or None), metadata
    )


def prompt_rows(data: bytes, filename: str) -> list[tuple[int, PromptRow]]:
    """(line, row) for each prompt of a JSONL, CSV or Parquet file; FormatError at the
    first bad line, or if the file holds none."""
    if filename.lower().endswith(".csv"):
        records = file_records(data, filename, csv_column="prompt")
        rows = parse_numbered(records, prompt_row_from_csv)
    else:
        rows = parse_numbered(file_records(data, filename), prompt_row)
    if not rows:
        raise FormatError("the file holds no prompts")
    return rows


def _check_split(value: Any) -> str:
    if value is None:
        return "train"
    if value not in SPLITS:
        raise FormatError("'split' must be 'train' or 'eval'")
    return str(value)
