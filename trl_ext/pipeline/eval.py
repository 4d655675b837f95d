"""The eval stage: every model's answers to the held-out prompts, graded by the oracle, the reward functions and the
learned RM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
from trl import ModelConfig

from ..evaluation import (
    oracle_accuracy, oracle_accuracy_by_level, reward_function_means, reward_model_scores, sample_completions,
)
from ..models import load_tokenizer, safe_from_pretrained
from ..assembly.rewards import import_reward_functions
from ..rewards import RewardAdapter
from .config import PipelineConfig, rl_max_completion_length
from .data import eval_dataset


def _eval_rules(cfg: PipelineConfig, data: Dataset, prompts: list, greedy: list, sampled: list) -> dict:
    """Per-level oracle accuracy (a task with levels) and each reward function's mean, greedy and sampled."""
    row = {}
    if cfg.uses_embedded_task and "level" in data.column_names:
        for kind, answers in (("greedy", greedy), ("sampled", sampled)):
            row[f"oracle_accuracy_{kind}_by_level"] = oracle_accuracy_by_level(
                prompts, answers, cfg.embedded.oracle, data["level"], {"answer": data["answer"]})
    if cfg.reward_funcs:
        funcs = dict(zip(cfg.reward_funcs, import_reward_functions(cfg.reward_funcs), strict=True))
        columns = {c: data[c] for c in data.column_names if c != "prompt"}
        for kind, answers in (("greedy", greedy), ("sampled", sampled)):
            row[f"reward_funcs_{kind}"] = reward_function_means(funcs, prompts, answers, columns)
    return row


def run_eval(cfg: PipelineConfig, models: dict[str, str], rm_model: str | None, folder: Path, embedded: bool = True) -> dict:
    """Oracle accuracy (greedy and sampled, per level where the task has levels; embedded task only), each reward
    function's mean, and the mean RM score of each model on held-out prompts. Answers are as long as the RL stage's
    (``embedded``: the defaults of the embedded tiny model, else TRL's)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = eval_dataset(cfg)
    prompts = data["prompt"]
    oracle = cfg.embedded.oracle if cfg.uses_embedded_task else None
    max_new_tokens = rl_max_completion_length(cfg, embedded)
    rm = None
    if rm_model is not None:
        rm_net = safe_from_pretrained(
            AutoModelForSequenceClassification, rm_model, "reward model", num_labels=1, dtype="auto",
            trust_remote_code=cfg.trust_remote_code,
        ).to(device)
        rm = RewardAdapter.from_model(rm_net, load_tokenizer(ModelConfig(), rm_model), batch_size=cfg.reward_batch_size)
    results = {}
    with open(folder / "samples.jsonl.tmp", "w") as out:
        for name, path in models.items():
            tokenizer = load_tokenizer(ModelConfig(), path, cfg.trust_remote_code)
            model = safe_from_pretrained(
                AutoModelForCausalLM, path, f"{name} model", dtype="auto", trust_remote_code=cfg.trust_remote_code
            )
            model.to(device)
            kw = dict(max_new_tokens=max_new_tokens)
            greedy = sample_completions(model, tokenizer, prompts, temperature=0.0, desc=f"eval {name} greedy", **kw)
            sampled = sample_completions(
                model, tokenizer, prompts, num_samples=cfg.eval_samples, temperature=cfg.eval_temperature,
                seed=cfg.seed, desc=f"eval {name} sampled", **kw,
            )
            row = {}
            if oracle is not None:
                answers = {"answer": data["answer"]}
                row["oracle_accuracy_greedy"] = oracle_accuracy(prompts, greedy, oracle, answers)
                row["oracle_accuracy_sampled"] = oracle_accuracy(prompts, sampled, oracle, answers)
            if rm is not None:
                scores = reward_model_scores(rm, prompts, sampled)
                row["rm_score_sampled"] = float(sum(scores) / len(scores))
            row.update(_eval_rules(cfg, data, prompts, greedy, sampled))
            results[name] = row
            for p, g, s in zip(prompts, greedy, sampled):
                out.write(json.dumps({"model": name, "prompt": p, "greedy": g[0], "sampled": s}) + "\n")
            del model
    os.replace(folder / "samples.jsonl.tmp", folder / "samples.jsonl")
    return results
