"""Batched sampling from a policy and the numbers the pipeline reports about it (oracle accuracy, mean RM score)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase


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
) -> list[list[str]]:
    """``num_samples`` completions per prompt, as text with special tokens stripped; greedy when ``temperature == 0``.

    Prompts are conversational (rendered with the tokenizer's chat template and a generation prompt) or plain strings.
    Returns one list of ``num_samples`` strings per prompt, in prompt order. The model's train/eval mode is restored.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    texts = [
        p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    do_sample = temperature > 0
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_k=0 if do_sample else None,
        top_p=1.0 if do_sample else None,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[str]] = []
    try:
        if generator is not None:  # generate() draws from the global RNG; make the draw reproducible and local
            state = torch.random.get_rng_state()
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=desc is None, leave=False):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            ids = model.generate(**batch, generation_config=gen_config)
            decoded = tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            out.extend(decoded[i : i + num_samples] for i in range(0, len(decoded), num_samples))
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
        if generator is not None:
            torch.random.set_rng_state(state)
    return out


def oracle_accuracy(
    prompts: Sequence, completions: Sequence[Sequence[str]], oracle: Callable[..., list[float]]
) -> float:
    """Mean oracle verdict over every completion of every prompt."""
    flat_prompts = [p for p, cs in zip(prompts, completions, strict=True) for _ in cs]
    flat = [c for cs in completions for c in cs]
    scores = oracle(flat_prompts, flat)
    return float(sum(scores) / max(len(scores), 1))



def oracle_accuracy_by_level(
    prompts: Sequence, completions: Sequence[Sequence[str]], oracle: Callable[..., list[float]], levels: Sequence
) -> dict[str, float]:
    """:func:`oracle_accuracy` within each difficulty level (``levels[i]`` is prompt ``i``'s), keyed by the level."""
    by_level: dict = {}
    for prompt, cs, level in zip(prompts, completions, levels, strict=True):
        by_level.setdefault(level, ([], []))
        by_level[level][0].append(prompt)
        by_level[level][1].append(cs)
    return {str(level): oracle_accuracy(ps, cs, oracle) for level, (ps, cs) in sorted(by_level.items())}


def reward_function_means(
    funcs: dict[str, Callable[..., list]], prompts: Sequence, completions: Sequence[Sequence[str]],
    columns: dict[str, Sequence] | None = None,
) -> dict[str, float | None]:
    """Mean of each TRL reward function over every completion, called as TRL's trainers call it.

    Completions of conversational prompts are passed as ``[{"role": "assistant", "content": text}]``, and every other
    dataset column (``columns``, one value per prompt, e.g. ``solution`` for TRL's ``accuracy_reward``) as a keyword
    argument repeated for each of the prompt's completions. ``None`` scores (TRL's "skip this example") are left out.
    """
    flat_prompts = [p for p, cs in zip(prompts, completions, strict=True) for _ in cs]
    flat = [c if isinstance(p, str) else [{"role": "assistant", "content": c}] for p, c in
            zip(flat_prompts, (c for cs in completions for c in cs))]
    kwargs = {k: [v for v, cs in zip(values, completions) for _ in cs] for k, values in (columns or {}).items()}
    means = {}
    for name, fn in funcs.items():
        scores = [s for s in fn(prompts=flat_prompts, completions=flat, **kwargs) if s is not None]
        means[name] = float(sum(scores) / len(scores)) if scores else None
    return means
