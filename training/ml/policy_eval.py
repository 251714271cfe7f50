"""A trained policy against the policy it replaces, on held-out prompts: the figures of the
promotion gate's policy check (plain torch; the services load the models and decide).

Both policies sample the same prompts with the same per-response seeds at temperature 1
and top-p 1 (the distribution the policy stage optimises); the new reward model scores
both sets of texts; the KL of the new policy to the frozen reference is estimated on its
own samples as the mean over responses of ``sum_t log pi(y_t) - log pi_ref(y_t)`` (an
unbiased estimate of the sequence KL, Schulman's k1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from formats.prompts import PromptInput
from training.ml.chat import encode_prompt
from training.ml.sampling import Sample


@torch.inference_mode()
def reference_logprob_sums(
    reference: nn.Module,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    samples: Sequence[Sequence[Sample]],
    *,
    max_prompt_tokens: int = 1024,
) -> list[list[float]]:
    """``result[i][j] = sum_t log pi_ref(y_t | x, y_<t)`` of response ``samples[i][j]`` to
    ``prompts[i]``, tokenised as it was sampled (its ``token_ids``)."""
    device = next(reference.parameters()).device
    sums: list[list[float]] = []
    for prompt, row in zip(prompts, samples, strict=True):
        prompt_ids = encode_prompt(tokenizer, prompt, max_prompt_tokens)
        sums.append([])
        for sample in row:
            ids = torch.tensor([prompt_ids + sample.token_ids], device=device)  # (1, P + R)
            logits = reference(ids).logits[0, len(prompt_ids) - 1 : -1].float()  # (R, V)
            picked = ids[0, len(prompt_ids) :, None]  # (R, 1)
            sums[-1].append(float(logits.log_softmax(-1).gather(-1, picked).sum()))
    return sums


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """The mean and its standard error (0 for fewer than two values)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


def policy_comparison(
    new_scores: Sequence[Sequence[float]],
    baseline_scores: Sequence[Sequence[float]],
    new_samples: Sequence[Sequence[Sample]],
    reference_sums: Sequence[Sequence[float]],
) -> dict[str, float | int]:
    """The gate's figures from per-prompt scores (``[prompt][sample]``) of both policies
    and the new policy's samples with their reference log-prob sums. The score gain is
    paired by prompt (a prompt's samples averaged first), so its standard error is over
    prompts."""
    per_prompt_new = [sum(row) / len(row) for row in new_scores if row]
    per_prompt_old = [sum(row) / len(row) for row in baseline_scores if row]
    gains = [
        sum(new) / len(new) - sum(old) / len(old)
        for new, old in zip(new_scores, baseline_scores, strict=True)
        if new and old
    ]
    kls = [
        sum(sample.logprobs) - ref
        for row, refs in zip(new_samples, reference_sums, strict=True)
        for sample, ref in zip(row, refs, strict=True)
    ]
    gain, gain_se = mean_and_se(gains)
    kl, kl_se = mean_and_se(kls)
    return {
        "gate/new_score": mean_and_se(per_prompt_new)[0],
        "gate/baseline_score": mean_and_se(per_prompt_old)[0],
        "gate/score_gain": gain,
        "gate/score_gain_se": gain_se,
        "gate/kl_to_ref": kl,
        "gate/kl_to_ref_se": kl_se,
        "gate/eval_prompts": len(gains),
        "gate/eval_responses": len(kls),
    }
