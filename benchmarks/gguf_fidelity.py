"""How close a `trl-ext convert-gguf` checkpoint is to its GGUF file, and what the quantization costs, offline.

    OMP_NUM_THREADS=2 PYTHONPATH=$PWD python benchmarks/gguf_fidelity.py models/smollm2-135m-instruct   # ~1 min

Prints, as markdown (docs/real-model.md quotes it):

* the tensor types in the file (how much of the model is 4-bit);
* the quantization step: Q4_1 stores each block of 32 weights as ``d * q + m`` with ``q`` in 0..15, and llama.cpp
  rounds to the nearest level, so every weight is within ``d / 2`` of the original (plus the fp16 rounding of ``d``
  and ``m``); ``d / 2`` is reported relative to the RMS of the block's weights. This bounds the per-weight error
  without the original weights, which are not reachable offline;
* the largest logit difference between the saved fp32 checkpoint and transformers' own reading of the GGUF file
  (the conversion itself should add nothing);
* the model's mean loss per token on a few short chat-template conversations (written by hand, below) and its greedy
  answers to a few questions: a broken conversion shows as a loss near ln(vocabulary) ~ 10.8 and nonsense answers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trl_ext.gguf import resolve_gguf  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "user", "content": "What is 7 + 5? Answer with the number only."},
     {"role": "assistant", "content": "12"}],
    [{"role": "user", "content": "Name three primary colors."},
     {"role": "assistant", "content": "The three primary colors are red, blue and yellow."}],
    [{"role": "user", "content": "Translate 'good morning' into French."},
     {"role": "assistant", "content": "Bonjour."}],
]


def tensor_types(path: Path) -> Counter:
    from gguf import GGUFReader

    return Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors)


def q4_1_half_steps(path: Path) -> np.ndarray:
    """d/2 over the block's RMS weight, one value per Q4_1 block of 32 weights (block: fp16 d, fp16 m, 16 bytes)."""
    from gguf import GGMLQuantizationType, GGUFReader, dequantize

    ratios = []
    for t in GGUFReader(str(path)).tensors:
        if t.tensor_type != GGMLQuantizationType.Q4_1:
            continue
        blocks = np.asarray(t.data).reshape(-1, 20)  # (n_blocks, 20 bytes)
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)[:, 0]  # (n_blocks,)
        w = dequantize(t.data, t.tensor_type).reshape(-1, 32)  # (n_blocks, 32)
        rms = np.sqrt((w.astype(np.float64) ** 2).mean(axis=1))
        ratios.append(d / 2 / np.maximum(rms, 1e-12))
    return np.concatenate(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("converted", help="the folder `trl-ext convert-gguf` wrote")
    parser.add_argument("--source", default="smollm2", help="the GGUF it came from: a path or `smollm2`")
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_gguf(args.source)
    types = tensor_types(path)
    ratios = q4_1_half_steps(path)

    start = time.perf_counter()
    converted = AutoModelForCausalLM.from_pretrained(args.converted, dtype=torch.float32).eval()
    load_converted = time.perf_counter() - start
    start = time.perf_counter()
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    load_gguf = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(args.converted)

    max_diff, losses, n_tokens, answers = 0.0, [], 0, []
    with torch.no_grad():
        for conversation in CONVERSATIONS:
            batch = tokenizer.apply_chat_template(conversation, return_tensors="pt", return_dict=True)
            logits = converted(**batch).logits  # (1, T, V)
            max_diff = max(max_diff, (logits - reference(**batch).logits).abs().max().item())
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], batch["input_ids"][0, 1:], reduction="sum")
            losses.append(loss.item())
            n_tokens += batch["input_ids"].shape[1] - 1
            prompt = tokenizer.apply_chat_template(conversation[:1], add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)
            out = converted.generate(**prompt, max_new_tokens=24, do_sample=False)
            answers.append((conversation[0]["content"], tokenizer.decode(out[0, prompt["input_ids"].shape[1]:],
                                                                         skip_special_tokens=True).strip()))

    print(f"source: `{path.name}` ({path.stat().st_size / 1e6:.0f} MB); tensors: "
          + ", ".join(f"{n} {k}" for k, n in types.most_common()))
    print(f"Q4_1 half-step d/2 relative to the block's RMS weight, over {ratios.size} blocks of 32: median "
          f"{np.median(ratios):.3f}, 90th percentile {np.percentile(ratios, 90):.3f}")
    print(f"max |logit difference|, saved checkpoint vs transformers' GGUF reading, {len(CONVERSATIONS)} "
          f"conversations: {max_diff:.3g}")
    print(f"mean loss per token on the {len(CONVERSATIONS)} conversations (whole chat-template text, {n_tokens} "
          f"tokens): {sum(losses) / n_tokens:.3f} (ln of the vocabulary: {np.log(len(tokenizer)):.1f})")
    print(f"load time (one run): converted folder {load_converted:.1f} s, GGUF file {load_gguf:.1f} s")
    print("\n| question | greedy answer |\n|---|---|")
    for question, answer in answers:
        print(f"| {question} | {answer.replace('|', '/')} |")


if __name__ == "__main__":
    main()
