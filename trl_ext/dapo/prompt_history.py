"""Cheaper dynamic sampling, the pure parts: which refill prompts to skip before generating them, and how many
prompts a refill round draws (``DAPOConfig.dynamic_sampling_skip_probability`` and
``dynamic_sampling_sized_refill``; the trainer's ``_refill_inputs`` uses both).

Skipping follows GRESO (arXiv 2506.02177, Section 4): a prompt whose groups carried no signal in the recent past will
likely carry none again, so it is skipped *before* its completions are generated, but only with a probability below
one, so it is still revisited as the policy changes. The rule here is a simpler variant of GRESO's: with ``streak``
the number of consecutive zero-variance groups the prompt gave most recently (reset to 0 by any group with signal),

    p_skip(streak) = min(max_p, 1 - (1 - p) ** streak)      (0 for a prompt never seen or last seen informative)

so the first zero-variance outcome skips it with probability ``p``, each further one raises the chance, and it is
always drawn at least ``1 - max_p`` of the times. GRESO adapts ``p`` toward a target zero-variance rate; this variant
keeps it fixed (one knob fewer, and it never skips a prompt with any recorded signal). Decisions use a uniform drawn
from (seed, draw number) -- for the dataloader's batch, (seed, step, group) -- so every rank makes the same one and a
resumed run, which knows those numbers, the same one as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import math
import random


def prompt_key(prompt) -> str:
    """A stable key for a dataset row's ``prompt`` (text or conversation): the first 16 hex digits of its SHA-1."""
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def skip_probability(streak: int, probability: float, max_probability: float) -> float:
    """GRESO-style skip probability after ``streak`` consecutive zero-variance groups (see the module docstring)."""
    if streak <= 0 or probability <= 0:
        return 0.0
    return min(max_probability, 1.0 - (1.0 - probability) ** streak)


def draw_uniform(seed: int, draw: int | str) -> float:
    """The uniform in [0, 1) that decides the ``draw``-th prompt taken from the refill stream (or, keyed by a string
    such as ``"first:STEP:GROUP"``, a group of the dataloader's batch): the same on every rank and after a resume (it
    depends on nothing but the two values)."""
    return random.Random(f"{seed}:{draw}").random()


class PromptHistory:
    """Per prompt key, the number of consecutive zero-variance groups it gave most recently (0: it had signal)."""

    def __init__(self, probability: float, max_probability: float, seed: int):
        self.probability, self.max_probability, self.seed = probability, max_probability, seed
        self.streaks: dict[str, int] = {}

    def record(self, keys: list[str], varies: list[bool]) -> None:
        """One round's outcome per group: ``keys[i]`` is group i's prompt key, ``varies[i]`` whether it had signal."""
        for key, signal in zip(keys, varies, strict=True):
            self.streaks[key] = 0 if signal else self.streaks.get(key, 0) + 1

    def skips(self, key: str, draw: int | str) -> bool:
        """Whether the prompt with this key, decided by :func:`draw_uniform` of ``draw``, is skipped."""
        p = skip_probability(self.streaks.get(key, 0), self.probability, self.max_probability)
        return p > 0 and draw_uniform(self.seed, draw) < p

    def state_dict(self) -> dict:
        return {"streaks": dict(self.streaks)}

    def load_state_dict(self, state: dict) -> None:
        self.streaks = {str(k): int(v) for k, v in state["streaks"].items()}


def refill_prompts(missing: int, informative: int, generated: int, rate_floor: float, full_round: int,
                   num_processes: int, budget_groups: int | None = None) -> int:
    """Prompts (groups) for one refill round sized to the shortfall.

    ``missing`` groups are needed; the run so far kept ``informative`` of ``generated`` groups, so about
    ``missing / rate`` prompts fill the gap, with ``rate = max(informative / generated, rate_floor)`` (the floor
    keeps a run that found nothing yet from asking for an unbounded round). The count is rounded *up* to a multiple of
    ``num_processes`` (every rank generates the same whole groups), at most ``full_round`` (today's round, the
    generation batch), and at most ``budget_groups`` (what is left of ``max_generated_completions``, rounded down to a
    multiple of ``num_processes``). Returns 0 when the budget cannot pay for one group per rank.
    """
    rate = max(informative / generated if generated else 1.0, rate_floor)
    wanted = math.ceil(missing / rate - 1e-9)
    wanted = math.ceil(wanted / num_processes) * num_processes
    if wanted >= full_round:
        wanted = full_round
    if budget_groups is not None:
        wanted = min(wanted, budget_groups // num_processes * num_processes)
    return max(wanted, 0)
