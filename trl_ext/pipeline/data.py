"""Where each stage's data come from: the embedded task, or a named dataset (folder, file or hub id) whose columns are
checked row by row before anything trains."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk

from .config import PipelineConfig


def load_named_dataset(name: str, split: str) -> Dataset:
    """A dataset from a folder written by ``save_to_disk`` (a Dataset, or a DatasetDict's ``split``), a
    .json/.jsonl/.csv/.parquet file, or a hub id."""
    path = Path(name).expanduser()
    if path.is_dir() and (path / "dataset_info.json").exists():
        return load_from_disk(str(path))
    if path.is_dir() and (path / "dataset_dict.json").exists():  # DatasetDict.save_to_disk: one folder per split
        splits = load_from_disk(str(path))
        if split not in splits:
            raise ValueError(f"dataset {name!r} has no split {split!r}; its splits are {list(splits)}.")
        return splits[split]
    kinds = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    if path.is_file():
        kind = kinds.get(path.suffix)
        if kind is None:
            raise ValueError(f"dataset {name!r}: unsupported file type {path.suffix!r}; use jsonl, json, csv or parquet.")
        return load_dataset(kind, data_files=str(path), split="train")
    if name.startswith((".", "/", "~")) or path.suffix in kinds:  # a file name, not a hub id: do not ask the hub
        raise FileNotFoundError(
            f"dataset {name!r} does not exist. Check the path (a relative one starts from the folder you run in), or "
            "give a hub dataset id."
        )
    return load_dataset(name, split=split)


def _is_empty(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, list):
        return len(value) == 0 or all(_is_empty(m.get("content") if isinstance(m, dict) else m) for m in value)
    return False


def validate_columns(dataset: Dataset, required: list[str], what: str) -> None:
    """Fail with the dataset, the row and the column when a required column is missing or a value is empty."""
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{what}: column(s) {missing} missing; the dataset has {dataset.column_names}. "
            f"Rename the columns (dataset.rename_column) or pick a dataset with {required}."
        )
    for column in required:
        for i, value in enumerate(dataset[column]):
            if _is_empty(value):
                raise ValueError(f"{what}: row {i} has an empty {column!r}. Remove the row or fill it in.")


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
    return ds.select(range(len(ds) - min(cfg.eval_size, len(ds)), len(ds)))


def eval_prompts(cfg: PipelineConfig) -> list:
    return eval_dataset(cfg)["prompt"]
