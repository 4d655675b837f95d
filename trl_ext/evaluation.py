"""Batched sampling from a policy, scoring with reward functions, and the numbers the pipeline reports about it.

Used by the pipeline's eval stage, by :class:`trl_ext.GoldRewardCallback` and by the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import copy
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Samples:
    """What :func:`sample_completions` returns with ``return_ids=True``: text and token ids, one entry per prompt.

    ``prompt_ids[i]``: the rendered prompt's ids (no padding); ``completion_ids[i][j]``: sample j's ids, cut after the
    first EOS (which is kept, as TRL does) and without padding; ``texts[i][j]``: its text, special tokens stripped.
    """

    texts: list[list[str]]
    prompt_ids: list[list[int]]
    completion_ids: list[list[list[int]]]


@torch.inference_mode()
def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    max_new_tokens: int = 8,
    batch_size: int = 256,
    seed: int | None = None,
    desc: str | None = None,
    generation_config: GenerationConfig | None = None,
    chat_template_kwargs: dict | None = None,
    return_ids: bool = False,
) -> list[list[str]] | Samples:
    """``num_samples`` completions per prompt, as text with special tokens stripped; greedy when ``temperature == 0``.

    Prompts are conversational (rendered with the tokenizer's chat template, ``chat_template_kwargs`` and a
    generation prompt) or plain strings. Returns one list of ``num_samples`` strings per prompt, in prompt order, or
    with ``return_ids`` a :class:`Samples` holding the token ids too. ``generation_config`` (e.g. a trainer's own)
    replaces the one built from ``temperature`` / ``max_new_tokens``; its ``num_return_sequences`` is set to
    ``num_samples``. ``seed`` makes the draw reproducible without touching the caller's global RNG state (it is
    restored). The model's train/eval mode is restored.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    texts = [
        p if isinstance(p, str)
        else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {}))
        for p in prompts
    ]
    gen_config = _sampling_config(generation_config, tokenizer, num_samples, temperature, max_new_tokens)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[str]] = []
    prompt_ids: list[list[int]] = []
    completion_ids: list[list[list[int]]] = []
    eos = gen_config.eos_token_id if gen_config.eos_token_id is not None else tokenizer.eos_token_id
    eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
    try:
        if generator is not None:  # generate() draws from the global RNG; make the draw reproducible and local
            state = torch.random.get_rng_state()
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=desc is None, leave=False):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            ids = model.generate(**batch, generation_config=gen_config)
            generated = ids[:, batch["input_ids"].shape[1] :]  # (B * num_samples, C), prompts repeated in place
            decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
            out.extend(decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples))
            if return_ids:
                for row, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
                    prompt_ids.append([t for t, m in zip(row, mask) if m])
                cut = [_cut_after_eos(row, eos) for row in generated.tolist()]
                completion_ids.extend(cut[i : i + num_samples] for i in range(0, len(cut), num_samples))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
        if generator is not None:
            torch.random.set_rng_state(state)
    return Samples(out, prompt_ids, completion_ids) if return_ids else out


def _sampling_config(generation_config, tokenizer, num_samples: int, temperature: float, max_new_tokens: int):
    """A copy of ``generation_config`` or, without one, pure sampling at ``temperature`` (greedy at 0); either way
    ``num_samples`` sequences per prompt."""
    do_sample = temperature > 0
    gen_config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=0 if do_sample else None,
        top_p=1.0 if do_sample else None,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    gen_config.num_return_sequences = num_samples
    return gen_config


def _cut_after_eos(ids: list[int], eos: set[int]) -> list[int]:
    for i, t in enumerate(ids):
        if t in eos:
            return ids[: i + 1]
    return ids


def score_completions(
    reward_funcs: Sequence,
    prompts: Sequence,
    completions: Sequence,
    completion_ids: Sequence[Sequence[int]] | None = None,
    *,
    columns: dict[str, list] | None = None,
    processing_classes: Sequence | None = None,
    chat_template_kwargs: dict | None = None,
    batch_size: int = 64,
    **reward_kwargs,
) -> list[list[float]]:
    """Scores of each reward function for every (prompt, completion) row: one list per function, NaN where None.

    Each function is called as TRL's GRPOTrainer calls it (``prompts``, ``completions``, ``completion_ids``, the
    dataset ``columns`` and ``reward_kwargs`` as keywords), ``batch_size`` rows at a time so memory stays bounded.
    A ``torch.nn.Module`` (TRL's raw reward model) is scored the way ``GRPOTrainer._calculate_rewards`` does: the
    conversation rendered with TRL's ``apply_chat_template`` and its ``processing_classes`` entry, right padding, no
    added special tokens, logit 0.
    """
    n = len(prompts)
    columns = columns or {}
    out = []
    for index, func in enumerate(reward_funcs):
        scores: list[float] = []
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            if isinstance(func, torch.nn.Module):
                processing_class = processing_classes[index] if processing_classes is not None else None
                if processing_class is None:
                    raise ValueError(
                        f"reward_funcs[{index}] is a {type(func).__name__} with no processing class; pass its "
                        "tokenizer in processing_classes (TRL's reward_processing_classes)."
                    )
                values = _score_with_model(func, processing_class, prompts[rows], completions[rows], chat_template_kwargs)
            else:
                values = func(
                    prompts=list(prompts[rows]), completions=list(completions[rows]),
                    completion_ids=None if completion_ids is None else list(completion_ids[rows]),
                    **{k: list(v[rows]) for k, v in columns.items()}, **reward_kwargs,
                )
                if hasattr(values, "tolist") and not isinstance(values, list):
                    values = values.tolist()
            values = list(values)
            if len(values) != len(prompts[rows]):
                name = getattr(func, "__name__", type(func).__name__)
                raise ValueError(f"reward function {name!r} returned {len(values)} values for {len(prompts[rows])} rows.")
            scores.extend(math.nan if v is None else float(v) for v in values)
        out.append(scores)
    return out


@torch.inference_mode()
def _score_with_model(model, processing_class, prompts, completions, chat_template_kwargs) -> list[float]:
    from trl.data_utils import apply_chat_template, is_conversational

    if is_conversational({"prompt": prompts[0]}):
        texts = [
            apply_chat_template({"messages": p + c}, processing_class, **(chat_template_kwargs or {}))["text"]
            for p, c in zip(prompts, completions, strict=True)
        ]
    else:
        texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    device = next(model.parameters()).device
    inputs = processing_class(
        text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False
    ).to(device)
    return model(**inputs).logits[:, 0].float().tolist()


def flatten_samples(
    prompts: Sequence, samples: Sequence[Sequence[str]], *, as_messages: bool = False
) -> tuple[list, list]:
    """One row per (prompt, sampled answer): ``prompts[i]`` repeated once for each of ``samples[i]``.

    With ``as_messages``, an answer to a conversational prompt becomes the assistant turn
    ``[{"role": "assistant", "content": text}]`` that TRL's reward functions (and :class:`~trl_ext.RewardAdapter`)
    receive; answers to plain-text prompts stay strings.
    """
    flat_prompts = [p for p, cs in zip(prompts, samples, strict=True) for _ in cs]
    flat = [c for cs in samples for c in cs]
    if as_messages:
        flat = [c if isinstance(p, str) else [{"role": "assistant", "content": c}] for p, c in zip(flat_prompts, flat)]
    return flat_prompts, flat


def reward_model_scores(reward_model, prompts: Sequence, samples: Sequence[Sequence[str]]) -> list[float]:
    """A :class:`~trl_ext.RewardAdapter`'s score for every sampled answer, in :func:`flatten_samples` order."""
    return list(reward_model.score(*flatten_samples(prompts, samples, as_messages=True)))


def oracle_accuracy(
    prompts: Sequence, completions: Sequence[Sequence[str]], oracle: Callable[..., list[float]],
    columns: dict[str, Sequence] | None = None,
) -> float:
    """Mean oracle verdict over every completion of every prompt. ``columns`` (one value per prompt, e.g. the
    ``answer`` a checker reads) are passed as keywords, repeated for each of the prompt's completions, as TRL does."""
    kwargs = {k: [v for v, cs in zip(values, completions, strict=True) for _ in cs] for k, values in (columns or {}).items()}
    scores = oracle(*flatten_samples(prompts, completions), **kwargs)
    return float(sum(scores) / max(len(scores), 1))

def oracle_accuracy_by_level(
    prompts: Sequence, completions: Sequence[Sequence[str]], oracle: Callable[..., list[float]], levels: Sequence,
    columns: dict[str, Sequence] | None = None,
) -> dict[str, float]:
    """:func:`oracle_accuracy` within each difficulty level (``levels[i]`` is prompt ``i``'s), keyed by the level."""
    by_level: dict = {}
    for i, level in enumerate(levels):
        by_level.setdefault(level, []).append(i)
    columns = columns or {}
    return {
        str(level): oracle_accuracy([prompts[i] for i in rows], [completions[i] for i in rows], oracle,
                                    {k: [v[i] for i in rows] for k, v in columns.items()})
        for level, rows in sorted(by_level.items())
    }


def reward_function_means(
    funcs: dict[str, Callable[..., list]], prompts: Sequence, completions: Sequence[Sequence[str]],
    columns: dict[str, Sequence] | None = None,
) -> dict[str, float | None]:
    """Mean of each TRL reward function over every completion, called as TRL's trainers call it.

    Completions of conversational prompts are passed as ``[{"role": "assistant", "content": text}]``, and every other
    dataset column (``columns``, one value per prompt, e.g. ``solution`` for TRL's ``accuracy_reward``) as a keyword
    argument repeated for each of the prompt's completions. ``None`` scores (TRL's "skip this example") are left out.
    """
    flat_prompts, flat = flatten_samples(prompts, completions, as_messages=True)
    kwargs = {k: [v for v, cs in zip(values, completions) for _ in cs] for k, values in (columns or {}).items()}
    means = {}
    for name, fn in funcs.items():
        scores = [s for s in fn(prompts=flat_prompts, completions=flat, **kwargs) if s is not None]
        means[name] = float(sum(scores) / len(scores)) if scores else None
    return means
