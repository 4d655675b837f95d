"""Reward post-processing: DAPO's soft overlong punishment (arXiv 2503.14476, Section 3.4, Eq. 13).

Shaping is applied to the rewards after the reward functions have scored a round, not as one more reward function:
the user's ``reward_funcs``, ``reward_weights``, the logged ``reward`` and TRL's checks all keep TRL's meaning, and the
term reaches only the advantages (``rewards -> shaping -> dynamic sampling -> advantages``). The trainer logs it
beside the reward as ``shaping/overlong/*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def soft_overlong_penalty(
    lengths: torch.Tensor | Sequence[int], max_length: int, buffer_length: int, penalty_factor: float = 1.0
) -> torch.Tensor:
    """DAPO Eq. 13, scaled by ``penalty_factor``: 0 up to ``L_max - L_cache``, then linear down to ``-factor``.

    With ``L_max = max_length`` and ``L_cache = buffer_length``, a completion of ``|y|`` tokens gets

        0                                   if |y| <= L_max - L_cache
        factor * ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
        -factor                             if |y| > L_max

    ``buffer_length == 0`` disables the penalty (all zeros). Returns float32 of the same shape as ``lengths``.
    """
    if buffer_length < 0 or buffer_length > max_length:
        raise ValueError(f"buffer_length must be in [0, max_length={max_length}], got {buffer_length}.")
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    if buffer_length == 0:
        return torch.zeros_like(lengths)
    expected = max_length - buffer_length
    penalty = (expected - lengths) / buffer_length  # (N,), negative inside the buffer
    penalty = penalty.clamp(min=-1.0, max=0.0)  # > L_max saturates at -1; <= L_max - L_cache is 0
    return penalty * penalty_factor


@dataclass(frozen=True)
class OverlongShaping:
    """:func:`soft_overlong_penalty` of each completion's length, as DAPOTrainer adds it to the reward.

    ``completion_ids`` are the token lists TRL hands its reward functions, cut after the first EOS (which counts as a
    token), so a completion that hit the limit has exactly ``max_completion_length`` tokens and gets
    ``-penalty_factor``.
    """

    max_length: int
    buffer_length: int
    penalty_factor: float = 1.0
    name = "overlong"  # logged as shaping/overlong/*

    @classmethod
    def from_config(cls, args) -> OverlongShaping | None:
        """From a DAPOConfig's ``max_completion_length``, ``overlong_buffer_length`` and ``overlong_penalty_factor``;
        None when either of the last two is 0 (shaping off)."""
        if not (args.overlong_buffer_length > 0 and args.overlong_penalty_factor > 0):
            return None
        return cls(args.max_completion_length, args.overlong_buffer_length, args.overlong_penalty_factor)

    def __call__(self, completion_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        lengths = [len(ids) for ids in completion_ids]
        return soft_overlong_penalty(lengths, self.max_length, self.buffer_length, self.penalty_factor)  # (N,)
