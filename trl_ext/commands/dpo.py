"""``trl-ext dpo``: direct preference optimisation with ``trl.DPOTrainer``, as TRL's ``trl/scripts/dpo.py``."""

from __future__ import annotations

INTRO = """\
DPO with TRL's DPOTrainer, as `trl dpo` runs it: the policy learns from (chosen, rejected) pairs directly (an optional
`prompt` column), no reward model and no sampling. The dataset is checked before the model is loaded. With --use_peft
the reference is the base with the adapter switched off. Saves the model (LoRA: the adapter) to --output_dir.

example (CPU, the embedded tiny model):
  trl-ext dpo --model_name_or_path runs/sft --dataset_name pairs.jsonl --output_dir runs/dpo --max_steps 50
example (one GPU, 4-bit + LoRA):
  trl-ext dpo --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/ultrafeedback_binarized \\
      --output_dir runs/dpo-qlora --load_in_4bit --use_peft --lora_r 16 --lora_target_modules all-linear"""


def make_parser():
    from trl import DPOConfig

    from .common import make_parser as _make

    return _make("dpo", DPOConfig, INTRO)


def main(script_args, training_args, model_args, dataset_args) -> None:
    from trl import DPOTrainer

    from ..assembly.data import load_datasets
    from ..assembly.trainers import build_trainer
    from .common import check_policy_path, load_policy, peft_config_for, train_and_save, warn_plain_prompts

    check_policy_path(model_args)
    train, evaluation = load_datasets(script_args, dataset_args, training_args, ["chosen", "rejected"])
    model, tokenizer = load_policy(model_args, training_args)
    warn_plain_prompts(train, tokenizer, script_args, "DPOTrainer")
    trainer = build_trainer(
        DPOTrainer, model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer, peft_config=peft_config_for(model_args),
    )
    if script_args.ignore_bias_buffers:  # TRL's dpo.py: DDP cannot broadcast bool buffers
        import torch

        trainer.model._ddp_params_and_buffers_to_ignore = [
            name for name, buffer in trainer.model.named_buffers() if buffer.dtype == torch.bool
        ]
    train_and_save(trainer, training_args)
