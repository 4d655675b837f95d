"""The labels stage: K sampled answers per prompt from the SFT model, ranked by the labeller, turned into pairs (or
the pairs of a named preference dataset, split)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from ..evaluation import oracle_accuracy, sample_completions
from ..models import load_tokenizer, safe_from_pretrained
from ..toy import pairs_from_ranking
from .config import PipelineConfig, label_max_new_tokens, uses_embedded_model
from .data import preference_dataset


def run_labels(cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, folder: Path) -> dict:
    """Sample K answers per prompt from the SFT model, let the labeller rank them, turn rankings into pairs."""
    if cfg.preference_dataset_name:
        ds = preference_dataset(cfg)
        split = ds.train_test_split(test_size=cfg.rm_test_fraction, seed=cfg.seed)
        split["train"].to_json(folder / "train.jsonl")
        split["test"].to_json(folder / "test.jsonl")
        return {"train_pairs": len(split["train"]), "test_pairs": len(split["test"]), "source": "dataset"}

    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    dtype = torch.float32 if not torch.cuda.is_available() else "auto"
    model = safe_from_pretrained(
        AutoModelForCausalLM, sft_model, "sft model", dtype=dtype, trust_remote_code=cfg.trust_remote_code
    )
    if torch.cuda.is_available():
        model.to("cuda")
    data = cfg.task.prompt_dataset(cfg.num_label_prompts, seed=cfg.seed + 1)
    prompts = data["prompt"]
    answers = sample_completions(
        model, tokenizer, prompts, num_samples=cfg.num_ranked, temperature=cfg.label_temperature,
        max_new_tokens=label_max_new_tokens(cfg, uses_embedded_model(model_args)), seed=cfg.seed,
        desc="sampling answers to rank",
    )
    labeller = cfg.embedded.labeller
    rng = random.Random(cfg.seed)
    n_test = num_test_prompts(cfg, len(prompts))
    rows = {"train": [], "test": []}
    with open(folder / "rankings.jsonl.tmp", "w") as rankings:
        # the expected answer goes to a labeller whose utility reads it (the toy's parses the prompt instead)
        for i, (prompt, ks, answer) in enumerate(zip(prompts, answers, data["answer"], strict=True)):
            tiers = labeller.rank(prompt, ks, rng, answer=answer)
            rankings.write(json.dumps({"prompt": prompt, "answers": ks, "ranking": tiers}) + "\n")
            split = "test" if i < n_test else "train"
            for c, r in pairs_from_ranking(tiers, ks):
                rows[split].append({
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": ks[c]}],
                    "rejected": [{"role": "assistant", "content": ks[r]}],
                })
    if not rows["train"] or not rows["test"]:
        raise RuntimeError(
            f"labels: the labeller found no preference among the SFT model's answers (train pairs: {len(rows['train'])}, "
            f"test pairs: {len(rows['test'])}): every answer to a prompt was judged equal. Raise label_temperature "
            "or num_ranked, or num_label_prompts."
        )
    for split, split_rows in rows.items():
        Dataset.from_list(split_rows).to_json(folder / f"{split}.jsonl")
    os.replace(folder / "rankings.jsonl.tmp", folder / "rankings.jsonl")
    flat = [a for ks in answers for a in ks]
    return {
        "prompts": len(prompts), "k": cfg.num_ranked, "train_pairs": len(rows["train"]), "test_pairs": len(rows["test"]),
        "sampled_accuracy": oracle_accuracy(prompts, answers, cfg.embedded.oracle, {"answer": data["answer"]}),
        "distinct_answers": len(set(flat)),
    }


def num_test_prompts(cfg: PipelineConfig, num_prompts: int) -> int:
    """The labels stage holds out the first this-many ranked prompts (and their pairs) to test the RM."""
    return max(1, int(round(cfg.rm_test_fraction * num_prompts)))
