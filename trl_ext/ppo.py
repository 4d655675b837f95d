"""PPO with a learned critic (the seed's stage 3), built on TRL's GRPO generation machinery.

TRL removed its ``PPOTrainer``, value-head models and multi-adapter RL in 2026. This module brings back the classic
RLHF recipe of Ziegler et al. 2019 (arXiv:1909.08593) and Ouyang et al. 2022 (arXiv:2203.02155), in the shape of the
"N implementation details of RLHF with PPO" (Huang et al. 2024, arXiv:2403.17031):

* per-token reward  r_t = −β·(log π(y_t) − log π_ref(y_t)),  plus the reward model's score at the last token
  (minus ``missing_eos_penalty`` when the completion never emitted EOS); β fixed or adapted to a KL target;
* advantages by GAE(γ, λ) against a critic's per-token values, whitened; returns = advantages + values;
* clipped policy surrogate and clipped value loss, several epochs (TRL's ``num_iterations``) per generated batch.

Four roles: policy, reference, reward model, critic. Either separate models (the critic is a sequence-classification
model initialised from the reward model), or all four on one (optionally 4-bit) base with ``shared_base=True``:
policy = LoRA adapter ``"default"``, critic = LoRA adapter ``"critic"`` + a value head, reference = adapters
disabled, reward model = LoRA adapter ``"reward"`` + its score head.
"""

from __future__ import annotations

import copy
import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import is_peft_model, parse_flag_from_env
from datasets import Dataset
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import (
    add_fused_lm_head,
    create_model_from_path,
    disable_dropout_in_model,
    get_config_model_id,
)

from . import ppo_porting
from .adapters import active_adapter, backbone_of, keep_requires_grad, load_reward_adapter_onto
from .advantages import gae, whiten
from .cards import INSTRUCTGPT_PAPER, PPO_PAPER, ModelCardMixin
from .checks import check_prompt_dataset
from .models import disable_bnb_cpu_repack, safe_from_pretrained
from .resume import GenerationStateMixin
from .rewards import RewardAdapter

REWARD_ADAPTER, CRITIC_ADAPTER = "reward", "critic"


# ---- configuration ---------------------------------------------------------------------------------------------------
class _GroupSizeOne(int):
    """``num_generations=1`` passed through ``GRPOConfig.__post_init__``, whose ``< 2`` guard exists for group-relative
    advantages. PPO's advantages come from the critic, so one completion per prompt is the classic setting."""

    def __lt__(self, other):
        return False


@dataclass
class PPOConfig(ppo_porting.TRL0PPONames, GRPOConfig):
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
    ([`trl_ext.ppo_porting`], docs/porting-from-trl-ppo.md).
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
        ppo_porting.map_config_names(self)  # TRL 0.x names, before GRPO derives the batch sizes from them
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
        requested = self.num_generations
        if requested == 1:
            self.num_generations = _GroupSizeOne(1)
        super().__post_init__()
        self.num_generations = int(requested)
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
        ppo_porting.map_total_episodes(self)


_dataclass_init = PPOConfig.__init__


@functools.wraps(_dataclass_init)
def _init_refusing_old_properties(self, *args, **kwargs):
    ppo_porting.refuse_unknown_kwargs(kwargs)
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


# ---- the per-token reward (pure) -------------------------------------------------------------------------------------
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


# ---- critics ---------------------------------------------------------------------------------------------------------
def _train_critic_adapter(peft_model) -> None:
    """Make the critic adapter trainable (PEFT leaves an added or re-loaded inactive adapter frozen)."""
    quantized = getattr(peft_model.get_base_model(), "is_loaded_in_4bit", False)
    for n, p in peft_model.named_parameters():
        if f".{CRITIC_ADAPTER}." in n:
            p.requires_grad_(True)
            if quantized and p.dtype != torch.bfloat16:  # as GRPO does for the policy adapter (QLoRA recipe)
                p.data = p.data.to(torch.bfloat16)
    peft_model.peft_config[CRITIC_ADAPTER].inference_mode = False


class SeparateCritic(nn.Module):
    """A sequence-classification model used as a per-token value function: its score head on every hidden state."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        head_name = next((n for n in ("score", "classifier") if hasattr(model, n)), None)
        if head_name is None:
            raise ValueError(
                f"value_model ({type(model).__name__}) has no `score` or `classifier` head; pass an "
                "AutoModelForSequenceClassification with num_labels=1."
            )
        self.head_name = head_name

    def forward(self, input_ids, attention_mask):  # -> (B, L)
        hidden = backbone_of(self.model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return getattr(self.model, self.head_name)(hidden).squeeze(-1)


class SharedCritic(nn.Module):
    """The LoRA adapter ``"critic"`` on the policy's base plus a value head; only the head is a submodule here.

    The adapter's weights live in the policy model (and in its optimizer group membership, see
    ``PPOTrainer.create_optimizer``); this module keeps an unregistered reference to it so its parameters are not
    counted twice.
    """

    def __init__(self, peft_model, value_head: nn.Linear, gradient_checkpointing_kwargs=None):
        super().__init__()
        object.__setattr__(self, "peft_model", peft_model)
        self.value_head = value_head
        self._gc_kwargs = gradient_checkpointing_kwargs

    def forward(self, input_ids, attention_mask):  # -> (B, L)
        base = self.peft_model.get_base_model()
        # Checkpointing would recompute this forward during backward with whichever adapter is active *then* (the
        # policy's): the critic's forward keeps its activations instead.
        with active_adapter(self.peft_model, CRITIC_ADAPTER), disable_gradient_checkpointing(base, self._gc_kwargs):
            hidden = backbone_of(base)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)


class _PendingSharedBaseReward:
    """A reward-adapter folder in ``reward_funcs`` until the policy's PeftModel exists.

    GRPOTrainer builds the PeftModel from ``peft_config`` inside ``__init__``, after it has read ``reward_funcs`` (a
    string there would be loaded as a full reward model); ``PPOTrainer._setup_shared_roles`` then puts
    :meth:`trl_ext.RewardAdapter.shared_base` on that model in this placeholder's place, under the same name.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.__name__ = f"reward_adapter:{self.path.name}"

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.__name__} was never put on the policy's base; PPOTrainer does that in __init__.")


def _is_adapter_dir(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and (Path(path) / "adapter_config.json").exists()


def _same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.pad_token_id == b.pad_token_id


# ---- the trainer -----------------------------------------------------------------------------------------------------
class PPOTrainer(ModelCardMixin, GenerationStateMixin, GRPOTrainer):
    """
    PPO with a critic (Ouyang et al. 2022, arXiv:2203.02155; Schulman et al. 2017, arXiv:1707.06347) on GRPOTrainer.

    Hooks overridden w.r.t. [`trl.GRPOTrainer`], and why:

    * ``_calculate_rewards``: calls GRPO's, and keeps the gathered per-function scores for the next hook.
    * ``_generate_and_score_completions``: calls GRPO's (generation, reward scoring, logging, buffering-ready
      output), then replaces its group-relative advantages: policy and reference log-probs per token, critic values,
      per-token KL-penalised rewards with the score at the last token ([`token_rewards`]), GAE advantages and returns
      ([`trl_ext.advantages.gae`]), whitening, adaptive KL. The output gains ``values``, ``returns`` and per-token
      ``advantages`` (B, T); ``old_per_token_logps`` is always set.
    * ``_compute_loss``: clipped policy surrogate + ``vf_coef`` × clipped value loss, both token-level means over the
      generation batch (GRPO's ``"dapo"`` normalisation, so gradient accumulation is exact). Both are in the one
      returned loss that Trainer back-propagates (no backward inside the hook, so the engine's backward/step stay
      Trainer's).
    * ``create_optimizer``: GRPO/Trainer's optimizer for the policy, plus one parameter group for the critic
      (``critic_learning_rate``). The critic is thus optimised by the same optimizer, scheduler and ``optimizer.step``
      as the policy. Trainer clips the policy model's gradients (with a shared critic adapter among them); the critic
      parameters outside the policy model (separate critic, value head) are clipped to ``max_grad_norm`` on their
      own by an optimizer step pre-hook and zeroed by a post-hook (Trainer zeroes only the policy model's).
    * ``_save``: also writes the critic (``critic/`` for a separate critic, the ``critic`` adapter + ``value_head.pt``
      when shared); ``_load_from_checkpoint`` reads it back on resume (Trainer restores only the policy), and the
      checkpoint's ``trl_ext_state_{rank}.pt`` holds the adaptive KL coefficient and GRPO's generation buffer
      (:class:`trl_ext.resume.GenerationStateMixin`), so a resumed run matches an uninterrupted one.

    Everything else (generation with transformers or vLLM, the RepeatSampler and ``steps_per_generation`` buffering,
    ``num_iterations`` reuse = PPO epochs, metrics and completion logging) is GRPO's, unchanged.

    Args beyond GRPOTrainer's:
        value_model: the critic as a sequence-classification model (instance or path), for separate roles. Default:
            a copy of the reward model when ``reward_funcs`` contains one, otherwise the policy's checkpoint loaded
            with a fresh ``num_labels=1`` head. Its tokenizer must be the policy's (it reads the policy's token ids).
        ref_model: the frozen reference of the KL penalty (a causal LM or a path), as in TRL 0.x. Default: a fresh
            copy of the policy's checkpoint, or with PEFT the policy with its adapters disabled.

    TRL 0.x's keywords are accepted too: ``config``/``policy``/``ref_policy``/``tokenizer`` (its older names) and
    ``reward_model`` (= ``reward_funcs``); ``data_collator`` and the old positional order are refused with the fix.
    DeepSpeed is refused (the critic is outside the engine's model); see docs/porting-from-trl-ppo.md.
    """

    _tag_names = ["trl", "trl_ext", "ppo"]
    _name = "PPO"
    _paper, _extra_papers = PPO_PAPER, (INSTRUCTGPT_PAPER,)  # model card (trl_ext.cards)

    def __init__(
        self,
        model=None,
        reward_funcs=None,
        args: PPOConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        value_model: PreTrainedModel | str | None = None,
        ref_model: PreTrainedModel | str | None = None,
        **kwargs,
    ):
        named = dict(model=model, reward_funcs=reward_funcs, args=args, ref_model=ref_model,
                     processing_class=processing_class)
        named = ppo_porting.map_trainer_kwargs(named, kwargs)  # TRL 0.x's keywords (policy=, reward_model=, ...)
        model, reward_funcs, args, ref_model = named["model"], named["reward_funcs"], named["args"], named["ref_model"]
        processing_class = named["processing_class"]
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = PPOConfig(f"{str(model_name).split('/')[-1]}-PPO")
        if not isinstance(args, PPOConfig):
            raise TypeError(f"PPOTrainer needs args=PPOConfig(...), got {type(args).__name__}.")
        if reward_funcs is None or (isinstance(reward_funcs, list) and not reward_funcs):
            raise ValueError(
                "PPOTrainer needs a reward: pass reward_funcs= a reward model (a folder with a sequence-classification "
                "checkpoint, an AutoModelForSequenceClassification, or with shared_base=True a LoRA reward-adapter "
                "folder) or reward callable(s) f(prompts, completions, **kw) -> list[float]."
            )
        check_prompt_dataset(train_dataset, "train_dataset", "PPOTrainer")
        check_prompt_dataset(eval_dataset, "eval_dataset", "PPOTrainer")
        if optimizers[0] is not None:
            raise ValueError(
                "PPOTrainer builds its own optimizer so that the critic's parameters are in it (see create_optimizer); "
                "choose it with args.optim, args.learning_rate and args.critic_learning_rate instead of optimizers=."
            )
        if args.deepspeed or parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
            raise NotImplementedError(
                "PPOTrainer does not run under DeepSpeed: the critic (a separate model, or the shared base's value "
                "head) is a second trainable module outside the model the DeepSpeed engine wraps, which ZeRO's "
                "sharding, gradient reduction and mixed precision are not known to handle. Train on several GPUs "
                "with DDP (recipes/configs/accelerate/ddp.yaml), or on one GPU with shared_base=True (and 4-bit)."
            )
        for unsupported in ("tools", "environment_factory"):
            if kwargs.get(unsupported):
                raise NotImplementedError(f"PPOTrainer does not support {unsupported}= (GAE assumes one contiguous "
                                          "completion per episode); use GRPOTrainer for tool use.")
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        if args.shared_base:
            if peft_config is None and not (isinstance(model, nn.Module) and is_peft_model(model)):
                raise ValueError(
                    "PPOConfig.shared_base=True puts policy, critic, reference and reward model on one base as LoRA "
                    "adapters, so it needs peft_config=LoraConfig(...) (or a PeftModel policy)."
                )
            if value_model is not None:
                raise ValueError(
                    "value_model= is for separate roles; with PPOConfig.shared_base=True the critic is a LoRA adapter "
                    "on the policy's base. Drop value_model or set shared_base=False."
                )
            for r in reward_funcs:
                if isinstance(r, nn.Module) or (isinstance(r, (str, os.PathLike)) and not _is_adapter_dir(r)):
                    raise ValueError(
                        "PPOConfig.shared_base=True needs the reward model as a LoRA adapter folder "
                        f"(adapter_config.json + adapter_model.safetensors with its score head), got {r!r}. Pass the "
                        "adapter folder or a reward callable, or set shared_base=False for a separate reward model."
                    )
            reward_funcs = [_PendingSharedBaseReward(r) if _is_adapter_dir(r) else r for r in reward_funcs]
        if ref_model is not None:
            if isinstance(ref_model, nn.Module) and ref_model is model:
                raise ValueError(
                    "ref_model is the policy itself; pass a separate copy (copy.deepcopy(model)), or no ref_model: the "
                    "reference is then a fresh copy of the policy's checkpoint (or, with PEFT, its adapters disabled)."
                )
            if args.shared_base:
                raise ValueError(
                    "ref_model= is for separate roles; with PPOConfig.shared_base=True the reference is the shared "
                    "base with adapters disabled. Drop ref_model or set shared_base=False."
                )

        super().__init__(
            model,
            reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            peft_config=peft_config,
            **kwargs,
        )
        self.kl_coef = args.kl_coef
        self.kl_ctl = AdaptiveKLController(args.kl_coef, args.kl_target, args.kl_horizon) if args.kl_target else None
        self._last_rewards_per_func = None

        unwrapped = self.accelerator.unwrap_model(self.model)
        if args.shared_base:
            if self.accelerator.num_processes > 1:
                raise NotImplementedError(
                    "PPOConfig.shared_base=True runs in one process (the consumer-GPU setting): the critic adapter "
                    "lives inside the DDP-wrapped policy but runs its own forward/backward. Use shared_base=False to "
                    "train on several processes."
                )
            self._setup_shared_roles(unwrapped)
        else:
            critic = self._build_separate_critic(value_model)
            self.critic = self.accelerator.prepare_model(critic)
            # Reference: GRPO builds one only when its loss needs it (beta != 0); PPO's reward needs it for kl_coef > 0.
            if ref_model is not None:
                self.ref_model = self._build_reference(ref_model)
            elif self.kl_coef > 0 and self.ref_model is None and not is_peft_model(unwrapped):
                self.ref_model = self._build_reference()
        if args.stop_token_id is not None and args.stop_token_id not in self.eos_token_ids:
            raise ValueError(
                f"PPOConfig.stop_token_id={args.stop_token_id} (TRL 0.x) is not an EOS id of the model "
                f"({self.eos_token_ids}); completions end at those. To stop at another token, add it to "
                "model.generation_config.eos_token_id before building the trainer, and drop stop_token_id."
            )
        for reward_func in self.reward_funcs:
            if isinstance(reward_func, nn.Module) and args.disable_dropout:
                disable_dropout_in_model(reward_func)

    # ---- construction ------------------------------------------------------------------------------------------------
    def _build_reference(self, ref=None):
        """The frozen reference: ``ref`` (a model or a path, TRL 0.x's ``ref_model``) or the policy's checkpoint."""
        model_init_kwargs = dict(self.args.model_init_kwargs or {})
        model_init_kwargs.setdefault("trust_remote_code", self.args.trust_remote_code)
        model_init_kwargs.setdefault("dtype", self.model.dtype)
        if ref is None or isinstance(ref, (str, os.PathLike)):
            source = get_config_model_id(self.model.config) if ref is None else str(ref)
            ref = create_model_from_path(source, **model_init_kwargs)
        elif not isinstance(ref, PreTrainedModel) or is_peft_model(ref):
            raise TypeError(f"ref_model must be a causal LM (PreTrainedModel) or a path, got {type(ref).__name__} "
                            "(merge a PEFT reference first: merge_and_unload()).")
        if ref.get_input_embeddings().num_embeddings < len(self._tokenizer):
            raise ValueError(
                f"ref_model embeds {ref.get_input_embeddings().num_embeddings} tokens but the policy's tokenizer has "
                f"{len(self._tokenizer)}: the reference must use the policy's tokenizer."
            )
        ref.requires_grad_(False)
        disable_bnb_cpu_repack(ref)
        if self.args.disable_dropout:
            disable_dropout_in_model(ref)
        add_fused_lm_head(ref, temperature=self.temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    def _build_separate_critic(self, value_model) -> SeparateCritic:
        tokenizer = self._tokenizer
        source = "value_model"
        if isinstance(value_model, (str, os.PathLike)):
            critic_tokenizer = AutoTokenizer.from_pretrained(value_model, trust_remote_code=self.args.trust_remote_code)
            if not _same_tokenizer(critic_tokenizer, tokenizer):
                raise ValueError(
                    f"value_model={str(value_model)!r} has a different tokenizer from the policy's (vocabulary or pad "
                    "token differ). The critic reads the policy's token ids, so it must share its tokenizer: "
                    "initialise it from a reward model trained on the policy's tokenizer."
                )
            value_model = safe_from_pretrained(
                AutoModelForSequenceClassification, str(value_model), "value_model", num_labels=1,
                **(self.args.model_init_kwargs or {}),
            )
        elif value_model is None:
            reward_models = [r for r in self.reward_funcs if isinstance(r, PreTrainedModel)]
            if reward_models:
                index = self.reward_funcs.index(reward_models[0])
                rm_tokenizer = self.reward_processing_classes[index]
                if not _same_tokenizer(rm_tokenizer, tokenizer):
                    raise ValueError(
                        "The critic is initialised from the reward model, but the reward model's tokenizer differs "
                        "from the policy's. Pass value_model= a sequence-classification model that uses the policy's "
                        "tokenizer."
                    )
                value_model, source = copy.deepcopy(self.accelerator.unwrap_model(reward_models[0])), "reward model"
            else:
                value_model = safe_from_pretrained(
                    AutoModelForSequenceClassification, get_config_model_id(self.model.config), "value_model",
                    num_labels=1, **(self.args.model_init_kwargs or {}),
                )
                source = "policy checkpoint"
        if not isinstance(value_model, PreTrainedModel):
            raise TypeError(f"value_model must be a PreTrainedModel or a path, got {type(value_model).__name__}.")
        vocab = value_model.get_input_embeddings().num_embeddings
        if vocab < len(tokenizer):
            raise ValueError(
                f"The critic ({source}) embeds {vocab} tokens but the policy's tokenizer has {len(tokenizer)}: their "
                "tokenizers differ. The critic must use the policy's tokenizer."
            )
        value_model.config.pad_token_id = tokenizer.pad_token_id
        disable_bnb_cpu_repack(value_model)
        if self.args.disable_dropout:
            disable_dropout_in_model(value_model)
        value_model.requires_grad_(True)
        value_model.train()
        return SeparateCritic(value_model)

    def _setup_shared_roles(self, peft_model) -> None:
        """Adapters on the one base: each reward-adapter folder becomes ``RewardAdapter.shared_base`` on it (the one
        shared-base scorer: RewardTrainer's tokenisation, EOS appended, truncation, micro-batches); the critic is
        loaded from the first such folder (same LoRA weights, same head), else it starts as a fresh adapter."""
        pending = [(i, r) for i, r in enumerate(self.reward_funcs) if isinstance(r, _PendingSharedBaseReward)]
        for k, (i, r) in enumerate(pending):
            self.reward_funcs[i] = RewardAdapter.shared_base(
                peft_model, r.path, adapter_name=REWARD_ADAPTER if k == 0 else f"{REWARD_ADAPTER}_{k}",
                chat_template_kwargs=self.chat_template_kwargs, name=r.__name__,
            )
        hidden = peft_model.get_base_model().config.get_text_config().hidden_size
        device = next(p for p in peft_model.parameters() if p.dtype.is_floating_point).device
        value_head = nn.Linear(hidden, 1).to(device)
        if pending:  # critic initialised from the reward model: same LoRA weights, same head
            head = load_reward_adapter_onto(peft_model, pending[0][1].path, adapter_name=CRITIC_ADAPTER)
            with torch.no_grad():
                value_head.weight.copy_(head.weight)
                value_head.bias.copy_(head.bias if head.bias is not None else torch.zeros(1))
        else:
            peft_model.add_adapter(CRITIC_ADAPTER, copy.deepcopy(peft_model.peft_config["default"]))
            with torch.no_grad():
                value_head.weight.normal_(0.0, 1.0 / (hidden + 1) ** 0.5)
                value_head.bias.zero_()
        _train_critic_adapter(peft_model)
        disable_bnb_cpu_repack(peft_model)
        critic = SharedCritic(peft_model, value_head, self.args.gradient_checkpointing_kwargs)
        self.critic = self.accelerator.prepare_model(critic)

    def _critic_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(parameters inside the policy model, parameters outside it) that the critic trains."""
        critic = self.accelerator.unwrap_model(self.critic)
        outside = [p for p in critic.parameters() if p.requires_grad]
        inside = []
        if self.args.shared_base:
            peft_model = self.accelerator.unwrap_model(self.model)
            inside = [p for n, p in peft_model.named_parameters() if f".{CRITIC_ADAPTER}." in n and p.requires_grad]
        return inside, outside

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        inside, outside = self._critic_parameters()
        for p in inside:  # keep the critic adapter out of the policy's groups, into its own
            p.requires_grad_(False)
        try:
            optimizer = super().create_optimizer(model)
        finally:
            for p in inside:
                p.requires_grad_(True)
        critic_params = inside + outside
        optimizer.add_param_group(
            {
                "params": critic_params,
                "lr": self.args.critic_learning_rate or self.args.learning_rate,
                "weight_decay": self.args.weight_decay,
            }
        )
        max_norm = self.args.max_grad_norm
        if max_norm is not None and max_norm > 0:
            # Trainer clips the policy model's parameters, which include a shared critic adapter; what lives outside
            # the policy model (a separate critic, the value head) is clipped here, as its own group.

            def clip_critic_grads(*_):
                torch.nn.utils.clip_grad_norm_(outside, max_norm)

            optimizer.register_step_pre_hook(clip_critic_grads)

        # Trainer zeroes only the policy model's gradients after each step; without this the critic parameters
        # outside it would add up every step's gradients since the start.
        def zero_critic_grads(*_):
            for p in outside:
                p.grad = None

        optimizer.register_step_post_hook(zero_critic_grads)
        return optimizer

    # ---- rollout: rewards, values, advantages ------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards_per_func  # (N_global, n_funcs), gathered across processes
        return rewards_per_func

    @torch.no_grad()
    def _values(self, input_ids, attention_mask, logits_to_keep, batch_size):
        """Critic values V(s_t) for completion token t: the head on the hidden state that predicts token t."""
        out = []
        for start in range(0, input_ids.size(0), batch_size):
            v = self.critic(input_ids[start : start + batch_size], attention_mask[start : start + batch_size])
            out.append(v[:, -logits_to_keep - 1 : -1])
        return torch.cat(out).float()  # (B, C)

    def _generate_and_score_completions(self, inputs):
        unwrapped = self.accelerator.unwrap_model(self.model)
        # GRPO's reference pass (beta != 0) disables adapters, which refreezes the critic's adapter.
        if is_peft_model(unwrapped):
            with keep_requires_grad(unwrapped):
                output = super()._generate_and_score_completions(inputs)
        else:
            output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        device = self.accelerator.device
        prompt_ids, completion_ids = output["prompt_ids"], output["completion_ids"]
        completion_mask = output["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P+C)
        attention_mask = torch.cat([output["prompt_mask"], completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        mask = completion_mask.float()  # (B, C)

        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps = output.get("old_per_token_logps")
            if logps is None:  # GRPO skips it when on-policy; PPO needs it for the KL penalty and as π_old
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                )
            ref_logps = output.get("ref_per_token_logps")
            if ref_logps is None and self.kl_coef > 0:
                if self.ref_model is not None:
                    ref_logps, _, _ = self._get_per_token_logps_and_entropies(
                        self.ref_model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                    )
                else:  # PEFT: the reference is the base with adapters disabled
                    peft_model = self.accelerator.unwrap_model(self.model)
                    with keep_requires_grad(peft_model), peft_model.disable_adapter():
                        ref_logps, _, _ = self._get_per_token_logps_and_entropies(
                            self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                        )
            values = self._values(input_ids, attention_mask, logits_to_keep, batch_size)  # (B, C)

        # The scalar score of each local completion: weighted sum of the reward functions (NaN = not applicable).
        n_local = completion_ids.size(0)
        process_slice = slice(self.accelerator.process_index * n_local, (self.accelerator.process_index + 1) * n_local)
        rewards_per_func = self._last_rewards_per_func[process_slice]
        scores = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)  # (B,)
        lengths = completion_mask.sum(1)
        last_token = completion_ids[torch.arange(n_local, device=device), (lengths - 1).clamp(min=0)]
        contains_eos = torch.isin(last_token, torch.tensor(self.eos_token_ids, device=device)) & (lengths > 0)
        if self.args.missing_eos_penalty is not None:
            scores = scores - self.args.missing_eos_penalty * (~contains_eos).float()

        rewards, kl = token_rewards(logps, ref_logps, scores, mask, self.kl_coef)  # (B, C) each
        if self.args.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, values, mask, gamma=self.args.gamma, lam=self.args.lam)
        if self.args.whiten_advantages:
            advantages = whiten(advantages, mask)

        # Metrics (TRL names where TRL has one: `kl`; the rest under `ppo/`), reduced over all processes.
        def global_mean(x, m):
            totals = self.accelerator.reduce(torch.stack([(x * m).sum(), m.sum()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        seq_kl = self.accelerator.gather(kl.sum(1)).mean().item()
        self._metrics[mode]["kl"].append(global_mean(kl, mask))
        self._metrics[mode]["ppo/kl_per_completion"].append(seq_kl)
        self._metrics[mode]["ppo/kl_coef"].append(self.kl_coef)
        self._metrics[mode]["ppo/score"].append(self.accelerator.gather(scores).mean().item())
        self._metrics[mode]["ppo/eos_ratio"].append(self.accelerator.gather(contains_eos.float()).mean().item())
        self._metrics[mode]["ppo/values_mean"].append(global_mean(values, mask))
        self._metrics[mode]["ppo/returns_mean"].append(global_mean(returns, mask))
        # Explained variance of the returns by the critic's values at rollout time: 1 − Var(R − V) / Var(R).
        r, d = returns[mask.bool()], (returns - values)[mask.bool()]
        sums = torch.stack([r.sum(), (r**2).sum(), d.sum(), (d**2).sum(), r.new_tensor(r.numel())])
        sr, srr, sd, sdd, n = self.accelerator.reduce(sums, reduction="sum").tolist()
        var_r, var_d = srr / max(n, 1) - (sr / max(n, 1)) ** 2, sdd / max(n, 1) - (sd / max(n, 1)) ** 2
        self._metrics[mode]["ppo/explained_variance"].append(1.0 - var_d / var_r if var_r > 1e-12 else float("nan"))

        if self.kl_ctl is not None and mode == "train":
            self.kl_coef = self.kl_ctl.update(seq_kl, n_steps=n_local * self.accelerator.num_processes)

        output["advantages"] = advantages
        output["returns"] = returns
        output["values"] = values
        output["old_per_token_logps"] = logps
        if self.beta == 0.0:  # only GRPO's loss term reads it
            output.pop("ref_per_token_logps", None)
        return output

    # ---- loss --------------------------------------------------------------------------------------------------------
    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # (B, P+C)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        logits_to_keep = completion_ids.size(1)
        mask = completion_mask.float()  # (B, C)
        mode = "train" if self.model.training else "eval"

        # Token-level mean over the whole generation batch, split over processes and accumulation steps (as GRPO's
        # "dapo" loss): each micro-batch contributes its token sum / the generation batch's tokens per optimizer step.
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation

        # Clipped value loss: the new value may move at most cliprange_value from the rollout's value.
        values_old, returns = inputs["values"], inputs["returns"]  # (B, C)
        values_new = self.critic(input_ids, attention_mask)[:, -logits_to_keep - 1 : -1].float()
        values_clipped = values_old + torch.clamp(
            values_new - values_old, -self.args.cliprange_value, self.args.cliprange_value
        )
        vf_losses = (values_new - returns) ** 2
        vf_losses_clipped = (values_clipped - returns) ** 2
        vf_loss_tok = 0.5 * torch.maximum(vf_losses, vf_losses_clipped)
        vf_loss = self.args.vf_coef * (vf_loss_tok * mask).sum() / normalizer

        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, compute_entropy=True
        )
        # Clipped surrogate (Schulman et al. 2017, eq. 7), per token.
        advantages = inputs["advantages"]  # (B, C)
        log_ratio = logps - inputs["old_per_token_logps"]
        ratio = torch.exp(log_ratio)
        pg_losses = -advantages * ratio
        pg_losses_clipped = -advantages * torch.clamp(ratio, 1 - self.epsilon_low, 1 + self.epsilon_high)
        pg_loss_tok = torch.maximum(pg_losses, pg_losses_clipped)
        if self.beta != 0.0:  # GRPO's optional k3 KL term in the loss, kept for users who set beta
            ref = inputs["ref_per_token_logps"]
            pg_loss_tok = pg_loss_tok + self.beta * (torch.exp(ref - logps) - (ref - logps) - 1)
        pg_loss = (pg_loss_tok * mask).sum() / normalizer
        # One loss, back-propagated once by Trainer (a backward here would be outside the engine's control: under
        # DeepSpeed it steps the engine). The critic's gradients come from vf_loss alone (its graph does not reach the
        # policy's LoRA, nor the policy's the critic's); the cost is that the critic's activations now live until that
        # backward, beside the policy's.
        loss = pg_loss + vf_loss

        def global_mean(x):
            totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum()]).detach(), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        metrics = self._metrics[mode]
        metrics["entropy"].append(global_mean(entropies))
        metrics["ppo/policy_loss"].append(global_mean(pg_loss_tok))
        metrics["ppo/value_loss"].append(global_mean(vf_loss_tok))
        metrics["ppo/approx_kl"].append(global_mean(0.5 * log_ratio**2))  # ≈ KL(π_old || π), Schulman's k2
        is_low = (ratio < 1 - self.epsilon_low) & (advantages < 0)
        is_high = (ratio > 1 + self.epsilon_high) & (advantages > 0)
        metrics["clip_ratio/low_mean"].append(global_mean(is_low.float()))
        metrics["clip_ratio/high_mean"].append(global_mean(is_high.float()))
        metrics["clip_ratio/region_mean"].append(global_mean((is_low | is_high).float()))
        metrics["ppo/value_clip_ratio"].append(global_mean((vf_losses_clipped > vf_losses).float()))
        return loss

    # ---- saving and resuming ---------------------------------------------------------------------------------------
    def _resume_state(self) -> dict:
        return {**super()._resume_state(), "kl_coef": self.kl_coef}

    def _load_resume_state(self, state: dict, checkpoint: str) -> None:
        super()._load_resume_state(state, checkpoint)
        self.kl_coef = state.get("kl_coef", self.kl_coef)
        if self.kl_ctl is not None:
            self.kl_ctl.value = self.kl_coef

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Trainer restores the policy only; the critic comes back from what ``_save`` wrote beside it."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        critic = self.accelerator.unwrap_model(self.critic)
        if isinstance(critic, SeparateCritic):
            folder = os.path.join(resume_from_checkpoint, "critic")
            index = os.path.join(folder, "model.safetensors.index.json")
            files = ["model.safetensors"]
            if os.path.exists(index):  # sharded
                files = sorted(set(json.loads(Path(index).read_text())["weight_map"].values()))
            state = {}
            for name in files:
                state.update(load_file(os.path.join(folder, name)))
            critic.model.load_state_dict(state)
        else:  # Trainer restores the critic adapter with the policy's other adapters, frozen; the head not at all
            _train_critic_adapter(self.accelerator.unwrap_model(self.model))
            path = os.path.join(resume_from_checkpoint, "value_head.pt")
            critic.value_head.load_state_dict(
                torch.load(path, map_location=critic.value_head.weight.device, weights_only=True)
            )

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        critic = self.accelerator.unwrap_model(self.critic)
        if isinstance(critic, SeparateCritic):
            critic.model.save_pretrained(os.path.join(output_dir, "critic"))
        else:
            torch.save(critic.value_head.state_dict(), os.path.join(output_dir, "value_head.pt"))
