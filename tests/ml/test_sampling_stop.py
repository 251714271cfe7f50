"""`sample_responses(should_stop=...)`: a cancel reaches the decoding loop within one step."""

from __future__ import annotations

import pytest

from training.ml.sampling import GenerationSettings, SamplingStopped, sample_responses

LONG = GenerationSettings(max_new_tokens=40, temperature=1.0, seed=3)


def _count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_sampling_stops_within_one_decoding_step_of_should_stop(tiny_lm):
    model, tokenizer = tiny_lm
    asked = []

    def should_stop() -> bool:
        asked.append(len(forwards))
        return len(asked) > 3  # True when asked before the 4th decoding step

    forwards, handle = _count_forwards(model)
    try:
        with pytest.raises(SamplingStopped):
            sample_responses(
                model, tokenizer, ["Hi", "Tell me"], k=2, settings=LONG, should_stop=should_stop
            )
    finally:
        handle.remove()
    # Asked before every step: the prompt's forward, then one forward per step taken.
    assert asked == [1, 2, 3, 4]
    assert len(forwards) == 4  # three steps decoded, none after the stop (40 were allowed)


def test_a_should_stop_that_never_fires_changes_nothing(tiny_lm):
    model, tokenizer = tiny_lm
    plain = sample_responses(model, tokenizer, ["Hi", "Tell me"], k=2, settings=LONG)
    asked = []
    watched = sample_responses(
        model,
        tokenizer,
        ["Hi", "Tell me"],
        k=2,
        settings=LONG,
        should_stop=lambda: asked.append(1) is not None,  # always False
    )
    assert [[s.token_ids for s in g] for g in watched] == [[s.token_ids for s in g] for g in plain]
    assert len(asked) >= max(len(s.token_ids) for g in plain for s in g)
