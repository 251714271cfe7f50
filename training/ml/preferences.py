"""Preference files for reward-model training, read under formats.preferences' rules.

The shapes (TRL explicit and implicit pairs, K-wise rankings with ties) and every refusal
are formats.preferences'; the Django imports read the same records the same way.
"""

from __future__ import annotations

import os
from typing import Any

from formats.errors import FormatError
from formats.preferences import (
    RankedExample,
    check_tie_groups,
    pairs_from_tie_groups,
    pairwise_rows,
    preference_from_record,
    preference_rows,
    split_implicit_prompt,
)
from formats.prompts import PromptInput as Prompt
from formats.records import read_file

# The ML core's name for formats' one error (the CLI reports it as a user error).
DataError = FormatError

__all__ = [
    "DataError",
    "Prompt",
    "RankedExample",
    "check_tie_groups",
    "pairs_from_tie_groups",
    "pairwise_rows",
    "parse_record",
    "read_preferences",
    "split_implicit_prompt",
]


def read_preferences(path: str | os.PathLike[str]) -> list[RankedExample]:
    """The preferences of a JSONL or Parquet file; DataError at the first bad record.

    Rankings marked "all unacceptable" (K-wise export rows) are safety data, not
    preferences: they are skipped, as RM training in the app skips them.
    """
    examples = [ex for _, ex in read_file(path, preference_rows) if not ex.all_unacceptable]
    if not examples:
        raise DataError("the file holds no preference records", path=str(path))
    return examples


def parse_record(record: Any, path: str | os.PathLike[str], line: int) -> RankedExample:
    """One decoded record of any accepted shape; DataError naming `path` and `line`."""
    try:
        return preference_from_record(record)
    except FormatError as error:
        error.path, error.line = str(path), line
        raise
