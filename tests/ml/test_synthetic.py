"""Synthetic labelers: preference scorers and Bradley-Terry / Plackett-Luce noisy rankings."""

import itertools
import math
import random
from collections import Counter

import pytest

from training.ml.synthetic import (
    PreferenceError,
    bradley_terry_ranking,
    exact_ranking,
    make_preference,
)


def test_length_preferences() -> None:
    responses = ["short", "  a longer answer  ", "mid size"]
    assert make_preference("length")("p", responses) == [5.0, 15.0, 8.0]
    assert make_preference("length:longer")("p", responses) == [5.0, 15.0, 8.0]
    assert make_preference("length:shorter")("p", responses) == [-5.0, -15.0, -8.0]


def test_keyword_counts_whole_words_case_insensitively() -> None:
    score = make_preference("keyword:Please")
    responses = ["Please, please PLEASE!", "pleased to pleasethem", "", "say (please)"]
    assert score("any prompt", responses) == [3.0, 0.0, 0.0, 1.0]


def test_keyword_with_punctuation_inside_the_word() -> None:
    assert make_preference("keyword:c++")("p", ["C++ and c++, not abc++"]) == [2.0]


def test_regex_counts_matches_and_keeps_colons() -> None:
    score = make_preference("regex:[0-9]+")
    assert score("p", ["1, 22 and 333", "none", "x9"]) == [3.0, 0.0, 1.0]
    assert make_preference("regex:a:b")("p", ["a:b a:b", "ab"]) == [2.0, 0.0]
    # An empty match is not a match: `x*` scores only the runs of x.
    assert make_preference("regex:x*")("p", ["xx y x"]) == [2.0]


@pytest.mark.parametrize(
    "name", ["unknown", "keyword", "keyword:", "regex:", "regex:(", "length:medium", "rm:", ""]
)
def test_bad_preference_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match="valid preferences: length, length:shorter") as err:
        make_preference(name)
    assert isinstance(err.value, PreferenceError)
    assert "keyword:WORD" in str(err.value) and "rm:PATH" in str(err.value)


def test_exact_ranking_ties_equal_scores() -> None:
    assert exact_ranking([1.0, 3.0, 1.0, 2.0]) == [[1], [3], [0, 2]]
    assert exact_ranking([0.0, 0.0]) == [[0, 1]]
    assert bradley_terry_ranking([1.0, 3.0, 1.0, 2.0], 0.0, random.Random(0)) == [
        [1],
        [3],
        [0, 2],
    ]


def test_noisy_ranking_is_a_permutation_and_seeded() -> None:
    scores = [0.3, -1.0, 2.0, 0.0, 0.3]
    a = bradley_terry_ranking(scores, 1.0, random.Random(7))
    b = bradley_terry_ranking(scores, 1.0, random.Random(7))
    assert a == b
    assert sorted(i for group in a for i in group) == list(range(5))
    assert all(len(group) == 1 for group in a)  # T > 0: no ties


def test_two_responses_follow_bradley_terry() -> None:
    """P(0 above 1) = sigmoid((s0 - s1) / T), within 4 standard errors."""
    rng, n = random.Random(0), 20000
    for diff, temperature in [(1.0, 1.0), (3.0, 2.0), (0.0, 5.0), (-2.0, 0.5)]:
        wins = sum(bradley_terry_ranking([diff, 0.0], temperature, rng)[0] == [0] for _ in range(n))
        p = 1 / (1 + math.exp(-diff / temperature))
        se = math.sqrt(p * (1 - p) / n) or 1 / n
        assert abs(wins / n - p) < 4 * se + 1e-9, (diff, temperature, wins / n, p)


def _plackett_luce_probability(order: tuple[int, ...], scores: list[float], t: float) -> float:
    """Reference: product over positions of exp(s/T) / sum over the remaining items."""
    remaining, prob = list(order), 1.0
    for item in order:
        prob *= math.exp(scores[item] / t) / sum(math.exp(scores[j] / t) for j in remaining)
        remaining.remove(item)
    return prob


def test_full_orders_follow_plackett_luce() -> None:
    scores, temperature, n = [1.0, 0.0, -0.5], 0.8, 30000
    rng = random.Random(1)
    counts = Counter(
        tuple(g[0] for g in bradley_terry_ranking(scores, temperature, rng)) for _ in range(n)
    )
    for order in itertools.permutations(range(3)):
        p = _plackett_luce_probability(order, scores, temperature)
        se = math.sqrt(p * (1 - p) / n)
        assert abs(counts[order] / n - p) < 4 * se, (order, counts[order] / n, p)


def test_temperature_extremes() -> None:
    rng = random.Random(2)
    scores = [0.0, 1.0, 2.0, 3.0]
    assert all(bradley_terry_ranking(scores, 1e-6, rng) == [[3], [2], [1], [0]] for _ in range(200))
    firsts = Counter(bradley_terry_ranking(scores, 1e6, rng)[0][0] for _ in range(8000))
    assert all(1700 < firsts[i] < 2300 for i in range(4)), firsts  # ~uniform at huge T


def test_bad_temperature_and_scores() -> None:
    with pytest.raises(ValueError, match="temperature"):
        bradley_terry_ranking([1.0, 2.0], -1.0, random.Random(0))
    with pytest.raises(ValueError, match="NaN"):
        bradley_terry_ranking([1.0, float("nan")], 1.0, random.Random(0))


def test_rm_preference_scores_like_the_saved_reward_model(tmp_path) -> None:
    from training.ml.reward.evaluate import score_texts
    from training.ml.reward.model import load_reward_model, save_reward_model

    model, tokenizer = load_reward_model("tiny:3", device="cpu", dtype="float32")
    model.reward_offset = 0.75
    folder = save_reward_model(model, tokenizer, tmp_path / "gold-rm")
    responses = ["Sure, here it is.", "No.", "A much longer and more detailed reply."]
    expected = score_texts(model, tokenizer, [("Say hi", r) for r in responses]).tolist()

    scores = make_preference(f"rm:{folder}", device="cpu", dtype="float32")("Say hi", responses)

    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == 3  # a real model, not a constant


def test_rm_preference_refuses_a_folder_that_is_not_a_reward_model(tmp_path) -> None:
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(PreferenceError, match="not a reward model folder"):
        make_preference(f"rm:{tmp_path}")
