"""trl_ext.assembly: what both front-ends build with. Here: which after-build fix a trainer needs from
``build_trainer`` and which it makes itself (the 4-bit CPU repack), on a 4-bit LoRA policy."""

import bitsandbytes as bnb
import pytest
import torch
from trl import GRPOConfig, ModelConfig, get_peft_config

from trl_ext import DAPOConfig, DAPOTrainer
from trl_ext.assembly.registry import RL_ALGORITHMS
from trl_ext.assembly.trainers import build_trainer
from trl_ext.models import load_causal_lm, load_tokenizer
from trl_ext.toy import AdditionTask


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def _parts(ckpt, tmp_path, config_cls):
    model_args = ModelConfig(model_name_or_path=str(ckpt), load_in_4bit=True, use_peft=True, lora_r=4,
                             lora_target_modules="all-linear")
    args = config_cls(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=4,
                      num_generations=4, max_completion_length=4, max_steps=1)
    return dict(model=load_causal_lm(model_args), reward_funcs=[length_reward], args=args,
                train_dataset=AdditionTask().prompt_dataset(8, seed=0), processing_class=load_tokenizer(model_args),
                peft_config=get_peft_config(model_args))


def _repack_flags(model) -> set:
    return {m.support_avx512bf16_for_cpu for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)}


def _trainable_dtypes(model) -> set:
    return {p.dtype for p in model.parameters() if p.requires_grad}


def test_trl_leaves_bf16_trainables_and_build_trainer_makes_them_fp32(ckpt, tmp_path):
    """The fix no trainer makes: TRL casts a quantized model's LoRA weights to bf16, which an fp32 forward (no bf16
    autocast) cannot multiply; build_trainer casts them back."""
    grpo = RL_ALGORITHMS["grpo"][1]
    plain = grpo(**_parts(ckpt, tmp_path / "plain", GRPOConfig))
    assert torch.bfloat16 in _trainable_dtypes(plain.model)
    built = build_trainer(grpo, **_parts(ckpt, tmp_path / "built", GRPOConfig))
    assert _trainable_dtypes(built.model) == {torch.float32}


@pytest.mark.parametrize("name", ["grpo", "dapo"])
def test_the_4bit_cpu_repack_stays_off_without_an_after_build_call(ckpt, tmp_path, name):
    """trl_ext's loader turns bitsandbytes' CPU repack off, and building a trainer (LoRA wrapping) keeps it off: the
    builders need not repeat it."""
    config_cls, trainer_cls = RL_ALGORITHMS[name]
    parts = _parts(ckpt, tmp_path, config_cls)
    assert _repack_flags(parts["model"]) == {False}
    trainer = trainer_cls(**parts)
    assert _repack_flags(trainer.model) == {False}


def test_dapo_turns_the_repack_off_on_a_model_loaded_elsewhere(ckpt, tmp_path):
    parts = _parts(ckpt, tmp_path, DAPOConfig)
    for m in parts["model"].modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = True  # as bitsandbytes leaves it on these CPUs without trl_ext's loader
    trainer = DAPOTrainer(**parts)
    assert _repack_flags(trainer.model) == {False}
