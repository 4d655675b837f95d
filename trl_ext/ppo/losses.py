"""PPO's two per-token losses as pure functions on (B, C) tensors; the trainer masks and normalises them."""

from __future__ import annotations

import torch


def clipped_value_loss(values_new, values_old, returns, cliprange_value: float):
    """0.5 · max((V − R)², (V_clipped − R)²) per token, (B, C): the new value may move at most
    ``cliprange_value`` from the rollout's; and where the clipped term is the larger, (B, C) bool."""
    values_clipped = values_old + torch.clamp(values_new - values_old, -cliprange_value, cliprange_value)
    vf_losses, vf_losses_clipped = (values_new - returns) ** 2, (values_clipped - returns) ** 2
    return 0.5 * torch.maximum(vf_losses, vf_losses_clipped), vf_losses_clipped > vf_losses


def clipped_surrogate(logps, old_logps, advantages, epsilon_low: float, epsilon_high: float, beta: float = 0.0,
                      ref_logps=None, importance_sampling_ratio=None):
    """Per-token clipped surrogate (Schulman et al. 2017, eq. 7), (B, C), times ``importance_sampling_ratio`` ((B, C)
    or (B, 1): TRL's correction for sampling with vLLM, applied as GRPO's loss applies it, to the policy term only),
    plus GRPO's k3 KL term if ``beta`` (kept for users who set it); also the ratio π/π_old and its log, (B, C)
    each."""
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    pg_loss_tok = torch.maximum(pg_losses, pg_losses_clipped)
    if importance_sampling_ratio is not None:
        pg_loss_tok = pg_loss_tok * importance_sampling_ratio
    if beta != 0.0:
        pg_loss_tok = pg_loss_tok + beta * (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1)
    return pg_loss_tok, ratio, log_ratio
