"""``trl-ext rloo``: RLOO (``trl_ext.RLOOTrainer``) against reward functions and/or reward models, as ``trl rloo``."""

from __future__ import annotations

INTRO = """\
RL with trl_ext's RLOOTrainer (arXiv 2402.14740), run the way `trl rloo` runs TRL's: prompts from --dataset_name (a
`prompt` column), rewards from --reward_funcs (TRL built-ins or dotted paths) and/or --reward_model_name_or_path
(scored through trl_ext.RewardAdapter), weighted by --reward_weights; checked before any model is loaded. DAPO's
options (--dynamic_sampling, --epsilon_high, --overlong_buffer_length) are flags too. Saves the model (LoRA: the
adapter) to --output_dir.

example (CPU, the embedded tiny model, a checker in ./my_rewards.py):
  trl-ext rloo --model_name_or_path runs/sft --dataset_name prompts.jsonl --reward_funcs my_rewards.score \\
      --output_dir runs/rloo --max_steps 50 --per_device_train_batch_size 16 --num_generations 4 \\
      --max_completion_length 8
example (one GPU, 4-bit + LoRA, a reward model):
  trl-ext rloo --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback-prompt \\
      --reward_model_name_or_path runs/rm-qlora --output_dir runs/rloo-qlora --load_in_4bit --use_peft \\
      --lora_r 16 --lora_target_modules all-linear"""


def make_parser():
    from ..rloo import RLOOConfig
    from .common import RewardScriptArguments, make_parser as _make

    return _make("rloo", RLOOConfig, INTRO, RewardScriptArguments)


def main(script_args, training_args, model_args, dataset_args) -> None:
    from ..rloo import RLOOTrainer
    from .common import rl_trainer_from_args, train_and_save

    trainer = rl_trainer_from_args(RLOOTrainer, script_args, training_args, model_args, dataset_args)
    train_and_save(trainer, training_args)
