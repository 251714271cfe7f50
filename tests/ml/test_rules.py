"""Rule-based reward terms: parsing, scoring and clear errors."""

import json

import pytest

from training.ml.rules import LengthRule, RegexRule, parse_rule, parse_rules, rule_rewards


def test_regex_rule_scores_on_match_and_keeps_colons_in_pattern() -> None:
    rule = parse_rule(r"regex:https?://\S+:-2.5")
    assert rule == RegexRule(r"https?://\S+", -2.5)
    assert rule_rewards(["see http://x.org", "no link"], [3, 2], [rule]) == [-2.5, 0.0]


@pytest.mark.parametrize(
    ("spec", "counts", "expected"),
    [
        ("length:<=4:-1.0", [3, 4, 5], [-1.0, -1.0, 0.0]),
        ("length:<4:-1.0", [3, 4, 5], [-1.0, 0.0, 0.0]),
        ("length:>=4:2", [3, 4, 5], [0.0, 2.0, 2.0]),
        ("length:>4:2", [3, 4, 5], [0.0, 0.0, 2.0]),
        ("length:==4:1", [3, 4, 5], [0.0, 1.0, 0.0]),
        ("length:4-5:0.5", [3, 4, 5], [0.0, 0.5, 0.5]),
        ("length:~4:-0.25", [2, 4, 7], [-0.5, 0.0, -0.75]),
    ],
)
def test_length_rules(spec: str, counts: list[int], expected: list[float]) -> None:
    assert rule_rewards(["x"] * len(counts), counts, [parse_rule(spec)]) == expected


def test_rules_sum_and_json_list() -> None:
    rules_json = json.dumps(
        [
            {"type": "regex", "pattern": "(?i)sorry", "weight": -1},
            {"type": "length", "max_tokens": 10, "weight": 0.5},
            {"type": "length", "target_tokens": 20, "weight": -0.1},
        ]
    )
    rules = parse_rules([rules_json, "regex:thanks:1.0"])
    assert rules[1] == LengthRule(0.5, max_tokens=10)
    scores = rule_rewards(["Sorry, thanks", "fine"], [10, 25], rules)
    assert scores == pytest.approx([-1 + 0.5 - 1.0 + 1.0, -0.5])
    assert rule_rewards(["a"], [1], []) == [0.0]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("regex:([a-z:1.0", r"regex:\(\[a-z.*invalid regular expression"),
        ("regex:abc:heavy", "weight 'heavy' is not a number"),
        ("regex:abc:nan", "finite"),
        ("length:about 5:1", "length condition"),
        ("length:9-3:1", "empty range"),
        ("sentiment:happy:1", "unknown kind 'sentiment'"),
        ("regex:1.0", "KIND:ARGUMENT:WEIGHT"),
        ('[{"type": "regex", "pattern": "(", "weight": 1}]', "invalid regular expression"),
        ('[{"type": "length", "weight": 1}]', "item 0: a length rule needs"),
        ('[{"type": "length", "max_tokens": "5", "weight": 1}]', "'max_tokens' must be"),
        ('[{"type": "regex", "pattern": "a"}]', "'weight' must be"),
        ('{"type": "regex", "weight": 1}', "item 0: 'pattern' must be a string"),
        ('"regex"', "KIND:ARGUMENT:WEIGHT"),
        ("[1, 2", "rules JSON"),
    ],
)
def test_bad_rules_raise_clear_value_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_rules([spec])


def test_rule_rewards_checks_lengths() -> None:
    with pytest.raises(ValueError, match="2 texts but 1 token counts"):
        rule_rewards(["a", "b"], [1], [])
