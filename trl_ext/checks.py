"""Checks of what a user hands straight to a trainer, run in ``__init__`` so a mistake fails before any model work.

GRPOTrainer (and so every trainer here) reads the ``prompt`` column of each row only when it generates, at the first
step; a dataset without one passes construction and then fails with a bare ``KeyError: 'prompt'``. The check here
names the dataset, the columns it has and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping

PRETOKENIZED = ("input_ids", "attention_mask", "prompt_ids", "prompt_input_ids")


def _columns(dataset) -> list[str] | None:
    """Column names of a datasets.Dataset / IterableDataset, or the keys of the first row; None if unknown."""
    names = getattr(dataset, "column_names", None)
    if names is not None:
        return list(names)
    try:
        if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            first = dataset[0] if len(dataset) else {}
        elif hasattr(dataset, "column_names"):  # a datasets.IterableDataset of unknown features: re-iterable
            first = next(iter(dataset))
        else:
            return None  # a one-shot iterable: peeking would consume it
    except (StopIteration, IndexError, KeyError, TypeError):
        return None
    return list(first) if isinstance(first, Mapping) else None


def check_prompt_dataset(dataset, name: str, trainer: str, prompt_optional: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``dataset`` rows have a usable ``prompt``.

    ``dataset`` may be None, a dataset, or (for eval) a dict of named datasets. A prompt is a string or a list of
    chat messages (``{"role", "content"}`` dicts); other columns are passed to the reward functions as keyword
    arguments. ``prompt_optional``: the trainer has an ``environment_factory``, whose ``reset()`` may supply the
    prompt (TRL 1.16 then reads rows such as ``{"environment": "maze"}`` without one); a ``prompt`` column, where
    there is one, is still checked.
    """
    if dataset is None:
        return
    if isinstance(dataset, Mapping):  # dict / DatasetDict of named eval datasets
        for key, value in dataset.items():
            check_prompt_dataset(value, f"{name}[{key!r}]", trainer, prompt_optional)
        return
    columns = _columns(dataset)
    if columns is None:
        return  # an iterable whose first row cannot be peeked at without consuming it: TRL will say at step 1
    if "prompt" not in columns and prompt_optional:
        return
    if "prompt" not in columns:
        if any(c in columns for c in PRETOKENIZED):
            raise ValueError(
                f"{trainer}: {name} looks pre-tokenized (columns {columns}). {trainer} generates from text: give it a "
                "`prompt` column of strings (or lists of chat messages {'role', 'content'}) and it tokenizes them "
                "with processing_class; decode the ids back to text (tokenizer.batch_decode) or keep the raw dataset."
            )
        raise ValueError(
            f"{trainer}: {name} has no `prompt` column; its columns are {columns}. Rename the column that holds the "
            f"prompts, e.g. dataset = dataset.rename_column({(columns or ['question'])[0]!r}, 'prompt'); the other "
            "columns reach the reward functions as keyword arguments."
        )
    if hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError(f"{trainer}: {name} has no rows; give at least one prompt.")
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        prompt = dataset[0]["prompt"]
        is_messages = isinstance(prompt, list) and all(isinstance(m, Mapping) and "content" in m for m in prompt)
        if not isinstance(prompt, str) and not is_messages:
            raise ValueError(
                f"{trainer}: {name} row 0 has a `prompt` of type {type(prompt).__name__} ({str(prompt)[:60]}); a prompt "
                "is a string or a list of chat messages [{'role': 'user', 'content': ...}]."
            )
