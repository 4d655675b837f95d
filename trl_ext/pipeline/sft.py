"""The SFT stage: the base model (the user's, or the embedded tiny checkpoint) trained by TRL's SFTTrainer."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoModelForCausalLM, set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from ..models import check_model_path, load_causal_lm, load_tokenizer
from ..toy import ensure_tiny_checkpoint
from .bookkeeping import save_model, train_resumable
from .config import PipelineConfig, stage_args, stage_defaults, uses_embedded_model
from .data import sft_dataset


def resolve_base(cfg: PipelineConfig, model_args: ModelConfig, run_dir: Path) -> str:
    """The base model: the user's path or hub id, or the embedded tiny checkpoint built into ``run_dir/base``."""
    if model_args.model_name_or_path:
        return check_model_path(model_args.model_name_or_path)
    return str(ensure_tiny_checkpoint(run_dir / "base"))


def check_completions_fit(data, tokenizer, max_length: int | None) -> None:
    """Refuse SFT rows whose prompt alone reaches ``max_length``: truncation would cut the whole completion and the row
    would train on nothing (TRL truncates silently). Prompt/completion rows only; a chat template's injected system
    prompt counts, as it does in training."""
    if max_length is None or "prompt" not in data.column_names:
        return
    prompts = data["prompt"]
    lengths = [
        len(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        if not isinstance(p, str) else len(tokenizer(p, add_special_tokens=False)["input_ids"])
        for p in prompts
    ]
    cut = [i for i, n in enumerate(lengths) if n >= max_length]
    if cut:
        raise ValueError(
            f"SFT: {len(cut)} of {len(prompts)} rows have a prompt of >= max_length={max_length} tokens (the longest "
            f"{max(lengths)}, row {cut[0]} first), so truncation would leave no completion to learn from. Raise the "
            f"`sft:` map's max_length above {max(lengths)} plus the longest completion (TRL's default is 1024), or "
            "shorten the prompts (a chat template may add a default system prompt to every row).",
        )


def run_sft(cfg: PipelineConfig, model_args: ModelConfig, base: str, folder: Path, callbacks=None) -> dict:
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_args, base, cfg.trust_remote_code)
    model = load_causal_lm(model_args, base, cfg.trust_remote_code)
    embedded = uses_embedded_model(model_args)
    args = stage_args(SFTConfig, stage_defaults("sft", embedded=embedded), cfg.sft, folder / "checkpoints", cfg.seed,
                      "sft", embedded=embedded)
    data = sft_dataset(cfg)
    check_completions_fit(data, tokenizer, args.max_length)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    metrics = train_resumable(trainer, folder, callbacks)
    metrics["model"] = save_model(
        trainer, folder, base, model_args, AutoModelForCausalLM, tokenizer, trust_remote_code=cfg.trust_remote_code
    )
    return metrics
