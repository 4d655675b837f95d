"""Where each stage's data come from: the embedded task, or a named dataset (folder, file or hub id) whose columns are
checked row by row before anything trains (:mod:`trl_ext.assembly.data`)."""

from __future__ import annotations

from datasets import Dataset

from ..assembly.data import load_named_dataset, validate_columns
from .config import PipelineConfig


def sft_dataset(cfg: PipelineConfig) -> Dataset:
    if cfg.sft_dataset_name:
        ds = load_named_dataset(cfg.sft_dataset_name, cfg.dataset_split)
        needed = ["messages"] if "messages" in ds.column_names else ["prompt", "completion"]
        validate_columns(ds, needed, f"sft_dataset_name={cfg.sft_dataset_name!r}")
        return ds
    return cfg.task.sft_dataset(cfg.num_sft_examples, seed=cfg.seed)


def preference_dataset(cfg: PipelineConfig) -> Dataset:
    ds = load_named_dataset(cfg.preference_dataset_name, cfg.dataset_split)
    validate_columns(ds, ["chosen", "rejected"], f"preference_dataset_name={cfg.preference_dataset_name!r}")
    return ds


def rl_prompts(cfg: PipelineConfig) -> Dataset:
    if cfg.prompt_dataset_name:
        ds = load_named_dataset(cfg.prompt_dataset_name, cfg.dataset_split)
        validate_columns(ds, ["prompt"], f"prompt_dataset_name={cfg.prompt_dataset_name!r}")
        return ds
    return cfg.task.prompt_dataset(cfg.num_rl_prompts, seed=cfg.seed + 2)


def eval_dataset(cfg: PipelineConfig) -> Dataset:
    """The embedded task's held-out prompts, or the last ``eval_size`` rows of a named prompt dataset."""
    if cfg.uses_embedded_task:
        return cfg.task.eval_dataset()
    ds = rl_prompts(cfg)
    size = cfg.embedded.eval_size  # the one held-out size, whichever prompts are used
    return ds.select(range(len(ds) - min(size, len(ds)), len(ds)))


def eval_prompts(cfg: PipelineConfig) -> list:
    return eval_dataset(cfg)["prompt"]
