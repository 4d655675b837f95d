"""``trl-ext ppo``: PPO with a critic (``trl_ext.PPOTrainer``), with TRL 0.x's ``ppo.py`` conventions for the critic."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .common import RewardScriptArguments

logger = logging.getLogger(__name__)

INTRO = """\
RL with trl_ext's PPOTrainer (arXiv 1707.06347; the InstructGPT recipe, arXiv 2203.02155): prompts from --dataset_name
(a `prompt` column), rewards from --reward_model_name_or_path (scored through trl_ext.RewardAdapter) and/or
--reward_funcs. The critic is --value_model_name_or_path; left out, it starts from the reward model when exactly one is
given and it uses the policy's tokenizer (as TRL 0.x's ppo.py did), else from the policy's checkpoint with a fresh
value head. With --shared_base true
--use_peft, policy, reference, reward model and critic live on one (optionally 4-bit) base: --reward_model_name_or_path
must then be a LoRA reward adapter (`trl-ext rm --use_peft` writes one). Everything is checked before any model is
loaded. Saves the policy (LoRA: the adapter) to --output_dir, the critic beside it in checkpoints.

example (CPU, the embedded tiny model):
  trl-ext ppo --model_name_or_path runs/sft --dataset_name prompts.jsonl --reward_model_name_or_path runs/rm \\
      --output_dir runs/ppo --max_steps 50 --per_device_train_batch_size 16 --max_completion_length 8
example (one GPU, all four roles on one 4-bit base):
  trl-ext ppo --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback-prompt \\
      --reward_model_name_or_path runs/rm-qlora --shared_base true --output_dir runs/ppo-qlora --load_in_4bit \\
      --use_peft --lora_r 16 --lora_target_modules all-linear"""


@dataclass
class PPOScriptArguments(RewardScriptArguments):
    """The reward fields plus the critic (PPOTrainer's ``value_model``)."""

    value_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Critic: a sequence-classification checkpoint using the policy's tokenizer (PPOTrainer's "
            "value_model). Default: the reward model when exactly one full reward model is given and it uses the "
            "policy's tokenizer, else the policy's checkpoint with a fresh value head. Not used with --shared_base "
            "(the critic is a LoRA adapter then)."
        },
    )


def make_parser():
    from ..ppo import PPOConfig
    from .common import make_parser as _make

    return _make("ppo", PPOConfig, INTRO, PPOScriptArguments)


def critic_and_rewards(script_args: PPOScriptArguments, training_args, policy: str | None = None):
    """``extra(plan)`` for rl_trainer_from_args: the critic path, and raw reward paths for the shared base.

    The critic reads the policy's token ids, while a reward model scores through RewardAdapter with its own tokenizer.
    So the one reward model becomes the critic's starting point only if its tokenizer is the policy's (checked on the
    tokenizers, before any model is loaded, when ``policy`` names the policy); otherwise the critic starts from the
    policy's checkpoint with a fresh value head, and a log line says why.
    """
    from pathlib import Path

    from ..assembly.rewards import check_reward_model_path

    def extra(plan) -> dict:
        if training_args.shared_base:
            if script_args.value_model_name_or_path:
                raise ValueError(
                    "--value_model_name_or_path is for separate roles; with --shared_base true the critic is a LoRA "
                    "adapter on the policy's base. Drop --value_model_name_or_path or set --shared_base false."
                )
            return {"reward_funcs": plan.model_paths + list(plan.functions)}  # PPOTrainer loads the adapters itself
        value = script_args.value_model_name_or_path
        if value:
            value = check_reward_model_path(value, field="--value_model_name_or_path")
        elif len(plan.model_paths) == 1 and not (Path(plan.model_paths[0]) / "adapter_config.json").exists():
            value = plan.model_paths[0]
            if policy is not None and not _same_tokenizer(value, policy, training_args.trust_remote_code):
                logger.warning(
                    "The reward model %r tokenizes differently from the policy %r: it still scores (through "
                    "RewardAdapter, with its own tokenizer), but the critic, which reads the policy's token ids, "
                    "starts from the policy's checkpoint with a fresh value head. Pass --value_model_name_or_path "
                    "to choose another critic.", value, policy,
                )
                value = None
        return {"value_model": value}

    return extra


def _same_tokenizer(a: str, b: str, trust_remote_code: bool) -> bool:
    from transformers import AutoTokenizer

    from ..ppo.critic import same_tokenizer

    load = lambda path: AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)  # noqa: E731
    return same_tokenizer(load(a), load(b))


def main(script_args, training_args, model_args, dataset_args) -> None:
    from ..ppo import PPOTrainer
    from .common import rl_trainer_from_args, train_and_save

    trainer = rl_trainer_from_args(
        PPOTrainer, script_args, training_args, model_args, dataset_args,
        extra=critic_and_rewards(script_args, training_args, policy=model_args.model_name_or_path),
    )
    train_and_save(trainer, training_args)
