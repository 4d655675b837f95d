"""Advantage estimators as pure tensor functions. Rewards arrive grouped: ``G`` consecutive entries per prompt.

Each function is self-contained (no shared helpers), so estimators can be added or changed independently.
"""

from __future__ import annotations

import torch


def group_relative_advantages(rewards: torch.Tensor, num_generations: int, scale: bool = True) -> torch.Tensor:
    """GRPO (arXiv 2402.03300): ``(r_i - mean(group)) / (std(group) + 1e-4)``, or without the division.

    ``rewards`` is ``(num_prompts * G,)``; NaN entries (unscorable) are left out of the mean/std and get advantage 0.
    The std is the unbiased sample std, as TRL computes it.
    """
    grouped = rewards.view(-1, num_generations)  # (P, G)
    valid = ~torch.isnan(grouped)
    count = valid.sum(dim=1, keepdim=True)
    mean = torch.nansum(grouped, dim=1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(valid, grouped - mean, torch.zeros_like(grouped))
    advantages = centred
    if scale:
        std = (centred.pow(2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
        advantages = centred / (std + 1e-4)
    return advantages.view(-1)


def leave_one_out_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """RLOO (arXiv 2402.14740, Eq. 6): ``A_i = r_i - mean_{j != i} r_j`` inside each group of ``k = G`` samples.

    Equivalently ``A_i = k / (k - 1) * (r_i - mean(group))``. ``rewards`` is ``(num_prompts * G,)``. NaN rewards
    (unscorable completions) are left out of their siblings' baselines; an unscorable completion, or the only
    scorable one of its group (no other sample to compare with), gets advantage 0.
    """
    if num_generations < 2:
        raise ValueError(f"leave-one-out needs num_generations >= 2, got {num_generations}.")
    grouped = rewards.view(-1, num_generations)  # (P, k)
    valid = ~torch.isnan(grouped)
    others = valid.sum(dim=1, keepdim=True) - 1  # scorable siblings of each sample, (P, 1)
    total = torch.nansum(grouped, dim=1, keepdim=True)  # (P, 1)
    baseline = (total - grouped.nan_to_num(0.0)) / others.clamp(min=1)  # mean of the other scorable rewards
    advantages = torch.where(valid & (others > 0), grouped - baseline, torch.zeros_like(grouped))
    return advantages.view(-1)
