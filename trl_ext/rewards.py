"""RewardAdapter: one reward callable for reward models, shared-base LoRA reward adapters, rules and mixtures.

A :class:`RewardAdapter` is what TRL calls a *custom reward function*: ``adapter(prompts=..., completions=...,
completion_ids=..., **dataset_columns) -> list[float | None]``, with a ``__name__`` that TRL uses to log
``rewards/<name>/mean``. It is deliberately *not* an ``nn.Module``: TRL's GRPO/RLOO treat a module in ``reward_funcs``
as a reward model and score every completion of a step in one forward pass; the adapter does the model work itself,
in micro-batches. It also scores on its own: ``adapter.score(prompts, completions)``.

Build one with

* :meth:`RewardAdapter.from_model` -- a sequence-classification reward model (hub id, local path, loaded model, or a
  PEFT adapter on a sequence-classification base) with its own tokenizer and chat template;
* :meth:`RewardAdapter.shared_base` -- a SEQ_CLS LoRA reward adapter loaded onto the policy's own base weights
  (including a 4-bit base): no second copy of the base, the adapter is active only while scoring;
* :meth:`RewardAdapter.from_function` -- a plain TRL reward function (rules, verifiable rewards);
* :meth:`RewardAdapter.mixture` -- a weighted sum of the above.

How a reward model sees a (prompt, completion) pair is exactly how TRL's ``RewardTrainer`` tokenised its training
pairs, so scores are on the scale the RM was trained on:

* conversational rows: ``rm_tokenizer.apply_chat_template(prompt + completion)`` -- re-rendered with the *RM's*
  template, whatever the policy's template is; special tokens (BOS) are whatever that template writes;
* plain-text rows: ``rm_tokenizer(prompt + completion + eos)`` with the tokenizer's special tokens (BOS for RMs whose
  tokenizer adds one); EOS is appended unless the text already ends with it, as RewardTrainer does (``append_eos``).

Per-source post-processing, in this order: empty completions (optional fixed reward), NaN check, running
normalisation, clipping.

Example (the RL stage with a trained RM and a rule; the shared-base variant trains the RM as a LoRA adapter)::

    rm = RewardAdapter.from_model("out/rm", batch_size=16)                 # RewardTrainer's output folder
    reward = RewardAdapter.mixture([rm, oracle_correct], weights=[1.0, 0.5])
    GRPOTrainer(model=policy, reward_funcs=[reward], ...)                  # logs rewards/mix_rm_oracle_correct/...

    # shared base: RewardTrainer(model=AutoModelForSequenceClassification.from_pretrained(base, num_labels=1),
    #     peft_config=LoraConfig(task_type="SEQ_CLS", ...)).save_model("out/rm_lora"); then, on the policy's base:
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(task_type="CAUSAL_LM", ...))
    reward = RewardAdapter.shared_base(policy, "out/rm_lora", batch_size=16)
    GRPOTrainer(model=policy, reward_funcs=[reward], ...)                  # no peft_config: policy is already LoRA
"""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .adapters import active_adapter, backbone_of, load_reward_adapter_onto
from .models import check_model_path, safe_from_pretrained

logger = logging.getLogger(__name__)

RewardFunc = Callable[..., list]
_NO_LIMIT = 1_000_000  # tokenizers without a real limit report model_max_length ~ 1e30


# ---- reward functions named in a config ------------------------------------------------------------------------------
def _trl_registry() -> dict[str, Callable]:
    """TRL's built-in reward functions, under the names TRL's own scripts accept in ``--reward_funcs``."""
    from trl.rewards import accuracy_reward, reasoning_accuracy_reward, think_format_reward

    return {f.__name__: f for f in (accuracy_reward, reasoning_accuracy_reward, think_format_reward)}


def import_reward_function(spec: str, field: str = "reward_funcs") -> RewardFunc:
    """The reward function a config names: a TRL built-in (``think_format_reward``) or a dotted import path.

    ``spec`` is ``package.module.function`` (as in TRL's ``grpo.py --reward_funcs``) or ``package.module:function``;
    the current directory is importable, so ``my_rewards.exact`` finds ``./my_rewards.py``. Importing runs that module's
    code, which is why the pipeline only imports what its config names explicitly (never a name read from a dataset, a
    checkpoint or a ``stage.json``). Every failure names ``field``, the spec and the fix.
    """
    import importlib
    import sys

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{field}: {spec!r} is not a reward function name; write 'package.module.function'.")
    spec = spec.strip()
    registry = _trl_registry()
    if spec in registry:
        return registry[spec]
    if ":" in spec:
        module_name, _, attr = spec.partition(":")
    elif "." in spec:
        module_name, _, attr = spec.rpartition(".")
    else:
        raise ValueError(
            f"{field}: {spec!r} is neither one of TRL's reward functions {sorted(registry)} nor an import path. "
            "Write 'package.module.function' (a module in the current directory works too)."
        )
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(
            f"{field}: cannot import module {module_name!r} of {spec!r} ({e}). Install the package, or run from the "
            "folder that holds the module, or add that folder to PYTHONPATH."
        ) from None
    finally:
        if added:
            sys.path.remove(cwd)
    fn = getattr(module, attr, None)
    if fn is None:
        found = sorted(
            n for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        raise ValueError(f"{field}: module {module_name!r} has no {attr!r}; callables defined there: {found[:10]}.")
    if not callable(fn):
        raise ValueError(f"{field}: {spec!r} is a {type(fn).__name__}, not a function; name a callable.")
    return fn


# ---- small pure helpers ----------------------------------------------------------------------------------------------
def _is_conversation(x) -> bool:
    return isinstance(x, list) and (len(x) == 0 or isinstance(x[0], dict))


def completion_text(completion) -> str:
    """What the model wrote: a string completion as is, or the content of the assistant messages of TRL's
    conversational form, joined (other roles, e.g. tool results, are not the model's words)."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class RunningNorm:
    """Running mean/std over every value seen so far (Welford, float64), then optional clipping to ``[-clip, clip]``.

    A batch first updates the statistics and is then normalised with them, so the first batch is normalised by its
    own mean/std. ``None`` values are skipped and stay ``None``. Statistics are per process: under multi-process
    training each rank normalises with what it has seen (TRL scores each rank's completions locally).
    """

    normalize: bool = False
    clip: float | None = None
    eps: float = 1e-8
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 0.0

    def __call__(self, values: list[float | None]) -> list[float | None]:
        if self.normalize:
            for x in values:
                if x is not None:
                    self.count += 1
                    delta = x - self.mean
                    self.mean += delta / self.count
                    self.m2 += delta * (x - self.mean)
            values = [None if x is None else (x - self.mean) / max(self.std, self.eps) for x in values]
        if self.clip is not None:
            values = [None if x is None else min(max(x, -self.clip), self.clip) for x in values]
        return values

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


# ---- tokenisation for a reward model ---------------------------------------------------------------------------------
@dataclass
class _Tokenised:
    input_ids: list[list[int]]
    prompt_truncated: int = 0
    completion_truncated: int = 0


@dataclass
class RMTokenizer:
    """Turns (prompt, completion) pairs into the reward model's token ids, truncating from the prompt side.

    ``max_length``: longest sequence the RM is given. A longer one loses tokens from the start of the prompt (after
    a leading BOS, which is kept: see :func:`_starts_with_bos`); if the completion alone does not fit,
    ``completion_overflow`` decides: ``"error"`` raises, ``"truncate"`` keeps the last ``max_length`` tokens (BOS
    kept) and counts it as a truncated completion.
    Every truncation is counted and logged; none is silent.
    """

    tokenizer: Any
    max_length: int | None = None
    append_eos: bool = True
    completion_overflow: str = "truncate"
    chat_template_kwargs: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.completion_overflow not in ("truncate", "error"):
            raise ValueError(f"completion_overflow={self.completion_overflow!r}: use 'truncate' or 'error'.")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length={self.max_length}: a reward model needs at least 2 tokens.")

    def _full_ids(self, prompts: Sequence, completions: Sequence, conversational: bool) -> list[list[int]]:
        """Token ids of every (prompt, completion) pair: one batched tokenizer call."""
        tok = self.tokenizer
        if conversational:
            if getattr(tok, "chat_template", None) is None:
                raise ValueError(
                    f"The reward model's tokenizer ({type(tok).__name__}, {getattr(tok, 'name_or_path', '')!r}) has no "
                    "chat_template, but the prompts are conversations. Give it one (tokenizer.chat_template = ...) or "
                    "pass a tokenizer that has one."
                )
            conversations = [list(p) + list(c) for p, c in zip(prompts, completions)]
            kw = self.chat_template_kwargs
            return tok.apply_chat_template(conversations, tokenize=True, return_dict=True, **kw)["input_ids"]
        texts = [p + c for p, c in zip(prompts, completions)]
        if self.append_eos and tok.eos_token is not None:
            texts = [t if t.endswith(tok.eos_token) else t + tok.eos_token for t in texts]
        return tok(texts)["input_ids"]

    def _prompt_length(self, full: list[int], prompt, conversational: bool) -> int:
        """How many leading ids of ``full`` are the prompt's (computed only for inputs that must be cut)."""
        tok = self.tokenizer
        if conversational:
            head = tok.apply_chat_template(
                list(prompt), tokenize=True, return_dict=True, add_generation_prompt=True, **self.chat_template_kwargs
            )["input_ids"]
        else:
            head = tok(prompt)["input_ids"]
        return _common_prefix_length(full, head)

    def __call__(self, prompts: Sequence, completions: Sequence) -> _Tokenised:
        conversational = _is_conversation(prompts[0])
        for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            ok = _is_conversation(prompt) and _is_conversation(completion) if conversational else (
                isinstance(prompt, str) and isinstance(completion, str))
            if not ok:
                raise TypeError(
                    f"Row {row}: prompt is a {type(prompt).__name__} and completion a {type(completion).__name__}; "
                    f"row 0 is {'a conversation' if conversational else 'plain text'}. Give every row as two strings, "
                    "or every row as two lists of chat messages (TRL's conversational format)."
                )
        out = _Tokenised([])
        bos = getattr(self.tokenizer, "bos_token_id", None)
        limit = self.max_length
        for row, ids in enumerate(self._full_ids(prompts, completions, conversational)):
            ids = list(ids)
            if limit is not None and len(ids) > limit:
                n_prompt = self._prompt_length(ids, prompts[row], conversational)
                keep = 1 if _starts_with_bos(ids, bos) else 0
                excess = len(ids) - limit
                if excess <= n_prompt - keep:
                    ids = ids[:keep] + ids[keep + excess :]
                    out.prompt_truncated += 1
                elif self.completion_overflow == "error":
                    raise ValueError(
                        f"Row {row}: the completion alone is {len(ids) - n_prompt} tokens for the reward model, more "
                        f"than max_length={limit} allows even with the whole prompt cut. Raise max_length (if the RM "
                        "supports it), lower the trainer's max_completion_length, or pass "
                        "completion_overflow='truncate' to keep the completion's last tokens."
                    )
                else:
                    ids = ids[:keep] + ids[len(ids) - (limit - keep) :]
                    out.completion_truncated += 1
            out.input_ids.append(ids)
        return out


def _starts_with_bos(ids: list[int], bos: int | None) -> bool:
    """Whether ``ids[0]`` is a start-of-sequence marker that a prompt-side cut must keep: the tokenizer's BOS, found
    nowhere else in the sequence. Some chat tokenizers name their turn marker as BOS (SmolLM2: ``<|im_start|>``, which
    opens every turn); keeping it would glue a turn opener with no role onto the middle of the cut system prompt."""
    return bos is not None and bool(ids) and ids[0] == bos and bos not in ids[1:]


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


def _max_length(tokenizer, config, given: int | None) -> int | None:
    if given is not None:
        return given
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit < _NO_LIMIT:
        return int(limit)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "max_position_embeddings", None)


# ---- sources: each returns raw scores (list[float | None]) -----------------------------------------------------------
class _FunctionSource:
    def __init__(self, fn: RewardFunc):
        self.fn = fn

    def __call__(self, prompts, completions, completion_ids, kwargs, name) -> list:
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
        return values


class _ModelSource:
    """A sequence-classification RM (or PeftModel on one) scored with its own forward, in micro-batches."""

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
        self.model, self.rm_tokenizer, self.batch_size, self.label_index = model, rm_tokenizer, batch_size, label_index or 0
        text_config = model.config.get_text_config()
        self.pad_id, borrowed = _resolve_pad_id(rm_tokenizer.tokenizer, text_config.pad_token_id, name)
        if borrowed:
            # HF's XForSequenceClassification reads the last non-pad token from config.pad_token_id (batch > 1 fails
            # without it); TRL's RewardTrainer sets the same field before training.
            text_config.pad_token_id = self.pad_id

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

    def __call__(self, prompts, completions, completion_ids, kwargs, name) -> tuple[list, _Tokenised]:
        tokenised = self.rm_tokenizer(prompts, completions)
        ids = tokenised.input_ids
        scores: list[float | None] = [None] * len(ids)
        device = next(self.model.parameters()).device
        with self.scoring():
            for batch in micro_batches([len(r) for r in ids], self.batch_size):
                input_ids, attention_mask = _pad_right([ids[i] for i in batch], self.pad_id, device)
                for i, s in zip(batch, self.forward(input_ids, attention_mask).tolist()):
                    scores[i] = s
        return scores, tokenised


class _SharedBaseSource(_ModelSource):
    """A LoRA reward adapter living on the policy's PeftModel: switched on only inside ``forward``."""

    def __init__(self, policy, adapter_name: str, head: torch.nn.Linear, rm_tokenizer, batch_size, name):
        self.model, self.adapter_name, self.head = policy, adapter_name, head
        self.rm_tokenizer, self.batch_size, self.label_index = rm_tokenizer, batch_size, 0
        self.backbone = backbone_of(policy)
        # The pad id RewardTrainer trained with: the tokenizer's pad token, else its EOS.
        self.pad_id, _ = _resolve_pad_id(rm_tokenizer.tokenizer, None, name)

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
    def __init__(self, parts: list[RewardAdapter], weights: list[float]):
        self.parts, self.weights = parts, weights

    def __call__(self, prompts, completions, completion_ids, kwargs, name) -> list:
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
        return out


def _rm_name(path) -> str:
    """The name TRL logs a reward model under (``rewards/<name>/mean``): its folder's name, marked ``rm_`` unless the
    name already says so (a folder ``rm`` logs as ``rm``, not ``rm_rm``; ``out/rm_lora`` as ``rm_lora``)."""
    folder = Path(str(path).rstrip("/")).name
    return folder if folder == "rm" or folder.startswith(("rm_", "rm-")) else f"rm_{folder}"


# ---- the public class ------------------------------------------------------------------------------------------------
class RewardAdapter:
    """A reward callable for ``reward_funcs`` of any trainer here and of TRL's GRPO/RLOO. Build it with a ``from_*``
    constructor, :meth:`shared_base` or :meth:`mixture`; the constructors' keyword options are:

    * ``name``: the ``__name__`` TRL logs under (``rewards/<name>/mean``).
    * ``normalize``: divide by a running std after subtracting a running mean (:class:`RunningNorm`; state is in
      ``adapter.norm``, saved with ``state_dict()``); ``clip``: then clip to ``[-clip, clip]``.
    * ``nan_policy``: ``"error"`` (default) raises on a NaN score naming the rows; ``"none"`` turns NaN into ``None``,
      which TRL leaves out of the weighted sum of rewards (a row where every source is None gets reward 0 there).
    * ``empty_completion_reward``: ``None`` (default) scores an empty (whitespace-only) completion like any other --
      an RM sees the prompt and an empty answer; a float gives such completions that reward without scoring them.

    Counters of scored rows and truncations are in ``adapter.stats``; under a TRL trainer the per-step truncation
    counts are also logged as ``rewards/<name>/prompt_truncated`` and ``.../completion_truncated``.
    """

    def __init__(
        self,
        source,
        name: str,
        *,
        normalize: bool = False,
        clip: float | None = None,
        nan_policy: str = "error",
        empty_completion_reward: float | None = None,
    ):
        if nan_policy not in ("error", "none"):
            raise ValueError(f"nan_policy={nan_policy!r}: use 'error' or 'none'.")
        if clip is not None and clip <= 0:
            raise ValueError(f"clip={clip}: must be positive (rewards are clipped to [-clip, clip]).")
        self._source = source
        self.__name__ = name
        self.norm = RunningNorm(normalize=normalize, clip=clip)
        self.nan_policy = nan_policy
        self.empty_completion_reward = empty_completion_reward
        self.stats = {"rows": 0, "prompt_truncated": 0, "completion_truncated": 0, "nan": 0, "empty": 0}

    def __repr__(self) -> str:
        return f"RewardAdapter({self.__name__!r}, {type(self._source).__name__.strip('_')})"

    # ---- constructors ----------------------------------------------------------------------------------------------
    @classmethod
    def from_function(cls, fn: RewardFunc, *, name: str | None = None, **options) -> RewardAdapter:
        """Wrap a TRL reward function ``fn(prompts, completions, completion_ids, **kwargs) -> list[float | None]``.

        The adapter checks what ``fn`` returns: a list of one real number or ``None`` per completion (a 1-D tensor or
        numpy array is accepted; bools count as 0/1, as in TRL); anything else raises naming the function and the row.
        ``name`` defaults to ``fn.__name__`` (through ``functools.partial``). A RewardAdapter is returned unchanged.
        """
        if not callable(fn):
            raise TypeError(f"from_function needs a callable, got {type(fn).__name__}.")
        if isinstance(fn, RewardAdapter):
            if name is not None or options:
                raise ValueError(f"{fn.__name__} is already a RewardAdapter; set name and options where it was built.")
            return fn
        base = fn
        while hasattr(base, "func"):  # functools.partial
            base = base.func
        return cls(_FunctionSource(fn), name or getattr(base, "__name__", type(base).__name__), **options)

    @classmethod
    def from_model(
        cls,
        model: str | os.PathLike | torch.nn.Module,
        tokenizer=None,
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        label_index: int | None = None,
        append_eos: bool = True,
        completion_overflow: str = "truncate",
        chat_template_kwargs: dict | None = None,
        model_kwargs: dict | None = None,
        name: str | None = None,
        **options,
    ) -> RewardAdapter:
        """A sequence-classification reward model, scored ``batch_size`` sequences at a time.

        ``model``: a hub id or local folder of an ``AutoModelForSequenceClassification`` checkpoint (loaded with
        ``num_labels=1`` and ``model_kwargs``), a folder holding a PEFT adapter on such a model (its
        ``base_model_name_or_path`` is loaded first), or a loaded model / ``PeftModel``. ``tokenizer``: the RM's own
        tokenizer; default: loaded from the same folder / id (for an adapter, from the adapter folder if it has tokenizer
        files, else from its base). ``max_length``: default the tokenizer's ``model_max_length``, else the config's
        ``max_position_embeddings``; longer pairs are cut from the prompt side (see :class:`RMTokenizer`).
        ``label_index``: which logit is the reward when the model has ``num_labels > 1`` (otherwise an error).

        Each call tokenises all pairs (see the module docstring), sorts them by length, and runs the model's own forward
        on right-padded micro-batches of ``batch_size`` under ``torch.inference_mode`` in eval mode, then puts the
        model back in the train/eval mode it was in. The model is not moved; inputs go to the device of its first
        parameter. If its config has no ``pad_token_id``, it is set to the tokenizer's pad token id, else EOS id (as
        RewardTrainer does; the forward needs it to find each row's last token).
        """
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1.")
        if isinstance(model, (str, os.PathLike)):
            name = name or _rm_name(model)
            model, source_path = _load_reward_model(model, dict(model_kwargs or {}))
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(source_path)
        if not isinstance(model, torch.nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be a path, a hub id or a transformers/PEFT model, got {type(model).__name__}.")
        model_id = getattr(model.config, "_name_or_path", "") or ""
        if tokenizer is None:
            if not model_id:
                raise ValueError("from_model: pass tokenizer= (the model's config does not say where it was loaded from).")
            tokenizer = AutoTokenizer.from_pretrained(model_id)
        name = name or (_rm_name(model_id) if model_id else "reward_model")
        rm_tokenizer = RMTokenizer(
            tokenizer,
            max_length=_max_length(tokenizer, model.config, max_length),
            append_eos=append_eos,
            completion_overflow=completion_overflow,
            chat_template_kwargs=dict(chat_template_kwargs or {}),
        )
        return cls(_ModelSource(model, rm_tokenizer, batch_size, label_index, name), name, **options)

    @classmethod
    def shared_base(
        cls,
        policy,
        adapter: str | os.PathLike,
        tokenizer=None,
        *,
        adapter_name: str = "reward",
        batch_size: int = 16,
        max_length: int | None = None,
        append_eos: bool = True,
        completion_overflow: str = "truncate",
        chat_template_kwargs: dict | None = None,
        name: str | None = None,
        **options,
    ) -> RewardAdapter:
        """Score with a LoRA reward adapter on the policy's own base weights.

        ``policy``: the policy as a ``peft.PeftModel`` (LoRA, any base including 4-bit). ``adapter``: the folder TRL's
        ``RewardTrainer.save_model()`` wrote after training ``AutoModelForSequenceClassification`` of the *same* base
        checkpoint with ``peft_config=LoraConfig(task_type="SEQ_CLS", ...)``. Its LoRA weights become a second, frozen
        adapter ``adapter_name`` of ``policy`` (see :func:`trl_ext.adapters.load_reward_adapter_onto`); its score head is
        kept by the adapter. While scoring, that adapter is made active, the policy's transformer runs without the LM
        head (so no (B, T, vocab) logits), the hidden state at the last non-pad token goes through the head; then the
        previous active adapter, every parameter's ``requires_grad`` and the train/eval mode are restored, so the
        policy's outputs and its trainable set are unchanged. A 4-bit policy gets
        :func:`trl_ext.models.disable_bnb_cpu_repack` before the adapter is loaded: bitsandbytes' CPU inference
        packing (an eval-mode forward on AVX512-BF16 CPUs) would otherwise be undone wrongly by the ``state_dict()``
        PEFT reads, and would leave the next training step without gradients. ``tokenizer``: default from the adapter
        folder (where RewardTrainer saves it). Pass the policy to the trainer as this PeftModel, without
        ``peft_config``.
        """
        from transformers import AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1.")
        head = load_reward_adapter_onto(policy, adapter, adapter_name=adapter_name)  # 4-bit: repacking off first
        if tokenizer is None:
            path = Path(adapter)
            has_tok = (path / "tokenizer_config.json").exists()
            base_name = policy.peft_config[adapter_name].base_model_name_or_path
            tokenizer = AutoTokenizer.from_pretrained(str(path) if has_tok else base_name)
        name = name or _rm_name(adapter_name)
        rm_tokenizer = RMTokenizer(
            tokenizer,
            max_length=_max_length(tokenizer, policy.config, max_length),
            append_eos=append_eos,
            completion_overflow=completion_overflow,
            chat_template_kwargs=dict(chat_template_kwargs or {}),
        )
        return cls(_SharedBaseSource(policy, adapter_name, head, rm_tokenizer, batch_size, name), name, **options)

    @classmethod
    def mixture(
        cls,
        sources: Sequence[RewardAdapter | RewardFunc],
        weights: Sequence[float] | None = None,
        *,
        name: str | None = None,
        **options,
    ) -> RewardAdapter:
        """``sum_i weights[i] * source_i`` per row; plain functions are wrapped with :meth:`from_function`.

        Each source applies its own options (normalisation, clipping, NaN policy) before weighting; a source that gives
        ``None`` for a row is left out of that row's sum (as TRL does across ``reward_funcs``), and a row where all
        sources give ``None`` is ``None``. ``weights`` default to 1 each.
        """
        parts = [s if isinstance(s, RewardAdapter) else cls.from_function(s) for s in sources]
        if not parts:
            raise ValueError("mixture needs at least one source.")
        weights = [1.0] * len(parts) if weights is None else [float(w) for w in weights]
        if len(weights) != len(parts):
            raise ValueError(f"mixture got {len(weights)} weights for {len(parts)} sources; give one weight per source.")
        if not all(math.isfinite(w) for w in weights):
            raise ValueError(f"mixture weights must be finite numbers, got {weights}.")
        name = name or "mix_" + "_".join(p.__name__ for p in parts)
        return cls(_MixtureSource(parts, weights), name, **options)

    # ---- scoring ---------------------------------------------------------------------------------------------------
    def __call__(self, prompts, completions, completion_ids=None, **kwargs) -> list[float | None]:
        """TRL's reward-function interface; extra keyword arguments (dataset columns, ``trainer_state``, ``log_metric``
        ...) reach function sources unchanged."""
        if len(prompts) != len(completions):
            raise ValueError(f"{self.__name__}: got {len(prompts)} prompts and {len(completions)} completions.")
        n = len(prompts)
        if n == 0:
            return []
        empty = [not completion_text(c).strip() for c in completions]
        todo = list(range(n))
        if self.empty_completion_reward is not None:
            todo = [i for i in range(n) if not empty[i]]
        sub = lambda xs: xs if xs is None or len(todo) == n else [xs[i] for i in todo]  # noqa: E731
        sub_kwargs = {k: sub(v) if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}

        raw: list[float | None] = []
        tokenised = None
        if todo:
            out = self._source(sub(list(prompts)), sub(list(completions)), sub(completion_ids), sub_kwargs, self.__name__)
            raw, tokenised = out if isinstance(out, tuple) else (out, None)

        fixed = self.empty_completion_reward
        scores: list[float | None] = [float(fixed) if fixed is not None and empty[i] else None for i in range(n)]
        for i, s in zip(todo, raw):
            scores[i] = s
        nan_rows = [i for i, s in enumerate(scores) if s is not None and math.isnan(s)]
        if nan_rows:
            self.stats["nan"] += len(nan_rows)
            if self.nan_policy == "error":
                raise FloatingPointError(
                    f"{self.__name__}: NaN reward for rows {nan_rows[:10]} (of {n}); first prompt: "
                    f"{str(prompts[nan_rows[0]])[:120]!r}. Check the reward model's weights and dtype (fp16 overflow is "
                    "common) or the function; or pass nan_policy='none' to give those rows None (left out by TRL)."
                )
            for i in nan_rows:
                scores[i] = None
        scores = self.norm(scores)

        self.stats["rows"] += n
        self.stats["empty"] += sum(empty)
        if tokenised is not None:
            self._log_truncation(tokenised, n, kwargs.get("log_metric"))
        return scores

    def score(self, prompts, completions, **kwargs) -> list[float | None]:
        """Score (prompt, completion) pairs outside a trainer: same as calling the adapter."""
        return self(prompts=prompts, completions=completions, completion_ids=None, **kwargs)

    def _log_truncation(self, tokenised: _Tokenised, n: int, log_metric) -> None:
        self.stats["prompt_truncated"] += tokenised.prompt_truncated
        self.stats["completion_truncated"] += tokenised.completion_truncated
        if tokenised.prompt_truncated:
            logger.info("%s: %d of %d inputs cut from the prompt side to fit the reward model.", self.__name__,
                        tokenised.prompt_truncated, n)
        if tokenised.completion_truncated:
            logger.warning("%s: %d of %d completions alone exceed the reward model's max_length; their first tokens were "
                           "cut (completion_overflow='truncate').", self.__name__, tokenised.completion_truncated, n)
        if callable(log_metric):
            log_metric(f"rewards/{self.__name__}/prompt_truncated", float(tokenised.prompt_truncated))
            log_metric(f"rewards/{self.__name__}/completion_truncated", float(tokenised.completion_truncated))

    # ---- state for checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Normalisation statistics (this adapter's and, for a mixture, its parts'), for resuming a run."""
        state = {"norm": self.norm.state_dict()}
        if isinstance(self._source, _MixtureSource):
            state["parts"] = [p.state_dict() for p in self._source.parts]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.norm.load_state_dict(state["norm"])
        for part, part_state in zip(getattr(self._source, "parts", []), state.get("parts", [])):
            part.load_state_dict(part_state)


def _load_reward_model(path_or_id: str | os.PathLike, model_kwargs: dict):
    """Load an RM from a folder / hub id; returns (model, where its tokenizer is)."""
    from transformers import AutoModelForSequenceClassification

    model_kwargs.setdefault("num_labels", 1)
    name = str(path_or_id)
    if (Path(name) / "adapter_config.json").exists():
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(name)
        base = safe_from_pretrained(
            AutoModelForSequenceClassification, config.base_model_name_or_path, "reward model base", **model_kwargs
        )
        model = PeftModel.from_pretrained(base, name)
        has_tok = (Path(name) / "tokenizer_config.json").exists()
        return model, name if has_tok else config.base_model_name_or_path
    name = check_model_path(name, field="reward model")
    return safe_from_pretrained(AutoModelForSequenceClassification, name, "reward model", **model_kwargs), name
