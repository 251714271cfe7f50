"""Synthetic labelers: named preferences that score responses, and noisy rankings from scores.

A *preference* maps ``(prompt, [response, ...])`` to one score per response (higher is
better). Names, as `simulate_labelers --preference NAME` takes them:

    length            same as length:longer
    length:longer     score = number of characters of the stripped response
    length:shorter    score = minus that number
    keyword:WORD      score = occurrences of WORD as a whole word, case-insensitive
    regex:PATTERN     score = number of non-overlapping matches of PATTERN (Python re)
    rm:PATH           score = a gold reward model's scalar (a save_pretrained RM folder)

A labeler turns scores into a ranking with Bradley-Terry noise (`bradley_terry_ranking`):
the order is sampled from the Plackett-Luce model, whose pairwise marginal is exactly
Bradley-Terry, P(i above j) = sigmoid((s_i - s_j) / T) for two responses. Temperature
T is in the preference's own units (characters, occurrences, RM logits); T = 0 is a
noiseless labeler who ties equal scores.

Plain Python and torch only (the `rm:` scorer loads torch lazily); never Django.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence

from formats.prompts import PromptInput as Prompt

Scorer = Callable[[Prompt, list[str]], list[float]]

VALID_PREFERENCES = (
    "length",
    "length:shorter",
    "length:longer",
    "keyword:WORD",
    "regex:PATTERN",
    "rm:PATH",
)


class PreferenceError(ValueError):
    """An unknown or malformed preference name; the message lists the valid ones."""


def _error(message: str) -> PreferenceError:
    return PreferenceError(f"{message}; valid preferences: {', '.join(VALID_PREFERENCES)}")


# --------------------------------------------------------------------------- scorers


def length_scorer(direction: str = "longer") -> Scorer:
    """Characters of the stripped response, positive for "longer", negative for "shorter"."""
    sign = {"longer": 1.0, "shorter": -1.0}.get(direction)
    if sign is None:
        raise _error(f"unknown length direction {direction!r} (use longer or shorter)")
    return lambda prompt, responses: [sign * len(r.strip()) for r in responses]


def keyword_scorer(word: str) -> Scorer:
    """Count of `word` as a whole word, case-insensitive ("Cat", "cat!" count; "cats" not)."""
    if not word.strip():
        raise _error("keyword: needs a word, e.g. keyword:please")
    # Look-arounds instead of \b so that words starting or ending in punctuation work too.
    pattern = re.compile(rf"(?<!\w){re.escape(word.strip())}(?!\w)", re.IGNORECASE)
    return lambda prompt, responses: [float(len(pattern.findall(r))) for r in responses]


def regex_scorer(pattern_text: str) -> Scorer:
    """Number of non-overlapping matches of the pattern (empty matches are not counted)."""
    if not pattern_text:
        raise _error("regex: needs a pattern, e.g. regex:[0-9]+")
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise _error(f"regex:{pattern_text}: invalid regular expression ({exc})") from exc

    def score(prompt: Prompt, responses: list[str]) -> list[float]:
        return [float(sum(1 for m in pattern.finditer(r) if m.group(0))) for r in responses]

    return score


def reward_model_scorer(path: str, *, device: str = "cpu", dtype: str | None = None) -> Scorer:
    """A gold RM folder, loaded once; scores come from the RM module's `score_texts`."""
    if not path:
        raise _error("rm: needs a reward model folder, e.g. rm:var/models/gold-rm")
    from training.ml.reward.evaluate import score_texts
    from training.ml.reward.model import is_reward_model_folder, load_reward_model

    if not is_reward_model_folder(path):
        # load_reward_model would quietly build an untrained head on a plain LM: refuse.
        raise _error(f"rm:{path} is not a reward model folder (save_pretrained of an RM)")
    model, tokenizer = load_reward_model(path, device=device, dtype=dtype)

    def score(prompt: Prompt, responses: list[str]) -> list[float]:
        # (K,) rewards, tokenised exactly as in RM training, offset included.
        return score_texts(model, tokenizer, [(prompt, r) for r in responses]).tolist()

    return score


def make_preference(name: str, *, device: str = "cpu", dtype: str | None = None) -> Scorer:
    """The scorer behind a preference name (see the module doc); device/dtype for `rm:`."""
    kind, sep, argument = name.partition(":")
    if kind == "length":
        return length_scorer(argument if sep else "longer")
    if kind == "keyword" and sep:
        return keyword_scorer(argument)
    if kind == "regex" and sep:
        return regex_scorer(argument)
    if kind == "rm" and sep:
        return reward_model_scorer(argument, device=device, dtype=dtype)
    raise _error(f"unknown preference {name!r}")


# --------------------------------------------------------------------------- noisy rankings


def exact_ranking(scores: Sequence[float]) -> list[list[int]]:
    """Tie groups of indices, best first; equal scores share a group (T = 0)."""
    groups: list[list[int]] = []
    last: float | None = None
    for index in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if last is not None and scores[index] == last:
            groups[-1].append(index)
        else:
            groups.append([index])
        last = scores[index]
    return groups


def _gumbel(rng: random.Random) -> float:
    u = rng.random()
    while u <= 0.0:  # random() is in [0, 1): redraw the single value log() cannot take
        u = rng.random()
    return -math.log(-math.log(u))


def bradley_terry_ranking(
    scores: Sequence[float], temperature: float, rng: random.Random
) -> list[list[int]]:
    """A noisy ranking (tie groups of indices, best first) of `scores` at `temperature`.

    T > 0: a full order sampled from Plackett-Luce with weights exp(s_i / T), i.e. pick
    the best with probability softmax(s / T), then the best of the rest, and so on. It is
    drawn with the Gumbel-max trick: sort by s_i / T + G_i, G_i ~ Gumbel(0, 1) i.i.d.
    (Luce 1959; Yellott 1977). For two responses P(i above j) = sigmoid((s_i - s_j) / T),
    the Bradley-Terry model. T = 0: the exact order, equal scores tied.
    """
    if temperature < 0 or math.isnan(temperature):
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    values = [float(s) for s in scores]
    if any(math.isnan(v) for v in values):
        raise ValueError("scores must not be NaN")
    if temperature == 0:
        return exact_ranking(values)
    keys = [v / temperature + _gumbel(rng) for v in values]
    return [[i] for i in sorted(range(len(values)), key=lambda i: -keys[i])]
