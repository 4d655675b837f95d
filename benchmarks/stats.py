"""The statistics the benchmarks report over seeds, in one place so every table means the same thing by "mean +- sd".

* :func:`mean_sd`: the mean and the sample standard deviation (n - 1); no sd from a single seed (None, not 0).
* :func:`spread`: the same with min, max and n, as a dict for the results files.
* :func:`mean_if_all`: the mean of a per-seed quantity that may be missing (a target never reached): reported only
  when every seed has it, with the mean over the seeds that do beside it.
* :func:`first_reaching`: where a curve first reaches a target, its shared start excluded.
* :func:`logged`: what a run's training log recorded for one metric.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample sd); sd is None for fewer than two values, both are None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def spread(values: Sequence[float]) -> dict:
    """``{"mean", "sd", "min", "max", "n"}`` of :func:`mean_sd`; min and max are None for no values."""
    mean, sd = mean_sd(values)
    return {"mean": mean, "sd": sd, "min": min(values, default=None), "max": max(values, default=None),
            "n": len(values)}


def mean_if_all(values: Sequence[float | None]) -> dict:
    """``{"mean", "mean_over_reached"}`` of per-seed values where None means "not reached": an unreached seed is not a
    number to average, so ``mean`` is None unless every seed has a value; ``mean_over_reached`` uses those that do."""
    reached = [v for v in values if v is not None]
    over_reached = statistics.fmean(reached) if reached else None
    return {"mean": over_reached if reached and len(reached) == len(values) else None,
            "mean_over_reached": over_reached}


def first_reaching(points: Sequence[tuple[float, float]], target: float) -> int | None:
    """Index of the first ``(x, y)`` point with ``x > 0`` and ``y >= target`` (to 1e-12); None if none does.

    Curves start at the shared starting model (``x == 0``); reaching the target there is the start's doing, not the
    method's, so that point never counts."""
    for i, (x, y) in enumerate(points):
        if x > 0 and y >= target - 1e-12:
            return i
    return None


def logged(run: dict, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every entry of ``run["logs"]`` (one per logged optimizer step) that has ``key``."""
    return [(h["step"], h[key]) for h in run["logs"] if key in h]
