"""Advantage estimators as pure tensor functions: no model, no trainer state, tested with hand-computed numbers."""

from __future__ import annotations

import torch

# ---- PPO: generalised advantage estimation and whitening -------------------------------------------------------------
# Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation" (arXiv:1506.02438),
# eq. 16, and the per-token RLHF form of Ouyang et al. 2022 / Ziegler et al. 2019: one episode per completion, one
# action per token, the episode ends after the last unmasked token (its bootstrap value is 0).


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
