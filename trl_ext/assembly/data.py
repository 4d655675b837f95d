"""Loading a named dataset (a folder, a file or a hub id) and checking its columns row by row, before anything trains.

:func:`load_named_dataset` and :func:`validate_columns` serve both front-ends; :func:`load_datasets` reads the train
and eval splits the way TRL's scripts do, from their ``ScriptArguments`` and ``DatasetMixtureConfig``.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk

FILE_KINDS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


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
    if path.is_file():
        kind = FILE_KINDS.get(path.suffix)
        if kind is None:
            raise ValueError(
                f"dataset {name!r}: unsupported file type {path.suffix!r}; use jsonl, json, csv or parquet."
            )
        return load_dataset(kind, data_files=str(path), split="train")
    if name.startswith((".", "/", "~")) or path.suffix in FILE_KINDS:  # a file name, not a hub id: do not ask the hub
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


# ---- the commands' splits, as TRL's scripts read them ------------------------------------------------------------
def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~"))


def _one_split(script_args, split: str) -> Dataset:
    """One split: a hub id (with --dataset_config), a save_to_disk folder's split, or a file (its only split,
    'train'; a file path given as the split is read as that split)."""
    name = script_args.dataset_name
    if Path(split).suffix in FILE_KINDS and Path(split).expanduser().is_file():
        name, split = split, "train"  # a second file named as the split (a single file has only a train split)
    elif Path(name).expanduser().is_file() and split != "train":
        raise ValueError(
            f"--dataset_name {name!r} is a single file, which holds only a 'train' split, but split {split!r} was "
            "asked for. Name a second file as the split (--dataset_test_split test.jsonl), or set --eval_strategy no."
        )
    if script_args.dataset_config and not _is_local(name):
        return load_dataset(name, script_args.dataset_config, split=split)
    return load_named_dataset(name, split)


def load_datasets(script_args, dataset_args, training_args, required) -> tuple:
    """(train, eval or None), as TRL's scripts load them, each checked for ``required`` columns and empty values.

    ``script_args`` is TRL's ``ScriptArguments``, ``dataset_args`` its ``DatasetMixtureConfig``. ``required`` is a
    list of columns, or a list of such lists (any one of them suffices, e.g. SFT's ``messages`` or ``prompt`` +
    ``completion``). The eval split is read only when ``eval_strategy`` is not ``"no"``, as in TRL.
    """
    from trl import get_dataset

    want_eval = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    if dataset_args.datasets:  # TRL's dataset mixture (--datasets / a `datasets:` list in the YAML)
        mixture = get_dataset(dataset_args)
        splits = {"train": mixture[script_args.dataset_train_split]}
        if want_eval:
            splits["eval"] = mixture[script_args.dataset_test_split]
    elif script_args.dataset_name:
        splits = {"train": _one_split(script_args, script_args.dataset_train_split)}
        if want_eval:
            splits["eval"] = _one_split(script_args, script_args.dataset_test_split)
    else:
        raise ValueError(
            "--dataset_name is required: a hub dataset id, a folder written by save_to_disk, or a "
            ".json/.jsonl/.csv/.parquet file (or give a mixture with --datasets)."
        )
    options = required if isinstance(required[0], (list, tuple)) else [required]
    for which, ds in splits.items():
        what = f"--dataset_name={script_args.dataset_name!r} ({which} split)"
        columns = next((list(c) for c in options if set(c) <= set(ds.column_names)), list(options[0]))
        if len(options) > 1 and not set(columns) <= set(ds.column_names):
            raise ValueError(
                f"{what}: needs columns {' or '.join(str(list(c)) for c in options)}; the dataset has "
                f"{ds.column_names}. Rename the columns (dataset.rename_column) to one of these formats."
            )
        validate_columns(ds, columns, what)
    return splits["train"], splits.get("eval")
