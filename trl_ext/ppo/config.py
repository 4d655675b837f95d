"""PPOConfig (GRPOConfig + critic, KL-penalty and GAE fields) and the adaptive KL controller."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from trl import GRPOConfig

from . import porting


# ---- configuration ---------------------------------------------------------------------------------------------------
@dataclass
class PPOConfig(porting.TRL0PPONames, GRPOConfig):
    r"""
    Configuration for [`PPOTrainer`]: every [`trl.GRPOConfig`] field, plus the critic, KL-penalty and GAE fields below.

    Re-defaulted GRPO fields: ``num_generations=1`` (the critic is the baseline; more are allowed),
    ``num_iterations=4`` (PPO epochs per generated batch), ``disable_dropout=True`` (dropout is off in all four
    roles: the critic and reward model are switched off too), ``gradient_checkpointing=None`` (off, Trainer's
    default, instead of GRPO's True; turn ``activation_checkpointing`` on for large models: the shared-base
    critic then runs its own forward without checkpointing, see ``SharedCritic``).

    GRPO's ``beta`` still adds GRPO's k3 KL term to the *loss* and defaults to 0; PPO's KL penalty lives in the
    *reward* and is ``kl_coef``. GRPO's ``loss_type``, ``scale_rewards``, ``multi_objective_aggregation``,
    ``entropy_coef`` and ``top_entropy_quantile`` are not used by PPO's loss or advantages. Several PPO epochs per
    batch are ``num_iterations``; mini-batches per batch are ``steps_per_generation``.

    TRL 0.x's PPOConfig names (``num_ppo_epochs``, ``cliprange``, ``response_length``, ``num_mini_batches``,
    ``total_episodes``, ...) are accepted and mapped onto these fields, or refused with the replacement named
    ([`trl_ext.ppo.porting`], docs/porting-from-trl-ppo.md).
    """

    num_generations: int | None = field(
        default=1, metadata={"help": "Completions per prompt. PPO's baseline is the critic, so 1 is enough."}
    )
    num_iterations: int = field(
        default=4, metadata={"help": "PPO epochs: optimisation passes over each generated batch."}
    )
    disable_dropout: bool = field(
        default=True, metadata={"help": "Turn dropout off in policy, reference, reward model and critic."}
    )
    gradient_checkpointing: bool | None = field(
        default=None,
        metadata={"help": "Deprecated alias of activation_checkpointing (transformers 5); None = off, as in Trainer."},
    )
    kl_coef: float = field(
        default=0.05,
        metadata={"help": "β of the per-token KL penalty −β·(log π − log π_ref) in the reward; 0 drops the reference."},
    )
    kl_target: float | None = field(
        default=None,
        metadata={
            "help": "Adaptive KL control (Ziegler et al. 2019, §2.2): target for the per-completion KL Σ_t (log π − "
            "log π_ref); β is multiplied by 1 + clip(KL/target − 1, ±0.2)·n/kl_horizon after each batch of n "
            "completions. None keeps β fixed."
        },
    )
    kl_horizon: int = field(default=10000, metadata={"help": "Horizon (in completions) of the adaptive KL control."})
    gamma: float = field(default=1.0, metadata={"help": "Discount γ of GAE, in [0, 1]."})
    lam: float = field(default=0.95, metadata={"help": "λ of GAE, in [0, 1]."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "Clip range of the value update around the values seen at generation time."}
    )
    whiten_rewards: bool = field(
        default=False, metadata={"help": "Scale the per-token rewards to unit variance (mean kept) before GAE."}
    )
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Whiten the advantages over the completion tokens of each generated batch."}
    )
    missing_eos_penalty: float | None = field(
        default=None,
        metadata={"help": "Subtracted from the score of completions that end without EOS (truncated); None: none."},
    )
    critic_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the critic's parameter group; None uses learning_rate."}
    )
    shared_base: bool = field(
        default=False,
        metadata={
            "help": "All four roles on the policy's base model: policy LoRA 'default' (needs peft_config), critic LoRA "
            "'critic' + value head, reference = adapters disabled, reward model = LoRA adapter 'reward' + score head "
            "(pass reward_funcs as the folder of a LoRA reward-model adapter, or use reward callables)."
        },
    )

    def __post_init__(self):
        porting.map_config_names(self)  # TRL 0.x names, before GRPO derives the batch sizes from them
        for name in ("gamma", "lam"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PPOConfig.{name}={value} is outside [0, 1]; GAE needs 0 <= {name} <= 1 (defaults: "
                                 "gamma=1.0, lam=0.95).")
        if self.kl_coef < 0:
            raise ValueError(f"PPOConfig.kl_coef={self.kl_coef} must be >= 0 (0 turns the KL penalty off).")
        if self.kl_target is not None and (self.kl_target <= 0 or self.kl_coef == 0):
            raise ValueError(
                f"PPOConfig.kl_target={self.kl_target} needs kl_target > 0 and an initial kl_coef > 0 "
                f"(got kl_coef={self.kl_coef}); set kl_target=None for a fixed coefficient."
            )
        if self.kl_horizon <= 0:
            raise ValueError(f"PPOConfig.kl_horizon={self.kl_horizon} must be a positive number of completions.")
        if self.vf_coef <= 0:
            raise ValueError(f"PPOConfig.vf_coef={self.vf_coef} must be > 0, otherwise the critic never learns.")
        if self.cliprange_value <= 0:
            raise ValueError(f"PPOConfig.cliprange_value={self.cliprange_value} must be > 0.")
        if self.num_generations is None or self.num_generations < 1:
            raise ValueError(f"PPOConfig.num_generations={self.num_generations} must be >= 1.")
        self._grpo_post_init()
        # GRPO loss knobs that PPO's own loss would silently ignore: refuse them rather than surprise.
        ignored = {
            "entropy_coef": self.entropy_coef != 0.0,
            "use_adaptive_entropy": self.use_adaptive_entropy,
            "top_entropy_quantile": self.top_entropy_quantile < 1.0,
            "off_policy_mask_threshold": self.off_policy_mask_threshold is not None,
        }
        for name, is_set in ignored.items():
            if is_set:
                raise ValueError(
                    f"PPOConfig.{name}={getattr(self, name)!r} is a GRPO loss option that PPO's loss does not apply; "
                    "leave it at its default."
                )
        porting.map_total_episodes(self)

    def _grpo_post_init(self) -> None:
        """``GRPOConfig.__post_init__`` with its group-size check overridden for ``num_generations == 1``.

        GRPOConfig refuses ``num_generations < 2`` because its advantages are group-relative; PPO's come from the
        critic, and one completion per prompt is the classic setting (``num_generations >= 1`` is checked in
        ``__post_init__``). The check sits inline among the batch-size derivations that must run, so there is no
        hook to skip it. What GRPOConfig does with ``num_generations`` is check it, never derive from it: two
        divisibility checks, which a group of 1 passes trivially (the generation batch and the eval batch), and the
        ``< 2`` check. So for 1 the parent is shown a stand-in group size that passes all three: the per-device
        train batch (the generation batch is a multiple of it, which GRPOConfig derives or checks before), or, when
        that is 1, the generation rows per device (``steps_per_generation``/``gradient_accumulation_steps``); the
        eval check is pointed at a group of 1 through ``num_generations_eval``. Both fields get their values back
        afterwards. A generation batch of one completion per device is refused (no stand-in exists for it).
        """
        requested, requested_eval = self.num_generations, self.num_generations_eval
        if requested != 1:
            super().__post_init__()
            return
        stand_in = self.per_device_train_batch_size
        if stand_in < 2:
            stand_in = self.generation_batch_size or self.steps_per_generation or self.gradient_accumulation_steps
        if stand_in < 2:
            raise ValueError(
                "PPOConfig: num_generations=1 with per_device_train_batch_size=1 needs at least two completions per "
                "generation batch on each device: set steps_per_generation (or gradient_accumulation_steps) >= 2, or "
                "per_device_train_batch_size >= 2."
            )
        self.num_generations, self.num_generations_eval = stand_in, requested_eval or 1
        try:
            super().__post_init__()
        finally:
            self.num_generations, self.num_generations_eval = requested, requested_eval


_dataclass_init = PPOConfig.__init__


@functools.wraps(_dataclass_init)
def _init_refusing_old_properties(self, *args, **kwargs):
    porting.refuse_unknown_kwargs(kwargs)
    _dataclass_init(self, *args, **kwargs)


PPOConfig.__init__ = _init_refusing_old_properties  # `world_size` is a TrainingArguments property, not a field


class AdaptiveKLController:
    """β ← β·(1 + clip(KL/target − 1, −0.2, 0.2)·n/horizon), Ziegler et al. 2019 §2.2 (a proportional controller)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> float:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value
