"""``trl-ext rm``: a reward model (a sequence classifier, one logit) with ``trl.RewardTrainer``, as TRL's reward.py."""

from __future__ import annotations

INTRO = """\
Reward-model training with TRL's RewardTrainer, as `trl reward` runs it: a sequence classifier with one logit, trained
on (chosen, rejected) pairs (an optional `prompt` column; conversational or plain text). The dataset is checked before
the model is loaded. With --use_peft the LoRA adapter is trained with task_type SEQ_CLS, so the score head is trained
and saved with it; such a folder can score on the policy's own base (PPO's --shared_base). Saves to --output_dir.

example (CPU, the embedded tiny model):
  trl-ext rm --model_name_or_path runs/sft --dataset_name pairs.jsonl --output_dir runs/rm --max_steps 50
example (one GPU, 4-bit + LoRA):
  trl-ext rm --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \\
      --output_dir runs/rm-qlora --load_in_4bit --use_peft --lora_r 16 --lora_target_modules all-linear"""


def make_parser():
    from trl import RewardConfig

    from .common import make_parser as _make

    return _make("rm", RewardConfig, INTRO)


def main(script_args, training_args, model_args, dataset_args) -> None:
    from trl import RewardTrainer

    from ..assembly.data import load_datasets
    from ..assembly.trainers import build_trainer
    from .common import check_policy_path, load_policy, peft_config_for, train_and_save, warn_plain_prompts

    check_policy_path(model_args)
    train, evaluation = load_datasets(script_args, dataset_args, training_args, ["chosen", "rejected"])
    model, tokenizer = load_policy(model_args, training_args, auto="sequence_classifier")
    warn_plain_prompts(train, tokenizer, script_args, "RewardTrainer")
    trainer = build_trainer(
        RewardTrainer, model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config_for(model_args, task_type="SEQ_CLS"),  # SEQ_CLS keeps the score head trainable
    )
    train_and_save(trainer, training_args)
