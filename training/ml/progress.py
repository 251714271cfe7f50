"""tqdm progress bars on stderr, driven by the trainers' callbacks.

Trainers never know who listens (nanoGPT/CleanRL style): they call
``on_progress(done, total)`` or ``on_metrics(step, values)``. These adapters turn the calls
into bars on stderr so stdout stays free for the final JSON metrics line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm


class CountProgress:
    """An ``on_progress(done, total)`` callback drawing one bar on stderr."""

    def __init__(self, desc: str, unit: str = "it") -> None:
        self.bar = tqdm(total=None, desc=desc, unit=unit, file=sys.stderr)  # clock starts now

    def __call__(self, done: int, total: int) -> None:
        self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> CountProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MetricsProgress:
    """An ``on_metrics(step, values)`` callback: a bar over steps, chosen values as postfix.

    The total comes from ``total`` or from a ``"total_steps"`` entry in ``values``.
    """

    def __init__(
        self, desc: str, total: int | None = None, keys: Sequence[str] | None = None
    ) -> None:
        self.desc = desc
        self.total = total
        self.keys = list(keys) if keys is not None else None
        self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)

    def __call__(self, step: int, values: dict[str, Any]) -> None:
        total = values.get("total_steps", self.total)
        if total is not None:
            self.bar.total = int(total)
        self.bar.set_postfix(self._postfix(values), refresh=False)
        self.bar.update(step - self.bar.n)

    def _postfix(self, values: dict[str, Any]) -> dict[str, str]:
        keys = self.keys if self.keys is not None else list(values)
        shown = {}
        for key in keys:
            value = values.get(key)
            if isinstance(value, float):
                shown[key.rsplit("/", 1)[-1]] = f"{value:.4g}"
        return shown

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> MetricsProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
