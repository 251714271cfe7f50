"""Parsing of uploaded prompt, response and preference files into import items. No database.

The rules are the formats package's, which every door shares: prompt rows and chats
(formats.prompts), preference records (formats.preferences), and reading a file as
numbered records (formats.records: JSONL, CSV, Parquet; UTF-8; formats.json_safety's
rules for every record). A FormatError becomes an ImportFileError with the same reason
and line. This module adds what only the web and CLI imports take:
- prompt files: JSONL or CSV (by name), and the API's JSON list of prompt rows or strings;
- response files: JSONL rows `{"prompt": str | chat, "responses": [str | {"text", "id"?,
  "token_count"?, "finished"?, "seed"?, ...}, ...]}` (the `python -m training.ml
  generate` output has exactly that shape);
- the size limit RLHF_IMPORT_MAX_BYTES.

All or nothing: the first bad line raises ImportFileError naming its line number.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings

from core.exceptions import ApplicationError
from formats.errors import FormatError, json_type
from formats.preferences import RankedExample, preference_rows
from formats.prompts import (
    Chat,
    PromptInput,
    PromptRow,
    check_prompt,
    content_hash,
    prompt_row,
    prompt_rows,
    prompt_text,
)
from formats.records import checked, file_records, parse_numbered
from labeling.models import MAX_K, MIN_K, Prompt

PromptContent = PromptInput
T = TypeVar("T")

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

    @classmethod
    def of(cls, row: PromptRow, line: int) -> "PromptIn":
        return cls(content=row.content, split=row.split, metadata=row.metadata, line=line)

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
    # New prompts the project's moderation rules flagged (stored, held out of rounds).
    flagged: int = 0


# --- Entry points ----------------------------------------------------------------------


def parse_prompt_file(data: bytes, filename: str) -> list[PromptIn]:
    """Parse an uploaded JSONL or CSV prompt file; raise ImportFileError at the first bad line."""
    if not filename.lower().endswith((".csv", *JSONL_SUFFIXES)):
        raise ImportFileError(f"{filename!r}: expected a .jsonl or .csv file")
    rows = _formats(prompt_rows, _within_limit(data), filename)
    return [PromptIn.of(row, line) for line, row in rows]


def parse_prompt_list(items: Iterable[Any]) -> list[PromptIn]:
    """Validate a JSON list of prompt records (the API's JSON body); `line` is the 1-based
    position in the list. A bare string item is a prompt too."""
    rows = _formats(_prompt_list_rows, items)
    if not rows:
        raise ImportFileError("the list holds no prompts")
    return [PromptIn.of(row, line) for line, row in rows]


def parse_response_file(data: bytes, filename: str) -> list[ResponsesIn]:
    """Parse a JSONL file of `{"prompt", "responses": [...]}` rows."""
    if not filename.lower().endswith(JSONL_SUFFIXES):
        raise ImportFileError(f"{filename!r}: expected a .jsonl file")
    rows = _formats(_response_rows, _within_limit(data), filename)
    return [ResponsesIn(PromptIn.of(row, line), responses, line) for line, (row, responses) in rows]


def parse_preference_file(path: Path) -> list[tuple[int, RankedExample]]:
    """(line, example) for each record of a JSONL or Parquet preference file (any shape
    formats.preferences reads, as `python -m training.ml train-rm` reads them); Parquet
    rows are numbered from 1."""
    return _formats(preference_rows, _within_limit(path.read_bytes()), path.name)


def check_prompt_content(value: Any, line: int) -> PromptContent:
    """A prompt under formats.prompts' rule (a chat comes back with only role/content);
    else ImportFileError at `line` (0: none)."""
    return _formats(check_prompt, value, line=line)


# --- Records ---------------------------------------------------------------------------

_ResponsesRow = tuple[PromptRow, list[ResponseIn]]


def _prompt_list_rows(items: Iterable[Any]) -> list[tuple[int, PromptRow]]:
    records = (
        (position, checked(item if isinstance(item, dict) else {"prompt": item}, position))
        for position, item in enumerate(items, start=1)
    )
    return parse_numbered(records, prompt_row)


def _response_rows(data: bytes, filename: str) -> list[tuple[int, _ResponsesRow]]:
    rows = parse_numbered(file_records(data, filename), _responses_row)
    if not rows:
        raise FormatError("the file holds no rows")
    return rows


def _responses_row(record: Any) -> _ResponsesRow:
    """One response row `{"prompt": ..., "responses": [str | {"text", ...}, ...]}`."""
    if not isinstance(record, dict):
        raise FormatError(f"expected a JSON object, got {json_type(record)}")
    responses = record.get("responses")
    if not isinstance(responses, list) or not MIN_K <= len(responses) <= MAX_K:
        raise FormatError(f"'responses' must be a list of {MIN_K} to {MAX_K} responses")
    prompt = prompt_row({k: v for k, v in record.items() if k != "responses"})
    return prompt, [_response_in(response, position) for position, response in enumerate(responses)]


def _response_in(value: Any, position: int) -> ResponseIn:
    where = f"response {position}"
    if isinstance(value, str):
        return ResponseIn(text=value)
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise FormatError(f"{where} must be a string or an object with 'text'")
    token_count, seed, finished = value.get("token_count"), value.get("seed"), value.get("finished")
    if token_count is not None and (not _is_int(token_count) or token_count < 0):
        raise FormatError(f"{where}: 'token_count' must be a non-negative integer")
    if seed is not None and not _is_int(seed):
        raise FormatError(f"{where}: 'seed' must be an integer")
    if finished is not None and not isinstance(finished, bool):
        raise FormatError(f"{where}: 'finished' must be true or false")
    generation = {key: item for key, item in value.items() if key not in RESPONSE_FIELDS - {"id"}}
    return ResponseIn(
        text=value["text"],
        token_count=token_count,
        finished=finished,
        seed=seed,
        generation=generation,
    )


# --- Helpers ---------------------------------------------------------------------------


def _within_limit(data: bytes) -> bytes:
    limit = settings.RLHF_IMPORT_MAX_BYTES
    if len(data) > limit:
        raise ImportFileError(f"the file is {len(data)} bytes; the limit is {limit} bytes")
    return data


def _formats(parse: Callable[..., T], *args: Any, line: int | None = None) -> T:
    """`parse(*args)`, with its FormatError as an ImportFileError (at `line` if it has none)."""
    try:
        return parse(*args)
    except FormatError as error:
        raise ImportFileError(error.reason, line=error.line or line or None) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
