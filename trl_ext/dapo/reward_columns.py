"""DAPO's reward columns: the user's lists counted against the user's functions, the built-in overlong column
(DAPO Eq. 13, one more reward function of weight 1), and each round's record: the weighted total and the signal
dynamic sampling requires to vary."""

from __future__ import annotations

import torch

from ..advantages import RoundRewards, weighted_reward
from ..shaping import OverlongPenalty


def check_reward_lists(args, reward_funcs: list, reward_processing_classes):
    """The user's ``reward_weights`` and ``reward_processing_classes`` counted against the user's reward functions.

    TRL accepts one tokenizer for one reward model (not in a list); it is listed here so that the built-in overlong
    column, appended after the user's functions, gets ``None`` beside it. Counting here, before that column
    exists, keeps the overlong term out of the numbers in the messages.
    """
    n = len(reward_funcs)
    if args.reward_weights is not None and len(args.reward_weights) != n:
        raise ValueError(
            f"reward_weights has {len(args.reward_weights)} weights for {n} reward function(s); give one weight "
            "per function in reward_funcs, in the same order (the built-in overlong penalty needs none: its scale "
            "is overlong_penalty_factor)."
        )
    if reward_processing_classes is None:
        return None
    if not isinstance(reward_processing_classes, list):
        reward_processing_classes = [reward_processing_classes]
    if len(reward_processing_classes) != n:
        raise ValueError(
            f"reward_processing_classes has {len(reward_processing_classes)} entries for {n} reward function(s); "
            "give one per function in reward_funcs (None for a function that is not a model), or a single "
            "tokenizer when there is a single reward model."
        )
    return list(reward_processing_classes)


def append_overlong_column(args, reward_funcs: list, reward_processing_classes) -> tuple[int | None, list | None]:
    """Append the soft overlong punishment to ``reward_funcs`` (in place) with weight 1 in ``args.reward_weights``
    (``args`` is the trainer's copy of the caller's config); returns its column (None when it is off) and the
    processing classes with ``None`` beside it."""
    if not (args.overlong_buffer_length > 0 and args.overlong_penalty_factor > 0):
        return None, reward_processing_classes
    index = len(reward_funcs)
    reward_funcs.append(
        OverlongPenalty(args.max_completion_length, args.overlong_buffer_length, args.overlong_penalty_factor)
    )
    if args.reward_weights is not None:
        args.reward_weights = [*args.reward_weights, 1.0]
    if reward_processing_classes is not None:
        reward_processing_classes = [*reward_processing_classes, None]
    return index, reward_processing_classes


def signal_column(signal: str, reward_func_names: list[str]) -> int | None:
    """The column ``dynamic_sampling_signal`` names; None for ``'reward'`` (the weighted total of the given ones)."""
    if signal != "reward" and signal not in reward_func_names:
        raise ValueError(
            f"dynamic_sampling_signal={signal!r} is neither 'reward' nor a reward function name; names here: "
            f"{reward_func_names}."
        )
    return None if signal == "reward" else reward_func_names.index(signal)


def mask_unscored_overlong(rewards_per_func: torch.Tensor, overlong_index: int | None) -> None:
    """In place, (N, F): the overlong column becomes NaN where every other function returned None, so shaping
    alone cannot make an unscorable completion look scored."""
    i = overlong_index
    if i is not None and rewards_per_func.size(1) > 1:
        others = torch.cat([rewards_per_func[:, :i], rewards_per_func[:, i + 1 :]], dim=1)  # (N, F - 1)
        rewards_per_func[torch.isnan(others).all(dim=1), i] = torch.nan


def round_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor, overlong_index: int | None,
                  signal_index: int | None) -> RoundRewards:
    """The round's record: per function (N, F), the weighted total (N,) and the signal (N,), which is one named
    function's rewards, or the weighted total of the given functions as GRPOTrainer forms it with the overlong term
    left out (NaN if none of them scored)."""
    total = weighted_reward(rewards_per_func, weights)
    if signal_index is not None:
        signal = rewards_per_func[:, signal_index]
    else:
        given = [j for j in range(rewards_per_func.size(1)) if j != overlong_index]
        signal = weighted_reward(rewards_per_func[:, given], weights[given])
    return RoundRewards(rewards_per_func, total, signal)
