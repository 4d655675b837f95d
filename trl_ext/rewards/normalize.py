"""Running normalisation of rewards: a mean and std over every value seen so far, then optional clipping."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class RunningNorm:
    """Running mean/std over every value seen so far (Welford, float64), then optional clipping to ``[-clip, clip]``.

    A batch first updates the statistics and is then normalised with them, so the first batch is normalised by its
    own mean/std. ``None`` values are skipped and stay ``None``. Statistics are per process: under multi-process
    training each rank normalises with what it has seen (TRL scores each rank's completions locally).
    """

    normalize: bool = False
    clip: float | None = None
    eps: float = 1e-8
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0

    def __call__(self, values: list[float | None]) -> list[float | None]:
        if self.normalize:
            for x in values:
                if x is not None:
                    self.count += 1
                    delta = x - self.mean
                    self.mean += delta / self.count
                    self.m2 += delta * (x - self.mean)
            values = [None if x is None else (x - self.mean) / max(self.std, self.eps) for x in values]
        if self.clip is not None:
            values = [None if x is None else min(max(x, -self.clip), self.clip) for x in values]
        return values

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
