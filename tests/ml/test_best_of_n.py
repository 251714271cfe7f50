"""Best-of-N: the pick is the scorer's argmax, the seeds are per prompt, SFT learns the picks."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from tests.ml.test_distributed import max_weight_diff, result_line
from tests.ml.test_distributed import run as run_cli
from training.ml.best_of_n import best_of_n, pick_best, sample_and_pick, select_prompts
from training.ml.cli import main
from training.ml.configs import BestOfNConfig
from training.ml.data import Demonstration
from training.ml.loading import load_causal_lm
from training.ml.reward.evaluate import score_texts
from training.ml.reward.model import RewardModel
from training.ml.rules import LengthRule
from training.ml.sft import build_sft_example, evaluate_sft_loss

PROMPTS = [f"Say something about topic {i}." for i in range(8)]


class ScriptedScorer:
    """A reward_fn that records what it scored: a fixed pseudo-random number per text."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list]] = []

    def __call__(self, texts: list[str], prompts: list) -> list[float]:
        self.calls.append((list(texts), list(prompts)))
        return [self.score(text) for text in texts]

    @staticmethod
    def score(text: str) -> float:
        return float(sum((i + 1) * ord(c) for i, c in enumerate(text)) % 997)


def test_pick_best_is_the_first_argmax_and_never_nan() -> None:
    assert pick_best([0.5, 2.0, -1.0, 2.0]) == 1
    assert pick_best([math.nan, -3.0, -4.0]) == 1
    assert pick_best([7.0]) == 0
    with pytest.raises(ValueError, match="NaN"):
        pick_best([math.nan, math.nan])


def test_select_prompts_is_a_seeded_subset() -> None:
    picked = select_prompts(PROMPTS, 3, seed=1)
    assert len(picked) == 3 and len(set(picked)) == 3 and set(picked) <= set(PROMPTS)
    assert picked == select_prompts(PROMPTS, 3, seed=1) != select_prompts(PROMPTS, 3, seed=2)
    assert sorted(select_prompts(PROMPTS, None, seed=1)) == sorted(PROMPTS)
    assert sorted(select_prompts(PROMPTS, 100, seed=1)) == sorted(PROMPTS)


def test_the_kept_response_is_the_argmax_of_the_scorer(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    scorer = ScriptedScorer()
    config = BestOfNConfig(n=5, max_new_tokens=6)
    chosen = sample_and_pick(model, None, tokenizer, PROMPTS[:4], config, reward_fn=scorer)
    (texts, prompts), = scorer.calls  # fmt: skip
    assert prompts == [p for p in PROMPTS[:4] for _ in range(5)]
    for i, pick in enumerate(chosen):
        candidates = texts[i * 5 : (i + 1) * 5]
        assert pick.prompt == PROMPTS[i]
        assert pick.scores == [ScriptedScorer.score(t) for t in candidates]
        best = max(range(5), key=lambda j: (pick.scores[j], -j))
        assert (pick.index, pick.response, pick.score) == (best, candidates[best], max(pick.scores))
        assert pick.seed == config.seed * 1_000_003 + i * 5 + best
    assert len({tuple(p.scores) for p in chosen}) == 4  # different candidates per prompt


def test_a_prompts_candidates_do_not_depend_on_the_other_prompts(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    config = BestOfNConfig(n=3, max_new_tokens=6, sample_batch_size=1)
    together = sample_and_pick(model, None, tokenizer, PROMPTS[:3], config, reward_fn=len_score)
    alone = sample_and_pick(
        model, None, tokenizer, PROMPTS[1:3], config, first_position=1, reward_fn=len_score
    )
    assert together[1:] == alone


def len_score(texts: list[str], prompts: list) -> list[float]:
    return [float(len(t)) for t in texts]


def test_rm_and_rule_scores_add_up(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    torch.manual_seed(0)
    reward_model = RewardModel.from_causal_lm(model)
    rule = LengthRule(2.0, max_tokens=3)
    config = BestOfNConfig(n=3, max_new_tokens=5)
    chosen = sample_and_pick(model, reward_model, tokenizer, PROMPTS[:2], config, rules=[rule])
    for pick in chosen:
        rm = score_texts(reward_model, tokenizer, [(pick.prompt, pick.response)]).item()
        expected = rm + (2.0 if pick.token_count <= 3 else 0.0)
        assert pick.score == pytest.approx(expected, abs=1e-4)
        assert pick.score == max(pick.scores)


def test_best_of_n_fine_tunes_on_the_picks_and_raises_their_likelihood() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    start = copy.deepcopy(policy)
    scorer = ScriptedScorer()
    config = BestOfNConfig(
        n=4,
        num_prompts=6,
        max_new_tokens=6,
        epochs=4,
        batch_size=2,
        lr=1e-2,
        warmup_ratio=0.0,
        eval_fraction=0.0,
        seed=5,
    )
    seen: list[int] = []
    result = best_of_n(
        policy,
        None,
        tokenizer,
        PROMPTS,
        config,
        reward_fn=scorer,
        on_metrics=lambda step, _: seen.append(step),
    )
    assert result.status == "completed" and len(result.chosen) == 6
    assert [c.prompt for c in result.chosen] == select_prompts(PROMPTS, 6, seed=5)
    assert all(c.score == max(c.scores) for c in result.chosen)
    assert result.sft["sft/train_examples"] == 6 and seen == list(range(1, 13))
    assert result.metrics["bon/score_best_mean"] >= result.metrics["bon/score_mean"]
    assert result.metrics["sft/steps"] == 12
    examples = [
        build_sft_example(tokenizer, demo, config.max_length)
        for demo in (Demonstration(c.prompt, c.response) for c in result.chosen)
    ]
    before = evaluate_sft_loss(start, examples, tokenizer.pad_token_id)
    after = evaluate_sft_loss(policy, examples, tokenizer.pad_token_id)
    assert after < before - 1.0, (before, after)  # nats per token on the kept responses


def test_a_stop_while_sampling_skips_sft_and_bad_inputs_fail_clearly(tiny_lm) -> None:
    policy, tokenizer = load_causal_lm("tiny")
    before = [p.detach().clone() for p in policy.parameters()]
    config = BestOfNConfig(n=2, max_new_tokens=4)
    result = best_of_n(
        policy, None, tokenizer, PROMPTS, config, reward_fn=len_score, should_stop=lambda: True
    )
    assert result.status == "cancelled" and result.sft == {}
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters(), strict=True))
    with pytest.raises(ValueError, match="reward model, a reward_fn or rules"):
        best_of_n(policy, None, tokenizer, PROMPTS, config)
    with pytest.raises(ValueError, match="at least one prompt"):
        best_of_n(policy, None, tokenizer, [], config, reward_fn=len_score)
    with pytest.raises(ValueError, match="n must be >= 1"):
        BestOfNConfig(n=0).validate()


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Tell me about {i}."}) + "\n" for i in range(6)))
    return path


def bon_args(prompts: Path, out: Path) -> list[str]:
    return [
        "best-of-n", "--model", "tiny", "--reward-model", "tiny", "--data", str(prompts),
        "--out", str(out), "--n", "3", "--num-prompts", "4", "--max-new-tokens", "4",
        "--batch-size", "2", "--lr", "1e-3", "--epochs", "1", "--eval-fraction", "0",
        "--rule", "length:<=3:-1", "--sample-batch-size", "1", "--device", "cpu",
        "--seed", "3",
    ]  # fmt: skip


def test_best_of_n_command_writes_the_policy_and_the_picks(prompts_file, tmp_path, capsys):
    out = tmp_path / "policy"
    assert main(bon_args(prompts_file, out)) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["out"] == str(out)
    assert result["bon/prompts"] == 4 and result["bon/n"] == 3 and result["sft/steps"] == 2
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    rows = [json.loads(line) for line in (out / "best_of_n_samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert all(len(r["scores"]) == 3 and r["score"] == max(r["scores"]) for r in rows)
    assert json.loads((out / "best_of_n_metrics.json").read_text())["config"]["n"] == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --reward-model, --rule, or both"),
        (["--rule", "length:<=3:-1", "--n", "0"], "n must be >= 1"),
        (["--rule", "length:<=3:-1", "--temperature", "0"], "temperature must be > 0"),
        (["--rule", "nonsense"], "--rule: rule 'nonsense'"),
    ],
)
def test_bad_flags_stop_with_a_clear_message(prompts_file, tmp_path, capsys, extra, message):
    out = tmp_path / "policy"
    argv = ["best-of-n", "--model", "tiny", "--data", str(prompts_file), "--out", str(out)]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_best_of_n_on_two_processes_matches_one(prompts_file: Path, tmp_path: Path) -> None:
    """Each of 2 gloo ranks samples 2 of the 4 prompts (one row per forward: the same
    samples), the picks are gathered in prompt order, SFT shards its batches: the same
    picks and, up to float reduction order, the same weights."""
    one = result_line(run_cli(bon_args(prompts_file, tmp_path / "one")))
    two = result_line(run_cli(bon_args(prompts_file, tmp_path / "two"), processes=2))
    assert (one["processes"], two["processes"]) == (1, 2)
    picks = [(tmp_path / name / "best_of_n_samples.jsonl").read_text() for name in ("one", "two")]
    assert picks[0] == picks[1]
    assert two["sft/loss"] == pytest.approx(one["sft/loss"], abs=1e-5)
    assert max_weight_diff(tmp_path / "one", tmp_path / "two") < 1e-5
