"""The eval run of a round's policy stage: the figures of the promotion gate's policy check
(`training.services.gate`), whatever recipe trained the policy.

The round's new policy and the policy that sampled the round answer the project's eval
prompts (split "eval", never trained on), with the same seeds; the round's new RM scores
both; the new policy's KL to the frozen reference is estimated on its samples
(`training.ml.policy_eval`). One model is loaded at a time.
"""

from typing import Any

from labeling.models import Prompt
from training.models import TrainingRun
from training.services import progress
from training.services.registry import reference_policy
from training.services.run_bodies.common import (
    device_and_dtype,
    required,
    round_of,
    stable_seed,
)
from training.services.runs import RunCancelled, RunReporter

EVAL_PROMPTS = 32  # the first eval prompts of the project, by id
SAMPLES_PER_PROMPT = 2


def eval_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Sample the new and the sampling policy on held-out prompts, score both under the
    new RM, and estimate the new policy's KL to the reference. A project without eval
    prompts gets no figures (`gate/eval_prompts` 0), and the gate's check cannot pass."""
    from training.ml.devices import release_memory
    from training.ml.loading import load_causal_lm
    from training.ml.policy_eval import policy_comparison, reference_logprob_sums
    from training.ml.reward.evaluate import score_texts
    from training.ml.reward.model import load_reward_model
    from training.ml.sampling import GenerationSettings, SamplingStopped, sample_responses

    round_ = round_of(run, "project", "sampling_policy", "reward_model", "policy")
    project = round_.project
    new = required(round_.policy, "a new policy")
    baseline = required(round_.sampling_policy, "a sampling policy")
    rm_version = required(round_.reward_model, "a reward model")
    rows = list(
        Prompt.objects.filter(project=project, split=Prompt.Split.EVAL).order_by("id")[
            :EVAL_PROMPTS
        ]
    )
    if not rows:
        return {"gate/eval_prompts": 0}
    prompts = [p.as_input for p in rows]
    seeds = [stable_seed(project.pk, round_.number, "gate", p.pk) for p in rows]
    settings = GenerationSettings(max_new_tokens=project.max_new_tokens, temperature=1.0)
    device, dtype = device_and_dtype()
    total = 2 * len(rows) * SAMPLES_PER_PROMPT
    reporter.progress(0, total)

    def sample(artifact: str, done_before: int) -> tuple[list, Any]:
        reporter.phase(progress.LOADING)
        model, tokenizer = load_causal_lm(artifact, device=device, dtype=dtype)
        budget = total * settings.max_new_tokens
        base = done_before * settings.max_new_tokens
        try:
            samples = sample_responses(
                model,
                tokenizer,
                prompts,
                k=SAMPLES_PER_PROMPT,
                settings=settings,
                seeds=seeds,
                on_progress=lambda done, _total: reporter.progress(done_before + done, total),
                on_tokens=lambda used, _budget: reporter.phase(
                    progress.SAMPLING, base + used, budget, unit="tokens"
                ),
                should_stop=reporter.should_stop,
            )
        except SamplingStopped:
            raise RunCancelled() from None
        del model
        release_memory()
        return samples, tokenizer

    new_samples, tokenizer = sample(new.artifact, 0)
    old_samples, _ = sample(baseline.artifact, total // 2)
    reporter.phase(progress.SCORING, step="KL to the reference and RM scores")
    reference, _ = load_causal_lm(
        reference_policy(project=project).artifact, device=device, dtype=dtype
    )
    reference_sums = reference_logprob_sums(
        reference, tokenizer, prompts, new_samples, max_prompt_tokens=settings.max_prompt_tokens
    )
    del reference
    release_memory()
    reward_model, rm_tokenizer = load_reward_model(rm_version.artifact, device=device, dtype=dtype)

    def scores(samples: list) -> list[list[float]]:
        pairs = [
            (prompt, s.text) for prompt, row in zip(prompts, samples, strict=True) for s in row
        ]
        flat = score_texts(reward_model, rm_tokenizer, pairs).tolist()
        return [flat[i : i + SAMPLES_PER_PROMPT] for i in range(0, len(flat), SAMPLES_PER_PROMPT)]

    new_scores, old_scores = scores(new_samples), scores(old_samples)
    result = policy_comparison(new_scores, old_scores, new_samples, reference_sums)
    reporter.progress(total, total)
    return {
        **result,
        "gate/policy": new.label,
        "gate/baseline": baseline.label,
        "gate/reward_model": rm_version.label,
    }
