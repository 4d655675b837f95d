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

How a reward model sees a (prompt, completion) pair -- re-tokenised with the RM's own tokenizer and chat template, as
TRL's ``RewardTrainer`` saw its training pairs -- is :mod:`trl_ext.rewards.bridge`; the sources behind the four
constructors are :mod:`trl_ext.rewards.sources`.

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
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..adapters import load_reward_adapter_onto
from ..models import check_model_path, safe_from_pretrained
from .bridge import RMTokenizer, Tokenised, default_max_length
from .functions import RewardFunc, completion_text
from .normalize import RunningNorm
from .sources import _FunctionSource, _MixtureSource, _ModelSource, _SharedBaseSource

logger = logging.getLogger(__name__)


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
            max_length=default_max_length(tokenizer, model.config, max_length),
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
            max_length=default_max_length(tokenizer, policy.config, max_length),
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
            raw, tokenised = out.values, out.tokenised

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

    def _log_truncation(self, tokenised: Tokenised, n: int, log_metric) -> None:
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
        if isinstance(self._source, _MixtureSource):
            for part, part_state in zip(self._source.parts, state.get("parts", [])):
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


def _rm_name(path) -> str:
    """The name TRL logs a reward model under (``rewards/<name>/mean``): its folder's name, marked ``rm_`` unless the
    name already says so (a folder ``rm`` logs as ``rm``, not ``rm_rm``; ``out/rm_lora`` as ``rm_lora``)."""
    folder = Path(str(path).rstrip("/")).name
    return folder if folder == "rm" or folder.startswith(("rm_", "rm-")) else f"rm_{folder}"
