"""PPO's logs, over all processes: the rollout's (TRL's name where it has one, ``kl``; the rest under ``ppo/``) and
the loss's (``entropy``, ``clip_ratio/*`` as GRPO logs them, ``ppo/*``), each a masked mean over the tokens."""

from __future__ import annotations

import torch


def global_mean(accelerator, x: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``x`` over the unmasked entries of every process."""
    totals = accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum()]).detach(), reduction="sum")
    return (totals[0] / totals[1].clamp(min=1.0)).item()


def explained_variance(accelerator, returns: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> float:
    """How much of the returns' variance the critic's rollout values explain, 1 − Var(R − V) / Var(R), over the
    unmasked tokens of every process (NaN when the returns do not vary)."""
    r, d = returns[mask.bool()], (returns - values)[mask.bool()]  # (n_tokens,) each
    sums = torch.stack([r.sum(), (r**2).sum(), d.sum(), (d**2).sum(), r.new_tensor(r.numel())])
    sr, srr, sd, sdd, n = accelerator.reduce(sums, reduction="sum").tolist()
    var_r, var_d = srr / max(n, 1) - (sr / max(n, 1)) ** 2, sdd / max(n, 1) - (sd / max(n, 1)) ** 2
    return 1.0 - var_d / var_r if var_r > 1e-12 else float("nan")


def log_rollout(metrics, accelerator, *, kl, kl_coef, scores, contains_eos, values, returns, mask) -> float:
    """Rollout metrics, (B, C) tensors but ``scores`` and ``contains_eos`` (B,); returns the mean per-completion KL,
    which the adaptive controller reads."""
    seq_kl = accelerator.gather(kl.sum(1)).mean().item()
    metrics["kl"].append(global_mean(accelerator, kl, mask))
    metrics["ppo/kl_per_completion"].append(seq_kl)
    metrics["ppo/kl_coef"].append(kl_coef)
    all_scores = accelerator.gather(scores)
    metrics["ppo/score"].append(all_scores[~torch.isnan(all_scores)].mean().item())  # over the scored rows
    metrics["ppo/eos_ratio"].append(accelerator.gather(contains_eos.float()).mean().item())
    metrics["ppo/values_mean"].append(global_mean(accelerator, values, mask))
    metrics["ppo/returns_mean"].append(global_mean(accelerator, returns, mask))
    metrics["ppo/explained_variance"].append(explained_variance(accelerator, returns, values, mask))
    return seq_kl


def log_loss(metrics, accelerator, *, mask, entropies, pg_loss_tok, vf_loss_tok, vf_clipped, ratio, log_ratio,
             advantages, epsilon_low, epsilon_high) -> None:
    """Loss metrics of one micro-batch, every tensor (B, C)."""
    metrics["entropy"].append(global_mean(accelerator, entropies, mask))
    metrics["ppo/policy_loss"].append(global_mean(accelerator, pg_loss_tok, mask))
    metrics["ppo/value_loss"].append(global_mean(accelerator, vf_loss_tok, mask))
    metrics["ppo/approx_kl"].append(global_mean(accelerator, 0.5 * log_ratio**2, mask))  # ≈ KL(π_old || π), k2
    is_low = (ratio < 1 - epsilon_low) & (advantages < 0)
    is_high = (ratio > 1 + epsilon_high) & (advantages > 0)
    metrics["clip_ratio/low_mean"].append(global_mean(accelerator, is_low.float(), mask))
    metrics["clip_ratio/high_mean"].append(global_mean(accelerator, is_high.float(), mask))
    metrics["clip_ratio/region_mean"].append(global_mean(accelerator, (is_low | is_high).float(), mask))
    metrics["ppo/value_clip_ratio"].append(global_mean(accelerator, vf_clipped.float(), mask))
