"""The embedded task: two-digit addition, with noisy demonstrators, an oracle, and a simulated labeller.

The three stages (SFT, reward model, RL) need three kinds of people; here each is a small, seeded simulation:

* **Demonstrators** (SFT data) answer correctly with probability ``1 - demo_error_rate``; otherwise they make a
  human-like slip drawn from ``demo_error_kinds``: ``chatter`` adds words after the right number ("42 I think"),
  which the task forbids; ``swap`` writes the digits of the sum in reverse order ("24" for 42), ``carry`` forgets to
  carry ("32" for 27+15), ``slip`` gets one digit wrong by one. The SFT model learns these
  habits along with the skill, which leaves room for RL to improve.
* **The oracle** knows the right answer: :func:`oracle_correct` is the ground truth used for evaluation.
* **The labeller** (reward-model data) is shown K sampled answers to a prompt and ranks them best to worst, e.g.
  ``A > C = D > B``: content first, then form (the right number alone, the right number with chatter, a wrong number,
  a wrong number with chatter, no number). With probability ``noise`` it puts
  two neighbouring tiers the wrong way round, as a tired human would. Rankings become all pairwise (chosen, rejected)
  comparisons.

Prompts are conversational (``[{"role": "user", "content": "27+15"}]``) so the same data works with any chat model.
Evaluation prompts are a fixed held-out set of (a, b) pairs that no training split ever contains.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from datasets import Dataset

from ..rewards import completion_text

ERROR_KINDS = ("chatter", "swap", "carry", "slip")
# What a chatty demonstrator adds after the answer; the task asks for the number alone, so the oracle rejects it.
CHATTER = (" I think", "?", " or so", "!", " (sure)", ", maybe")
_LEADING_NUMBER = re.compile(r"^\s*(\d+)(.*)$", re.DOTALL)
# Graded quality, content before form: the right number alone > the right number with chatter > a wrong number alone
# > a wrong number with chatter > no number at all. Only the best grade counts as correct.
RIGHT, RIGHT_CHATTY, WRONG, WRONG_CHATTY, NO_NUMBER = 3, 2, 1, 0, -1


@dataclass(frozen=True)
class AdditionTask:
    """Addition of two numbers in ``[low, high]``; ``eval_size`` (a, b) pairs are held out for evaluation."""

    low: int = 10
    high: int = 99
    eval_size: int = 200
    demo_error_rate: float = 0.5
    demo_error_kinds: tuple[str, ...] = ("chatter",)

    def __post_init__(self):
        if not 0 <= self.low <= self.high:
            raise ValueError(f"AdditionTask: need 0 <= low <= high, got low={self.low}, high={self.high}.")
        if not 0.0 <= self.demo_error_rate <= 1.0:
            raise ValueError(f"AdditionTask.demo_error_rate must be in [0, 1], got {self.demo_error_rate}.")
        unknown = set(self.demo_error_kinds) - set(ERROR_KINDS)
        if unknown or not self.demo_error_kinds:
            raise ValueError(
                f"AdditionTask.demo_error_kinds={list(self.demo_error_kinds)}: each must be one of {list(ERROR_KINDS)}."
            )
        n = (self.high - self.low + 1) ** 2
        if self.eval_size >= n:
            raise ValueError(f"AdditionTask.eval_size={self.eval_size} leaves no training pairs out of {n}.")

    # ---- the problem space -------------------------------------------------------------------------------------
    def _all_pairs(self) -> list[tuple[int, int]]:
        return [(a, b) for a in range(self.low, self.high + 1) for b in range(self.low, self.high + 1)]

    def eval_pairs(self) -> list[tuple[int, int]]:
        """The held-out pairs: fixed by the task's shape alone, never by the run's seed."""
        pairs = self._all_pairs()
        random.Random(1234).shuffle(pairs)
        return sorted(pairs[: self.eval_size])

    def train_pairs(self) -> list[tuple[int, int]]:
        held_out = set(self.eval_pairs())
        return [p for p in self._all_pairs() if p not in held_out]

    @staticmethod
    def question(a: int, b: int) -> str:
        return f"{a}+{b}"

    @staticmethod
    def parse_question(text: str) -> tuple[int, int]:
        a, b = text.strip().split("+")
        return int(a), int(b)

    # ---- people --------------------------------------------------------------------------------------------------
    def demonstrate(self, a: int, b: int, rng: random.Random) -> str:
        """One demonstrator's answer: right with probability ``1 - demo_error_rate``, else a typical slip."""
        answer = str(a + b)
        if rng.random() >= self.demo_error_rate:
            return answer
        return demonstrator_mistake(a + b, (a % 10 + b % 10) // 10, self.demo_error_kinds, rng)

    # ---- datasets -------------------------------------------------------------------------------------------------
    def sft_dataset(self, n: int, seed: int) -> Dataset:
        """``n`` conversational prompt/completion rows written by the noisy demonstrators."""
        rng = random.Random(seed)
        pairs = self.train_pairs()
        rows = {"prompt": [], "completion": []}
        for _ in range(n):
            a, b = rng.choice(pairs)
            rows["prompt"].append([{"role": "user", "content": self.question(a, b)}])
            rows["completion"].append([{"role": "assistant", "content": self.demonstrate(a, b, rng)}])
        return Dataset.from_dict(rows)

    def prompt_dataset(self, n: int, seed: int) -> Dataset:
        """``n`` training prompts (with their ``answer`` column, which reward functions may read)."""
        rng = random.Random(seed)
        pairs = self.train_pairs()
        chosen = [rng.choice(pairs) for _ in range(n)]
        return self._prompts(chosen)

    def eval_dataset(self) -> Dataset:
        return self._prompts(self.eval_pairs())

    def _prompts(self, pairs: Sequence[tuple[int, int]]) -> Dataset:
        return Dataset.from_dict(
            {
                "prompt": [[{"role": "user", "content": self.question(a, b)}] for a, b in pairs],
                "answer": [str(a + b) for a, b in pairs],
            }
        )


# ---- the oracle ----------------------------------------------------------------------------------------------------


def demonstrator_mistake(total: int, carry_out: int, kinds: Sequence[str], rng: random.Random) -> str:
    """A wrong (or chatty) answer to a sum of ``total``, of a kind drawn from ``kinds`` (see ``ERROR_KINDS``).

    ``carry_out`` is what the units column carries into the tens (a forgotten carry subtracts ``10 * carry_out``).
    Shared by the embedded tasks' demonstrators; the random draws come in a fixed order, so a seeded run is repeatable.
    """
    answer = str(total)
    kind = rng.choice(kinds)
    if kind == "chatter":
        return answer + rng.choice(CHATTER)
    if kind == "swap" and answer != answer[::-1]:
        return answer[::-1]
    if kind == "carry" and carry_out:
        return str(total - 10 * carry_out)
    # "slip", and the fall-back when the chosen slip changes nothing (a palindrome, no carry to forget)
    digits = list(answer)
    i = rng.randrange(len(digits))
    d = int(digits[i])
    digits[i] = str(d + 1 if d < 9 and (d == 0 or rng.random() < 0.5) else d - 1)
    return "".join(digits)


def prompt_text(prompt) -> str:
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def oracle_utility(prompt, completion) -> int:
    """The quality grade a careful human would give: RIGHT (3), RIGHT_CHATTY (2), WRONG (1), WRONG_CHATTY (0),
    NO_NUMBER (-1). The task asks for the number alone, so only RIGHT is a correct answer."""
    a, b = AdditionTask.parse_question(prompt_text(prompt))
    match = _LEADING_NUMBER.match(completion_text(completion))
    if match is None:
        return NO_NUMBER
    right = int(match.group(1)) == a + b
    clean = match.group(2).strip() == ""
    return (RIGHT if clean else RIGHT_CHATTY) if right else (WRONG if clean else WRONG_CHATTY)


def oracle_correct(prompts, completions, **kwargs) -> list[float]:
    """The ground truth as a TRL reward function: 1.0 where the completion is the right sum, else 0.0."""
    return [float(oracle_utility(p, c) == RIGHT) for p, c in zip(prompts, completions, strict=True)]


# ---- the labeller ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Labeller:
    """Ranks K answers to one prompt, best first, as tiers of equally good answers ("A > C = D > B").

    The true order is :func:`oracle_utility`'s grade (the right number alone, then with chatter, then a wrong number
    alone, with chatter, no number); answers of one grade tie. With
    probability ``noise`` the labeller gets each boundary between two neighbouring tiers the wrong way round (a tired
    human ranking wrong above right). Noise reorders real differences; it never invents a preference between ties.

    ``utility`` replaces the toy's grade with another task's, called as ``utility(prompt, answer_text, answer)``
    (``answer``: the prompt's expected answer, e.g. :func:`trl_ext.toy.arithmetic.arithmetic_utility`); higher is
    better. The random draws are the same whatever the utility, so the toy's labels do not change.
    """

    noise: float = 0.1
    utility: Callable[..., float] | None = None

    def __post_init__(self):
        if not 0.0 <= self.noise <= 0.5:
            raise ValueError(f"Labeller.noise must be in [0, 0.5] (above 0.5 the labels invert), got {self.noise}.")

    def rank(self, prompt, answers: Sequence[str], rng: random.Random, answer=None) -> list[list[int]]:
        if len(answers) < 2:
            raise ValueError(f"Labeller.rank needs K >= 2 answers to rank, got K={len(answers)}.")
        if self.utility is None:
            utility = [oracle_utility(prompt, a) for a in answers]
        else:
            utility = [self.utility(prompt, a, answer) for a in answers]
        tiers = [[i for i, u in enumerate(utility) if u == level] for level in sorted(set(utility), reverse=True)]
        for i in range(len(tiers) - 1):
            if rng.random() < self.noise:
                tiers[i], tiers[i + 1] = tiers[i + 1], tiers[i]
        return tiers


def pairs_from_ranking(tiers: Sequence[Sequence[int]], answers: Sequence[str]) -> list[tuple[int, int]]:
    """All (chosen, rejected) index pairs a ranking implies: every answer against every answer in a lower tier.

    Pairs whose two texts are identical carry no preference and are dropped. A ranking of K answers in K distinct
    tiers yields K(K-1)/2 pairs.
    """
    pairs = []
    for hi, upper in enumerate(tiers):
        for lower in tiers[hi + 1 :]:
            pairs.extend((c, r) for c in upper for r in lower if answers[c] != answers[r])
    return pairs
