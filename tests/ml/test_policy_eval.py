"""The policy gate's figures (training.ml.policy_eval) against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from training.ml.policy_eval import mean_and_se, policy_comparison, reference_logprob_sums
from training.ml.sampling import GenerationSettings, Sample, sample_responses


def _sample(logprobs: list[float]) -> Sample:
    return Sample("x", [1] * len(logprobs), logprobs, True, 0)


def test_the_comparison_is_paired_by_prompt_and_the_kl_is_per_response():
    new_scores = [[1.0, 3.0], [0.0, 0.0]]  # prompt means 2.0 and 0.0
    old_scores = [[1.0, 1.0], [1.0, -1.0]]  # prompt means 1.0 and 0.0
    samples = [[_sample([-1.0, -1.0]), _sample([-0.5])], [_sample([-2.0]), _sample([-3.0])]]
    reference = [[-3.0, -0.5], [-2.5, -3.0]]  # KLs 1.0, 0.0, 0.5, 0.0
    result = policy_comparison(new_scores, old_scores, samples, reference)
    assert result["gate/new_score"] == 1.0 and result["gate/baseline_score"] == 0.5
    assert result["gate/score_gain"] == 0.5  # gains 1.0 and 0.0
    assert result["gate/score_gain_se"] == pytest.approx(math.sqrt(0.5 / 2))
    assert result["gate/kl_to_ref"] == pytest.approx(0.375)
    assert (result["gate/eval_prompts"], result["gate/eval_responses"]) == (2, 4)


def test_mean_and_se_of_few_values():
    assert mean_and_se([2.0]) == (2.0, 0.0)
    assert all(math.isnan(v) for v in mean_and_se([]))
    assert mean_and_se([1.0, 3.0]) == (2.0, 1.0)


def test_a_policy_against_itself_as_reference_has_zero_kl(tiny_lm):
    """The reference log-probs recomputed by a full forward equal the ones the sampler
    recorded token by token with the KV cache: KL 0 for the model against itself."""
    model, tokenizer = tiny_lm
    prompts = ["Hi", "Tell me about rain."]
    samples = sample_responses(
        model, tokenizer, prompts, k=2, settings=GenerationSettings(max_new_tokens=8, seed=1)
    )
    sums = reference_logprob_sums(model, tokenizer, prompts, samples)
    for row, refs in zip(samples, sums, strict=True):
        for sample, ref in zip(row, refs, strict=True):
            assert ref == pytest.approx(sum(sample.logprobs), abs=1e-3)
