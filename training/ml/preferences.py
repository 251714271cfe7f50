"""Preference data: one reader for every format the reward model trains on.

Formats (one JSON object a line, or one row of a Parquet file):

- TRL explicit: ``{"prompt", "chosen", "rejected"}``; each a string, or a list of chat
  messages (``[{"role", "content"}...]``; ``chosen``/``rejected`` then hold one assistant
  message).
- TRL implicit: ``{"chosen", "rejected"}`` sharing a prefix, as in HH-RLHF. Strings are
  split at the last ``"\\n\\nAssistant:"`` of the common prefix (the prompt keeps it);
  chat lists are split after their common messages.
- K-wise rankings (the rankings export): ``{"prompt", "responses": [{"id", "text"}...],
  "order": [[id, ...], ...]}``, tie groups best first; every response id exactly once.

Every record becomes a :class:`RankedExample` (a pair is a K=2 ranking). Optional keys
``labeler`` and ``prompt_id`` are kept. Plain Python (pyarrow only for Parquet), so the
Django ``import_preferences`` command can use it without torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Chat = list[dict[str, Any]]
Prompt = str | Chat

HH_ASSISTANT = "\n\nAssistant:"


class DataError(ValueError):
    """A preference file that cannot be used; the message names the file and the line."""

    def __init__(self, path: str | os.PathLike[str], line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = message
        super().__init__(f"{self.path}, line {line}: {message}")


@dataclass
class RankedExample:
    """One prompt with K responses ranked by a labeler.

    ``tie_groups`` lists indices into ``responses``, best group first; responses in one
    group are tied (InstructGPT: "D > C > A = B" is ``[[3], [2], [0, 1]]``).
    """

    prompt: Prompt
    responses: list[str]
    tie_groups: list[list[int]]
    labeler: str | None = None
    prompt_id: str | None = None

    def __post_init__(self) -> None:
        check_tie_groups(self.tie_groups, len(self.responses))

    @property
    def pairs(self) -> list[tuple[int, int, int]]:
        """(winner, loser, group distance) for every pair this ranking implies."""
        return pairs_from_ranking(self.tie_groups)


def pairs_from_ranking(tie_groups: list[list[int]]) -> list[tuple[int, int, int]]:
    """Every (winner, loser, margin) pair between different tie groups.

    ``margin`` is the distance between the two groups (1 for neighbours). A ranking of
    K responses without ties gives C(K, 2) pairs; tied responses give none.
    """
    pairs = []
    for better, group in enumerate(tie_groups):
        for worse in range(better + 1, len(tie_groups)):
            for winner in group:
                for loser in tie_groups[worse]:
                    pairs.append((winner, loser, worse - better))
    return pairs


def check_tie_groups(tie_groups: list[list[int]], k: int) -> None:
    """Raise ValueError unless ``tie_groups`` holds each index of ``range(k)`` exactly once."""
    if k < 2:
        raise ValueError(f"a ranking needs at least 2 responses, got {k}")
    seen: list[int] = [i for group in tie_groups for i in group]
    if any(not group for group in tie_groups):
        raise ValueError("a tie group is empty")
    if sorted(seen) != list(range(k)):
        raise ValueError(f"tie groups {tie_groups} do not hold each of the {k} responses once")


def read_preferences(path: str | os.PathLike[str]) -> list[RankedExample]:
    """Read a JSONL or Parquet preference file; raise DataError at the first bad record.

    Rankings marked "all unacceptable" (K-wise export rows) are safety data, not
    preferences: they are skipped, as RM training in the app skips them.
    """
    examples = [
        parse_record(record, path, line)
        for line, record in iter_records(path)
        if not (isinstance(record, dict) and record.get("all_unacceptable") is True)
    ]
    if not examples:
        raise DataError(path, 0, "the file holds no preference records")
    return examples


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Yield (line number, decoded record): JSONL lines, or Parquet rows numbered from 1."""
    if not Path(path).is_file():
        raise DataError(path, 0, "no such file")
    if str(path).endswith(".parquet"):
        yield from _iter_parquet(path)
        return
    with open(path, encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(path, line, f"not valid JSON ({error.msg})") from None


def _iter_parquet(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # only Parquet input needs pyarrow

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for bad files
        raise DataError(path, 0, f"not a readable Parquet file ({error})") from None
    yield from enumerate(table.to_pylist(), start=1)


def parse_record(record: Any, path: str | os.PathLike[str], line: int) -> RankedExample:
    """Turn one decoded record of any supported format into a RankedExample."""
    try:
        return _parse(record)
    except (ValueError, TypeError, KeyError) as error:
        raise DataError(path, line, str(error)) from None


def _parse(record: Any) -> RankedExample:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    meta = {
        "labeler": _optional_str(record, "labeler"),
        "prompt_id": _optional_str(record, "prompt_id"),
    }
    if "order" in record or "responses" in record:
        return _parse_kwise(record, meta)
    if "chosen" not in record or "rejected" not in record:
        raise ValueError(
            'unknown format: expected "prompt"/"chosen"/"rejected", "chosen"/"rejected" '
            'or "prompt"/"responses"/"order"'
        )
    if record.get("prompt") is not None:
        prompt = _check_prompt(record["prompt"])
        chosen = _response_text(record["chosen"], "chosen")
        rejected = _response_text(record["rejected"], "rejected")
    else:
        prompt, chosen, rejected = split_implicit_prompt(record["chosen"], record["rejected"])
    return RankedExample(prompt, [chosen, rejected], [[0], [1]], **meta)


def _parse_kwise(record: dict[str, Any], meta: dict[str, str | None]) -> RankedExample:
    for key in ("prompt", "responses", "order"):
        if key not in record:
            raise ValueError(f'a K-wise ranking needs "{key}"')
    prompt = _check_prompt(record["prompt"])
    responses = record["responses"]
    if not isinstance(responses, list) or len(responses) < 2:
        raise ValueError('"responses" must be a list of at least 2 {"id", "text"} objects')
    index: dict[Any, int] = {}
    texts: list[str] = []
    for position, response in enumerate(responses):
        if not isinstance(response, dict) or "id" not in response or "text" not in response:
            raise ValueError(f'response {position} must be an object with "id" and "text"')
        response_id = _hashable_id(response["id"])
        if response_id in index:
            raise ValueError(f"response id {response['id']!r} appears twice in responses")
        if not isinstance(response["text"], str):
            raise ValueError(f"response {response['id']!r}: text must be a string")
        index[response_id] = position
        texts.append(response["text"])
    tie_groups = _order_to_tie_groups(record["order"], index)
    return RankedExample(prompt, texts, tie_groups, **meta)


def _order_to_tie_groups(order: Any, index: dict[Any, int]) -> list[list[int]]:
    if not isinstance(order, list) or not all(isinstance(group, list) for group in order):
        raise ValueError('"order" must be a list of tie groups (lists of response ids)')
    tie_groups: list[list[int]] = []
    placed: set[Any] = set()
    for group in order:
        if not group:
            raise ValueError('"order" holds an empty tie group')
        indices = []
        for raw_id in group:
            response_id = _hashable_id(raw_id)
            if response_id not in index:
                raise ValueError(f'"order" names unknown response id {raw_id!r}')
            if response_id in placed:
                raise ValueError(f'response id {raw_id!r} appears twice in "order"')
            placed.add(response_id)
            indices.append(index[response_id])
        tie_groups.append(indices)
    missing = [response_id for response_id in index if response_id not in placed]
    if missing:
        raise ValueError(f'response id {missing[0]!r} is missing from "order"')
    return tie_groups


def split_implicit_prompt(chosen: Any, rejected: Any) -> tuple[Prompt, str, str]:
    """Split an implicit-prompt pair into (prompt, chosen response, rejected response)."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _split_text(chosen, rejected)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _split_chat(_check_chat(chosen), _check_chat(rejected))
    raise TypeError('"chosen" and "rejected" must both be strings or both be chat lists')


def _split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    if chosen == rejected:
        raise ValueError('"chosen" and "rejected" are identical')
    common = chosen[: _common_prefix_length(chosen, rejected)]
    cut = common.rfind(HH_ASSISTANT)
    if cut >= 0:
        cut += len(HH_ASSISTANT)
    else:  # no HH marker: TRL's rule, the common prefix without a trailing space
        cut = len(common)
        while cut > 0 and common[cut - 1] == " ":
            cut -= 1
    if cut == 0:
        raise ValueError('"chosen" and "rejected" share no prompt prefix')
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _common_prefix_length(a: str, b: str) -> int:
    length = 0
    for char_a, char_b in zip(a, b, strict=False):
        if char_a != char_b:
            break
        length += 1
    return length


def _split_chat(chosen: Chat, rejected: Chat) -> tuple[Chat, str, str]:
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise ValueError('"chosen" and "rejected" share no prompt messages')
    chosen_text = _response_text(chosen[shared:], "chosen")
    rejected_text = _response_text(rejected[shared:], "rejected")
    return chosen[:shared], chosen_text, rejected_text


def _response_text(value: Any, name: str) -> str:
    """A response is a string, or a chat list holding exactly one assistant message."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        messages = _check_chat(value)
        if len(messages) == 1 and messages[0]["role"] == "assistant":
            return str(messages[0]["content"])
        raise ValueError(f'"{name}" must hold exactly one assistant message after the prompt')
    raise TypeError(f'"{name}" must be a string or a chat list, got {type(value).__name__}')


def _check_prompt(value: Any) -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError('"prompt" is empty')
        return value
    if isinstance(value, list) and value:
        return _check_chat(value)
    raise TypeError('"prompt" must be a non-empty string or chat list')


def _check_chat(messages: list[Any]) -> Chat:
    for position, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise ValueError(f'chat message {position} must be {{"role": str, "content": str}}')
    return messages


def _hashable_id(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"response id {value!r} must be a string or an integer")
    return value


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if value is None else str(value)


def pairwise_rows(example: RankedExample) -> list[dict[str, Any]]:
    """TRL explicit rows (``prompt``/``chosen``/``rejected``/``margin``), one per pair."""
    return [
        {
            "prompt": example.prompt,
            "chosen": example.responses[winner],
            "rejected": example.responses[loser],
            "margin": float(margin),
        }
        for winner, loser, margin in example.pairs
    ]
