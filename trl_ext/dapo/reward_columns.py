"""DAPO's record of one round's rewards: the reward functions' columns as TRL scored them, the shaping term computed
beside them (never a reward function, so TRL's lists, checks and logged ``reward`` see only the user's), the
weighted total, and the signal dynamic sampling requires to vary."""

from __future__ import annotations

import torch

from ..advantages import RoundRewards, weighted_reward


def signal_column(signal: str, reward_func_names: list[str]) -> int | None:
    """The column ``dynamic_sampling_signal`` names; None for ``'reward'`` (the weighted total of the given ones)."""
    if signal != "reward" and signal not in reward_func_names:
        raise ValueError(
            f"dynamic_sampling_signal={signal!r} is neither 'reward' nor a reward function name; names here: "
            f"{reward_func_names}."
        )
    return None if signal == "reward" else reward_func_names.index(signal)


def round_rewards(rewards_per_func: torch.Tensor, weights: torch.Tensor, shaping: torch.Tensor | None,
                  signal_index: int | None) -> RoundRewards:
    """The round's record: per function (N, F), the weighted total (N,) as GRPOTrainer forms and logs it, the shaping
    (N,) made NaN where no function scored the completion (shaping alone cannot make it look scored), and the signal
    (N,): one named function's rewards, or the total (shaping is never part of it)."""
    total = weighted_reward(rewards_per_func, weights)
    if shaping is not None:
        shaping = shaping.to(total.device).masked_fill(torch.isnan(total), torch.nan)
    signal = total if signal_index is None else rewards_per_func[:, signal_index]
    return RoundRewards(rewards_per_func, total, signal, shaping)


def shaped_columns(rewards: RoundRewards, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reward columns with the shaping as one more column of weight 1, (N, F + 1) and (F + 1,): what GRPO's
    advantage is formed from, under either of its aggregations (the weighted sum is then ``shaped_total``)."""
    per_func = torch.cat([rewards.per_func, rewards.shaping.unsqueeze(1)], dim=1)  # (N, F + 1)
    return per_func, torch.cat([weights.to(per_func.device), weights.new_ones(1).to(per_func.device)])
