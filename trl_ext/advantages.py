"""Advantage estimators as pure tensor functions: no model, no trainer state, tested with hand-computed numbers.

The group estimators (GRPO, RLOO) take rewards grouped as ``G`` consecutive entries per prompt; PPO's functions take per-token
rewards and values. Each function is self-contained, so estimators can be added or changed independently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from trl.trainer.utils import nanstd

# ---- rewards -> one scalar per completion ---------------------------------------------------------------------------


def weighted_reward(rewards_per_func: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The weighted total of the reward functions, ``(N,)``, with TRL's NaN rule.

    ``rewards_per_func`` is ``(N, F)``, NaN where a function returned None (not applicable to that completion);
    ``weights`` is ``(F,)``. A completion is unscorable (NaN) when every function returned None; otherwise its total
    is the weighted sum of the functions that did score it (the NaN terms count as absent).
    """
    total = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
    total[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return total


@dataclass
class RoundRewards:
    """One generation round's rewards over all processes' rows (TRL's global layout), formed once in the trainer's
    ``_calculate_rewards`` and read from there by the advantage estimators and dynamic sampling."""

    per_func: torch.Tensor  # (N, F) the reward functions' own scores (as TRL logs them), NaN where one returned None
    total: torch.Tensor  # (N,) weighted_reward(per_func, weights), TRL's logged `reward`: NaN when unscorable
    signal: torch.Tensor | None = None  # (N,) what dynamic sampling requires to vary inside a group (DAPO)
    shaping: torch.Tensor | None = None  # (N,) added to the total for the advantages only (DAPO's overlong term)

    @property
    def shaped_total(self) -> torch.Tensor:
        """(N,) what the advantages are computed from: the total plus the shaping (NaN stays NaN: unscorable)."""
        return self.total if self.shaping is None else self.total + self.shaping


# ---- group baselines: GRPO's group-relative one and RLOO's leave-one-out ------------------------------------------


def group_relative_advantages(
    rewards_per_func: torch.Tensor,
    weights: torch.Tensor,
    num_generations: int,
    scale_rewards: str = "group",
    aggregation: str = "sum_then_normalize",
) -> torch.Tensor:
    """GRPO's advantages (arXiv 2402.03300, Section 4.1.2) as ``trl.GRPOTrainer`` 1.16 forms them, ``(N,)``.

    ``rewards_per_func`` is ``(N, F)`` grouped as ``G`` consecutive rows per prompt, NaN where a function returned
    None. ``"sum_then_normalize"``: ``A = (r - mean_group(r)) / (std + 1e-4)`` of the weighted sum ``r``, std over the
    group, the batch, or none (``scale_rewards``); ``"normalize_then_sum"``: each column normalised in its group, the
    weighted sum normalised over the batch. Unscorable rows (every function None) get 0; with ``G = 1`` (evaluation)
    a completion has no group to compare with: std 0, advantage 0. ``tests/test_trl_contract.py`` checks this
    against the installed GRPOTrainer's own advantages, so a TRL change fails there.
    """
    G, device = num_generations, rewards_per_func.device
    weights = weights.to(device)
    unscorable = torch.isnan(rewards_per_func).all(dim=1)  # (N,)
    if aggregation == "sum_then_normalize":
        rewards = weighted_reward(rewards_per_func, weights)  # (N,)
        mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G)  # (N,)
        if scale_rewards == "batch":
            std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
        elif scale_rewards in ("group", "none"):
            std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G) if G > 1 else torch.zeros_like(rewards)
        else:
            raise ValueError(f"scale_rewards={scale_rewards!r}: use 'group', 'batch' or 'none'.")
        advantages = rewards - mean
        if scale_rewards != "none":
            advantages = advantages / (std + 1e-4)
    elif aggregation == "normalize_then_sum":
        grouped = rewards_per_func.view(-1, G, rewards_per_func.size(1))  # (P, G, F)
        mean_k = torch.nanmean(grouped, dim=1, keepdim=True)  # (P, 1, F)
        std_k = nanstd(grouped, dim=1, keepdim=True) if G > 1 else torch.zeros_like(mean_k)
        normalised = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, rewards_per_func.size(1))  # (N, F)
        rewards = (normalised * weights.unsqueeze(0)).nansum(dim=1)  # (N,)
        rewards[unscorable] = torch.nan
        std = nanstd(rewards) if rewards.numel() > 1 else torch.zeros((), device=device)
        advantages = (rewards - torch.nanmean(rewards)) / (std + 1e-4)
    else:
        raise ValueError(f"aggregation={aggregation!r}: use 'sum_then_normalize' or 'normalize_then_sum'.")
    return torch.nan_to_num(advantages, nan=0.0)


def leave_one_out_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """RLOO (arXiv 2402.14740, Eq. 6): ``A_i = r_i - mean_{j != i} r_j`` inside each group of ``k = G`` samples.

    Equivalently ``A_i = k / (k - 1) * (r_i - mean(group))``. ``rewards`` is ``(num_prompts * G,)``. NaN rewards
    (unscorable completions) are left out of their siblings' baselines; an unscorable completion, or the only
    scorable one of its group (no other sample to compare with), gets advantage 0; so with ``k = 1`` (evaluation on
    one completion per prompt, ``num_generations_eval=1``) every advantage is 0, as in ``trl.RLOOTrainer``.
    """
    if num_generations < 1:
        raise ValueError(f"leave-one-out needs num_generations >= 1, got {num_generations}.")
    grouped = rewards.view(-1, num_generations)  # (P, k)
    valid = ~torch.isnan(grouped)
    others = valid.sum(dim=1, keepdim=True) - 1  # scorable siblings of each sample, (P, 1)
    total = torch.nansum(grouped, dim=1, keepdim=True)  # (P, 1)
    baseline = (total - grouped.nan_to_num(0.0)) / others.clamp(min=1)  # mean of the other scorable rewards
    advantages = torch.where(valid & (others > 0), grouped - baseline, torch.zeros_like(grouped))
    return advantages.view(-1)


# ---- PPO: per-token rewards, generalised advantage estimation, whitening-------------------------
# Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (arXiv:1506.02438),
# eq. 16, and the per-token RLHF form of Ouyang et al. 2022 / Ziegler et al. 2019: one episode per completion, one
# action per token, the episode ends after the last unmasked token (its bootstrap value is 0). The per-token reward
# (KL penalty on every token, the score on the last) is `token_rewards`.


def token_rewards(
    logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    scores: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards ``(B, T)`` and the per-token KL estimate ``(B, T)``.

    r_t = −kl_coef·(log π(y_t) − log π_ref(y_t)) on every completion token, plus ``scores`` (B,) on the last unmasked
    token of each row. ``ref_logps=None`` means no reference (KL = 0). ``mask`` must be right-padded.
    """
    mask = mask.to(logps.dtype)
    kl = (logps - ref_logps) * mask if ref_logps is not None else torch.zeros_like(logps)
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (B,) index of the last completion token
    has_tokens = mask.sum(1) > 0
    rewards[torch.arange(rewards.size(0), device=rewards.device), last] += torch.where(has_tokens, scores, 0.0)
    return rewards * mask, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns by GAE(γ, λ) over right-padded completions.

    Args:
        rewards: (B, T) per-token rewards r_t.
        values: (B, T) critic values V(s_t), the value of the state *before* token t is emitted.
        mask: (B, T) 1 for completion tokens, 0 for padding; ones must form a prefix of each row (right padding).
        gamma: discount γ in [0, 1].
        lam: GAE λ in [0, 1].

    Returns:
        ``(advantages, returns)``, both (B, T), zero where ``mask`` is 0, with

            δ_t = r_t + γ·V(s_{t+1})·m_{t+1} − V(s_t)
            A_t = δ_t + γ·λ·m_{t+1}·A_{t+1}
            R_t = A_t + V(s_t)            (the λ-return, the critic's regression target)
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(
            f"gae: rewards, values and mask must all be (B, T); got {tuple(rewards.shape)}, {tuple(values.shape)}, "
            f"{tuple(mask.shape)}."
        )
    if not 0.0 <= gamma <= 1.0 or not 0.0 <= lam <= 1.0:
        raise ValueError(f"gae: gamma and lam must be in [0, 1], got gamma={gamma}, lam={lam}.")
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    T = rewards.size(1)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,) V(s_T) = 0: nothing follows the last token
    next_advantage = torch.zeros_like(rewards[:, 0])
    next_mask = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        advantages[:, t] = delta + gamma * lam * next_mask * next_advantage
        next_value, next_advantage, next_mask = values[:, t], advantages[:, t], mask[:, t]
    advantages = advantages * mask
    returns = (advantages + values) * mask
    return advantages, returns


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance over the positions where ``mask`` is 1 (and to zero mean if ``shift_mean``).

    The variance is the unbiased (n − 1) estimate, as in the classic RLHF PPO implementations. ``shift_mean=False``
    keeps the mean, which is how rewards are whitened (scaling them must not change their sign on average). Masked
    positions come back as 0. With fewer than two unmasked entries the variance is undefined and ``x`` is only
    centred (or returned as is).
    """
    if x.shape != mask.shape:
        raise ValueError(f"whiten: x and mask must have the same shape, got {tuple(x.shape)} and {tuple(mask.shape)}.")
    mask = mask.to(x.dtype)
    n = mask.sum()
    mean = (x * mask).sum() / n.clamp(min=1.0)
    if n < 2:
        out = x - mean if shift_mean else x
        return out * mask
    var = (((x - mean) ** 2) * mask).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask
