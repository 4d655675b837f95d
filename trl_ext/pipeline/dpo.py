"""The DPO route: no reward model in the loop; the labeller's pairs train the policy directly (TRL's DPOTrainer)."""

from __future__ import annotations

from pathlib import Path

from datasets import load_dataset
from transformers import AutoModelForCausalLM, set_seed
from trl import DPOTrainer, ModelConfig, get_peft_config

from ..models import load_causal_lm, load_tokenizer
from .bookkeeping import save_model, train_resumable
from .config import PipelineConfig, rl_stage_args, uses_embedded_model


def run_dpo(cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, labels: Path, folder: Path, callbacks=None) -> dict:
    """The non-RL route: the labeller's pairs (``labels/train.jsonl``) train the policy directly, no RM in the loop."""
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    model = load_causal_lm(model_args, sft_model, cfg.trust_remote_code)
    pairs = load_dataset("json", data_files=str(labels / "train.jsonl"), split="train")
    trainer = DPOTrainer(
        model=model, args=rl_stage_args(cfg, folder / "checkpoints", uses_embedded_model(model_args)),
        train_dataset=pairs, processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    metrics = train_resumable(trainer, folder, callbacks)
    metrics["model"] = save_model(
        trainer, folder, sft_model, model_args, AutoModelForCausalLM, tokenizer, trust_remote_code=cfg.trust_remote_code
    )
    return metrics
