"""Rule-based reward terms added to the RM score in PPO (GPT-4's RBRMs, simplified).

A rule looks at one response and returns a number; the terms of all rules are summed.

    regex:PATTERN:WEIGHT       WEIGHT if PATTERN matches anywhere (re.search); the pattern
                               may itself contain ':' (the weight is after the last one)
    length:<=64:-1.0           WEIGHT if the response has <= 64 tokens (also <, >=, >, ==)
    length:16-64:0.5           WEIGHT if 16 <= tokens <= 64
    length:~64:-0.01           WEIGHT * |tokens - 64| (a pull towards a target length)

or JSON: one object or a list of objects: {"type": "regex", "pattern": "...", "weight": 1.0},
{"type": "length", "min_tokens": 16, "max_tokens": 64, "weight": 0.5},
{"type": "length", "target_tokens": 64, "weight": -0.01}.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RegexRule:
    """`weight` when `pattern` matches the response text."""

    pattern: str
    weight: float
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "_compiled", re.compile(self.pattern))
        except re.error as exc:
            raise ValueError(
                f"rule regex:{self.pattern}: invalid regular expression: {exc}"
            ) from exc

    def score(self, text: str, n_tokens: int) -> float:
        return self.weight if self._compiled.search(text) else 0.0


@dataclass(frozen=True)
class LengthRule:
    """`weight` when min_tokens <= tokens <= max_tokens, or weight * |tokens - target|."""

    weight: float
    min_tokens: int | None = None
    max_tokens: int | None = None
    target_tokens: int | None = None

    def __post_init__(self) -> None:
        bounds = self.min_tokens is not None or self.max_tokens is not None
        if bounds == (self.target_tokens is not None):
            raise ValueError("a length rule needs either min/max tokens or a target, not both")

    def score(self, text: str, n_tokens: int) -> float:
        if self.target_tokens is not None:
            return self.weight * abs(n_tokens - self.target_tokens)
        low = self.min_tokens if self.min_tokens is not None else -math.inf
        high = self.max_tokens if self.max_tokens is not None else math.inf
        return self.weight if low <= n_tokens <= high else 0.0


Rule = RegexRule | LengthRule


def rule_rewards(
    texts: Sequence[str], token_counts: Sequence[int], rules: Sequence[Rule]
) -> list[float]:
    """Sum of every rule's term for each response; 0.0 for all when there are no rules."""
    if len(texts) != len(token_counts):
        raise ValueError(f"{len(texts)} texts but {len(token_counts)} token counts")
    return [
        float(sum(rule.score(text, n) for rule in rules))
        for text, n in zip(texts, token_counts, strict=True)
    ]


def parse_rules(specs: Iterable[str]) -> list[Rule]:
    """Rules from CLI strings ("regex:...:W", "length:...:W") or JSON list strings."""
    rules: list[Rule] = []
    for spec in specs:
        if spec.lstrip()[:1] in ("[", "{"):
            rules.extend(_rules_from_json(spec))
        else:
            rules.append(parse_rule(spec))
    return rules


def parse_rule(spec: str) -> Rule:
    """One rule from "regex:PATTERN:WEIGHT" or "length:CONDITION:WEIGHT"."""
    kind, sep, rest = spec.partition(":")
    body, sep2, weight_text = rest.rpartition(":")
    if not sep or not sep2 or not body:
        raise ValueError(f"rule {spec!r}: expected KIND:ARGUMENT:WEIGHT")
    try:
        weight = float(weight_text)
    except ValueError:
        raise ValueError(f"rule {spec!r}: weight {weight_text!r} is not a number") from None
    if not math.isfinite(weight):
        raise ValueError(f"rule {spec!r}: weight must be finite")
    if kind == "regex":
        return RegexRule(body, weight)
    if kind == "length":
        return _length_rule(spec, body, weight)
    raise ValueError(f"rule {spec!r}: unknown kind {kind!r} (use regex or length)")


_COMPARISON = re.compile(r"^(<=|>=|==|<|>)\s*(\d+)$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_TARGET = re.compile(r"^~\s*(\d+)$")


def _length_rule(spec: str, condition: str, weight: float) -> LengthRule:
    condition = condition.strip()
    if match := _TARGET.match(condition):
        return LengthRule(weight, target_tokens=int(match.group(1)))
    if match := _RANGE.match(condition):
        low, high = int(match.group(1)), int(match.group(2))
        if low > high:
            raise ValueError(f"rule {spec!r}: empty range {low}-{high}")
        return LengthRule(weight, min_tokens=low, max_tokens=high)
    if match := _COMPARISON.match(condition):
        op, n = match.group(1), int(match.group(2))
        bounds = {
            "<=": (None, n),
            "<": (None, n - 1),
            ">=": (n, None),
            ">": (n + 1, None),
            "==": (n, n),
        }[op]
        return LengthRule(weight, min_tokens=bounds[0], max_tokens=bounds[1])
    raise ValueError(
        f"rule {spec!r}: length condition {condition!r} is not <=N, <N, >=N, >N, ==N, A-B or ~N"
    )


def _rules_from_json(text: str) -> list[Rule]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"rules JSON: {exc}") from exc
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise ValueError("rules JSON must be an object or a list of objects")
    return [_rule_from_object(i, item) for i, item in enumerate(items)]


def _rule_from_object(index: int, item: Any) -> Rule:
    where = f"rules JSON item {index}"
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object, got {type(item).__name__}")
    weight = item.get("weight")
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ValueError(f"{where}: 'weight' must be a finite number")
    kind = item.get("type")
    if kind == "regex":
        if not isinstance(item.get("pattern"), str):
            raise ValueError(f"{where}: 'pattern' must be a string")
        return RegexRule(item["pattern"], float(weight))
    if kind == "length":
        fields = {k: item.get(k) for k in ("min_tokens", "max_tokens", "target_tokens")}
        for key, value in fields.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{where}: {key!r} must be an integer")
        try:
            return LengthRule(float(weight), **fields)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    raise ValueError(f"{where}: unknown type {kind!r} (use regex or length)")
