"""Learning-rate schedules: multipliers of the peak lr (for `LambdaLR`)."""

from __future__ import annotations

import math


def cosine_with_warmup(step: int, *, warmup: int, decay_steps: int, floor: float) -> float:
    """The lr multiplier at 0-based ``step``: linear warm-up to 1 over ``warmup`` steps,
    then a cosine from 1 down to ``floor``, reached ``decay_steps`` steps after the warm-up
    (and kept after).

    The reward model decays over ``total - warmup - 1`` steps, so its last step runs at the
    floor; SFT over ``total - warmup``, so its last step keeps a little more than the floor.
    """
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, decay_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
