"""``trl-ext dapo``: DAPO (``trl_ext.DAPOTrainer``) against reward functions and/or reward models, as ``trl grpo``."""

from __future__ import annotations

INTRO = """\
RL with trl_ext's DAPOTrainer (arXiv 2503.14476), run the way `trl grpo` runs GRPO: prompts from --dataset_name (a
`prompt` column), rewards from --reward_funcs (TRL built-ins or dotted paths) and/or --reward_model_name_or_path
(scored through trl_ext.RewardAdapter), weighted by --reward_weights. The dataset, the reward names and the model paths
are checked before any model is loaded. Every DAPOConfig field is a flag (--epsilon_high, --dynamic_sampling,
--overlong_buffer_length, ...). Saves the model (LoRA: the adapter) to --output_dir.

example (CPU, the embedded tiny model, a checker in ./my_rewards.py):
  trl-ext dapo --model_name_or_path runs/sft --dataset_name prompts.jsonl --reward_funcs my_rewards.score \\
      --output_dir runs/dapo --max_steps 50 --per_device_train_batch_size 16 --num_generations 8 \\
      --max_completion_length 8
example (one GPU, 4-bit + LoRA, TRL's math checker):
  trl-ext dapo --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/DeepMath-103K \\
      --reward_funcs accuracy_reward --output_dir runs/dapo-qlora --load_in_4bit --use_peft --lora_r 16 \\
      --lora_target_modules all-linear"""


def make_parser():
    from ..dapo import DAPOConfig
    from .common import RewardScriptArguments, make_parser as _make

    return _make("dapo", DAPOConfig, INTRO, RewardScriptArguments)


def main(script_args, training_args, model_args, dataset_args) -> None:
    from ..dapo import DAPOTrainer
    from .common import rl_trainer_from_args, train_and_save

    trainer = rl_trainer_from_args(DAPOTrainer, script_args, training_args, model_args, dataset_args)
    train_and_save(trainer, training_args)
