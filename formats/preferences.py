"""Preference records in every accepted shape, rankings with ties, and the pairs they imply.

Shapes (a JSONL line or a Parquet row):
- TRL explicit: `{"prompt", "chosen", "rejected"}`; the prompt a string or a chat
  (formats.prompts), each response a string or a chat list of one assistant message.
- TRL implicit: `{"chosen", "rejected"}` sharing a prefix, as in HH-RLHF. Strings are
  split at the last "\\n\\nAssistant:" of the common prefix (the prompt keeps it), or
  without that marker at the common prefix less its trailing spaces (TRL's rule); chat
  lists are split after their common messages. The prompt this leaves must be one
  (formats.prompts: a chat then ends with the user's turn).
- K-wise rankings (the rankings export): `{"prompt", "responses": [{"id", "text"}...],
  "order": [[id, ...], ...]}`, tie groups best first, every response id exactly once.

Every record becomes a RankedExample (a pair is a K=2 ranking). Optional keys `labeler`
and `prompt_id` are kept, and `all_unacceptable` (true on rankings a labeler marked "all
unacceptable": safety data, kept by the import, never trained on).
"""

from dataclasses import dataclass
from typing import Any

from formats.errors import FormatError, json_type
from formats.prompts import Chat, PromptInput, check_chat, check_prompt, response_text
from formats.records import file_records, parse_numbered

HH_ASSISTANT = "\n\nAssistant:"


@dataclass
class RankedExample:
    """One prompt with K responses ranked by a labeler.

    `tie_groups` lists indices into `responses`, best group first; responses in one
    group are tied (InstructGPT: "D > C > A = B" is `[[3], [2], [0, 1]]`).
    """

    prompt: PromptInput
    responses: list[str]
    tie_groups: list[list[int]]
    labeler: str | None = None
    prompt_id: str | None = None
    all_unacceptable: bool = False

    def __post_init__(self) -> None:
        check_tie_groups(self.tie_groups, len(self.responses))

    @property
    def pairs(self) -> list[tuple[int, int, int]]:
        """(winner, loser, group distance) for every pair this ranking implies."""
        return pairs_from_tie_groups(self.tie_groups)


def pairs_from_tie_groups(tie_groups: list[list[int]]) -> list[tuple[int, int, int]]:
    """Every (better, worse, margin) between two different tie groups, best group first.

    InstructGPT (Ouyang et al. 2022, section 3.5): a ranking of K responses yields C(K, 2)
    comparisons; ties (D > C > A = B) remove the pairs inside a tie group, and a single
    group (all tied) gives none. `margin` is the distance between the two groups (1 for
    neighbours). Works on indices and on response ids alike.
    """
    pairs: list[tuple[int, int, int]] = []
    for better, group in enumerate(tie_groups):
        for worse in range(better + 1, len(tie_groups)):
            for winner in group:
                for loser in tie_groups[worse]:
                    pairs.append((winner, loser, worse - better))
    return pairs


def check_tie_groups(tie_groups: list[list[int]], k: int) -> None:
    """FormatError unless `tie_groups` holds each index of `range(k)` exactly once."""
    if k < 2:
        raise FormatError(f"a ranking needs at least 2 responses, got {k}")
    if any(not group for group in tie_groups):
        raise FormatError("a tie group is empty")
    if sorted(i for group in tie_groups for i in group) != list(range(k)):
        raise FormatError(f"tie groups {tie_groups} do not hold each of the {k} responses once")


def preference_rows(data: bytes, filename: str) -> list[tuple[int, RankedExample]]:
    """(line, example) for each record of a JSONL or Parquet preference file; FormatError
    at the first bad record, or if the file holds none."""
    rows = parse_numbered(file_records(data, filename), preference_from_record)
    if not rows:
        raise FormatError("the file holds no preference records")
    return rows


def preference_from_record(record: Any) -> RankedExample:
    """One decoded record of any accepted shape as a RankedExample."""
    if not isinstance(record, dict):
        raise FormatError(f"expected a JSON object, got {json_type(record)}")
    meta: dict[str, Any] = {
        "labeler": _optional_str(record, "labeler"),
        "prompt_id": _optional_str(record, "prompt_id"),
        "all_unacceptable": _flag(record, "all_unacceptable"),
    }
    if "order" in record or "responses" in record:
        return _kwise(record, meta)
    if "chosen" not in record or "rejected" not in record:
        raise FormatError(
            "unknown format: expected 'prompt'/'chosen'/'rejected', 'chosen'/'rejected' "
            "or 'prompt'/'responses'/'order'"
        )
    if record.get("prompt") is not None:
        prompt = check_prompt(record["prompt"])
        chosen = response_text(record["chosen"], "chosen")
        rejected = response_text(record["rejected"], "rejected")
    else:
        prompt, chosen, rejected = split_implicit_prompt(record["chosen"], record["rejected"])
    return RankedExample(prompt, [chosen, rejected], [[0], [1]], **meta)


def _kwise(record: dict[str, Any], meta: dict[str, Any]) -> RankedExample:
    for key in ("prompt", "responses", "order"):
        if key not in record:
            raise FormatError(f"a K-wise ranking needs '{key}'")
    prompt = check_prompt(record["prompt"])
    responses = record["responses"]
    if not isinstance(responses, list) or len(responses) < 2:
        raise FormatError('\'responses\' must be a list of at least 2 {"id", "text"} objects')
    index: dict[str | int, int] = {}
    texts: list[str] = []
    for position, response in enumerate(responses):
        if not isinstance(response, dict) or "id" not in response or "text" not in response:
            raise FormatError(f"response {position} must be an object with 'id' and 'text'")
        response_id = _response_id(response["id"])
        if response_id in index:
            raise FormatError(f"response id {response_id!r} appears twice in 'responses'")
        if not isinstance(response["text"], str):
            raise FormatError(f"response {response_id!r}: 'text' must be a string")
        index[response_id] = position
        texts.append(response["text"])
    return RankedExample(prompt, texts, _order_to_tie_groups(record["order"], index), **meta)


def _order_to_tie_groups(order: Any, index: dict[str | int, int]) -> list[list[int]]:
    """The K-wise `order` (tie groups of response ids) as tie groups of indices."""
    if not isinstance(order, list) or not all(isinstance(group, list) for group in order):
        raise FormatError("'order' must be a list of tie groups (lists of response ids)")
    tie_groups: list[list[int]] = []
    placed: set[str | int] = set()
    for group in order:
        if not group:
            raise FormatError("'order' holds an empty tie group")
        indices = []
        for raw_id in group:
            response_id = _response_id(raw_id)
            if response_id not in index:
                raise FormatError(f"'order' names unknown response id {response_id!r}")
            if response_id in placed:
                raise FormatError(f"response id {response_id!r} appears twice in 'order'")
            placed.add(response_id)
            indices.append(index[response_id])
        tie_groups.append(indices)
    missing = [response_id for response_id in index if response_id not in placed]
    if missing:
        raise FormatError(f"response id {missing[0]!r} is missing from 'order'")
    return tie_groups


def split_implicit_prompt(chosen: Any, rejected: Any) -> tuple[PromptInput, str, str]:
    """Split an implicit-prompt pair into (prompt, chosen response, rejected response)."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        prompt, chosen_text, rejected_text = _split_text(chosen, rejected)
        return check_prompt(prompt), chosen_text, rejected_text
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _split_chat(check_chat(chosen), check_chat(rejected))
    raise FormatError("'chosen' and 'rejected' must both be strings or both be chat lists")


def _split_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    if chosen == rejected:
        raise FormatError("'chosen' and 'rejected' are identical")
    common = chosen[: _common_prefix_length(chosen, rejected)]
    cut = common.rfind(HH_ASSISTANT)
    if cut >= 0:
        cut += len(HH_ASSISTANT)
    else:  # no HH marker: TRL's rule, the common prefix without a trailing space
        cut = len(common.rstrip(" "))
    if cut == 0:
        raise FormatError("'chosen' and 'rejected' share no prompt prefix")
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _common_prefix_length(a: str, b: str) -> int:
    length = 0
    for char_a, char_b in zip(a, b, strict=False):
        if char_a != char_b:
            break
        length += 1
    return length


def _split_chat(chosen: Chat, rejected: Chat) -> tuple[Chat, str, str]:
    if chosen == rejected:
        raise FormatError("'chosen' and 'rejected' are identical")
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise FormatError("'chosen' and 'rejected' share no prompt messages")
    prompt = check_prompt(chosen[:shared])
    assert isinstance(prompt, list)  # a list stays a chat
    chosen_text = response_text(chosen[shared:], "chosen")
    rejected_text = response_text(rejected[shared:], "rejected")
    return prompt, chosen_text, rejected_text


def _response_id(value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FormatError(f"response id {value!r} must be a string or an integer")
    return value


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    return None if value is None else str(value)


def _flag(record: dict[str, Any], key: str) -> bool:
    value = record.get(key)
    if value is not None and not isinstance(value, bool):
        raise FormatError(f"'{key}' must be true or false")
    return value is True


def pairwise_rows(example: RankedExample) -> list[dict[str, Any]]:
    """TRL explicit rows (`prompt`/`chosen`/`rejected`/`margin`), one per pair."""
    return [
        {
            "prompt": example.prompt,
            "chosen": example.responses[winner],
            "rejected": example.responses[loser],
            "margin": float(margin),
        }
        for winner, loser, margin in example.pairs
    ]
