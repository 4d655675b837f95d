"""The SFT stage: the base model (the user's, or the embedded tiny checkpoint) trained by TRL's SFTTrainer."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from ..models import check_model_path, load_causal_lm, load_tokenizer
from ..toy import ensure_tiny_checkpoint
from .bookkeeping import save_model, train_resumable
from .config import SFT_DEFAULTS, PipelineConfig, stage_args
from .data import sft_dataset


def resolve_base(cfg: PipelineConfig, model_args: ModelConfig, run_dir: Path) -> str:
    """The base model: the user's path or hub id, or the embedded tiny checkpoint built into ``run_dir/base``."""
    if model_args.model_name_or_path:
        return check_model_path(model_args.model_name_or_path)
    return str(ensure_tiny_checkpoint(run_dir / "base"))


def run_sft(cfg: PipelineConfig, model_args: ModelConfig, base: str, folder: Path, callbacks=None) -> dict:
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_args, base, cfg.trust_remote_code)
    model = load_causal_lm(model_args, base, cfg.trust_remote_code)
    args = stage_args(SFTConfig, SFT_DEFAULTS, cfg.sft, folder / "checkpoints", cfg.seed, "sft")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=sft_dataset(cfg), processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    metrics = train_resumable(trainer, folder, callbacks)
    metrics["model"] = save_model(
        trainer, folder, base, model_args, AutoModelForCausalLM, tokenizer, trust_remote_code=cfg.trust_remote_code
    )
    return metrics
