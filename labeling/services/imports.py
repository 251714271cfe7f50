"""Parsing of uploaded prompt, response and preference files. No database.

Formats:
- JSONL, one object a line: `{"prompt": str | chat}` for prompts, plus
  `"responses": [str | {"text", "id"?, "token_count"?, "finished"?, "seed"?, ...}, ...]`
  for response files (the `python -m training.ml generate` output has exactly that shape).
  Optional keys: `split` ("train" | "eval") and `metadata` (an object); other keys of a
  prompt row are kept in its metadata.
- CSV (utf-8, a BOM is tolerated) with a `prompt` column (prompt files only); an optional
  `split` column; other columns are kept in the metadata.

A chat is a non-empty list of `{"role", "content"}` with roles system/user/assistant,
ending with a user turn. Text is kept verbatim: HTML in a prompt is text, never markup.

Every record, whichever door it comes through (a JSONL or CSV line, an item of the API's
JSON list, a Parquet row), follows formats.json_safety's rules (`check_record`): no NaN or
Infinity, no overflowing number, no integer of more than 100 digits, no nesting deeper
than 64 levels, no NUL or lone surrogate in any string.

All or nothing: the first bad line raises ImportFileError naming its line number.
"""

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from core.exceptions import ApplicationError
from formats.json_safety import JsonRefused, check_value, jsonl_values
from formats.text import unstorable_reason
from labeling.models import MAX_K, MIN_K, Prompt
from training.ml.preferences import DataError, RankedExample, iter_records, parse_record

Chat = list[dict[str, str]]
PromptContent = str | Chat

CHAT_ROLES = ("system", "user", "assistant")
PROMPT_ROW_KEYS = {"prompt", "split", "metadata"}
RESPONSE_FIELDS = {"text", "id", "token_count", "finished", "seed"}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


class ImportFileError(ApplicationError):
    """A file that cannot be imported; `line` is the 1-based line of the first bad record."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        self.reason = message
        super().__init__(
            f"line {line}: {message}" if line else message,
            extra={"line": line} if line else {},
        )


@dataclass
class PromptIn:
    """One validated prompt: `content` is a string or a chat list."""

    content: PromptContent
    split: str = Prompt.Split.TRAIN
    metadata: dict[str, Any] = field(default_factory=dict)
    line: int = 0

    @property
    def content_hash(self) -> str:
        return content_hash(self.content)

    @property
    def text(self) -> str:
        return prompt_text(self.content)

    @property
    def chat(self) -> Chat | None:
        return self.content if isinstance(self.content, list) else None


@dataclass
class ResponseIn:
    text: str
    token_count: int | None = None
    finished: bool | None = None
    seed: int | None = None
    # Everything else the generator wrote about this response (its id, sampling settings).
    generation: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResponsesIn:
    """A prompt with its pre-generated responses (2..9 of them; K is stored per task)."""

    prompt: PromptIn
    responses: list[ResponseIn]
    line: int = 0


@dataclass
class ImportResult:
    created: int
    duplicates: int
    # Line numbers (or list positions) of the records that were already there.
    duplicate_lines: list[int] = field(default_factory=list)


def content_hash(content: PromptContent) -> str:
    """sha256 of a canonical JSON of the content: the dedup key of a prompt in a project."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def prompt_text(content: PromptContent) -> str:
    """The text shown for a prompt: the string itself, or the chat's last user turn."""
    if isinstance(content, str):
        return content
    user_turns = [m["content"] for m in content if m["role"] == "user"]
    return user_turns[-1] if user_turns else content[-1]["content"]


# --- Entry points ----------------------------------------------------------------------


def parse_prompt_file(data: bytes, filename: str) -> list[PromptIn]:
    """Parse an uploaded JSONL or CSV prompt file; raise ImportFileError at the first bad line."""
    text = _decode(data)
    if filename.lower().endswith(".csv"):
        prompts = [_prompt_from_csv_row(row, line) for line, row in _csv_rows(text)]
    elif filename.lower().endswith(JSONL_SUFFIXES):
        prompts = [prompt_from_record(record, line) for line, record in _jsonl_records(text)]
    else:
        raise ImportFileError(f"{filename!r}: expected a .jsonl or .csv file")
    if not prompts:
        raise ImportFileError("the file holds no prompts")
    return prompts


def parse_prompt_list(items: Iterable[Any]) -> list[PromptIn]:
    """Validate a JSON list of prompt records (the API's JSON body); `line` is the 1-based
    position in the list. A bare string item is a prompt too."""
    prompts = [
        prompt_from_record(
            check_record(item if isinstance(item, dict) else {"prompt": item}, position),
            position,
        )
        for position, item in enumerate(items, start=1)
    ]
    if not prompts:
        raise ImportFileError("the list holds no prompts")
    return prompts


def parse_response_file(data: bytes, filename: str) -> list[ResponsesIn]:
    """Parse a JSONL file of `{"prompt", "responses": [...]}` rows."""
    if not filename.lower().endswith(JSONL_SUFFIXES):
        raise ImportFileError(f"{filename!r}: expected a .jsonl file")
    text = _decode(data)
    rows = [responses_from_record(record, line) for line, record in _jsonl_records(text)]
    if not rows:
        raise ImportFileError("the file holds no rows")
    return rows


def parse_preference_file(path: Path) -> list[tuple[int, RankedExample]]:
    """(line, example) for each record of a JSONL or Parquet preference file (any format
    training.ml.preferences reads); Parquet rows are numbered from 1."""
    try:
        if path.suffix == ".parquet":
            records: Iterable[tuple[int, Any]] = iter_records(path)
        else:
            records = _jsonl_records(_decode(path.read_bytes()))
        numbered = [
            (line, parse_record(check_record(record, line), path, line)) for line, record in records
        ]
    except DataError as error:
        raise ImportFileError(error.reason, line=error.line or None) from None
    if not numbered:
        raise ImportFileError("the file holds no preference records")
    return numbered


def check_record(record: Any, line: int) -> Any:
    """`record` if it follows formats.json_safety's rules; else ImportFileError at `line`."""
    try:
        check_value(record)
    except JsonRefused as error:
        raise ImportFileError(error.located, line=line) from None
    return record


# --- Records ---------------------------------------------------------------------------


def prompt_from_record(record: Any, line: int) -> PromptIn:
    """One prompt row `{"prompt": str | chat, "split"?, "metadata"?, ...}`."""
    if not isinstance(record, dict):
        raise ImportFileError(f"expected a JSON object, got {_type_name(record)}", line=line)
    if "prompt" not in record:
        raise ImportFileError("missing 'prompt'", line=line)
    content = check_prompt_content(record["prompt"], line)
    metadata = record.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ImportFileError("'metadata' must be an object", line=line)
    extra = {key: value for key, value in record.items() if key not in PROMPT_ROW_KEYS}
    return PromptIn(
        content=content,
        split=_check_split(record.get("split"), line),
        metadata={**extra, **metadata},
        line=line,
    )


def responses_from_record(record: Any, line: int) -> ResponsesIn:
    """One response row `{"prompt": ..., "responses": [str | {"text", ...}, ...]}`."""
    if not isinstance(record, dict):
        raise ImportFileError(f"expected a JSON object, got {_type_name(record)}", line=line)
    responses = record.get("responses")
    if not isinstance(responses, list) or not MIN_K <= len(responses) <= MAX_K:
        raise ImportFileError(
            f"'responses' must be a list of {MIN_K} to {MAX_K} responses", line=line
        )
    prompt = prompt_from_record({k: v for k, v in record.items() if k != "responses"}, line)
    parsed = [_response_in(response, position, line) for position, response in enumerate(responses)]
    return ResponsesIn(prompt=prompt, responses=parsed, line=line)


def check_prompt_content(value: Any, line: int) -> PromptContent:
    """A non-blank string, or a validated chat list (returned with only role/content)."""
    if isinstance(value, str):
        if not value.strip():
            raise ImportFileError("'prompt' is empty", line=line)
        _check_text(value, "'prompt'", line)
        return value
    if isinstance(value, list):
        return _check_chat(value, line)
    raise ImportFileError("'prompt' must be a string or a chat list", line=line)


def _check_text(value: str, what: str, line: int) -> None:
    # Records from files and JSON bodies were checked whole already (check_record); this
    # covers prompts that reach a service another way (a web form, a direct call).
    reason = unstorable_reason(value)
    if reason is not None:
        raise ImportFileError(f"{what} {reason}", line=line)


def _check_chat(messages: list[Any], line: int) -> Chat:
    if not messages:
        raise ImportFileError("a chat prompt needs at least one message", line=line)
    chat: Chat = []
    for position, message in enumerate(messages):
        where = f"chat message {position}"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ImportFileError(f'{where} must be {{"role", "content"}}', line=line)
        if message["role"] not in CHAT_ROLES:
            roles = ", ".join(CHAT_ROLES)
            raise ImportFileError(f"{where}: role must be one of {roles}", line=line)
        if not isinstance(message["content"], str):
            raise ImportFileError(f"{where}: content must be a string", line=line)
        _check_text(message["content"], f"{where}: content", line)
        chat.append({"role": message["role"], "content": message["content"]})
    if chat[-1]["role"] != "user" or not chat[-1]["content"].strip():
        raise ImportFileError("a chat prompt must end with a non-empty user message", line=line)
    return chat


def _response_in(value: Any, position: int, line: int) -> ResponseIn:
    where = f"response {position}"
    if isinstance(value, str):
        return ResponseIn(text=value)
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise ImportFileError(f"{where} must be a string or an object with 'text'", line=line)
    token_count, seed, finished = value.get("token_count"), value.get("seed"), value.get("finished")
    if token_count is not None and (not _is_int(token_count) or token_count < 0):
        raise ImportFileError(f"{where}: 'token_count' must be a non-negative integer", line=line)
    if seed is not None and not _is_int(seed):
        raise ImportFileError(f"{where}: 'seed' must be an integer", line=line)
    if finished is not None and not isinstance(finished, bool):
        raise ImportFileError(f"{where}: 'finished' must be true or false", line=line)
    generation = {key: item for key, item in value.items() if key not in RESPONSE_FIELDS - {"id"}}
    return ResponseIn(
        text=value["text"],
        token_count=token_count,
        finished=finished,
        seed=seed,
        generation=generation,
    )


def _prompt_from_csv_row(row: dict[str, Any], line: int) -> PromptIn:
    if None in row:
        raise ImportFileError("the row has more fields than the header", line=line)
    record: dict[str, Any] = {key: value for key, value in row.items() if value is not None}
    check_record(record, line)
    metadata = {key: value for key, value in record.items() if key not in PROMPT_ROW_KEYS}
    return PromptIn(
        content=check_prompt_content(record.get("prompt"), line),
        split=_check_split(record.get("split") or None, line),
        metadata=metadata,
        line=line,
    )


def _check_split(value: Any, line: int) -> str:
    if value is None:
        return Prompt.Split.TRAIN
    if value not in Prompt.Split.values:
        raise ImportFileError("'split' must be 'train' or 'eval'", line=line)
    return str(value)


# --- Files -----------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    limit = settings.RLHF_IMPORT_MAX_BYTES
    if len(data) > limit:
        raise ImportFileError(f"the file is {len(data)} bytes; the limit is {limit} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        line = data.count(b"\n", 0, error.start + bom) + 1
        raise ImportFileError("not valid UTF-8", line=line) from None


def _jsonl_records(text: str) -> Iterator[tuple[int, Any]]:
    try:
        yield from jsonl_values(text)
    except JsonRefused as error:
        raise ImportFileError(error.located, line=error.line) from None


def _csv_rows(text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = reader.fieldnames or []
        if "prompt" not in fields:
            raise ImportFileError("the CSV header has no 'prompt' column", line=1)
        start = reader.line_num + 1
        for row in reader:
            # A quoted field may span lines: report the line where the record starts.
            yield start, row
            start = reader.line_num + 1
    except csv.Error as error:
        raise ImportFileError(f"not valid CSV ({error})", line=reader.line_num) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    names = {"dict": "object", "str": "string", "NoneType": "null"}
    return names.get(type(value).__name__, type(value).__name__)
