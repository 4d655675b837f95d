"""Groups for dynamic sampling (DAPO, arXiv 2503.14476, Section 3.2): which groups carry signal (the keep mask), and
the pool that carries them. It samples nothing itself: the loop that generates is :class:`trl_ext.DAPOTrainer`'s.

A group is the ``G = num_generations`` completions of one prompt. Under a group-relative advantage, a group whose
rewards are all equal has zero advantage everywhere and contributes no policy gradient, yet it still dilutes the
token-level loss normaliser. DAPO keeps only groups whose reward varies and generates more until the batch is full.

Everything here is pure tensor bookkeeping on *global* batches (all ranks' rows concatenated in rank order), so every
rank computes the same keep mask and the same pool contents; see :class:`trl_ext.DAPOTrainer` for the loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

# How each key of GRPOTrainer's generation output is padded when batches of different widths are concatenated:
# (side, value); "pad" means the tokenizer's pad token id. Keys not listed here cannot be pooled (e.g. images).
PAD_RULES: dict[str, tuple[str, float | str]] = {
    "prompt_ids": ("left", "pad"),
    "prompt_mask": ("left", 0),
    "completion_ids": ("right", "pad"),
    "completion_mask": ("right", 0),
    "tool_mask": ("right", 1),
    "advantages": ("right", 0.0),
    "old_per_token_logps": ("right", 0.0),
    "ref_per_token_logps": ("right", 0.0),
    "sampling_per_token_logps": ("right", 0.0),
    "importance_sampling_ratio": ("right", 1.0),
}
# Recomputed from the final batch rather than pooled.
RECOMPUTED_KEYS = ("num_items_in_batch",)


def informative_groups(signal: torch.Tensor, num_generations: int, tolerance: float = 1e-6) -> torch.Tensor:
    """Keep mask over groups: True where the signal varies by more than ``tolerance`` inside the group.

    ``signal`` is ``(num_groups * G,)``, grouped as consecutive blocks of ``G`` (TRL's layout). NaN entries (a reward
    function that returned None) are ignored; a group needs at least two finite values to count as varying.
    The spread is ``max - min``, so with 0/1 rewards any mix of right and wrong answers is informative.
    """
    if signal.dim() != 1 or signal.numel() % num_generations != 0:
        raise ValueError(f"signal must be 1-D with a multiple of num_generations={num_generations} entries, "
                         f"got shape {tuple(signal.shape)}.")
    grouped = signal.view(-1, num_generations)  # (num_groups, G)
    finite = torch.isfinite(grouped)
    high = torch.where(finite, grouped, torch.full_like(grouped, -torch.inf)).max(dim=1).values
    low = torch.where(finite, grouped, torch.full_like(grouped, torch.inf)).min(dim=1).values
    return (finite.sum(dim=1) >= 2) & ((high - low) > tolerance)


def moving_groups(advantages: torch.Tensor, num_generations: int, tolerance: float = 1e-6) -> torch.Tensor:
    """Group mask: True where some advantage of the group exceeds ``tolerance`` in absolute value.

    ``advantages`` is ``(num_groups * G,)`` (GRPO, RLOO) or ``(num_groups * G, T)`` (per token). A group whose
    advantages are all zero adds nothing to the policy gradient but still counts in the token-level normaliser, so
    dynamic sampling must not train on it even when its signal varies (e.g. the overlong penalty cancelled the
    accuracy difference in the total reward that the advantages are computed from).
    """
    if advantages.size(0) % num_generations != 0:
        raise ValueError(f"advantages must have a multiple of num_generations={num_generations} rows, "
                         f"got shape {tuple(advantages.shape)}.")
    per_row = advantages.abs().reshape(advantages.size(0), -1).amax(dim=1)  # (num_groups * G,)
    return per_row.view(-1, num_generations).amax(dim=1) > tolerance  # (num_groups,)


def describe_uninformative(signal: torch.Tensor, num_generations: int, keep: torch.Tensor) -> str:
    """Readable breakdown of the rejected groups, e.g. ``"12 all equal to 1, 3 with no finite value"``."""
    grouped = signal.view(-1, num_generations)[~keep]
    no_finite = int((~torch.isfinite(grouped)).all(dim=1).sum())
    constants = Counter(
        round(float(row[torch.isfinite(row)][0]), 6) for row in grouped if torch.isfinite(row).any()
    )
    parts = [f"{n} all equal to {v:g}" for v, n in constants.most_common(3)]
    if no_finite:
        parts.append(f"{no_finite} with no finite value (the reward function returned None/NaN)")
    return ", ".join(parts) if parts else "none"


def rows_of_groups(group_mask: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Row mask ``(num_groups * G,)`` from a group mask ``(num_groups,)``."""
    return group_mask.repeat_interleave(num_generations)


def process_rows(total_rows: int, process_index: int, num_processes: int) -> slice:
    """The contiguous rows of a global batch that one rank trains on (TRL's ``process_slice``)."""
    if total_rows % num_processes != 0:
        raise ValueError(f"{total_rows} rows cannot be split evenly over {num_processes} processes.")
    per_rank = total_rows // num_processes
    return slice(process_index * per_rank, (process_index + 1) * per_rank)


def _pad_to(x: torch.Tensor, width: int, side: str, value) -> torch.Tensor:
    if x.dim() < 2 or x.size(1) == width:
        return x
    pad = x.new_full((x.size(0), width - x.size(1)), value)
    return torch.cat([pad, x], dim=1) if side == "left" else torch.cat([x, pad], dim=1)


def concat_batches(batches: list[dict], pad_token_id: int) -> dict:
    """Concatenate generation outputs row-wise, padding each key to the widest batch as :data:`PAD_RULES` says.

    A key missing from some batches (e.g. ``old_per_token_logps`` computed for only some rounds) is filled with NaN
    rows there, so the caller can tell which rows still need it.
    """
    keys = [k for k in batches[0] if k not in RECOMPUTED_KEYS]
    for b in batches[1:]:
        keys += [k for k in b if k not in keys and k not in RECOMPUTED_KEYS]
    out = {}
    for key in keys:
        if key not in PAD_RULES:
            raise ValueError(
                f"dynamic sampling cannot pool the generation output {key!r} (only text batches are supported); "
                "set dynamic_sampling=False for this data."
            )
        side, value = PAD_RULES[key]
        value = pad_token_id if value == "pad" else value
        present = [b[key] for b in batches if key in b]
        like = present[0]
        parts = []
        for b in batches:
            if key in b:
                parts.append(b[key])
            else:  # NaN marks "not computed for these rows"; per-token keys take this batch's completion width
                rows, width = b["completion_ids"].shape
                shape = (rows, width) if like.dim() == 2 and like.size(1) != 1 else (rows, *like.shape[1:])
                parts.append(like.new_full(shape, torch.nan))
        if like.dim() >= 2 and not all(p.size(1) == 1 for p in parts):
            width = max(p.size(1) for p in parts)
            parts = [_pad_to(p, width, side, value) for p in parts]
        out[key] = torch.cat(parts, dim=0)
    return out


def select_rows(batch: dict, rows: torch.Tensor | slice) -> dict:
    return {k: v[rows] for k, v in batch.items() if k not in RECOMPUTED_KEYS}


@dataclass
class _Chunk:
    batch: dict  # global rows of whole groups
    step: int  # generation batch in which it was generated
    num_groups: int


class GroupPool:
    """FIFO of informative groups waiting to be trained on, with their generation step (for bounded staleness)."""

    def __init__(self, num_generations: int, pad_token_id: int):
        self.num_generations = num_generations
        self.pad_token_id = pad_token_id
        self._chunks: list[_Chunk] = []

    @property
    def num_groups(self) -> int:
        return sum(c.num_groups for c in self._chunks)

    def add(self, batch: dict, step: int) -> None:
        num_groups = batch["completion_ids"].size(0) // self.num_generations
        if num_groups:
            self._chunks.append(_Chunk(batch, step, num_groups))

    def drop_stale(self, step: int, max_staleness: int) -> int:
        """Drop groups generated more than ``max_staleness`` generation batches before ``step``; returns how many."""
        fresh = [c for c in self._chunks if step - c.step <= max_staleness]
        dropped = self.num_groups - sum(c.num_groups for c in fresh)
        self._chunks = fresh
        return dropped

    def take(self, num_groups: int) -> dict:
        """Remove and return the oldest ``num_groups`` groups as one padded batch."""
        if num_groups > self.num_groups:
            raise ValueError(f"pool holds {self.num_groups} groups, {num_groups} requested.")
        taken, remaining = [], num_groups
        while remaining:
            chunk = self._chunks[0]
            if chunk.num_groups <= remaining:
                taken.append(chunk.batch)
                remaining -= chunk.num_groups
                self._chunks.pop(0)
            else:
                cut = remaining * self.num_generations
                taken.append(select_rows(chunk.batch, slice(0, cut)))
                chunk.batch = select_rows(chunk.batch, slice(cut, None))
                chunk.num_groups -= remaining
                remaining = 0
        return concat_batches(taken, self.pad_token_id)

    def chunks(self) -> list[_Chunk]:
        return self._chunks

    def state_dict(self) -> list[dict]:
        """The pool as plain tensors, numbers and dicts, for ``torch.save`` and ``torch.load(weights_only=True)``."""
        return [{"batch": c.batch, "step": c.step, "num_groups": c.num_groups} for c in self._chunks]

    def load_state_dict(self, chunks: list[dict]) -> None:
        self._chunks = [_Chunk(dict(c["batch"]), int(c["step"]), int(c["num_groups"])) for c in chunks]
