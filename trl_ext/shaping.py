"""Reward post-processing: DAPO's soft overlong punishment (arXiv 2503.14476, Section 3.4, Eq. 13).

The penalty is a pure function of completion lengths; :class:`OverlongPenalty` wraps it as a TRL reward function so
that it is added to the total reward with weight 1, logged as ``rewards/overlong_penalty/*`` like any other reward,
and, being its own column, can be left out of the dynamic-sampling signal.
"""

from __future__ import annotations

from collections.abc import Sequence

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


class OverlongPenalty:
    """TRL reward function computing :func:`soft_overlong_penalty` from the ``completion_ids`` TRL passes in.

    ``completion_ids`` are cut after the first EOS (which counts as a token), so a completion that hit the limit has
    exactly ``max_completion_length`` tokens and gets ``-penalty_factor``.
    """

    __name__ = "overlong_penalty"  # the column name in TRL's rewards/<name>/* metrics

    def __init__(self, max_length: int, buffer_length: int, penalty_factor: float = 1.0):
        self.max_length = max_length
        self.buffer_length = buffer_length
        self.penalty_factor = penalty_factor

    def __call__(self, prompts, completions, completion_ids, **kwargs) -> list[float]:
        lengths = [len(ids) for ids in completion_ids]
        return soft_overlong_penalty(lengths, self.max_length, self.buffer_length, self.penalty_factor).tolist()
