"""Strict JSON: the one set of rules for every JSON a door accepts (API bodies, JSONL and
CSV import files, Parquet rows).

Python's json module accepts what the standard (RFC 8259) does not, or what we cannot
store or trust, and some of it crashes later instead of failing here:
- `NaN`, `Infinity`, `-Infinity`, and numbers that overflow to infinity (`1e400`): not
  JSON, and PostgreSQL's jsonb refuses them;
- integers of thousands of digits: Python refuses to convert more than 4300 (a ValueError
  far from the parser), and no field of ours needs more than MAX_INTEGER_DIGITS;
- nesting thousands of levels deep: a RecursionError in the decoder or in whatever walks
  the value next; no record of ours needs more than MAX_DEPTH levels;
- strings (values or keys) with NUL or a lone surrogate (`"\\u0000"`, `"\\ud800"`), which
  no database stores (formats.text).

Every refusal is a JsonRefused naming the JSON path of the value (`$[0].metadata.note`)
and, for a JSONL file, the line.
"""

import json
import math
from collections.abc import Iterator
from typing import Any

from formats.text import unstorable_reason

MAX_DEPTH = 64
MAX_INTEGER_DIGITS = 100
_INTEGER_BOUND = 10**MAX_INTEGER_DIGITS


class JsonRefused(ValueError):
    """JSON that is refused: `reason`, at `path` (None for a syntax error), on JSONL `line`."""

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None):
        self.reason = reason
        self.path = path
        self.line = line
        super().__init__(self.located)

    @property
    def located(self) -> str:
        """The reason with its JSON path, without the line: "$.note: contains a NUL ..."."""
        return f"{self.path}: {self.reason}" if self.path else self.reason


class _Refused:
    """Stands in the decoded value for a number the decoder hooks refused, so that the
    walk in check_value reports it with its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON number")


def _parse_float(text: str) -> float | _Refused:
    value = float(text)
    if math.isinf(value):
        return _Refused(f"the number {text[:40]} is too large")
    return value


def _parse_int(text: str) -> int | _Refused:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INTEGER_DIGITS:
        return _Refused(f"an integer of {digits} digits (at most {MAX_INTEGER_DIGITS})")
    return int(text)


_decoder = json.JSONDecoder(
    parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int
)


def loads(text: str) -> Any:
    """Decode one JSON text under the rules above; raise JsonRefused."""
    try:
        value = _decoder.decode(text)
    except json.JSONDecodeError as error:
        where = f" at line {error.lineno} column {error.colno}" if "\n" in text else ""
        raise JsonRefused(f"not valid JSON ({error.msg}{where})") from None
    except RecursionError:  # the decoder recursed past Python's limit (~1000 levels)
        raise JsonRefused(f"nested deeper than {MAX_DEPTH} levels", path="$") from None
    check_value(value)
    return value


def jsonl_values(text: str) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line of a JSON Lines text; raise JsonRefused
    with the line. Lines end at "\\n" only: a JSON string may hold U+2028 or U+0085."""
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            yield line, loads(raw)
        except JsonRefused as error:
            error.line = line
            raise


def check_value(value: Any) -> None:
    """Raise JsonRefused for the first value (in document order) that breaks the rules.

    Also applies to values that did not come from `loads` (a form's fields, a Parquet
    row). Iterative, so any depth is walked without recursion.
    """
    # (value, depth, path) with the path as a linked (parent, key) pair: cheap to extend,
    # spelled out only for the value that is refused.
    stack: list[tuple[Any, int, tuple[Any, Any] | None]] = [(value, 0, None)]
    while stack:
        item, depth, path = stack.pop()
        reason = _reason(item)
        if reason is not None:
            raise JsonRefused(reason, path=_spell(path))
        if isinstance(item, dict | list | tuple):  # a Parquet map arrives as (key, value)s
            if depth >= MAX_DEPTH:
                raise JsonRefused(f"nested deeper than {MAX_DEPTH} levels", path=_spell(path))
            pairs = list(item.items() if isinstance(item, dict) else enumerate(item))
            for key, child in reversed(pairs):
                if isinstance(key, str) and (reason := unstorable_reason(key)) is not None:
                    raise JsonRefused(f"a key {reason}", path=_spell(path))
                stack.append((child, depth + 1, (path, key)))


def _reason(item: Any) -> str | None:
    if isinstance(item, str):
        return unstorable_reason(item)
    if isinstance(item, _Refused):
        return item.reason
    if isinstance(item, float) and not math.isfinite(item):
        return f"{item} is not a JSON number"
    if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= _INTEGER_BOUND:
        return f"an integer of more than {MAX_INTEGER_DIGITS} digits"
    return None


def _spell(path: tuple[Any, Any] | None) -> str:
    keys: list[Any] = []
    while path is not None:
        path, key = path
        keys.append(key)
    parts = ["$"]
    for key in reversed(keys):
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif isinstance(key, str) and key.isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key)}]")
    return "".join(parts)
