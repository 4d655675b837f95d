"""The embedded task's settings (:class:`EmbeddedTaskConfig`): which toy task, its problems and held-out prompts, its
demonstrators' slips and its labeller. ``PipelineConfig.embedded`` holds one; a YAML file or the command line writes
its keys flat, beside the run's (``embedded_task: graded``, ``--task_high 19``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from ..toy import AdditionTask, ArithmeticTask, GradedAdditionTask, Labeller, oracle_correct, sum_correct
from ..toy.arithmetic import DEFAULT_ERROR_RATES, DEFAULT_LEVELS, LEVELS, arithmetic_correct, arithmetic_utility
from ..toy.task import ERROR_KINDS

EMBEDDED_TASKS = ("addition", "graded", "arithmetic")


@dataclass(frozen=True)
class EmbeddedTaskConfig:
    """Settings of the embedded task, used when no ``sft_dataset_name`` / ``prompt_dataset_name`` is given.

    Frozen: :attr:`task` and :attr:`labeller` are built from these fields once, when the config is made (their own
    checks are the validation), and every stage uses those objects.
    """

    embedded_task: str = field(
        default="addition",
        metadata={
            "help": "The embedded task: 'addition' (a+b), 'graded' (sums of task_operands[i] numbers "
            "in [task_low, task_high], one difficulty level each; demonstrators slip at task_error_rates[i]; "
            "checker trl_ext.toy.sum_correct; see trl_ext.toy.graded) or 'arithmetic' (questions for a real chat "
            "model at the arithmetic_levels; checker trl_ext.toy.arithmetic_correct; see trl_ext.toy.arithmetic)."
        },
    )
    task_low: int = field(default=10, metadata={"help": "Smallest operand of the addition task."})
    task_high: int = field(default=49, metadata={"help": "Largest operand of the addition task."})
    task_operands: list[int] = field(
        default_factory=lambda: [2, 3, 4], metadata={"help": "graded task: the number of operands of each level."}
    )
    task_error_rates: list[float] = field(
        default_factory=lambda: [0.1, 0.3, 0.5],
        metadata={"help": "graded task: the demonstrators' slip rate on each level (replaces demo_error_rate)."},
    )
    arithmetic_levels: list[str] = field(
        default_factory=lambda: list(DEFAULT_LEVELS),
        metadata={"help": f"arithmetic task: its difficulty levels, from {list(LEVELS)}."},
    )
    arithmetic_error_rates: list[float] = field(
        default_factory=lambda: list(DEFAULT_ERROR_RATES),
        metadata={"help": "arithmetic task: the demonstrators' slip rate on each level (one per level)."},
    )
    arithmetic_system_prompt: str = field(
        default="",
        metadata={"help": "arithmetic task: the system message of every prompt; '' (default) sends none, and a chat "
                  "template may add its own (SmolLM2's costs ~10 tokens more than 'You are a helpful assistant.', "
                  "and the base model answers better with it: benchmarks/results/task_levels.md)."},
    )
    eval_size: int = field(
        default=200,
        metadata={"help": "Held-out prompts used only for evaluation: the embedded task's (the arithmetic task's, "
                  "split evenly over its levels), or the last eval_size rows of prompt_dataset_name."},
    )
    demo_error_rate: float = field(default=0.5, metadata={"help": "Share of SFT demonstrations that are wrong."})
    demo_error_kinds: list[str] = field(
        default_factory=lambda: ["chatter"], metadata={"help": f"Demonstrators' slips, from {list(ERROR_KINDS)}."}
    )
    labeller_noise: float = field(default=0.1, metadata={"help": "Chance the labeller misjudges one answer."})

    def __post_init__(self):
        if self.embedded_task not in EMBEDDED_TASKS:
            raise ValueError(f"embedded_task={self.embedded_task!r}: choose one of {list(EMBEDDED_TASKS)}.")
        if self.embedded_task == "arithmetic":  # named here by the field the user sets, before ArithmeticTask's check
            unknown = [name for name in self.arithmetic_levels if name not in LEVELS]
            if unknown or not self.arithmetic_levels:
                raise ValueError(f"arithmetic_levels={self.arithmetic_levels}: each must be one of {list(LEVELS)}.")
        _ = self.task, self.labeller  # built now and kept for the stages: a bad value fails when the config is made

    @functools.cached_property
    def task(self) -> AdditionTask | GradedAdditionTask | ArithmeticTask:
        if self.embedded_task == "arithmetic":
            return ArithmeticTask(
                levels=tuple(self.arithmetic_levels), eval_per_level=self.eval_size // len(self.arithmetic_levels),
                demo_error_rates=tuple(self.arithmetic_error_rates),
                system_prompt=self.arithmetic_system_prompt or None,
            )
        if self.embedded_task == "graded":
            return GradedAdditionTask(
                operands=tuple(self.task_operands), low=self.task_low, high=self.task_high, eval_size=self.eval_size,
                demo_error_rates=tuple(self.task_error_rates), demo_error_kinds=tuple(self.demo_error_kinds),
            )
        return AdditionTask(
            low=self.task_low, high=self.task_high, eval_size=self.eval_size, demo_error_rate=self.demo_error_rate,
            demo_error_kinds=tuple(self.demo_error_kinds),
        )

    @functools.cached_property
    def labeller(self) -> Labeller:
        """The task's labeller: the toy's own grades, or the arithmetic task's utility."""
        utility = arithmetic_utility if self.embedded_task == "arithmetic" else None
        return Labeller(self.labeller_noise, utility=utility)

    @property
    def oracle(self) -> Callable[..., list[float]]:
        """The task's checker, a TRL reward function (1.0 right, 0.0 wrong)."""
        return {"graded": sum_correct, "arithmetic": arithmetic_correct}.get(self.embedded_task, oracle_correct)

    def settings(self) -> dict:
        """What the SFT stage's fingerprint records of the task: the addition task's fields always, another task's
        own fields (and ``embedded_task``) only when it is the one used. Adding a key would change the fingerprint of
        every existing run folder of the addition task, whose stages would then refuse to resume."""
        names = ["task_low", "task_high", "eval_size", "demo_error_rate", "demo_error_kinds"]
        if self.embedded_task == "graded":
            names += ["embedded_task", "task_operands", "task_error_rates"]
        if self.embedded_task == "arithmetic":
            names += ["embedded_task", "arithmetic_levels", "arithmetic_error_rates", "arithmetic_system_prompt"]
        return {name: getattr(self, name) for name in names}
