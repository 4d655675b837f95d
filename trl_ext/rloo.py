"""RLOO (REINFORCE Leave-One-Out, arXiv 2402.14740) on DAPOTrainer's machinery: the leave-one-out baseline, the KL
penalty in the sequence reward, and -- as options -- clip-higher, token-level loss, overlong shaping and dynamic
sampling, all shared with :mod:`trl_ext.dapo` rather than copied."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
from trl.trainer.utils import nanstd

from . import seam
from .advantages import leave_one_out_advantages
from .cards import RLOO_PAPER
from .dapo import DAPOConfig, DAPOTrainer

KL_CHOICES = ("reward", "loss")


@dataclass
class RLOOConfig(DAPOConfig):
    """``trl.RLOOConfig``'s drop-in: its fields with its defaults, on ``DAPOConfig``'s machinery.

    Every ``trl.RLOOConfig`` field is accepted with TRL's default (``num_generations=2``, ``beta=0.05``,
    ``epsilon_high=None``, ``normalize_advantages=False``, ``reward_clip_range=None``, ...); the intended differences
    are listed in docs/drop-in.md (the ``RLOOConfig`` table) and checked by ``tests/test_trl_contract.py``.
    The extra fields come from ``GRPOConfig`` (the loss is GRPO's, so its loss options apply) and ``DAPOConfig``
    (off by default: ``overlong_buffer_length=0``, ``dynamic_sampling=False``; set ``epsilon_high=0.28``,
    ``overlong_buffer_length=None``, ``dynamic_sampling=True`` to get RLOO advantages inside DAPO's recipe). Two GRPO
    fields choose how GRPO forms *its* advantages, which RLOO replaces: ``scale_rewards`` (re-defaulted to ``"none"``)
    and ``multi_objective_aggregation``; any other value is refused.
    """

    num_generations: int | None = field(
        default=2,
        metadata={"help": "Completions per prompt, k of the leave-one-out baseline (trl.RLOOConfig's default, 2)."},
    )
    beta: float = field(
        default=0.05,
        metadata={"help": "KL coefficient. With kl_in='reward', the sequence reward becomes r - beta * "
                  "sum_t (log pi_old - log pi_ref) (the paper's form); 0 loads no reference model."},
    )
    kl_in: str = field(
        default="reward",
        metadata={"help": "'reward': sequence-level KL subtracted from the reward before the leave-one-out baseline "
                  "(RLOO paper, trl.RLOOTrainer). 'loss': TRL GRPO's per-token k3 estimator added to the loss."},
    )
    normalize_advantages: bool = field(
        default=False, metadata={"help": "Whiten advantages over the generation batch (as trl.RLOOConfig)."}
    )
    reward_clip_range: tuple[float, float] | None = field(
        default=None,
        metadata={"help": "Clip the weighted reward sum to (min, max) before the KL penalty and the baseline, as "
                  "trl.RLOOConfig. None: no clipping."},
    )
    scale_rewards: str = field(
        default="none",
        metadata={"help": "GRPO's std scaling of its advantages; RLOO's leave-one-out advantages are not scaled, so "
                  "only 'none' is accepted (whiten with normalize_advantages=True instead)."},
    )
    epsilon_high: float | None = field(default=None, metadata={"help": "Upper clip bound; None: epsilon."})
    overlong_buffer_length: int | None = field(
        default=0, metadata={"help": "Soft overlong punishment buffer (see DAPOConfig); 0 (default) disables it."}
    )
    dynamic_sampling: bool = field(
        default=False, metadata={"help": "DAPO dynamic sampling (see DAPOConfig); off by default for plain RLOO."}
    )

    def __post_init__(self):
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations={self.num_generations}: RLOO's baseline is the mean reward of the other samples of "
                "the same prompt, so it needs num_generations >= 2 (the paper uses k = 2 or 4)."
            )
        if self.kl_in not in KL_CHOICES:
            raise ValueError(f"kl_in={self.kl_in!r}: use one of {KL_CHOICES}.")
        if self.scale_rewards not in ("none", False):
            raise ValueError(
                f"scale_rewards={self.scale_rewards!r}: scale_rewards is GRPOConfig's std scaling of GRPO's advantages "
                "and is not a trl.RLOOConfig field; RLOO's leave-one-out advantages are not std-scaled. Leave it at "
                "'none', or set normalize_advantages=True to whiten the advantages over the generation batch."
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"multi_objective_aggregation={self.multi_objective_aggregation!r}: RLOO forms its baseline on the "
                "weighted sum of the rewards (as trl.RLOOTrainer); normalising each reward first is GRPO's option "
                "and is not applied here. Leave it at 'sum_then_normalize' or use DAPOTrainer/GRPOTrainer."
            )
        if self.reward_clip_range is not None:
            self.reward_clip_range = tuple(float(x) for x in self.reward_clip_range)
            if len(self.reward_clip_range) != 2 or self.reward_clip_range[0] > self.reward_clip_range[1]:
                raise ValueError(f"reward_clip_range={self.reward_clip_range}: give (min, max) with min <= max.")
        super().__post_init__()


class RLOOTrainer(DAPOTrainer):
    """RLOO (https://huggingface.co/papers/2402.14740) with DAPO's options, as a subclass of :class:`DAPOTrainer`.

    Hooks overridden (on top of DAPOTrainer's):

    * ``_round_advantages`` (DAPOTrainer's seam, called after GRPOTrainer's generation and scoring): replaces the
      group-relative advantages with :func:`trl_ext.advantages.leave_one_out_advantages` of the weighted reward plus
      the overlong shaping when it is on (clipped to ``reward_clip_range``) minus ``beta`` times the sequence-level
      KL (first-order estimator ``sum_t log pi_old - log pi_ref``, as trl.RLOOTrainer). Dynamic sampling calls this
      hook for every round and judges the groups on these advantages, so it composes unchanged. Evaluating on one
      completion per prompt (``num_generations_eval=1``) gives advantage 0, as in trl.RLOOTrainer.
    * the KL term: with ``kl_in='reward'`` (the default) the KL is a term of the sequence reward, so GRPOTrainer's
      per-token loss term is off for the whole run: after GRPOTrainer's ``__init__`` has loaded the reference model,
      its loss coefficient ``beta`` is set to 0 and RLOO's coefficient is kept as ``reward_kl_coef``, and the
      reference log-probabilities come from ``_reference_logps`` (:func:`trl_ext.seam.reference_logps`: the
      reference model, or under LoRA the adapter "ref" or the base with the adapter off, GRPOTrainer's rule). With
      ``kl_in='loss'`` ``beta`` stays GRPOTrainer's and its k3 term is in the loss as in GRPO.

    The rewards RLOO starts from are the round's record (``rewards.shaped_total``,
    :class:`trl_ext.advantages.RoundRewards`); the completions table shows RLOO's advantages
    (:func:`trl_ext.seam.replace_advantages`).

    The loss is GRPOTrainer's clipped token-level objective (``loss_type``), not trl.RLOOTrainer's sequence-level
    ratio, which is what lets clip-higher and the token-level loss apply.
    """

    _tag_names = ["trl", "rloo", "trl_ext"]
    _name, _paper = "RLOO", RLOO_PAPER

    config_class = RLOOConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # GRPOTrainer loaded the reference model because beta != 0; with kl_in='reward' its loss must not add the
        # k3 term as well, so its coefficient is 0 from here on and RLOO's lives in reward_kl_coef.
        self.reward_kl_coef = self.beta if self.args.kl_in == "reward" else 0.0
        if self.reward_kl_coef:
            seam.move_kl_out_of_the_loss(self)

    __init__.__signature__ = inspect.signature(DAPOTrainer.__init__)  # help() and IDEs show the real arguments

    def _round_advantages(self, output: dict, rewards, num_generations: int, mode: str) -> torch.Tensor:
        total = rewards.shaped_total  # (N_global,), NaN where unscorable
        if self.args.reward_clip_range is not None:  # trl.RLOOTrainer: clip the weighted sum, before the KL term
            total = total.clamp(*self.args.reward_clip_range)
        if self.reward_kl_coef:
            total = total - self.reward_kl_coef * self._sequence_kl(output, mode)

        advantages = leave_one_out_advantages(total, num_generations)  # (N_global,), 0 where unscorable
        if self.args.normalize_advantages:
            scored = torch.where(torch.isnan(total), torch.nan, advantages)
            advantages = torch.nan_to_num((scored - torch.nanmean(scored)) / (nanstd(scored) + 1e-4), nan=0.0)
        return advantages

    def _sequence_kl(self, output: dict, mode: str) -> torch.Tensor:
        """sum_t (log pi_old - log pi_ref) over each completion's tokens, gathered over processes, (N_global,);
        logs the per-token mean as ``kl``. Stores the sampling policy's log-probs in ``output`` if GRPO did not."""
        if seam.behaviour_logps(output) is None:
            output["old_per_token_logps"] = self._policy_logps(output)  # the sampling policy's, (B, T)
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        per_token_kl = (output["old_per_token_logps"] - self._reference_logps(output)) * mask  # (B, T)
        stats = self.accelerator.reduce(torch.stack([per_token_kl.sum(), mask.sum().float()]), "sum")
        seam.metrics(self, mode)["kl"].append((stats[0] / stats[1].clamp(min=1.0)).item())
        return self.accelerator.gather(per_token_kl.sum(dim=-1))

    @torch.no_grad()
    def _reference_logps(self, batch: dict) -> torch.Tensor:
        """The reference policy's per-token log-probs (B, T), by GRPOTrainer's rule
        (:func:`trl_ext.seam.reference_logps`)."""
        return seam.reference_logps(self, *seam.model_inputs(batch), batch_size=self.args.per_device_train_batch_size)
