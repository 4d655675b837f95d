"""``trl-ext grpo``: TRL's own GRPO through the same path as ``trl-ext dapo``, for side-by-side runs."""

from __future__ import annotations

INTRO = """\
RL with TRL's GRPOTrainer, through the same loading, checks and rewards as `trl-ext dapo`, so the two can be compared
side by side. The trainer is trl.GRPOTrainer with one addition: its checkpoints also hold the generation buffer, so a
run resumed with --resume_from_checkpoint continues exactly (trl_ext.resume.ResumableGRPOTrainer); the training math is
TRL's. Prompts from --dataset_name (a `prompt` column); rewards from --reward_funcs and/or --reward_model_name_or_path,
weighted by --reward_weights. Saves the model (LoRA: the adapter) to --output_dir.

example (CPU, the embedded tiny model, a checker in ./my_rewards.py):
  trl-ext grpo --model_name_or_path runs/sft --dataset_name prompts.jsonl --reward_funcs my_rewards.score \\
      --output_dir runs/grpo --max_steps 50 --per_device_train_batch_size 16 --num_generations 8 \\
      --max_completion_length 8
example (one GPU, 4-bit + LoRA, TRL's math checker):
  trl-ext grpo --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/DeepMath-103K \\
      --reward_funcs accuracy_reward --output_dir runs/grpo-qlora --load_in_4bit --use_peft --lora_r 16 \\
      --lora_target_modules all-linear"""


def make_parser():
    from trl import GRPOConfig

    from .common import RewardScriptArguments, make_parser as _make

    return _make("grpo", GRPOConfig, INTRO, RewardScriptArguments)


def main(script_args, training_args, model_args, dataset_args) -> None:
    from ..assembly.registry import RL_ALGORITHMS
    from .common import rl_trainer_from_args, train_and_save

    trainer_cls = RL_ALGORITHMS["grpo"][1]  # TRL's trainer + the generation buffer in checkpoints
    trainer = rl_trainer_from_args(trainer_cls, script_args, training_args, model_args, dataset_args)
    train_and_save(trainer, training_args)
