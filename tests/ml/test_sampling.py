from __future__ import annotations

import math
from contextlib import contextmanager

import pytest
import torch

from training.ml.chat import encode_prompt
from training.ml.sampling import (
    GenerationSettings,
    bench_sampling,
    inverse_cdf_sample,
    left_pad,
    position_ids_from_attention_mask,
    sample_responses,
    top_p_filter,
)

PROMPTS: list[str | list[dict]] = [
    "Hi",
    "Please write a long and careful answer about the water cycle and rain.",
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"}],
]
GREEDY = GenerationSettings(max_new_tokens=12, temperature=0.0)


def test_left_pad_and_positions():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert position_ids_from_attention_mask(mask).tolist() == [[0, 1, 2], [0, 0, 0]]


def test_batched_left_padding_matches_each_prompt_alone(tiny_lm):
    model, tokenizer = tiny_lm
    together = sample_responses(model, tokenizer, PROMPTS, k=1, settings=GREEDY, batch_size=3)
    for prompt, group in zip(PROMPTS, together, strict=True):
        alone = sample_responses(model, tokenizer, [prompt], k=1, settings=GREEDY)
        assert group[0].token_ids == alone[0][0].token_ids
        assert group[0].logprobs == pytest.approx(alone[0][0].logprobs, abs=1e-4)


def test_logprobs_are_the_policy_logprobs_of_the_sampled_tokens(tiny_lm):
    model, tokenizer = tiny_lm
    settings = GenerationSettings(max_new_tokens=8, temperature=0.7, top_p=0.9, seed=4)
    sample = sample_responses(model, tokenizer, [PROMPTS[1]], k=1, settings=settings)[0][0]
    prompt = encode_prompt(tokenizer, PROMPTS[1], settings.max_prompt_tokens)
    ids = torch.tensor([prompt + sample.token_ids])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)  # (T-1, V)
    start = len(prompt) - 1  # logits at position t predict token t+1
    steps = torch.arange(len(sample.token_ids))
    expected = logp[start + steps, torch.tensor(sample.token_ids)]
    assert sample.logprobs == pytest.approx(expected.tolist(), abs=1e-4)


def test_same_seed_same_texts_other_seed_other_texts(tiny_lm):
    model, tokenizer = tiny_lm
    settings = GenerationSettings(max_new_tokens=10, temperature=1.0, seed=11)
    first = sample_responses(model, tokenizer, PROMPTS, k=2, settings=settings, batch_size=4)
    again = sample_responses(model, tokenizer, PROMPTS, k=2, settings=settings, batch_size=4)
    other = sample_responses(
        model, tokenizer, PROMPTS, k=2, settings=GenerationSettings(max_new_tokens=10, seed=12)
    )
    texts = [[s.text for s in g] for g in first]
    assert texts == [[s.text for s in g] for g in again]
    assert texts != [[s.text for s in g] for g in other]
    assert [s.seed for s in first[1]] == [13, 14]  # seed + prompt index * k + j
    assert first[0][0].text != first[0][1].text  # the K responses differ


@contextmanager
def logit_bias(model, bias: torch.Tensor):
    """Add ``bias`` (V,) to every next-token logit of ``model`` inside the block."""

    def hook(module, args, output):
        return output + bias.to(output)

    handle = model.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def peaked_bias(vocab: int, eos_id: int | None = None, eos_prob: float = 0.0) -> torch.Tensor:
    """A fixed random bias that makes the tiny model's flat distribution peaked.

    Comparing runs of different batch shapes needs this: float rounding differs between
    shapes, and on a flat 49k distribution that alone can move a draw to a neighbour.
    ``eos_id`` then gets probability ~``eos_prob`` at every step.
    """
    bias = torch.randn(vocab, generator=torch.Generator().manual_seed(0)) * 3.0
    if eos_id is not None:
        others = torch.cat([bias[:eos_id], bias[eos_id + 1 :]]).logsumexp(0)
        bias[eos_id] = others + math.log(eos_prob / (1 - eos_prob))
    return bias


def test_one_response_is_reproducible_from_its_recorded_seed(tiny_lm):
    model, tokenizer = tiny_lm
    settings = GenerationSettings(max_new_tokens=10, seed=100)
    with logit_bias(model, peaked_bias(len(tokenizer))):
        sample = sample_responses(model, tokenizer, PROMPTS, k=3, settings=settings)[2][1]
        alone = GenerationSettings(max_new_tokens=10, seed=sample.seed)
        again = sample_responses(model, tokenizer, [PROMPTS[2]], k=1, settings=alone)[0][0]
    assert len(set(sample.token_ids)) > 1
    assert (again.token_ids, again.text, again.seed) == (sample.token_ids, sample.text, sample.seed)
    assert again.logprobs == pytest.approx(sample.logprobs, abs=1e-4)  # batch shape: float noise


def test_eos_finishes_and_is_the_last_token(tiny_lm):
    model, tokenizer = tiny_lm
    force_eos = torch.zeros(len(tokenizer))
    force_eos[tokenizer.eos_token_id] = 1000.0
    with logit_bias(model, force_eos):
        groups = sample_responses(
            model, tokenizer, PROMPTS, k=2, settings=GenerationSettings(max_new_tokens=5, seed=0)
        )
    for sample in (s for g in groups for s in g):
        assert sample.finished and sample.token_ids == [tokenizer.eos_token_id]
        assert sample.text == "" and len(sample.logprobs) == 1


def test_rows_that_end_early_leave_the_batch_without_disturbing_the_others(tiny_lm):
    model, tokenizer = tiny_lm
    bias = peaked_bias(len(tokenizer), tokenizer.eos_token_id, eos_prob=0.15)
    settings = GenerationSettings(max_new_tokens=12, seed=3)
    with logit_bias(model, bias):
        batched = sample_responses(model, tokenizer, PROMPTS, k=4, settings=settings, batch_size=12)
        alone = [  # prompt i alone, with the seeds it had in the batch: 3 + i * k + j
            sample_responses(
                model, tokenizer, [p], k=4, batch_size=1,
                settings=GenerationSettings(max_new_tokens=12, seed=3 + i * 4),
            )[0]
            for i, p in enumerate(PROMPTS)
        ]  # fmt: skip
    lengths = {s.token_count for group in batched for s in group}
    assert len(lengths) > 2, "rows should end at different steps"
    assert any(s.finished for g in batched for s in g)
    assert any(not s.finished for g in batched for s in g)
    for group, solo in zip(batched, alone, strict=True):
        for sample, reference in zip(group, solo, strict=True):
            assert sample.token_ids == reference.token_ids
            assert sample.logprobs == pytest.approx(reference.logprobs, abs=1e-4)


def test_a_prompts_samples_share_its_prefill(tiny_lm):
    """K rows of one prompt forward it once; the first step's batch holds each distinct
    prompt once, and the samples equal those of rows prefilled one by one (the test above
    checks the same against batch_size=1)."""
    model, tokenizer = tiny_lm
    batches: list[int] = []
    hook = model.register_forward_pre_hook(
        lambda _module, _args, kwargs: batches.append(kwargs["input_ids"].shape[0]),
        with_kwargs=True,
    )
    settings = GenerationSettings(max_new_tokens=3, seed=5)
    try:
        shared = sample_responses(model, tokenizer, PROMPTS[:2], k=4, settings=settings)
    finally:
        hook.remove()
    assert batches[0] == 2 and batches[1] == 8  # prefill of 2 prompts, then 8 rows decode
    one_by_one = sample_responses(
        model, tokenizer, PROMPTS[:2], k=4, settings=settings, batch_size=1
    )
    assert [[s.token_ids for s in g] for g in shared] == [
        [s.token_ids for s in g] for g in one_by_one
    ]


def test_a_row_that_ends_gives_its_line_to_the_next_waiting_row(tiny_lm):
    """More rows than lines: as soon as a row ends, the next waiting one joins the batch
    (its prompt's prefill is the very next forward), instead of the batch shrinking until
    all its rows end; and the samples equal those decoded one row at a time."""
    model, tokenizer = tiny_lm
    prompts = [*PROMPTS, "Tell me a story.", "What is two plus two?", "Name a colour."]
    bias = peaked_bias(len(tokenizer), tokenizer.eos_token_id, eos_prob=0.15)
    settings = GenerationSettings(max_new_tokens=12, seed=7)
    forwards: list[tuple[str, int]] = []

    def record(_module, _args, kwargs):
        ids = kwargs["input_ids"]
        forwards.append(("decode" if ids.shape[1] == 1 else "prefill", ids.shape[0]))

    with logit_bias(model, bias):
        hook = model.register_forward_pre_hook(record, with_kwargs=True)
        try:
            pooled = sample_responses(
                model, tokenizer, prompts, k=1, settings=settings, batch_size=2
            )
        finally:
            hook.remove()
        one_by_one = sample_responses(
            model, tokenizer, prompts, k=1, settings=settings, batch_size=1
        )
    assert len({g[0].token_count for g in pooled}) > 2, "rows should end at different steps"
    last_prefill = max(i for i, (kind, _) in enumerate(forwards) if kind == "prefill")
    assert sum(n for kind, n in forwards if kind == "prefill") == len(prompts)  # each once
    for i, (kind, lines) in enumerate(forwards[:last_prefill]):
        if kind == "decode" and lines < 2:  # a row ended at this step: the next one joins
            assert forwards[i + 1][0] == "prefill", forwards
    for group, solo in zip(pooled, one_by_one, strict=True):
        assert group[0].token_ids == solo[0].token_ids
        assert group[0].logprobs == pytest.approx(solo[0].logprobs, abs=1e-4)


def test_without_eos_the_limit_leaves_it_unfinished(tiny_lm):
    model, tokenizer = tiny_lm
    force_hello = torch.zeros(len(tokenizer))
    force_hello[tokenizer.convert_tokens_to_ids("hello")] = 1000.0
    with logit_bias(model, force_hello):
        sample = sample_responses(
            model, tokenizer, ["Hi"], k=1, settings=GenerationSettings(max_new_tokens=4, seed=0)
        )[0][0]
    assert not sample.finished and sample.token_count == 4
    assert sample.text == "hellohellohellohello"


def test_progress_counts_responses(tiny_lm):
    model, tokenizer = tiny_lm
    calls: list[tuple[int, int]] = []
    sample_responses(
        model,
        tokenizer,
        PROMPTS,
        k=2,
        settings=GenerationSettings(max_new_tokens=2, seed=0),
        batch_size=4,
        on_progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(4, 6), (6, 6)]


def test_top_p_filter_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = torch.isfinite(top_p_filter(logits, 0.7))
    assert kept.tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)


@pytest.mark.parametrize("scale", [0.5, 4.0])  # flat rows fall back to the full sort
def test_partial_sort_nucleus_equals_the_full_sort(scale):
    logits = torch.randn(6, 5000, generator=torch.Generator().manual_seed(0)) * scale
    for top_p in (0.5, 0.9, 0.99):
        assert torch.equal(
            top_p_filter(logits, top_p, candidates=64), top_p_filter(logits, top_p, 5000)
        )


def test_inverse_cdf_sampling_follows_the_probabilities():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.15, 0.05]]).repeat(4000, 1)
    draws = inverse_cdf_sample(probs, [torch.Generator().manual_seed(i) for i in range(4000)])
    frequencies = torch.bincount(draws, minlength=5) / 4000
    assert frequencies[1] == 0  # a zero-probability token is never drawn
    assert frequencies.tolist() == pytest.approx([0.5, 0.0, 0.3, 0.15, 0.05], abs=0.03)
    same_seeds = [torch.Generator().manual_seed(i) for i in range(3)]
    assert torch.equal(inverse_cdf_sample(probs[:3], same_seeds), draws[:3])


def test_bench_sampling_reports_tokens_per_second(tiny_lm):
    model, tokenizer = tiny_lm
    report = bench_sampling(
        model,
        tokenizer,
        prompts=PROMPTS[:2],
        k=2,
        settings=GenerationSettings(max_new_tokens=4, seed=0),
    )
    assert report["responses"] == 4 and report["new_tokens"] > 0
    assert report["tokens_per_s"] == pytest.approx(report["new_tokens"] / report["seconds"])
