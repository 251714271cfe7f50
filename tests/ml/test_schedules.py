"""The one cosine schedule, checked against the plain formulas of its two callers."""

from __future__ import annotations

import itertools
import math

import pytest

from training.ml.schedules import cosine_with_warmup


def _cosine(progress: float, floor: float) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def test_sft_decay_keeps_the_last_step_above_the_floor() -> None:
    """SFT: 10 steps, 2 of warm-up, cosine over the remaining 8 (step 9 is 7/8 of the way)."""
    values = [cosine_with_warmup(s, warmup=2, decay_steps=10 - 2, floor=0.1) for s in range(10)]
    assert values[:2] == [0.5, 1.0]
    assert values[2] == 1.0
    assert values[-1] == _cosine(7 / 8, 0.1) and values[-1] > 0.1
    assert all(a >= b for a, b in itertools.pairwise(values[1:]))


def test_rm_decay_reaches_the_floor_at_the_last_step() -> None:
    """The reward model: 6 steps, no warm-up, cosine over 5 so step 5 is at the floor."""
    values = [cosine_with_warmup(s, warmup=0, decay_steps=6 - 0 - 1, floor=0.1) for s in range(6)]
    assert values == [_cosine(s / 5, 0.1) for s in range(6)]
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.1, abs=1e-15)


def test_a_one_step_decay_does_not_divide_by_zero() -> None:
    assert cosine_with_warmup(0, warmup=0, decay_steps=0, floor=0.1) == 1.0
    assert cosine_with_warmup(3, warmup=0, decay_steps=-1, floor=0.1) == _cosine(1.0, 0.1)
