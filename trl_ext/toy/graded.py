"""A graded task for the verifiable-reward route: sums of 2, 3, 4 ... numbers, one difficulty level per operand count.

The embedded :class:`~trl_ext.toy.AdditionTask` is too easy for RL against a checker: after SFT, greedy accuracy is
already 1.000, so RL has nothing to win. Here the difficulty spreads: level ``i`` asks for the sum of
``operands[i]`` numbers in ``[low, high]`` ("12+7+30"), and the demonstrators who write the SFT data slip more often
on harder levels (``demo_error_rates[i]``), as people do. An SFT model therefore answers the easy level well and the
hard ones often wrongly, while still putting some probability on the right answer: the regime DAPO was designed for,
where many groups of sampled answers are all right (easy prompts) or all wrong (hard prompts), and the share changes
as the policy improves.

The checker :func:`sum_correct` is an ordinary TRL reward function (0/1): the right sum, alone, is 1.0. It is both
the RL reward (``reward_funcs: [trl_ext.toy.sum_correct]``) and the evaluation's oracle.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset

from ..rewards import completion_text
from .task import ERROR_KINDS, demonstrator_mistake, prompt_text

_ANSWER = re.compile(r"^\s*(\d+)\s*$")


@dataclass(frozen=True)
class GradedAdditionTask:
    """Sums of ``operands[i]`` numbers in ``[low, high]`` at level ``i``; ``eval_size`` prompts are held out.

    ``demo_error_rates[i]`` is the share of level ``i``'s demonstrations that carry a slip from ``demo_error_kinds``
    (see :mod:`trl_ext.toy.task`: ``carry`` forgets the carry out of the units column, ``slip`` puts one digit off
    by one, ``swap`` reverses the digits, ``chatter`` adds words after the right number). Training and held-out
    prompts are drawn evenly over the levels; the held-out ones are fixed by the task's shape alone, never by the
    run's seed, and no training split contains them.
    """

    operands: tuple[int, ...] = (2, 3, 4)
    low: int = 0
    high: int = 99
    eval_size: int = 300
    demo_error_rates: tuple[float, ...] = (0.1, 0.3, 0.5)
    demo_error_kinds: tuple[str, ...] = ("carry", "slip")

    def __post_init__(self):
        if not self.operands or any(n < 2 for n in self.operands):
            raise ValueError(f"GradedAdditionTask.operands={list(self.operands)}: each level needs >= 2 operands.")
        if len(self.demo_error_rates) != len(self.operands):
            raise ValueError(
                f"GradedAdditionTask: {len(self.demo_error_rates)} demo_error_rates for {len(self.operands)} levels "
                f"(operands={list(self.operands)}); give one rate per level."
            )
        if any(not 0.0 <= r <= 1.0 for r in self.demo_error_rates):
            raise ValueError(f"GradedAdditionTask.demo_error_rates={list(self.demo_error_rates)}: each must be in [0, 1].")
        unknown = set(self.demo_error_kinds) - set(ERROR_KINDS)
        if unknown or not self.demo_error_kinds:
            raise ValueError(
                f"GradedAdditionTask.demo_error_kinds={list(self.demo_error_kinds)}: each must be one of {list(ERROR_KINDS)}."
            )
        if not 0 <= self.low < self.high:
            raise ValueError(f"GradedAdditionTask: need 0 <= low < high, got low={self.low}, high={self.high}.")
        smallest = (self.high - self.low + 1) ** min(self.operands)
        if self.eval_size < len(self.operands) or self.eval_size // len(self.operands) * 4 > smallest:
            raise ValueError(
                f"GradedAdditionTask.eval_size={self.eval_size}: needs at least one held-out prompt per level and at "
                f"most a quarter of the smallest level's {smallest} problems per level."
            )

    @property
    def levels(self) -> list[int]:
        return list(range(len(self.operands)))

    @property
    def level_names(self) -> list[str]:
        """What reports call level ``i``: its number of operands."""
        return [f"{n} operands" for n in self.operands]

    # ---- the problem space ---------------------------------------------------------------------------------------
    def _draw(self, level: int, rng: random.Random) -> tuple[int, ...]:
        return tuple(rng.randint(self.low, self.high) for _ in range(self.operands[level]))

    def eval_problems(self) -> list[tuple[int, tuple[int, ...]]]:
        """(level, operands) of the held-out prompts, ``eval_size // levels`` per level, distinct."""
        rng = random.Random(1234)
        per_level = self.eval_size // len(self.operands)
        problems = []
        for level in self.levels:
            seen: set[tuple[int, ...]] = set()
            while len(seen) < per_level:
                seen.add(self._draw(level, rng))
            problems += [(level, terms) for terms in sorted(seen)]
        return problems

    def _train_problems(self, n: int, seed: int):
        """``n`` training problems, levels in turn, none of them held out."""
        held_out = {terms for _, terms in self.eval_problems()}
        rng = random.Random(seed)
        for i in range(n):
            level = i % len(self.operands)
            terms = self._draw(level, rng)
            while terms in held_out:
                terms = self._draw(level, rng)
            yield level, terms

    @staticmethod
    def question(terms: Sequence[int]) -> str:
        return "+".join(str(t) for t in terms)

    # ---- people ----------------------------------------------------------------------------------------------------
    def demonstrate(self, level: int, terms: Sequence[int], rng: random.Random) -> str:
        """One demonstrator's answer: right with probability ``1 - demo_error_rates[level]``, else a typical slip."""
        total = sum(terms)
        answer = str(total)
        if rng.random() >= self.demo_error_rates[level]:
            return answer
        carry_out = sum(t % 10 for t in terms) // 10  # what the units column carries into the tens
        return demonstrator_mistake(total, carry_out, self.demo_error_kinds, rng)

    # ---- datasets ----------------------------------------------------------------------------------------------------
    def sft_dataset(self, n: int, seed: int) -> Dataset:
        rng = random.Random(seed + 10_000)  # the demonstrators' own stream, apart from the problems'
        rows = {"prompt": [], "completion": []}
        for level, terms in self._train_problems(n, seed):
            rows["prompt"].append([{"role": "user", "content": self.question(terms)}])
            rows["completion"].append([{"role": "assistant", "content": self.demonstrate(level, terms, rng)}])
        return Dataset.from_dict(rows)

    def prompt_dataset(self, n: int, seed: int) -> Dataset:
        """``n`` training prompts with their ``answer`` and ``level`` columns (reward functions may read them)."""
        return self._prompts(list(self._train_problems(n, seed)))

    def eval_dataset(self) -> Dataset:
        return self._prompts(self.eval_problems())

    def _prompts(self, problems) -> Dataset:
        return Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": self.question(terms)}] for _, terms in problems],
                "answer": [str(sum(terms)) for _, terms in problems],
                "level": [level for level, _ in problems],
            }
        )


def sum_correct(prompts, completions, **kwargs) -> list[float]:
    """The checker as a TRL reward function: 1.0 where the completion is the prompt's sum and nothing else, else 0.0.

    Works for any number of operands ("27+15" as well as "3+41+7"), so it also checks
    :class:`~trl_ext.toy.AdditionTask`'s prompts.
    """
    scores = []
    for prompt, completion in zip(prompts, completions, strict=True):
        terms = prompt_text(prompt).strip().split("+")
        match = _ANSWER.match(completion_text(completion))
        scores.append(float(match is not None and int(match.group(1)) == sum(int(t) for t in terms)))
    return scores
