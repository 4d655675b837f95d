"""Where dynamic sampling's refill rounds take fresh prompts: the refill stream (the trainer's
``_draw_refill_prompts``). Every rank draws the same prompts in the same order -- the pool is global and each rank
trains on its slice of it -- and a checkpoint holds the stream's position, so a resumed run draws what an
uninterrupted one would have.

* A map-style ``datasets.Dataset`` (:class:`IndexedRefills`): its indices in a permutation of their own seed,
  reshuffled each pass (:func:`refill_order`).
* A ``datasets.IterableDataset`` (:class:`StreamRefills`), as TRL's GRPOTrainer accepts: the training stream itself,
  read from its start in its own order, pass after pass. Pass ``k`` reads the stream at epoch ``k``, as the Trainer's
  dataloader reads its ``k``-th epoch: a stream the user shuffled (``.shuffle(seed=...)``) is reshuffled each pass,
  an unshuffled one is read as it comes (no order is invented here). A resumed run re-opens the pass and skips the
  rows already drawn. ``IterableDataset.state_dict()`` is not used: it loses shuffle buffers on resume (datasets'
  documented limit), and in datasets 5.2 two live iterations of one stream (the dataloader's and this one) share the
  examples iterables whose state it reports. Skipping replays the pass, which is exact for any stream that yields the
  same rows in the same order when read again; the resumed run checks the last skipped row against the checkpoint
  and says plainly when it differs.
"""

from __future__ import annotations

import logging

import torch
from accelerate.utils import gather_object
from datasets import IterableDataset

from .prompt_history import prompt_key

logger = logging.getLogger(__name__)


def check_refillable(train_dataset) -> None:
    """Refills draw prompts by index or from a ``datasets.IterableDataset``: refuse any other dataset."""
    if train_dataset is None or isinstance(train_dataset, IterableDataset):
        return
    if not (hasattr(train_dataset, "__getitem__") and hasattr(train_dataset, "__len__")):
        raise ValueError(
            f"dynamic sampling refills with prompts drawn from train_dataset, which needs a datasets.Dataset or a "
            f"datasets.IterableDataset ({type(train_dataset).__name__} was given). Convert it, or set "
            "dynamic_sampling=False."
        )


def check_ranks_drew_alike(rows: list[dict]) -> None:
    """Refuse a stream that gave the processes different refill prompts: their pools would differ, and each would
    train on its slice of another batch. Called on every process with the rows it drew (a collective)."""
    keys = gather_object([[_key(r) for r in rows]])  # one list per process
    if any(k != keys[0] for k in keys):
        raise RuntimeError(
            "train_dataset (an IterableDataset) gave the processes different refill prompts: every process must read "
            "the same stream in the same order (TRL gives each its slice). Shuffle it with a seed "
            "(.shuffle(seed=...)) and do not split it by node (datasets.distributed.split_dataset_by_node)."
        )


def refill_order(seed: int, num_prompts: int):
    """Prompt indices for the refills: one endless stream, identical on every rank (same seed), reshuffled each pass
    over the dataset. Its own generator, so the global RNG (sampling, dropout) is not touched."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from torch.randperm(num_prompts, generator=generator).tolist()


def refill_source(train_dataset, seed: int):
    """The refill stream of ``train_dataset``: :class:`StreamRefills` for an IterableDataset, else indexed."""
    if isinstance(train_dataset, IterableDataset):
        return StreamRefills(train_dataset)
    return IndexedRefills(train_dataset, seed)


class IndexedRefills:
    """A map-style dataset's rows in :func:`refill_order`; its position is the number of rows drawn."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed, self.drawn, self._order = dataset, seed, 0, None

    def next_row(self) -> dict:
        if self._order is None:
            self._order = refill_order(self.seed, len(self.dataset))
            for _ in range(self.drawn):  # resumed: continue where the checkpointed run stopped
                next(self._order)
        self.drawn += 1
        return self.dataset[next(self._order)]

    def state_dict(self) -> dict:
        return {}  # the trainer checkpoints the number drawn (``refill_drawn``), which is the whole position

    def load_state_dict(self, state: dict, drawn: int) -> None:
        self.drawn, self._order = drawn, None


class StreamRefills:
    """An IterableDataset's rows in its own order, pass after pass (see the module docstring); its position is the
    pass and the rows drawn in it, with the last row's prompt key to check a resumed run's replay against."""

    def __init__(self, dataset: IterableDataset):
        self.dataset = dataset
        self.passes, self.position, self.last_key = 0, 0, None
        self._rows = None

    def next_row(self) -> dict:
        if self._rows is None:
            self._rows = self._open()
        row = next(self._rows, None)
        if row is None:  # the pass ended: wrap around to the next one
            if self.position == 0:
                raise ValueError("train_dataset (an IterableDataset) yielded no rows for the dynamic sampling refill: "
                                 "pass a stream with prompts, or set dynamic_sampling=False.")
            self.passes, self.position = self.passes + 1, 0
            self._rows = self._open()
            row = next(self._rows, None)
            if row is None:
                raise ValueError(f"train_dataset (an IterableDataset) yielded no rows in its pass {self.passes} (epoch "
                                 f"{self.passes}) for the dynamic sampling refill: pass a stream that can be read "
                                 "again, or set dynamic_sampling=False.")
        self.position += 1
        self.last_key = _key(row)
        return row

    def _open(self):
        """An iterator over the current pass, past the rows already drawn in it (a resumed run's replay)."""
        self.dataset.set_epoch(self.passes)
        rows = iter(self.dataset)
        key = None
        for skipped in range(self.position):
            row = next(rows, None)
            if row is None:
                logger.warning(
                    "The refill stream cannot be restored: train_dataset (an IterableDataset) ended after %d rows of "
                    "pass %d, but the checkpointed run had drawn %d. The stream is shorter than when the checkpoint "
                    "was written; the refills continue from its next pass, not as the uninterrupted run's would.",
                    skipped, self.passes, self.position,
                )
                self.passes, self.position = self.passes + 1, 0
                return self._open()
            key = _key(row)
        if self.position and key != self.last_key:
            logger.warning(
                "The refill stream cannot be restored exactly: replaying pass %d of train_dataset (an IterableDataset) "
                "up to row %d gave another prompt than the checkpointed run drew there, so the stream does not yield "
                "the same rows in the same order when read again (a shuffle without a seed, or a source that changed). "
                "The resumed run's refill prompts differ from the uninterrupted run's; shuffle with a seed to resume "
                "exactly.", self.passes, self.position,
            )
        return rows

    def state_dict(self) -> dict:
        return {"passes": self.passes, "position": self.position, "last_key": self.last_key or ""}

    def load_state_dict(self, state: dict, drawn: int) -> None:
        self.passes, self.position = int(state["passes"]), int(state["position"])
        self.last_key, self._rows = state["last_key"] or None, None


def _key(row: dict) -> str | None:
    return prompt_key(row["prompt"]) if "prompt" in row else None
