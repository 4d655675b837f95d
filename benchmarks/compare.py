"""Every algorithm side by side: same SFT checkpoint, same learned RM, same budget of generated completions, 3 seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/compare.py --setting quick   # <= 15 min on 2 CPU cores
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/compare.py --setting full    # 4x the budget
    python benchmarks/compare.py --algorithms grpo dapo --seeds 0 --output_dir runs/compare-try
    python benchmarks/compare.py --config benchmarks/configs/compare-qwen2.5-0.5b-qlora.yaml   # GPU, 4-bit + LoRA

What runs:

1. ``trl_ext.pipeline.run_pipeline(until="rm")`` once (seed ``--seed``): the embedded tiny model, SFT on the noisy
   demonstrations, the labeller's rankings, the reward model. Every algorithm starts from that ``sft/model`` and RL
   algorithms optimise that ``rm/model`` (through ``RewardAdapter``, as the pipeline's RL stage does).
2. For each algorithm and each of ``--seeds``: ``trl_ext.pipeline.run_rl`` in a fresh subprocess (isolation and a
   per-run peak RSS), with the pipeline's RL defaults. ``grpo`` = ``trl.GRPOTrainer``, ``dapo`` =
   ``trl_ext.DAPOTrainer``, ``rloo`` = ``trl_ext.RLOOTrainer``, ``rloo_trl`` = ``trl.RLOOTrainer``, ``ppo`` =
   ``trl_ext.PPOTrainer`` (critic initialised from the RM), ``dpo`` = ``trl.DPOTrainer`` on the labeller's pairs.
3. Every ``--eval_every`` units of budget, a callback samples the held-out eval prompts (never trained on) and records
   the oracle accuracy, the oracle utility and the learned RM's score. Evaluation time is kept out of the training time.
4. ``benchmarks/results/compare.{md,json}`` and two PNGs.

Budget: RL runs stop when they have *generated* ``--budget`` completions (counted where the trainer generates them, so
DAPO's dynamic-sampling refills count; DAPO is stopped before a step whose refills the remaining budget cannot pay
for). DPO generates nothing: it sees ``--budget`` labelled (chosen, rejected) pairs, the labels file cycled as often
as needed (the labels themselves were sampled once from the SFT model, and are shared with the RM).

Finished runs are reused when the same command is run again (same settings, same SFT/RM); ``--rerun`` ignores them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ALGORITHMS = ("grpo", "dapo", "rloo", "rloo_trl", "ppo", "dpo")
# budget: generated completions per run (DPO: labelled pairs seen); eval_every: budget between evaluations;
# eval_prompts: how many of the held-out prompts are sampled at each evaluation (an evenly spaced subset)
# quick: 50 GRPO steps of 64 completions, 6 evaluations; full: 200 steps, 21 evaluations
SETTINGS = {
    "quick": dict(budget=3200, eval_every=640, eval_prompts=200),
    "full": dict(budget=12800, eval_every=640, eval_prompts=200),
}
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT_DIR = "runs/tiny"  # PipelineConfig's default; replaced by runs/compare-<setting>


@dataclass
class CompareArgs:
    """The benchmark's own settings. Every ``PipelineConfig`` and ``ModelConfig`` flag is accepted as well."""

    setting: str = field(default="quick", metadata={"help": f"Preset of budget and evaluation: {sorted(SETTINGS)}."})
    algorithms: list[str] = field(
        default_factory=lambda: list(ALGORITHMS), metadata={"help": f"Algorithms to run, from {list(ALGORITHMS)}."}
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "RL seeds (SFT/RM use --seed)."})
    budget: int | None = field(
        default=None, metadata={"help": "Generated completions per RL run, labelled pairs per DPO run (setting's)."}
    )
    eval_every: int | None = field(default=None, metadata={"help": "Budget units between evaluations (setting's)."})
    eval_prompts: int | None = field(
        default=None, metadata={"help": "Held-out prompts sampled per evaluation, at most eval_size (setting's)."}
    )
    reference_samples: int = field(
        default=16, metadata={"help": "Samples per eval prompt from the SFT model for the z-score reference."}
    )
    threshold_delta: float = field(
        default=0.10, metadata={"help": "Threshold = SFT's sampled oracle accuracy + this."}
    )
    algorithm_overrides: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Per-algorithm config fields, e.g. '{\"dpo\": {\"learning_rate\": 1e-4}}' (JSON or YAML "
                  "map). The pipeline's `rl:` map applies to every RL algorithm but not to DPO."},
    )
    jobs: int = field(default=2, metadata={"help": "Runs in parallel, each its own process (2: one per core here)."})
    threads: int = field(default=1, metadata={"help": "torch threads per run."})
    results_dir: str = field(
        default=str(REPO / "benchmarks" / "results"), metadata={"help": "Where compare.{md,json} and PNGs go."}
    )
    rerun: bool = field(default=False, metadata={"help": "Run again even where a finished run matches."})
    note: str = field(default="", metadata={"help": "Free text for the results page (e.g. what else ran)."})

    def __post_init__(self):
        if self.setting not in SETTINGS:
            raise ValueError(f"--setting {self.setting!r} is unknown; choose one of {sorted(SETTINGS)}.")
        unknown = [a for a in self.algorithms if a not in ALGORITHMS]
        if unknown:
            raise ValueError(f"--algorithms: {unknown} unknown; valid names are {list(ALGORITHMS)}.")
        if len(set(self.algorithms)) != len(self.algorithms) or not self.algorithms:
            raise ValueError(f"--algorithms {self.algorithms}: give each algorithm once, at least one.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds {self.seeds}: give each seed once, at least one.")
        for name, value in SETTINGS[self.setting].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("budget", "eval_every", "eval_prompts", "reference_samples", "jobs", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} {getattr(self, name)} must be >= 1.")
        if isinstance(self.algorithm_overrides, str):
            try:
                self.algorithm_overrides = json.loads(self.algorithm_overrides)
            except json.JSONDecodeError as e:
                raise ValueError(f"--algorithm_overrides must be a JSON object: {e}") from None
        self.algorithm_overrides = dict(self.algorithm_overrides or {})
        bad = [a for a in self.algorithm_overrides if a not in ALGORITHMS]
        if bad:
            raise ValueError(f"--algorithm_overrides: {bad} unknown; valid names are {list(ALGORITHMS)}.")


# ---- pure functions: the numbers the tables report ------------------------------------------------------------------
def hacking_gap(rm_score: float, utility: float, reference: dict) -> dict:
    """Proxy gain minus true gain, each in units of the SFT model's own spread.

    z_rm = (mean RM score - SFT mean) / SFT sd, z_utility likewise with the oracle utility (the labeller's grade,
    -1..3). gap = z_rm - z_utility: 0 for the SFT model, positive when the learned reward rose more than the truth.
    """
    z_rm = (rm_score - reference["rm_mean"]) / reference["rm_sd"]
    z_utility = (utility - reference["utility_mean"]) / reference["utility_sd"]
    return {"z_rm": z_rm, "z_utility": z_utility, "gap": z_rm - z_utility}


def first_crossing(points: list[dict], threshold: float, key: str = "accuracy") -> dict | None:
    """The first evaluation point whose ``key`` is at least ``threshold``; None if no point reaches it."""
    return next((p for p in points if p[key] >= threshold), None)


def aggregate(values: list[float]) -> dict:
    """Mean and sample standard deviation (n - 1) over seeds; sd is None for a single value."""
    if not values:
        return {"mean": None, "sd": None, "n": 0}
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}


def clearly_apart(a: dict, b: dict, k: float = 2.0) -> bool:
    """Whether two seed means differ by more than ``k`` standard errors of their difference (sd / sqrt(n) each)."""
    if a["sd"] is None or b["sd"] is None:
        return False
    se = math.sqrt(a["sd"] ** 2 / a["n"] + b["sd"] ** 2 / b["n"])
    return abs(a["mean"] - b["mean"]) > k * se


def mean_curve(runs: list[dict], x: str, y: str) -> list[tuple[float, float, float, float]]:
    """Per evaluation index across seeds: (mean x, mean y, min y, max y); cut to the shortest run."""
    n = min(len(r["points"]) for r in runs)
    out = []
    for i in range(n):
        xs = [r["points"][i][x] for r in runs]
        ys = [r["points"][i][y] for r in runs]
        out.append((statistics.fmean(xs), statistics.fmean(ys), min(ys), max(ys)))
    return out


def read_peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB; getrusage where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- evaluation (shared by the reference and the runs) ------------------------------------------------------------
def eval_subset(prompts: list, n: int) -> list:
    """``n`` evenly spaced prompts of the held-out set (sorted by operands, so a prefix would be biased)."""
    if n >= len(prompts):
        return list(prompts)
    return [prompts[(i * len(prompts)) // n] for i in range(n)]


def evaluate_policy(model, tokenizer, prompts, rm, *, num_samples, temperature, max_new_tokens, seed) -> dict:
    """Sampled completions on ``prompts``: oracle accuracy, mean oracle utility, mean (and sd of) learned RM score."""
    from trl_ext.evaluation import sample_completions
    from trl_ext.toy import oracle_correct, oracle_utility
    from trl_ext.toy.task import NO_NUMBER, RIGHT, RIGHT_CHATTY, WRONG, WRONG_CHATTY

    samples = sample_completions(
        model, tokenizer, prompts, num_samples=num_samples, temperature=temperature,
        max_new_tokens=max_new_tokens, seed=seed,
    )
    flat_p = [p for p, cs in zip(prompts, samples, strict=True) for _ in cs]
    flat_c = [c for cs in samples for c in cs]
    correct = oracle_correct(flat_p, flat_c)
    utility = [float(oracle_utility(p, c)) for p, c in zip(flat_p, flat_c)]
    scores = rm.score(flat_p, [[{"role": "assistant", "content": c}] if not isinstance(p, str) else c
                               for p, c in zip(flat_p, flat_c)])
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


# ---- one run (in its own process) --------------------------------------------------------------------------------
def _make_recorder(spec: dict, evaluate):
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        """Counts the budget, evaluates on schedule, stops the run when the budget is spent.

        ``generated`` is fed by the instrumented trainer's ``_generate`` (completions actually produced in train
        mode); DPO's budget is pairs seen = optimizer steps x pairs per step.
        """

        def __init__(self):
            self.trainer = None
            self.generated = 0
            self.points: list[dict] = []
            self.train_log: list[dict] = []
            self.eval_s = 0.0
            self.next_eval = spec["eval_every"]
            self.t_begin = self.t_end = None
            self._refill_cap = None

        def used(self, args, state) -> int:
            if spec["algorithm"] == "dpo":
                return pairs_seen(args, state.global_step)
            return self.generated

        def evaluate(self, args, state, model):
            start = time.perf_counter()
            train_s = (start - self.t_begin - self.eval_s) if self.t_begin is not None else 0.0
            point = {"step": state.global_step, "completions": self.used(args, state), "train_s": train_s}
            point.update(evaluate(model))
            self.points.append(point)
            self.eval_s += time.perf_counter() - start

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.t_begin = time.perf_counter()
            self.evaluate(args, state, model)

        def on_step_begin(self, args, state, control, **kwargs):
            if spec["algorithm"] == "dapo" and args.dynamic_sampling:
                # cap this step's refill rounds to what the remaining budget pays for (>= 1 round, see on_step_end)
                if self._refill_cap is None:
                    self._refill_cap = args.dynamic_sampling_max_refill_rounds
                rounds = (spec["budget"] - self.generated) // args.generation_batch_size
                args.dynamic_sampling_max_refill_rounds = max(0, min(self._refill_cap, rounds - 1))

        def on_step_end(self, args, state, control, model=None, **kwargs):
            used = self.used(args, state)
            if used > spec["budget"]:
                raise RuntimeError(f"budget overrun: {used} > {spec['budget']} after step {state.global_step}")
            while used >= self.next_eval:
                if self.points[-1]["step"] != state.global_step:
                    self.evaluate(args, state, model)
                self.next_eval += spec["eval_every"]
            if spec["algorithm"] == "dapo" and spec["budget"] - self.generated < args.generation_batch_size:
                control.should_training_stop = True
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

    return Recorder()


def _instrumented(trainer_cls, recorder):
    """A subclass that hands itself to ``recorder`` and counts the completions generated in train mode."""

    class Instrumented(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            recorder.trainer = self

        def _generate(self, prompts):
            out = super()._generate(prompts)
            if self.model.training:  # completion_ids: this process's slice of the generation batch
                recorder.generated += completions_on_all_processes(len(out[1]), self.accelerator)
            return out

    Instrumented.__name__ = Instrumented.__qualname__ = trainer_cls.__name__
    return Instrumented


def completions_on_all_processes(local: int, accelerator) -> int:
    """Completions generated by one ``_generate`` call summed over processes: each process generates only its slice
    of the generation batch, and the budget (like ``generation_batch_size``) counts all of them. Every process calls
    ``_generate`` at the same points (TRL generates in lockstep; DAPO's refill rounds are agreed across ranks), so the
    collective is safe."""
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
    probe = pipeline.rl_stage_args(cfg, folder / "probe")  # what the RL (or DPO) stage will build
    if algo == "dpo":
        cfg.rl["max_steps"] = spec["budget"] // pairs_seen(probe, 1)
    elif algo == "dapo" and probe.dynamic_sampling:
        cfg.rl["max_steps"] = 2 * spec["budget"] // probe.generation_batch_size + 1  # the recorder stops it
    else:
        per_step = completions_per_step(probe)
        cfg.rl["max_steps"] = int(spec["budget"] // per_step)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rm = load_eval_rm(model_args, spec["rm_model"], cfg.reward_batch_size, cfg.trust_remote_code)
    tokenizer = load_tokenizer(model_args, spec["sft_model"], cfg.trust_remote_code)
    prompts = eval_subset(cfg.task.eval_dataset()["prompt"], spec["eval_prompts"])

    def evaluate(model):
        return evaluate_policy(
            model, tokenizer, prompts, rm, num_samples=cfg.eval_samples, temperature=cfg.eval_temperature,
            max_new_tokens=spec["max_new_tokens"], seed=spec["eval_seed"],
        )

    recorder = _make_recorder(spec, evaluate)
    rm_folder = Path(spec["rm_model"]).parent
    if algo == "dpo":
        metrics = pipeline.run_dpo(
            cfg, model_args, spec["sft_model"], rm_folder.parent / "labels", folder / "rl", callbacks=[recorder]
        )
    else:
        trainer_cls = _instrumented(pipeline.RL_ALGORITHMS[algo][1], recorder)
        metrics = pipeline.run_rl(
            cfg, model_args, spec["sft_model"], rm_folder, folder / "rl", callbacks=[recorder], trainer_cls=trainer_cls
        )
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
        totals["left_in_pool"] = trainer._ds_pool.num_groups
        result["dynamic_sampling"] = totals
    if device == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    (folder / "result.json.tmp").write_text(json.dumps(result, indent=1))
    os.replace(folder / "result.json.tmp", folder / "result.json")


# ---- the parent: build once, run all, report ------------------------------------------------------------------------
def _fingerprint(payload) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    # porcelain lines are "XY path" (X may be a space: no stripping before slicing); untracked files count too,
    # since the code that ran may be among them (ignored folders such as runs/ do not show)
    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "HEAD").strip() or "unknown",
            "branch": git("rev-parse", "--abbrev-ref", "HEAD").strip(),
            "dirty": bool(changed), "changed": changed}


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem, "platform": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def build_sft_and_rm(cfg, model_args) -> dict:
    from trl_ext.pipeline import run_pipeline

    build = dataclasses.replace(cfg, until="rm", output_dir=str(Path(cfg.output_dir) / "pipeline"))
    report = run_pipeline(build, model_args)
    stages = {s: json.loads((Path(build.output_dir) / s / "stage.json").read_text()) for s in ("sft", "labels", "rm")}
    return {
        "dir": build.output_dir, "wall_time_s": report["wall_time_s"],
        "rm_test_pairwise_accuracy": report["rm_test_pairwise_accuracy"],
        "rm_fingerprint": stages["rm"]["fingerprint"], "label_pairs": stages["labels"]["metrics"].get("train_pairs"),
        "stage_wall_s": {s: info["wall_time_s"] for s, info in stages.items()},
    }


def reference_stats(cfg, model_args, build: dict, cmp: CompareArgs, max_new_tokens: int) -> dict:
    """The SFT model's own samples on the eval subset: the z-score reference and the threshold's base."""
    import torch
    from transformers import AutoModelForCausalLM

    from trl_ext.models import load_tokenizer

    sft = str(Path(build["dir"]) / "sft" / "model")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(sft, dtype="auto").to(device)
    rm = load_eval_rm(model_args, str(Path(build["dir"]) / "rm" / "model"), cfg.reward_batch_size,
                      cfg.trust_remote_code)
    prompts = eval_subset(cfg.task.eval_dataset()["prompt"], cmp.eval_prompts)
    threads = torch.get_num_threads()
    torch.set_num_threads(cmp.threads)
    try:
        stats = evaluate_policy(
            model, load_tokenizer(model_args, sft, cfg.trust_remote_code), prompts, rm,
            num_samples=cmp.reference_samples, temperature=cfg.eval_temperature, max_new_tokens=max_new_tokens,
            seed=10_000 + cfg.seed,
        )
    finally:
        torch.set_num_threads(threads)
    return {"accuracy": stats["accuracy"], "grades": stats["grades"], "rm_mean": stats["rm_score"],
            "rm_sd": stats["rm_sd"],
            "utility_mean": stats["utility"], "utility_sd": stats["utility_sd"], "n": stats["n"]}


def launch(spec: dict, log_path: Path) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    with open(log_path, "w") as log:
        return subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--run-one", spec["spec_path"]],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        ).returncode


def run_all(cmp: CompareArgs, cfg, model_args, build: dict, git: dict) -> list[dict]:
    from tqdm.auto import tqdm

    max_new_tokens = int(cfg.rl.get("max_completion_length", 8))
    common = {
        "budget": cmp.budget, "eval_every": cmp.eval_every, "eval_prompts": cmp.eval_prompts,
        "eval_samples": cfg.eval_samples, "eval_temperature": cfg.eval_temperature, "max_new_tokens": max_new_tokens,
        "rm_fingerprint": build["rm_fingerprint"],
        # the gold-curve fields train nothing and are switched off in each run (run_one): not part of the spec
        "pipeline": {k: v for k, v in asdict(cfg).items()
                     if k not in ("output_dir", "seed", "algorithm", "until", "gold_eval_steps", "gold_eval_samples")},
        "model": asdict(model_args),
    }
    todo, results = [], {}
    for algo in cmp.algorithms:
        rl = {"save_strategy": "no", "disable_tqdm": True}
        if algo == "dapo":
            rl["dynamic_sampling_on_cap"] = "train_on_kept"  # the budget cap may cut refills short
        if algo == "dpo":
            rl["dataloader_drop_last"] = True  # every step sees exactly per_device_train_batch_size pairs
        else:
            rl = {**rl, **cfg.rl}
        rl.update(cmp.algorithm_overrides.get(algo, {}))
        if "max_steps" in rl:
            raise ValueError(f"{algo}: max_steps is set by --budget; remove it from the rl/algorithm overrides.")
        for seed in cmp.seeds:
            folder = Path(cfg.output_dir) / "runs" / f"{algo}-s{seed}"
            spec = {**common, "algorithm": algo, "seed": seed, "rl": rl, "eval_seed": 1_000 + seed}
            spec["fingerprint"] = _fingerprint(spec)
            spec.update(threads=cmp.threads, commit=git["commit"], spec_path=str(folder / "spec.json"),
                        sft_model=str(Path(build["dir"]) / "sft" / "model"),
                        rm_model=str(Path(build["dir"]) / "rm" / "model"))
            done = folder / "result.json"
            if not cmp.rerun and done.exists() and json.loads(done.read_text())["fingerprint"] == spec["fingerprint"]:
                results[(algo, seed)] = {**json.loads(done.read_text()), "reused": True}
                continue
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "spec.json").write_text(json.dumps(spec, indent=1, default=str))
            todo.append(spec)
    if results:
        print(f"reusing {len(results)} finished run(s): {sorted(f'{a}-s{s}' for a, s in results)}", flush=True)
    failed = []
    bar = tqdm(total=len(todo), desc="runs", unit="run", disable=not todo)
    with ThreadPoolExecutor(max_workers=cmp.jobs) as pool:
        futures = {}
        for spec in todo:
            folder = Path(spec["spec_path"]).parent
            futures[pool.submit(launch, spec, folder / "log.txt")] = spec
        for future in as_completed(futures):
            spec = futures[future]
            folder = Path(spec["spec_path"]).parent
            name = f"{spec['algorithm']} seed {spec['seed']}"
            if future.result() != 0:
                tail = (folder / "log.txt").read_text()[-2000:]
                failed.append(name)
                bar.write(f"FAILED {name} (log: {folder / 'log.txt'}):\n{tail}")
            else:
                r = json.loads((folder / "result.json").read_text())
                results[(spec["algorithm"], spec["seed"])] = r
                p0, p1 = r["points"][0], r["points"][-1]
                bar.write(f"{name}: oracle acc {p0['accuracy']:.3f} -> {p1['accuracy']:.3f}, RM {p0['rm_score']:.2f} "
                          f"-> {p1['rm_score']:.2f}, {r['used']} {r['budget_unit']}, {r['global_step']} steps, "
                          f"train {r['train_wall_s']:.1f} s, peak {r['peak_rss_mib']:.0f} MiB")
            bar.update(1)
    bar.close()
    if failed:
        raise SystemExit(f"{len(failed)} run(s) failed: {failed}. Finished runs are kept; rerun the same command.")
    return [results[(a, s)] for a in cmp.algorithms for s in cmp.seeds]


# ---- summary, tables, plots -------------------------------------------------------------------------------------
def summarise(runs: list[dict], reference: dict, threshold: float) -> dict:
    """Per run: final numbers, gap, threshold crossing. Per algorithm: mean and sd over seeds."""
    per_run, per_algo = [], {}
    for r in runs:
        for p in r["points"]:
            p.update(hacking_gap(p["rm_score"], p["utility"], reference))
        last = r["points"][-1]
        hit = first_crossing(r["points"], threshold)
        row = {
            "algorithm": r["algorithm"], "seed": r["seed"], "accuracy": last["accuracy"], "rm_score": last["rm_score"],
            "utility": last["utility"], "z_rm": last["z_rm"], "z_utility": last["z_utility"], "gap": last["gap"],
            "best_accuracy": max(p["accuracy"] for p in r["points"]),
            "steps_to_threshold": None if hit is None else hit["step"],
            "completions_to_threshold": None if hit is None else hit["completions"],
            "steps": r["global_step"], "used": r["used"], "budget_unit": r["budget_unit"],
            "train_wall_s": r["train_wall_s"], "peak_rss_mib": r["peak_rss_mib"], "distinct": last["distinct"],
            **{f"grade_{k}": v for k, v in last["grades"].items()},
        }
        per_run.append(row)
    for algo in dict.fromkeys(r["algorithm"] for r in per_run):
        rows = [r for r in per_run if r["algorithm"] == algo]
        agg = {k: aggregate([r[k] for r in rows]) for k in (
            "accuracy", "rm_score", "utility", "z_rm", "z_utility", "gap", "steps", "used", "train_wall_s",
            "peak_rss_mib", "distinct", *(k for k in rows[0] if k.startswith("grade_")))}
        for k in ("steps_to_threshold", "completions_to_threshold"):
            agg[k] = aggregate([r[k] for r in rows if r[k] is not None])
            agg[k]["of"] = len(rows)
        per_algo[algo] = agg
    return {"per_run": per_run, "per_algorithm": per_algo}


def _pm(a: dict, fmt: str = ".3f") -> str:
    if a["mean"] is None:
        return "n/a"
    return f"{a['mean']:{fmt}}" + ("" if a["sd"] is None else f" ± {a['sd']:{fmt}}")


def _reached(a: dict) -> str:
    if a["n"] == 0:
        return f"not reached (0/{a['of']})"
    return f"{_pm(a, '.0f')} ({a['n']}/{a['of']})"


def ordering_text(per_algo: dict) -> list[str]:
    """The ranking by final oracle accuracy, saying for each neighbour pair whether the seeds separate them."""
    ranked = sorted(per_algo, key=lambda a: per_algo[a]["accuracy"]["mean"], reverse=True)
    parts = [ranked[0]]
    for hi, lo in zip(ranked, ranked[1:]):
        sep = ">" if clearly_apart(per_algo[hi]["accuracy"], per_algo[lo]["accuracy"]) else "≈"
        parts += [sep, lo]
    lines = [
        "Ordering by final sampled oracle accuracy: **" + " ".join(parts) + "**. `>`: the means differ by more than "
        "2 standard errors of the difference (sd/√n per algorithm over seeds); `≈`: they do not, i.e. the seed "
        "spread cannot order them."
    ]
    if "grpo" in per_algo and "dapo" in per_algo:
        g, d = per_algo["grpo"]["accuracy"], per_algo["dapo"]["accuracy"]
        if d["mean"] > g["mean"] and clearly_apart(d, g):
            verdict = "DAPO beat GRPO here, by more than the seed spread"
        elif d["mean"] > g["mean"]:
            verdict = "DAPO's mean is higher, but within the seed spread: DAPO did not clearly beat GRPO here"
        else:
            verdict = "DAPO did not beat GRPO here" + ("" if not clearly_apart(d, g) else " (GRPO clearly higher)")
        lines.append(f"DAPO vs GRPO at equal generated completions: {_pm(d)} vs {_pm(g)}: {verdict}.")
    return lines


def format_markdown(meta: dict, summary: dict) -> str:
    cmp, ref, build = meta["compare"], meta["reference"], meta["build"]
    per_algo, per_run = summary["per_algorithm"], summary["per_run"]
    git = meta["git"]
    dirty = "clean tree" if not git["dirty"] else f"**dirty tree** (changed: {', '.join(git['changed'])})"
    run_commits = sorted({r["commit"] for r in meta["runs_meta"]})
    lines = [
        "# Algorithm comparison on the embedded addition task",
        "",
        f"Command: `{meta['command']}`  ",
        f"Code: commit `{git['commit']}` (branch `{git['branch']}`), {dirty} when the command started"
        + ("" if run_commits == [git["commit"]] else f"; runs made at commits {run_commits}") + ".  ",
        f"Date: {meta['date']}; wall time of this command: **{meta['wall_s']:.0f} s** "
        f"({meta['runs_done']} runs executed, {meta['runs_reused']} reused; SFT/labels/RM "
        + ("built in this command" if meta["built_now"] else "reused from an earlier command") + ").  ",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        + (f"{meta['machine']['mem_gib']:.0f} GiB RAM, " if meta["machine"]["mem_gib"] else "")
        + f"{meta['runs_meta'][0]['device']}; {cmp['jobs']} run(s) in parallel, {cmp['threads']} torch thread(s) each; "
        f"load average {meta['load_start'][0]:.2f} at start, {meta['load_end'][0]:.2f} at end (1 min).  ",
        f"Python {meta['machine']['python']}; " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
    ]
    if cmp["note"]:
        lines += ["", f"Note: {cmp['note']}"]
    lines += [
        "",
        "## Setup",
        "",
        "- One SFT checkpoint and one reward model, built by `run_pipeline(until=\"rm\")` with seed "
        f"{meta['build_seed']} "
        f"(SFT {build['stage_wall_s']['sft']:.0f} s, labels {build['stage_wall_s']['labels']:.0f} s, RM "
        f"{build['stage_wall_s']['rm']:.0f} s when built; RM held-out pairwise accuracy "
        f"{build['rm_test_pairwise_accuracy']:.3f}; {build['label_pairs']} labelled training pairs). Every run below "
        "starts from that SFT model; every RL run optimises that RM through `RewardAdapter`.",
        f"- Budget per run: **{cmp['budget']} generated completions** (RL), counted where the trainer generates "
        "(DAPO's dynamic-sampling refills included; DAPO stops before a step whose refills the rest of the budget "
        "cannot pay for, and a step's refills are capped to it). DPO generates nothing: its budget is "
        f"**{cmp['budget']} labelled pairs seen** (the {build['label_pairs']} training pairs, shuffled and cycled), "
        "the same count of (chosen, rejected) examples as RL runs generate completions. The labels cost "
        f"{meta['pipeline']['num_label_prompts']} × {meta['pipeline']['num_ranked']} SFT samples, once, shared with "
        "the RM that the RL runs use.",
        f"- Hyper-parameters: the pipeline's (`trl_ext.pipeline.RL_DEFAULTS`: {meta['rl_defaults']}; DPO: "
        f"`DPO_DEFAULTS`: {meta['dpo_defaults']}), plus per algorithm: "
        + "; ".join(f"{a}: {meta['rl_per_algorithm'][a]}" for a in meta["rl_per_algorithm"]) + ". Each algorithm's "
        "own config defaults otherwise (e.g. PPO: 4 PPO epochs per generated batch, so 4 optimizer steps per "
        "64 completions; DAPO: clip-higher 0.28, overlong shaping, dynamic sampling on the RM reward).",
        f"- Evaluation every {cmp['eval_every']} budget units (and at the start and the end): {cmp['eval_prompts']} "
        f"held-out prompts (never in any training split) × {meta['pipeline']['eval_samples']} samples at temperature "
        f"{meta['pipeline']['eval_temperature']}, the same sampling seed for every algorithm of a seed.",
        f"- Seeds: {cmp['seeds']} (RL seed: initial sampling, prompt order, dropout; SFT and RM are shared).",
        "",
        "## Definitions",
        "",
        "- **oracle acc.**: share of sampled completions that are exactly the right sum "
        "(`trl_ext.toy.oracle_correct`).",
        "- **RM score**: mean learned-RM score of those completions (the proxy RL optimises).",
        "- **gap** (reward hacking): z(RM) − z(utility), where z(RM) = (mean RM score − SFT mean) / SFT sd and "
        "z(utility) the same for the oracle utility (the labeller's grade: 3 right, 2 right with chatter, 1 wrong, "
        "0 wrong with chatter, −1 no number); SFT mean and sd come from "
        f"{ref['n']} SFT samples ({cmp['reference_samples']} per eval prompt). Positive = the proxy rose "
        "more than the truth; about 0 at the start (the start's samples are drawn with another seed than the "
        "reference's).",
        f"- **threshold**: SFT's sampled oracle accuracy {ref['accuracy']:.3f} + {cmp['threshold_delta']:.2f} = "
        f"**{meta['threshold']:.3f}**. *steps / completions to threshold*: at the first evaluation point at or above "
        f"it (resolution: the evaluation interval of {cmp['eval_every']}); mean ± sd over the seeds that reached it, "
        "(reached/seeds); DPO's completions column counts labelled pairs.",
        "- **train s**: wall time of `trainer.train()` minus the evaluations inside it (model loading excluded). "
        "**peak MiB**: the run process's peak RSS (VmHWM; includes Python, torch, the eval RM and evaluation).",
        "",
        f"SFT reference: oracle accuracy {ref['accuracy']:.3f}, RM score {ref['rm_mean']:.3f} (sd {ref['rm_sd']:.3f}), "
        f"utility {ref['utility_mean']:.3f} (sd {ref['utility_sd']:.3f}).",
        "",
        "## Per algorithm (mean ± sd over seeds, at the end of the budget)",
        "",
        "| algorithm | oracle acc. | RM score | z(RM) | z(utility) | gap | steps to threshold | completions to "
        "threshold | optimizer steps | train s | peak MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for algo, a in per_algo.items():
        lines.append(
            f"| {algo} | {_pm(a['accuracy'])} | {_pm(a['rm_score'], '.2f')} | {_pm(a['z_rm'], '.2f')} | "
            f"{_pm(a['z_utility'], '.2f')} | {_pm(a['gap'], '.2f')} | {_reached(a['steps_to_threshold'])} | "
            f"{_reached(a['completions_to_threshold'])} | {_pm(a['steps'], '.0f')} | {_pm(a['train_wall_s'], '.1f')} "
            f"| {_pm(a['peak_rss_mib'], '.0f')} |"
        )
    lines += ["", *ordering_text(per_algo), ""]
    grade_names = [("right", "right"), ("right_chatty", "right + chatter"), ("wrong", "wrong number"),
                   ("wrong_chatty", "wrong + chatter"), ("no_number", "no number")]
    lines += [
        "## What the final samples are (share of the evaluated completions by oracle grade, mean over seeds)", "",
        "| model | " + " | ".join(label for _, label in grade_names) + " | distinct answers |",
        "|---|" + "---:|" * (len(grade_names) + 1),
        "| SFT (reference samples) | " + " | ".join(f"{ref['grades'][k]:.3f}" for k, _ in grade_names) + " | |",
    ]
    for algo, a in per_algo.items():
        lines.append(f"| {algo} | " + " | ".join(_pm(a[f"grade_{k}"]) for k, _ in grade_names)
                     + f" | {_pm(a['distinct'], '.0f')} |")
    lines.append("")
    lines += [
        "## Per seed", "",
        "| algorithm | seed | oracle acc. | best acc. | RM score | gap | steps to thr. | completions to thr. | "
        "budget used | steps | train s | peak MiB | distinct answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in per_run:
        to = lambda v: "not reached" if v is None else str(v)  # noqa: E731
        lines.append(
            f"| {r['algorithm']} | {r['seed']} | {r['accuracy']:.3f} | {r['best_accuracy']:.3f} | {r['rm_score']:.2f} "
            f"| {r['gap']:.2f} | {to(r['steps_to_threshold'])} | {to(r['completions_to_threshold'])} | {r['used']} "
            f"| {r['steps']} | {r['train_wall_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['distinct']} |"
        )
    ds = [m for m in meta["runs_meta"] if m.get("dynamic_sampling")]
    if ds:
        lines += [
            "", "## DAPO's dynamic sampling (what it generated vs. what it trained on)", "",
            "| seed | groups generated | informative | trained | padded (cap) | dropped stale | left in pool | "
            "completions generated (trainer) | completions counted (harness) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in ds:
            t = m["dynamic_sampling"]
            lines.append(f"| {m['seed']} | {t['generated_groups']} | {t['informative']} | {t['trained']} | {t['padded']} | "
                         f"{t['dropped']} | {t['left_in_pool']} | {t['completions_generated']} | {m['used']} |")
    lines += [
        "", "## Figures", "",
        "![oracle accuracy vs generated completions](compare_accuracy.png)", "",
        "Oracle accuracy against budget spent (DPO: labelled pairs); line = mean over seeds, band = min to max.", "",
        "![proxy vs oracle](compare_proxy_vs_oracle.png)", "",
        "Left: learned-RM score against oracle accuracy, mean over seeds at each evaluation (circle = start, square "
        "= end). Right: the gap z(RM) − z(utility) against budget spent.", "",
        "Raw per-evaluation data: `compare.json`.",
    ]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], meta: dict, results_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = list(dict.fromkeys(r["algorithm"] for r in runs))
    colours = dict(zip(algos, plt.get_cmap("tab10").colors))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for algo in algos:
        curve = mean_curve([r for r in runs if r["algorithm"] == algo], "completions", "accuracy")
        x, y, lo, hi = zip(*curve)
        style = "--" if algo == "dpo" else "-"
        label = algo + (" (pairs seen)" if algo == "dpo" else "")
        ax.plot(x, y, style, color=colours[algo], marker="o", ms=3, label=label)
        ax.fill_between(x, lo, hi, color=colours[algo], alpha=0.15)
    ax.axhline(meta["reference"]["accuracy"], color="grey", lw=0.8, ls=":", label="SFT")
    ax.axhline(meta["threshold"], color="black", lw=0.8, ls="--", label="threshold")
    ax.set_xlabel("generated completions (DPO: labelled pairs seen)")
    ax.set_ylabel("sampled oracle accuracy (held-out)")
    ax.set_title(f"Equal budget, {len(meta['compare']['seeds'])} seeds (band: min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results_dir / "compare_accuracy.png", dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for algo in algos:
        group = [r for r in runs if r["algorithm"] == algo]
        rm = mean_curve(group, "completions", "rm_score")
        acc = mean_curve(group, "completions", "accuracy")
        xs, ys = [p[1] for p in rm], [p[1] for p in acc]
        left.plot(xs, ys, "-", color=colours[algo], label=algo, alpha=0.9)
        left.plot(xs[0], ys[0], "o", color=colours[algo])
        left.plot(xs[-1], ys[-1], "s", color=colours[algo])
        gap = mean_curve(group, "completions", "gap")
        x, y, lo, hi = zip(*gap)
        right.plot(x, y, "--" if algo == "dpo" else "-", color=colours[algo], marker="o", ms=3, label=algo)
        right.fill_between(x, lo, hi, color=colours[algo], alpha=0.15)
    left.set_xlabel("learned RM score (proxy)")
    left.set_ylabel("sampled oracle accuracy (truth)")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.axhline(0, color="grey", lw=0.8)
    right.set_xlabel("generated completions (DPO: labelled pairs seen)")
    right.set_ylabel("gap = z(RM) - z(utility)")
    right.grid(alpha=0.3)
    fig.suptitle("Proxy vs truth (mean over seeds)")
    fig.tight_layout()
    fig.savefig(results_dir / "compare_proxy_vs_oracle.png", dpi=120)
    plt.close(fig)


def parse(argv: list[str]):
    from trl import ModelConfig, TrlParser

    from trl_ext.pipeline import PipelineConfig

    parser = TrlParser((CompareArgs, PipelineConfig, ModelConfig), prog="benchmarks/compare.py")
    cmp, cfg, model_args = parser.parse_args_and_config(argv)
    if cfg.output_dir == DEFAULT_OUTPUT_DIR:
        cfg.output_dir = f"runs/compare-{cmp.setting}"
    return cmp, cfg, model_args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--run-one"]:
        return run_one(argv[1])
    t0 = time.perf_counter()
    load_start = os.getloadavg()
    git = git_state()  # before anything is written
    try:
        cmp, cfg, model_args = parse(argv)
    except ValueError as e:  # bad flags: the message, not a traceback
        raise SystemExit(f"error: {e}") from None
    import logging

    from trl_ext import pipeline

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results_dir = Path(cmp.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    print(f"compare: {cmp.algorithms} x seeds {cmp.seeds}, budget {cmp.budget}, eval every {cmp.eval_every}, "
          f"work folder {cfg.output_dir}, results in {results_dir}", flush=True)
    built_now = not (Path(cfg.output_dir) / "pipeline" / "rm" / "stage.json").exists()
    build = build_sft_and_rm(cfg, model_args)
    print(f"SFT + RM ready ({time.perf_counter() - t0:.0f} s; RM pairwise acc. "
          f"{build['rm_test_pairwise_accuracy']:.3f})", flush=True)
    max_new_tokens = int(cfg.rl.get("max_completion_length", pipeline.RL_DEFAULTS["max_completion_length"]))
    reference = reference_stats(cfg, model_args, build, cmp, max_new_tokens)
    threshold = reference["accuracy"] + cmp.threshold_delta
    print(f"SFT reference: oracle acc. {reference['accuracy']:.3f}, RM {reference['rm_mean']:.3f}, threshold "
          f"{threshold:.3f}", flush=True)
    runs = run_all(cmp, cfg, model_args, build, git)
    summary = summarise(runs, reference, threshold)
    rl_per_algo = {}
    for algo in cmp.algorithms:
        spec = json.loads((Path(cfg.output_dir) / "runs" / f"{algo}-s{cmp.seeds[0]}" / "spec.json").read_text())
        rl_per_algo[algo] = {k: v for k, v in spec["rl"].items() if k not in ("disable_tqdm", "save_strategy")}
    meta = {
        "command": "python benchmarks/compare.py " + " ".join(argv), "git": git,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": versions(), "compare": asdict(cmp), "build_seed": cfg.seed,
        "pipeline": {k: v for k, v in asdict(cfg).items() if k not in ("rl", "sft", "rm")},
        "model": asdict(model_args), "build": build, "built_now": built_now, "reference": reference,
        "threshold": threshold, "rl_defaults": pipeline.RL_DEFAULTS, "dpo_defaults": pipeline.DPO_DEFAULTS,
        "rl_per_algorithm": rl_per_algo,
        "runs_meta": [{k: v for k, v in r.items() if k not in ("points", "train_log")} for r in runs],
        "runs_done": sum(not r.get("reused") for r in runs), "runs_reused": sum(bool(r.get("reused")) for r in runs),
        "load_start": load_start, "load_end": os.getloadavg(), "wall_s": time.perf_counter() - t0,
    }
    (results_dir / "compare.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1,
                                                         default=str))
    (results_dir / "compare.md").write_text(format_markdown(meta, summary))
    plot(runs, meta, results_dir)
    print("\n".join(ordering_text(summary["per_algorithm"])))
    print(f"done in {meta['wall_s']:.0f} s: {results_dir / 'compare.md'}", flush=True)


if __name__ == "__main__":
    main()
