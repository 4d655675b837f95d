"""Checks of what a user hands straight to a trainer, run in ``__init__`` so a mistake fails before any model work.

GRPOTrainer (and so every trainer here) reads the ``prompt`` column of each row only when it generates, at the first
step; a dataset without one passes construction and then fails with a bare ``KeyError: 'prompt'``. The check here
names the dataset, the columns it has and the fix. A chat model given plain-string prompts is legal in TRL but rarely
meant: that gets a one-time warning (:func:`warn_plain_prompts_for_chat_model`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)

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


_warned_plain_prompts: set[str] = set()


def warn_plain_prompts_for_chat_model(dataset, tokenizer, name: str, trainer: str) -> bool:
    """Warn once per tokenizer when a chat model (its tokenizer has a chat template) gets plain-string prompts.

    TRL applies the chat template to conversational prompts only; a string goes to the model as raw text (no system
    prompt, no user turn, no assistant header), so an instruct model continues the text rather than answering it.
    That is a warning, not an error: TRL trains on plain strings (a base model, a completion-style task, prompts the
    user rendered with the template already), and a drop-in must not refuse what TRL trains. Strings that contain one
    of the tokenizer's special tokens are taken as rendered already and pass silently. Returns whether it warned.
    """
    if dataset is None or isinstance(dataset, Mapping) or getattr(tokenizer, "chat_template", None) is None:
        return False
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")) or len(dataset) == 0:
        return False
    prompt = dataset[0].get("prompt") if isinstance(dataset[0], Mapping) else None
    if not isinstance(prompt, str) or any(t and t in prompt for t in getattr(tokenizer, "all_special_tokens", [])):
        return False
    key = str(getattr(tokenizer, "name_or_path", "") or id(tokenizer))
    if key in _warned_plain_prompts:
        return False
    _warned_plain_prompts.add(key)
    logger.warning(
        "%s: %s has plain-string prompts (row 0: %r), but the tokenizer %r has a chat template. TRL does not apply "
        "the template to strings: the model sees the raw text, without its system prompt, user turn and assistant "
        "header. To train the chat model as it is used, give each prompt as messages: "
        "dataset.map(lambda row: {'prompt': [{'role': 'user', 'content': row['prompt']}]}). If the prompts are "
        "meant as raw text (a base model, a completion task), ignore this.",
        trainer, name, prompt[:60], key,
    )
    return True
