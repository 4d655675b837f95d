"""A real task for a real chat model: arithmetic asked in words, at difficulty levels, with a checker.

The embedded toy tasks (:mod:`trl_ext.toy.task`, :mod:`trl_ext.toy.graded`) speak a private language ("27+15") that
only the embedded tiny model learns. This task asks a pretrained chat model, in words, what it can partly do
("What is 7 + 12?"), at levels chosen by measuring SmolLM2-135M-Instruct's base weights
(``benchmarks/task_levels.py``, ``benchmarks/results/task_levels.md``): the default levels run from single-digit sums
(answered right more often than not) to two-digit sums (almost never), so groups of sampled answers are all wrong or
mixed, and the mix moves as the policy learns. No level is solved reliably by the base model at temperature 1: it
chats, and the checker reads the last number it wrote.

* **Prompts** are conversational (``[{"role": "system", ...}, {"role": "user", ...}]``) and end with "Answer with the
  number only.": the base model answers a bare "What is 7 plus 12?" at length and rarely right. ``system_prompt``:
  None (the default) sends no system message, and SmolLM2's template then injects its own default one; a short one
  (:data:`SHORT_SYSTEM_PROMPT`) saves ~10 prompt tokens per row on every step but, measured on the base weights,
  lowers greedy accuracy (sampled accuracy hardly moves): see ``benchmarks/results/task_levels.md``.
  Rows carry ``answer`` (the number, as text) and ``level`` columns.
* **Held-out evaluation**: ``eval_per_level`` distinct problems per level, fixed by the task's shape alone (never by a
  run's seed); training prompts are seeded draws that never hit a held-out problem.
* **Demonstrators** (SFT data) answer with the number alone; at ``demo_error_rates[level]`` they slip as people do
  (a carry forgotten, a digit off by one, an operation confused, chatter around the right number).
* **The checker** :func:`arithmetic_correct` is a TRL reward function reading the *final* number of the completion
  against the ``answer`` column ("7 + 12 = 19" is right); :func:`arithmetic_utility` grades for a labeller: right and
  concise > right but chatty > wrong > no number. A regular expression reads the number: the answers are bare integers,
  which need none of math-verify's LaTeX parsing (the optional ``math`` extra, not installed where this was built).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from datasets import Dataset

from ..rewards import completion_text

# level name -> (operation, operand ranges); the operation's words and symbol are in _OPS
LEVELS: dict[str, tuple[str, tuple[tuple[int, int], ...]]] = {
    "add_1digit": ("add", ((0, 9), (0, 9))),
    "add_to20": ("add", ((1, 20), (1, 20))),
    "add_2digit": ("add", ((10, 99), (10, 99))),
    "sub_2digit": ("sub", ((10, 99), (10, 99))),  # drawn with a >= b: the answer is never negative
    "add_3terms": ("add", ((1, 20), (1, 20), (1, 20))),
    "mul_1digit": ("mul", ((2, 9), (2, 9))),
    "mul_2by1": ("mul", ((11, 99), (2, 9))),
}
_OPS = {"add": " + ", "sub": " - ", "mul": " * "}
DEFAULT_LEVELS = ("add_1digit", "add_to20", "add_2digit", "mul_2by1")
DEFAULT_ERROR_RATES = (0.05, 0.1, 0.2, 0.4)
INSTRUCTION = "Answer with the number only."
SHORT_SYSTEM_PROMPT = "You are a helpful assistant."
# a number as people write it in an answer: optional sign, digits, optional decimals ("19", "-3", "19.0")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# the grades of arithmetic_utility, best first
RIGHT, RIGHT_CHATTY, WRONG, NO_NUMBER = 3, 2, 1, 0
CHATTER = ("The answer is {}.", "{}!", "{} I think", "It is {}.")


@dataclass(frozen=True)
class ArithmeticTask:
    """Arithmetic in words at the levels named in ``levels`` (keys of :data:`LEVELS`), ``eval_per_level`` held out."""

    levels: tuple[str, ...] = DEFAULT_LEVELS
    eval_per_level: int = 50
    demo_error_rates: tuple[float, ...] = DEFAULT_ERROR_RATES
    system_prompt: str | None = None

    def __post_init__(self):
        unknown = [name for name in self.levels if name not in LEVELS]
        if unknown or not self.levels:
            raise ValueError(f"ArithmeticTask.levels={list(self.levels)}: each must be one of {list(LEVELS)}.")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"ArithmeticTask.levels={list(self.levels)} names a level twice.")
        if len(self.demo_error_rates) != len(self.levels):
            raise ValueError(
                f"ArithmeticTask: {len(self.demo_error_rates)} demo_error_rates for {len(self.levels)} levels "
                f"({list(self.levels)}); give one rate per level."
            )
        if any(not 0.0 <= r <= 1.0 for r in self.demo_error_rates):
            raise ValueError(f"ArithmeticTask.demo_error_rates={list(self.demo_error_rates)}: each must be in [0, 1].")
        for name in self.levels:
            size = level_size(name)
            if not 1 <= self.eval_per_level <= size // 2:
                raise ValueError(
                    f"ArithmeticTask.eval_per_level={self.eval_per_level}: level {name!r} has {size} problems; hold "
                    f"out between 1 and half of them ({size // 2}) so training keeps the rest."
                )

    @property
    def level_names(self) -> list[str]:
        """What reports call level ``i`` (its key of :data:`LEVELS`)."""
        return list(self.levels)

    # ---- the problem space ---------------------------------------------------------------------------------------
    def _draw(self, level: int, rng: random.Random) -> tuple[int, ...]:
        op, ranges = LEVELS[self.levels[level]]
        terms = tuple(rng.randint(lo, hi) for lo, hi in ranges)
        return tuple(sorted(terms, reverse=True)) if op == "sub" else terms

    def eval_problems(self) -> list[tuple[int, tuple[int, ...]]]:
        """(level, operands) of the held-out problems, ``eval_per_level`` distinct ones per level, in level order."""
        problems = []
        for level in range(len(self.levels)):
            rng = random.Random(f"arithmetic-eval-{self.levels[level]}")  # a level's held-out set ignores the others
            seen: set[tuple[int, ...]] = set()
            while len(seen) < self.eval_per_level:
                seen.add(self._draw(level, rng))
            problems += [(level, terms) for terms in sorted(seen)]
        return problems

    def train_problems(self, n: int, seed: int) -> list[tuple[int, tuple[int, ...]]]:
        """``n`` seeded training problems, levels in turn, none of them held out."""
        # by the question asked, not the level: "3 + 4" is held out of add_to20 when add_1digit holds it out
        held_out = {(self._op(level), terms) for level, terms in self.eval_problems()}
        rng = random.Random(seed)
        problems = []
        for i in range(n):
            level = i % len(self.levels)
            terms = self._draw(level, rng)
            while (self._op(level), terms) in held_out:
                terms = self._draw(level, rng)
            problems.append((level, terms))
        return problems

    def _op(self, level: int) -> str:
        return LEVELS[self.levels[level]][0]

    def question(self, level: int, terms: Sequence[int]) -> str:
        return "What is " + _OPS[self._op(level)].join(str(t) for t in terms) + "? " + INSTRUCTION

    def answer(self, level: int, terms: Sequence[int]) -> int:
        return solve(self._op(level), terms)

    def messages(self, level: int, terms: Sequence[int]) -> list[dict]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": self.question(level, terms)}]

    # ---- people --------------------------------------------------------------------------------------------------
    def demonstrate(self, level: int, terms: Sequence[int], rng: random.Random) -> str:
        """One demonstrator's answer: the number alone with probability ``1 - demo_error_rates[level]``, else a slip."""
        right = self.answer(level, terms)
        if rng.random() >= self.demo_error_rates[level]:
            return str(right)
        kind = rng.choice(("carry", "digit", "operation", "chatter"))
        if kind == "chatter":  # the right number, said too much
            return rng.choice(CHATTER).format(right)
        if kind == "operation" and len(terms) == 2:  # + for x, x for +, + for -: the other common confusion
            wrong = solve({"add": "mul", "sub": "add", "mul": "add"}[self._op(level)], terms)
            if wrong != right:
                return str(wrong)
        if kind == "carry" and right >= 10:
            return str(right - 10)
        return str(right + rng.choice((-1, 1)) if right > 0 else right + 1)  # one off: a digit miscounted

    # ---- datasets ------------------------------------------------------------------------------------------------
    def sft_dataset(self, n: int, seed: int) -> Dataset:
        rng = random.Random(seed + 10_000)  # the demonstrators' own stream, apart from the problems'
        rows = {"prompt": [], "completion": []}
        for level, terms in self.train_problems(n, seed):
            rows["prompt"].append(self.messages(level, terms))
            rows["completion"].append([{"role": "assistant", "content": self.demonstrate(level, terms, rng)}])
        return Dataset.from_dict(rows)

    def prompt_dataset(self, n: int, seed: int) -> Dataset:
        """``n`` training prompts with their ``answer`` and ``level`` columns (the checker reads ``answer``)."""
        return self._prompts(self.train_problems(n, seed))

    def eval_dataset(self) -> Dataset:
        return self._prompts(self.eval_problems())

    def _prompts(self, problems) -> Dataset:
        return Dataset.from_dict({
            "prompt": [self.messages(level, terms) for level, terms in problems],
            "answer": [str(self.answer(level, terms)) for level, terms in problems],
            "level": [level for level, _ in problems],
        })


def solve(op: str, terms: Sequence[int]) -> int:
    if op == "add":
        return sum(terms)
    if op == "sub":
        return terms[0] - sum(terms[1:])
    out = 1
    for t in terms:
        out *= t
    return out


def level_size(name: str) -> int:
    """How many distinct problems a level has (a - b with a >= b counts each unordered pair once)."""
    op, ranges = LEVELS[name]
    size = 1
    for lo, hi in ranges:
        size *= hi - lo + 1
    if op == "sub":
        (lo, hi), _ = ranges
        size = (hi - lo + 1) * (hi - lo + 2) // 2
    return size


# ---- the checker ---------------------------------------------------------------------------------------------------
_OPERATOR_BEFORE = re.compile(r"[-+*/×÷]\s*$")


def final_number(text: str) -> float | None:
    """The last number written in ``text`` ("7 + 12 = 19" -> 19.0), or None: also None when that number is the
    right operand of an operator ("0 + 5", the question restated, is no answer even where 5 is the sum)."""
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None or _OPERATOR_BEFORE.search(text[: last.start()]):
        return None
    return float(last.group())


def _answers(answer, n: int, fn: str) -> list:
    if answer is None:
        raise ValueError(
            f"{fn} reads the expected number from the prompt dataset's `answer` column, which TRL passes as a keyword "
            "argument, but none was given: add an `answer` column (the number, e.g. '19') to the prompt dataset."
        )
    if len(answer) != n:
        raise ValueError(f"{fn}: {len(answer)} answers for {n} completions; give one `answer` per row.")
    return answer


def arithmetic_correct(prompts, completions, answer=None, **kwargs) -> list[float]:
    """The checker as a TRL reward function: 1.0 where the completion's final number equals ``answer``, else 0.0.

    Reads the last number so that working shown before the result ("7 + 12 = 19") counts as right.
    """
    answer = _answers(answer, len(completions), "arithmetic_correct")
    return [float(final_number(completion_text(c)) == float(a)) for c, a in zip(completions, answer, strict=True)]


def arithmetic_utility(prompt, completion, answer) -> int:
    """A labeller's grade: RIGHT (the number alone, a full stop allowed) > RIGHT_CHATTY (right final number among
    words) > WRONG > NO_NUMBER."""
    text = completion_text(completion).strip()
    value = final_number(text)
    if value is None:
        return NO_NUMBER
    if value != float(answer):
        return WRONG
    return RIGHT if _NUMBER.fullmatch(text.rstrip(".")) else RIGHT_CHATTY
