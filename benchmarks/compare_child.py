"""One (algorithm, seed) run of benchmarks/compare.py, in its own process (``compare.py --run-one spec.json``): the
pipeline's RL (or DPO) stage from the shared SFT model against the shared RM, evaluated on a schedule, stopped when
its budget is spent; and the evaluation the parent's SFT reference uses too."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from transformers import TrainerCallback

from provenance import read_peak_rss_mib


# ---- evaluation (shared by the reference and the runs) ------------------------------------------------------------
def eval_subset(prompts: list, n: int) -> list:
    """``n`` evenly spaced prompts of the held-out set (sorted by operands, so a prefix would be biased)."""
    if n >= len(prompts):
        return list(prompts)
    return [prompts[(i * len(prompts)) // n] for i in range(n)]


def evaluate_policy(model, tokenizer, prompts, rm, *, num_samples, temperature, max_new_tokens, seed) -> dict:
    """Sampled completions on ``prompts``: oracle accuracy, mean oracle utility, mean (and sd of) learned RM score."""
    from trl_ext.evaluation import flatten_samples, reward_model_scores, sample_completions
    from trl_ext.toy import oracle_correct, oracle_utility
    from trl_ext.toy.task import NO_NUMBER, RIGHT, RIGHT_CHATTY, WRONG, WRONG_CHATTY

    samples = sample_completions(
        model, tokenizer, prompts, num_samples=num_samples, temperature=temperature,
        max_new_tokens=max_new_tokens, seed=seed,
    )
    flat_p, flat_c = flatten_samples(prompts, samples)
    correct = oracle_correct(flat_p, flat_c)
    utility = [float(oracle_utility(p, c)) for p, c in zip(flat_p, flat_c)]
    scores = reward_model_scores(rm, prompts, samples)
    grades = {RIGHT: "right", RIGHT_CHATTY: "right_chatty", WRONG: "wrong", WRONG_CHATTY: "wrong_chatty",
              NO_NUMBER: "no_number"}
    return {
        "accuracy": statistics.fmean(correct),
        "grades": {name: sum(u == g for u in utility) / len(utility) for g, name in grades.items()},
        "utility": statistics.fmean(utility), "utility_sd": statistics.pstdev(utility),
        "rm_score": statistics.fmean(scores), "rm_sd": statistics.pstdev(scores),
        "distinct": len(set(flat_c)), "n": len(flat_c),
    }


def load_eval_rm(model_args, rm_path: str, batch_size: int, trust_remote_code: bool):
    from trl_ext.models import load_sequence_classifier, load_tokenizer
    from trl_ext.rewards import RewardAdapter

    net = load_sequence_classifier(model_args, rm_path, num_labels=1, trust_remote_code=trust_remote_code)
    tok = load_tokenizer(model_args, rm_path, trust_remote_code)
    return RewardAdapter.from_model(net, tok, batch_size=batch_size, name="rm_eval")


# ---- one run -----------------------------------------------------------------------------------------------------
class Recorder(TrainerCallback):
    """Counts the budget, evaluates on schedule, refuses an overrun.

    An RL run's budget is counted by the harness, not taken from the trainer under test: the rows the RM (the
    trainer's ``RewardAdapter``, ``reward_funcs[0]``) has scored, i.e. every completion generated in train mode,
    DAPO's refills included, summed over processes. DPO's budget is pairs seen = optimizer steps x pairs per step.
    RL runs stop at ``max_steps`` (fixed-schedule trainers) or, for DAPO with dynamic sampling, at its own
    ``max_generated_completions`` (which also caps a step's refills to what the rest of the budget pays for).
    """

    def __init__(self, spec: dict, evaluate):
        self.spec, self._evaluate = spec, evaluate
        self.trainer = None  # set once the RL trainer is built (DPO: stays None)
        self.points: list[dict] = []
        self.train_log: list[dict] = []
        self.eval_s = 0.0
        self.next_eval = spec["eval_every"]
        self.t_begin = self.t_end = None

    def used(self, args, state) -> int:
        if self.spec["algorithm"] == "dpo":
            return pairs_seen(args, state.global_step)
        scored = self.trainer.reward_funcs[0].stats["rows"]  # this process's completions
        return completions_on_all_processes(scored, self.trainer.accelerator)

    def evaluate(self, args, state, model):
        start = time.perf_counter()
        train_s = (start - self.t_begin - self.eval_s) if self.t_begin is not None else 0.0
        point = {"step": state.global_step, "completions": self.used(args, state), "train_s": train_s}
        point.update(self._evaluate(model))
        self.points.append(point)
        self.eval_s += time.perf_counter() - start

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.t_begin = time.perf_counter()
        self.evaluate(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        used = self.used(args, state)
        if used > self.spec["budget"]:
            raise RuntimeError(f"budget overrun: {used} > {self.spec['budget']} after step {state.global_step}")
        while used >= self.next_eval:
            if self.points[-1]["step"] != state.global_step:
                self.evaluate(args, state, model)
            self.next_eval += self.spec["eval_every"]
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        keep = {k: v for k, v in (logs or {}).items() if k in ("reward", "loss", "kl", "rewards/rm/mean")}
        if keep:
            self.train_log.append({"step": state.global_step, **keep})

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.t_end = time.perf_counter()
        if self.points[-1]["step"] != state.global_step:
            self.evaluate(args, state, model)

    @property
    def train_wall_s(self) -> float:
        return self.t_end - self.t_begin - self.eval_s


def completions_on_all_processes(local: int, accelerator) -> int:
    """Completions generated so far, summed over processes: each process generates (and scores) only its slice of
    the generation batch, and the budget (like ``generation_batch_size``) counts all of them. Every process reaches
    the callbacks that ask at the same points (TRL trains in lockstep), so the collective is safe."""
    if accelerator.num_processes == 1:
        return local
    import torch

    return int(accelerator.reduce(torch.tensor(local, device=accelerator.device), reduction="sum").item())


def pairs_seen(args, global_step: int) -> int:
    """DPO's budget: labelled pairs seen after ``global_step`` optimizer steps, on all processes."""
    return global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size


def completions_per_step(args) -> float:
    """Completions a fixed-schedule GRPO-family trainer generates per optimizer step (TRL 1.16's buffering)."""
    generate_every = args.steps_per_generation * args.num_iterations  # micro-steps per generation batch
    return args.generation_batch_size * args.gradient_accumulation_steps / generate_every


def _budgeted(cfg, spec: dict, folder: Path) -> None:
    """``cfg.rl`` with the run's length set from the budget: DPO's steps from pairs per step, DAPO with dynamic
    sampling by its own ``max_generated_completions`` (``max_steps`` only a bound it never reaches), the
    fixed-schedule trainers' steps from completions per step."""
    from trl_ext import pipeline

    algo = spec["algorithm"]
    probe = pipeline.rl_stage_args(cfg, folder / "probe")  # what the RL (or DPO) stage will build
    if algo == "dpo":
        cfg.rl["max_steps"] = spec["budget"] // pairs_seen(probe, 1)
    elif algo == "dapo" and probe.dynamic_sampling:
        cfg.rl["max_steps"] = 2 * spec["budget"] // probe.generation_batch_size + 1
        cfg.rl["max_generated_completions"] = spec["budget"]
    else:
        cfg.rl["max_steps"] = int(spec["budget"] // completions_per_step(probe))


def _train(cfg, model_args, spec: dict, folder: Path, recorder: Recorder) -> dict:
    from trl_ext import pipeline

    rm_folder = Path(spec["rm_model"]).parent
    if spec["algorithm"] == "dpo":
        return pipeline.run_dpo(
            cfg, model_args, spec["sft_model"], rm_folder.parent / "labels", folder / "rl", callbacks=[recorder]
        )
    recorder.trainer = pipeline.build_rl_trainer(cfg, model_args, spec["sft_model"], rm_folder, folder / "rl")
    return pipeline.train_rl(recorder.trainer, cfg, model_args, spec["sft_model"], folder / "rl", callbacks=[recorder])


def run_one(spec_path: str) -> None:
    """Child process: one (algorithm, seed) run as described by the spec file; writes result.json beside it."""
    import torch
    from trl import ModelConfig

    from trl_ext import pipeline
    from trl_ext.models import load_tokenizer

    process_start = time.perf_counter()
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    folder = Path(spec_path).parent
    algo, seed = spec["algorithm"], spec["seed"]
    # the benchmark evaluates on its own schedule and times training alone: the pipeline's gold curve stays off
    cfg = pipeline.PipelineConfig(**{**spec["pipeline"], "seed": seed, "algorithm": algo, "gold_eval_steps": 0})
    model_args = ModelConfig(**spec["model"])
    cfg.rl = dict(spec["rl"])
    _budgeted(cfg, spec, folder)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rm = load_eval_rm(model_args, spec["rm_model"], cfg.reward_batch_size, cfg.trust_remote_code)
    tokenizer = load_tokenizer(model_args, spec["sft_model"], cfg.trust_remote_code)
    prompts = eval_subset(cfg.task.eval_dataset()["prompt"], spec["eval_prompts"])

    def evaluate(model):
        return evaluate_policy(
            model, tokenizer, prompts, rm, num_samples=cfg.eval_samples, temperature=cfg.eval_temperature,
            max_new_tokens=spec["max_new_tokens"], seed=spec["eval_seed"],
        )

    recorder = Recorder(spec, evaluate)
    metrics = _train(cfg, model_args, spec, folder, recorder)
    result = {
        "algorithm": algo, "seed": seed, "fingerprint": spec["fingerprint"], "commit": spec["commit"],
        "budget": spec["budget"], "budget_unit": "labelled pairs" if algo == "dpo" else "generated completions",
        "used": recorder.points[-1]["completions"], "global_step": metrics["global_step"],
        "max_steps": cfg.rl["max_steps"], "points": recorder.points, "train_log": recorder.train_log,
        "train_wall_s": recorder.train_wall_s, "eval_s": recorder.eval_s, "device": device,
        "process_wall_s": time.perf_counter() - process_start, "peak_rss_mib": read_peak_rss_mib(),
    }
    trainer = recorder.trainer
    if trainer is not None and getattr(trainer.args, "dynamic_sampling", False):
        totals = dict(trainer.dynamic_sampling_totals)
        totals["completions_generated"] = totals["generated_groups"] * trainer.num_generations
        totals["left_in_pool"] = trainer.pooled_groups
        result["dynamic_sampling"] = totals
    if device == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    (folder / "result.json.tmp").write_text(json.dumps(result, indent=1))
    os.replace(folder / "result.json.tmp", folder / "result.json")
