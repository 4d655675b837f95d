"""The RL stage: the algorithm's trainer against the learned RM, the rule rewards, or both, built by
:func:`build_rl_trainer` and trained by :func:`train_rl` (a benchmark builds, instruments and trains the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, set_seed
from trl import ModelConfig, get_peft_config

from ..assembly.registry import RL_ALGORITHMS
from ..assembly.rewards import import_reward_functions
from ..assembly.trainers import build_trainer
from ..callbacks import GoldRewardCallback
from ..models import load_causal_lm, load_sequence_classifier, load_tokenizer
from ..rewards import RewardAdapter
from .bookkeeping import save_model, train_resumable
from .config import PipelineConfig, rl_stage_args, uses_embedded_model
from .data import rl_prompts


def run_rl(
    cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, rm_folder: Path | None, folder: Path, callbacks=None,
    trainer_cls: type | None = None,
) -> dict:
    """RL from the SFT model: :func:`build_rl_trainer`, then :func:`train_rl`."""
    trainer = build_rl_trainer(cfg, model_args, sft_model, rm_folder, folder, trainer_cls)
    return train_rl(trainer, cfg, model_args, sft_model, folder, callbacks)


def build_rl_trainer(
    cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, rm_folder: Path | None, folder: Path,
    trainer_cls: type | None = None,
):
    """The RL stage's trainer, against the learned RM scored through RewardAdapter in micro-batches.

    ``rm_folder=None`` is the verifiable-reward route: the rule rewards (``reward_funcs``) alone. ``trainer_cls``
    replaces the algorithm's trainer class (a subclass of it, say); it is built with the same arguments.

    With ``shared_base_reward`` the policy becomes a PeftModel here and the RM's LoRA adapter (trained on the same SFT
    base) is loaded onto it as a second adapter: one copy of the base weights serves both roles.
    """
    set_seed(cfg.seed)
    trainer_cls = trainer_cls or RL_ALGORITHMS[cfg.algorithm][1]
    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    model = load_causal_lm(model_args, sft_model, cfg.trust_remote_code)
    peft_config = get_peft_config(model_args)
    if cfg.shared_base_reward and rm_folder is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, peft_config)
        peft_config = None  # the trainer gets the PeftModel as it is
    reward, extra = _rl_reward(cfg, model_args, model, rm_folder)
    args = rl_stage_args(cfg, folder / "checkpoints", embedded=uses_embedded_model(model_args))
    reward_funcs = [reward] * (reward is not None) + [
        RewardAdapter.from_function(func) for func in import_reward_functions(cfg.reward_funcs)
    ]
    return build_trainer(
        trainer_cls, model=model, reward_funcs=reward_funcs, args=args, train_dataset=rl_prompts(cfg),
        processing_class=tokenizer, peft_config=peft_config, **extra,
    )


def _rl_reward(cfg: PipelineConfig, model_args: ModelConfig, model, rm_folder: Path | None) -> tuple[Any, dict]:
    """The learned RM as the RL stage scores with it (None on the rule-reward route), and the trainer's extra args."""
    if rm_folder is None:  # rule rewards only (reward: rules); PPO's critic then starts from the policy
        return None, {}
    if cfg.algorithm == "ppo" and bool(cfg.rl.get("shared_base")):
        # PPO puts policy, reference, RM and critic on one base and loads the RM adapter itself
        if not (rm_folder / "adapter").exists():
            raise ValueError("rl.shared_base=true needs the RM trained as a LoRA adapter: add --use_peft.")
        return str(rm_folder / "adapter"), {}  # no full RM: it would sit in memory beside the adapter, unused
    if cfg.shared_base_reward:
        return RewardAdapter.shared_base(model, rm_folder / "adapter", batch_size=cfg.reward_batch_size, name="rm"), {}
    reward_model = load_sequence_classifier(
        model_args, str(rm_folder / "model"), num_labels=1, trust_remote_code=cfg.trust_remote_code
    )
    reward = RewardAdapter.from_model(
        reward_model, load_tokenizer(model_args, str(rm_folder / "model"), cfg.trust_remote_code),
        batch_size=cfg.reward_batch_size, name="rm",
    )
    # PPO's critic starts from the RM (InstructGPT)
    return reward, ({"value_model": str(rm_folder / "model")} if cfg.algorithm == "ppo" else {})


def train_rl(trainer, cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, folder: Path, callbacks=None) -> dict:
    """Train the RL stage's trainer (resuming a cut-off run), record the reward curve's ends, save ``folder/model``."""
    metrics = train_resumable(trainer, folder, [*(callbacks or []), *_gold_callback(cfg, sft_model)])
    history = [h for h in trainer.state.log_history if "reward" in h]
    metrics["reward_first"] = history[0]["reward"] if history else None
    metrics["reward_last"] = history[-1]["reward"] if history else None
    metrics.update(groups_without_signal(trainer.state.log_history))
    if cfg.shared_base_reward:  # keep only the policy's adapter in what is saved and merged
        trainer.accelerator.unwrap_model(trainer.model).delete_adapter("reward")
    metrics["model"] = save_model(
        trainer, folder, sft_model, model_args, AutoModelForCausalLM, tokenizer=trainer.processing_class,
        trust_remote_code=cfg.trust_remote_code,
    )
    return metrics


def groups_without_signal(log_history: list[dict]) -> dict:
    """The share of sampled groups whose rewards do not vary (zero advantage; with a 0/1 reward all right or all
    wrong), first and last logged.

    TRL's ``frac_reward_zero_std`` is computed on the batch that reaches the loss: after DAPO's dynamic sampling has
    dropped those groups it is ~0 and says nothing. There the share of *generated* groups that dynamic sampling
    dropped, ``1 - dynamic_sampling/frac_informative``, means what TRL's number means without the filter; it is
    returned under its own keys (``dropped_groups_*``) so the two are never confused.
    """
    informative = [h["dynamic_sampling/frac_informative"] for h in log_history if "dynamic_sampling/frac_informative" in h]
    if informative:
        return {"dropped_groups_first": 1.0 - informative[0], "dropped_groups_last": 1.0 - informative[-1]}
    zero_std = [h["frac_reward_zero_std"] for h in log_history if "frac_reward_zero_std" in h]
    return {"frac_reward_zero_std_first": zero_std[0] if zero_std else None,
            "frac_reward_zero_std_last": zero_std[-1] if zero_std else None}


def _gold_callback(cfg: PipelineConfig, sft_model: str) -> list:
    """The oracle as gold reward during RL (embedded task only): proxy (the RM) vs truth vs KL, for report.md.

    The KL's reference is the trainer's own (its ref_model, or the base under LoRA); with beta=0 and no LoRA it is
    the SFT model the policy started from, loaded once by the callback. It leaves training untouched (same weights).
    """
    if not cfg.uses_embedded_task or cfg.gold_eval_steps == 0:
        return []
    return [GoldRewardCallback(
        gold=cfg.embedded.oracle, eval_dataset=cfg.task.eval_dataset(), eval_steps=cfg.gold_eval_steps,
        num_samples=cfg.gold_eval_samples, batch_size=cfg.reward_batch_size, seed=cfg.seed, ref_model=sft_model,
    )]
