"""Moderation rules on prompts, and near-duplicate responses within a task. Pure: no database.

A project's `moderation_rules` is ``{"words": [...], "regexes": [...], "classifier": SPEC,
"labels": [...], "threshold": 0.5}``, every key optional:

- `words`: case-insensitive whole words or phrases; a prompt containing one is flagged.
- `regexes`: patterns (the `regex` module's syntax, case-insensitive); each match is run
  with a time limit, so a pathological pattern flags the prompt ("regex timed out")
  instead of hanging a worker.
- `classifier`: a model spec of a sequence-classification folder (under
  RLHF_MODEL_ROOTS); it runs on the worker before sampling, and a prompt whose
  probability for one of `labels` reaches `threshold` is flagged.

A flagged prompt is held out of rounds until an admin releases or drops it
(`labeling.services.moderation`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

import regex

MAX_RULES = 500
MAX_RULE_CHARS = 500
REGEX_TIMEOUT_S = 0.05
# Two responses of a task whose normalised texts are at least this similar
# (difflib's ratio) count as near duplicates.
NEAR_DUPLICATE_RATIO = 0.95
_RULE_KEYS = {"words", "regexes", "classifier", "labels", "threshold"}


class RulesError(ValueError):
    """Invalid moderation rules; the message starts with the key at fault."""


@dataclass(frozen=True)
class ModerationRules:
    words: tuple[str, ...] = ()
    regexes: tuple[str, ...] = ()
    classifier: str = ""
    labels: tuple[str, ...] = ()
    threshold: float = 0.5
    _compiled: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def parse(cls, config: Any) -> ModerationRules:
        """Validate `config` (a project's moderation_rules) into rules; RulesError if bad."""
        if config in (None, ""):
            return cls()
        if not isinstance(config, dict):
            raise RulesError("moderation_rules: must be an object")
        unknown = sorted(set(config) - _RULE_KEYS)
        if unknown:
            raise RulesError(f"moderation_rules.{unknown[0]}: unknown key")
        words = _strings(config, "words")
        patterns = _strings(config, "regexes")
        compiled = []
        for index, pattern in enumerate(patterns):
            try:
                compiled.append(regex.compile(pattern, regex.IGNORECASE | regex.V1))
            except regex.error as error:
                raise RulesError(f"moderation_rules.regexes[{index}]: {error}") from None
        classifier = config.get("classifier", "")
        if not isinstance(classifier, str) or len(classifier) > MAX_RULE_CHARS:
            raise RulesError("moderation_rules.classifier: must be a model spec string")
        labels = _strings(config, "labels")
        if classifier and not labels:
            raise RulesError("moderation_rules.labels: name the classifier labels that flag")
        threshold = config.get("threshold", 0.5)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise RulesError("moderation_rules.threshold: must be a number")
        if not 0.0 < threshold <= 1.0:
            raise RulesError("moderation_rules.threshold: must be in (0, 1]")
        return cls(
            words=tuple(words),
            regexes=tuple(patterns),
            classifier=classifier.strip(),
            labels=tuple(labels),
            threshold=float(threshold),
            _compiled=tuple(compiled),
        )

    def as_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {}
        if self.words:
            config["words"] = list(self.words)
        if self.regexes:
            config["regexes"] = list(self.regexes)
        if self.classifier:
            config.update(
                classifier=self.classifier, labels=list(self.labels), threshold=self.threshold
            )
        return config

    @property
    def has_text_rules(self) -> bool:
        return bool(self.words or self.regexes)

    def reasons(self, text: str) -> list[str]:
        """Why the word and regex rules flag `text` (empty: they do not)."""
        found = []
        lowered = text.casefold()
        for word in self.words:
            if re.search(rf"(?<!\w){re.escape(word.casefold())}(?!\w)", lowered):
                found.append(f"word: {word}")
        for pattern, compiled in zip(self.regexes, self._compiled, strict=True):
            try:
                if compiled.search(text, timeout=REGEX_TIMEOUT_S):
                    found.append(f"regex: {pattern}")
            except TimeoutError:
                found.append(f"regex timed out: {pattern}")
        return found

    def classifier_reasons(self, probabilities: dict[str, float]) -> list[str]:
        """Why the classifier's label probabilities for one prompt flag it."""
        return [
            f"classifier: {label} {probabilities[label]:.2f}"
            for label in self.labels
            if probabilities.get(label, 0.0) >= self.threshold
        ]


def _strings(config: dict[str, Any], key: str) -> list[str]:
    values = config.get(key, [])
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise RulesError(f"moderation_rules.{key}: must be a list of strings")
    if len(values) > MAX_RULES:
        raise RulesError(f"moderation_rules.{key}: at most {MAX_RULES} entries")
    cleaned = []
    for index, value in enumerate(values):
        value = value.strip()
        if not value or len(value) > MAX_RULE_CHARS:
            raise RulesError(f"moderation_rules.{key}[{index}]: 1 to {MAX_RULE_CHARS} characters")
        cleaned.append(value)
    return cleaned


def _normalised(text: str) -> str:
    return " ".join(text.casefold().split())


def near_duplicates(texts: list[str], ratio: float = NEAR_DUPLICATE_RATIO) -> list[int | None]:
    """For each text, the index of an earlier text it nearly repeats, or None.

    Texts are compared case- and whitespace-insensitively; two empty texts are duplicates.
    """
    normal = [_normalised(t) for t in texts]
    found: list[int | None] = []
    for i, text in enumerate(normal):
        match = None
        for j in range(i):
            if found[j] is not None:
                continue  # compare with the first of each group only
            other = normal[j]
            if text == other:
                match = j
                break
            matcher = difflib.SequenceMatcher(None, text, other, autojunk=False)
            if (
                matcher.real_quick_ratio() >= ratio
                and matcher.quick_ratio() >= ratio
                and matcher.ratio() >= ratio
            ):
                match = j
                break
        found.append(match)
    return found
