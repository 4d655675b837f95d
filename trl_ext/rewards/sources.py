"""The sources behind a :class:`~trl_ext.RewardAdapter`: what turns (prompt, completion) rows into raw scores.

Every source is called as ``source(prompts, completions, completion_ids, kwargs, name)`` and returns
:class:`RawScores`; the adapter then applies its own options (empty completions, NaN policy, normalisation, clipping).

* :class:`_FunctionSource`: a TRL reward function, its output checked row by row;
* :class:`_ModelSource`: a sequence-classification reward model (or a PeftModel on one) with its own forward;
* :class:`_SharedBaseSource`: a LoRA reward adapter on the policy's own base, active only while scoring;
* :class:`_MixtureSource`: a weighted sum of adapters.

The two model sources share :class:`_RewardModelSource`: re-tokenise for the RM (:mod:`.bridge`), then score
right-padded micro-batches, longest first.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..adapters import active_adapter, backbone_of
from .bridge import RMTokenizer, Tokenised
from .functions import RewardFunc

logger = logging.getLogger(__name__)


@dataclass
class RawScores:
    """What every source returns: one score (or None) per row, before the adapter's options."""

    values: list[float | None]
    tokenised: Tokenised | None = None  # the model sources' tokenisation, for its truncation counts


def micro_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of at most ``batch_size``, longest first, so padding stays small and an
    out-of-memory error, if any, happens on the first batch rather than late in a step."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _pad_right(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        attention_mask[i, : len(r)] = 1
    return input_ids.to(device), attention_mask.to(device)  # (B, T) each


def _resolve_pad_id(tokenizer, model_pad_id: int | None, what: str) -> tuple[int, bool]:
    """The pad id to pad with, and whether it was borrowed from EOS (the caller then tells the model)."""
    if model_pad_id is not None:
        return model_pad_id, False
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return tokenizer.pad_token_id, True
    if getattr(tokenizer, "eos_token_id", None) is not None:
        logger.warning("%s: the tokenizer has no pad token; padding with its EOS token, as TRL's RewardTrainer does.", what)
        return tokenizer.eos_token_id, True
    raise ValueError(
        f"{what}: neither the model config (pad_token_id) nor the tokenizer has a pad or EOS token, so padded "
        "micro-batches cannot be scored. Set one, e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}) and "
        "model.config.pad_token_id = tokenizer.pad_token_id (resize the embeddings if the token is new)."
    )


class _FunctionSource:
    def __init__(self, fn: RewardFunc):
        self.fn = fn

    def __call__(self, prompts, completions, completion_ids, kwargs, name) -> RawScores:
        out = self.fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)
        if hasattr(out, "tolist") and not isinstance(out, list):  # a 1-D torch tensor or numpy array
            out = out.tolist()
        if isinstance(out, (str, bytes)) or not isinstance(out, Sequence):
            raise TypeError(
                f"Reward function {name!r} returned a {type(out).__name__}; it must return a list with one float (or "
                "None) per completion."
            )
        if len(out) != len(prompts):
            raise ValueError(
                f"Reward function {name!r} returned {len(out)} values for {len(prompts)} completions; it must return "
                "exactly one float (or None) per completion, in order."
            )
        values = []
        for row, x in enumerate(out):
            if hasattr(x, "item") and getattr(x, "ndim", 0) == 0:  # a 0-d tensor or numpy scalar
                x = x.item()
            if x is not None and not isinstance(x, numbers.Real):  # bools count, as in TRL (True -> 1.0)
                raise TypeError(
                    f"Reward function {name!r} returned {x!r} ({type(x).__name__}) for row {row}; each value must be "
                    "a real number, or None for 'no reward for this row'."
                )
            values.append(None if x is None else float(x))
        return RawScores(values)


class _RewardModelSource:
    """Scores with a reward model: each call re-tokenises the rows for the RM (:class:`RMTokenizer`), then runs
    ``forward`` on right-padded micro-batches of ``batch_size``, longest first, inside ``scoring()``. Subclasses say
    which network gives the score (``forward``) and in which state it runs (``scoring``)."""

    def __init__(self, model, rm_tokenizer: RMTokenizer, batch_size: int, pad_id: int):
        self.model, self.rm_tokenizer, self.batch_size, self.pad_id = model, rm_tokenizer, batch_size, pad_id

    def scoring(self):
        """A context manager: the model ready to score for the whole call, and as it was afterwards."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask of one micro-batch -> (B,) float32 scores."""
        raise NotImplementedError

    def __call__(self, prompts, completions, completion_ids, kwargs, name) -> RawScores:
        tokenised = self.rm_tokenizer(prompts, completions)
        ids = tokenised.input_ids
        scores: list[float | None] = [None] * len(ids)
        device = next(self.model.parameters()).device
        with self.scoring():
            for batch in micro_batches([len(r) for r in ids], self.batch_size):
                input_ids, attention_mask = _pad_right([ids[i] for i in batch], self.pad_id, device)
                for i, s in zip(batch, self.forward(input_ids, attention_mask).tolist()):
                    scores[i] = s
        return RawScores(scores, tokenised)


class _ModelSource(_RewardModelSource):
    """A sequence-classification RM (or PeftModel on one) scored with its own forward."""

    def __init__(self, model, rm_tokenizer: RMTokenizer, batch_size: int, label_index: int | None, name: str):
        num_labels = getattr(model.config, "num_labels", 1)
        if num_labels != 1 and label_index is None:
            raise ValueError(
                f"Reward model {name!r} has config.num_labels={num_labels}, but a reward model gives one score per "
                "sequence. Load it with num_labels=1, or pass label_index=k to use logit k as the reward (e.g. the "
                "'positive' class of a classifier)."
            )
        if label_index is not None and not 0 <= label_index < num_labels:
            raise ValueError(f"label_index={label_index} is out of range for config.num_labels={num_labels}.")
        text_config = model.config.get_text_config()
        pad_id, borrowed = _resolve_pad_id(rm_tokenizer.tokenizer, text_config.pad_token_id, name)
        if borrowed:
            # HF's XForSequenceClassification reads the last non-pad token from config.pad_token_id (batch > 1 fails
            # without it); TRL's RewardTrainer sets the same field before training.
            text_config.pad_token_id = pad_id
        super().__init__(model, rm_tokenizer, batch_size, pad_id)
        self.label_index = label_index or 0

    def forward(self, input_ids, attention_mask):
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (B, L)
        return logits[:, self.label_index].float()

    @contextmanager
    def scoring(self):
        """Eval mode and inference mode for the whole call, then the model's previous train/eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self.model.train(was_training)


class _SharedBaseSource(_RewardModelSource):
    """A LoRA reward adapter living on the policy's PeftModel, with its own score head: switched on only while
    scoring, so ``self.model`` is the policy itself."""

    def __init__(self, policy, adapter_name: str, head: torch.nn.Linear, rm_tokenizer: RMTokenizer, batch_size: int,
                 name: str):
        # The pad id RewardTrainer trained with: the tokenizer's pad token, else its EOS.
        pad_id, _ = _resolve_pad_id(rm_tokenizer.tokenizer, None, name)
        super().__init__(policy, rm_tokenizer, batch_size, pad_id)
        self.adapter_name, self.head = adapter_name, head
        self.backbone = backbone_of(policy)

    @contextmanager
    def scoring(self):
        """The reward adapter active, eval mode and inference mode for the whole call; then the policy as it was
        (active adapter, every ``requires_grad``, every module's mode: see :func:`trl_ext.adapters.active_adapter`)."""
        with active_adapter(self.model, self.adapter_name, eval_mode=True), torch.inference_mode():
            yield

    def forward(self, input_ids, attention_mask):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state  # (B, T, H); the LM head is never run, so no (B, T, vocab) logits
        # Same pooling as HF's XForSequenceClassification: the rightmost token that is not the pad token.
        non_pad = (input_ids != self.pad_id).to(torch.int32)  # (B, T)
        last = (torch.arange(input_ids.shape[1], device=input_ids.device, dtype=torch.int32) * non_pad).argmax(-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return self.head(pooled.to(self.head.weight.dtype))[:, 0].float()


class _MixtureSource:
    """``sum_i weights[i] * parts[i]`` per row; each part is a RewardAdapter that has applied its own options."""

    def __init__(self, parts: list, weights: list[float]):
        self.parts, self.weights = parts, weights

    def __call__(self, prompts, completions, completion_ids, kwargs, name) -> RawScores:
        columns = [
            part(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs) for part in self.parts
        ]
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):  # TRL logs only the mixture's total; each part's mean goes beside it
            for part, column in zip(self.parts, columns):
                values = [x for x in column if x is not None]
                if values:
                    log_metric(f"rewards/{name}/{part.__name__}", math.fsum(values) / len(values))
        out = []
        for row in zip(*columns):
            terms = [w * x for w, x in zip(self.weights, row) if x is not None]
            out.append(math.fsum(terms) if terms else None)  # like TRL: None sources are left out of the sum
        return RawScores(out)
