"""A held-out curve recorded while a GRPO-family trainer trains: the caller's evaluation at the start, every
``eval_steps`` optimizer steps (or every ``eval_completions`` generated completions) and at the end, against optimizer steps, completions generated and training wall-clock.

:class:`~trl_ext.GoldRewardCallback` measures one fixed thing (proxy and gold rewards, KL) and logs it through the
Trainer; :class:`CurveRecorder` records whatever ``evaluate(model, step)`` returns (greedy accuracy, accuracy by
level, ...) for a script that writes its own report, which is what the benchmarks need. Both leave training alone
except for the time they take, which the recorder keeps out of ``wall_s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from transformers import TrainerCallback

from .dapo.step import generated_completions


def completions_generated(trainer, global_step: int) -> int:
    """Completions a GRPO-family trainer has generated (on all processes) after ``global_step`` optimizer steps.

    With DAPO's dynamic sampling every round counts, refills included (its ``dynamic_sampling_totals``). Otherwise
    TRL 1.16's buffering: a generation batch of ``generation_batch_size`` completions (all processes) at the first of
    every ``steps_per_generation * num_iterations`` micro-steps, ``gradient_accumulation_steps`` micro-steps per
    optimizer step.
    """
    args = trainer.args
    if getattr(args, "dynamic_sampling", False):
        return generated_completions(trainer.dynamic_sampling_totals, trainer.num_generations)
    micro_steps = global_step * args.gradient_accumulation_steps
    return math.ceil(micro_steps / (args.steps_per_generation * args.num_iterations)) * args.generation_batch_size


class CurveRecorder(TrainerCallback):
    """Calls ``evaluate(model, step) -> dict`` at the start (step 0), every ``eval_steps`` optimizer steps (or, with
    ``eval_completions``, at the first step end past each multiple of that many generated completions: methods that
    generate more per step, such as dynamic sampling, are then evaluated at the same costs as the others) and at the
    last step (``max_steps``, or wherever a callback stopped training), and keeps every logged training step.

    ``curve``: one point per evaluation, ``{"step", "generated", "wall_s", **evaluate(...)}``; ``generated`` is
    :func:`completions_generated`, ``wall_s`` the training wall-clock since the first step began with evaluation time
    left out (0 at the start). ``eval_s``: the seconds spent evaluating after the start. ``logs``: per logged step
    (a log with a ``loss``), ``{"step", **extra_logs(), **the log's numbers}``; ``extra_logs`` adds what the caller
    counts itself, e.g. a reward function's own tallies since the last log.
    """

    def __init__(self, trainer, evaluate: Callable[..., dict], eval_steps: int | None = None, *,
                 eval_completions: int | None = None, extra_logs: Callable[[], dict] | None = None):
        if (eval_steps is None) == (eval_completions is None):
            raise ValueError("Give exactly one of eval_steps (optimizer steps) and eval_completions (generated "
                             f"completions) between evaluations; got eval_steps={eval_steps!r}, "
                             f"eval_completions={eval_completions!r}.")
        for name, value in (("eval_steps", eval_steps), ("eval_completions", eval_completions)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value!r} must be an integer >= 1.")
        self.trainer, self.evaluate, self.extra_logs = trainer, evaluate, extra_logs
        self.eval_steps, self.eval_completions = eval_steps, eval_completions
        self.curve: list[dict] = []
        self.logs: list[dict] = []
        self.eval_s = 0.0
        self.start: float | None = None

    def record(self, step: int) -> None:
        t0 = time.perf_counter()
        self.curve.append({
            "step": step, "generated": completions_generated(self.trainer, step),
            "wall_s": (t0 - self.start - self.eval_s) if self.start is not None else 0.0,
            **self.evaluate(self.trainer.model, step),
        })
        self.eval_s += time.perf_counter() - t0

    def on_train_begin(self, args, state, control, **kwargs):
        self.record(state.global_step)
        self.start, self.eval_s = time.perf_counter(), 0.0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:
            extra = self.extra_logs() if self.extra_logs is not None else {}
            self.logs.append({"step": state.global_step, **extra,
                              **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.eval_steps is not None:
            due = step % self.eval_steps == 0
        else:  # the start is point 0, so the next point is due at len(curve) * eval_completions
            due = completions_generated(self.trainer, step) >= len(self.curve) * self.eval_completions
        if due or step >= state.max_steps or control.should_training_stop:
            self.record(step)

    def on_train_end(self, args, state, control, **kwargs):
        # a callback after this one may have stopped training once this one's on_step_end had run
        if self.curve[-1]["step"] != state.global_step:
            self.record(state.global_step)
