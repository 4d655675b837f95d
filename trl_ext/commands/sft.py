"""``trl-ext sft``: supervised fine-tuning with ``trl.SFTTrainer``, as TRL's ``trl/scripts/sft.py``."""

from __future__ import annotations

INTRO = """\
Supervised fine-tuning with TRL's SFTTrainer, as `trl sft` runs it; the dataset is checked (columns `messages`, or
`prompt` + `completion`, or `text`, none empty) before the model is loaded, and the model is loaded through trl_ext
(safetensors only, 4-bit CPU workaround). Saves the model (LoRA: the adapter) to --output_dir.

example (CPU, the embedded tiny model):
  trl-ext tiny-model runs/tiny-base
  trl-ext sft --model_name_or_path runs/tiny-base --dataset_name sft.jsonl --output_dir runs/sft \\
      --max_steps 50 --learning_rate 1e-3 --per_device_train_batch_size 16
example (one GPU, 4-bit + LoRA):
  trl-ext sft --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/Capybara \\
      --output_dir runs/sft-qlora --load_in_4bit --use_peft --lora_r 16 --lora_target_modules all-linear"""

COLUMNS = [["messages"], ["prompt", "completion"], ["text"]]


def make_parser():
    from trl import SFTConfig

    from .common import make_parser as _make

    return _make("sft", SFTConfig, INTRO)


def main(script_args, training_args, model_args, dataset_args) -> None:
    from trl import SFTTrainer

    from ..assembly.data import load_datasets
    from ..assembly.trainers import build_trainer
    from .common import check_policy_path, load_policy, peft_config_for, train_and_save, warn_plain_prompts

    check_policy_path(model_args)
    train, evaluation = load_datasets(script_args, dataset_args, training_args, COLUMNS)
    model, tokenizer = load_policy(model_args, training_args)
    warn_plain_prompts(train, tokenizer, script_args, "SFTTrainer")
    trainer = build_trainer(
        SFTTrainer, model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer, peft_config=peft_config_for(model_args),
    )
    train_and_save(trainer, training_args)
