"""DAPO's cumulative ablation (arXiv 2503.14476, Table 1), rung by rung, on the verifiable-reward route.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/dapo_ablation.py            # 6 rungs x 5 seeds, 2 workers
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/dapo_ablation.py --smoke    # all 6 rungs, 1 seed, 2 steps

What runs:

1. One SFT start shared by every run: ``trl_ext.pipeline.run_sft`` on the graded addition task of
   ``recipes/configs/tiny-rlvr.yaml`` (sums of 2/3/4 numbers in [0, 19]), with two changes: a longer SFT (12000
   demonstrations x 6 epochs, see ``Setting``), and the demonstrators' slips
   also include ``chatter`` (" I think", " or so", ...). The task asks for the number alone, so chatter is wrong, and
   most chatter does not fit in ``max_completion_length=8`` tokens: the SFT policy's samples are truncated at a
   measurable rate, which is what overlong filtering and the soft overlong punishment act on. Cached in --workdir.
2. Six rungs, each adding one thing to the one before (all ``trl_ext.DAPOTrainer``, so only the knob differs):
   (1) naive GRPO: ``loss_type="grpo"`` (sequence mean), symmetric clip 0.2, no shaping, no filtering, no dynamic
   sampling; (2) + overlong filtering (TRL's ``mask_truncated_completions``); (3) + clip-higher (``epsilon_high=0.28``);
   (4) + soft overlong punishment (``overlong_buffer_length``, DAPOConfig's default L_max // 5); (5) + token-level loss
   (``loss_type="dapo"``); (6) + dynamic sampling = full DAPO. Same learning rate, batch, group size, optimizer steps
   and seeds for every rung; reward ``trl_ext.toy.sum_correct`` (0/1). Rollouts are reused for
   ``steps_per_generation`` optimizer steps (as in the paper: several mini-batch updates per rollout), so the policy
   ratio leaves 1 and the clip bounds have something to clip.
3. Per run a callback keeps the trainer's logged metrics every step (entropy, ``frac_reward_zero_std``, clip ratios,
   ``completions/clipped_ratio``, mean length, ``dynamic_sampling/*``) and every ``--eval_every`` steps the greedy
   accuracy of the checker on the 300 held-out prompts (``trl_ext.evaluation``), against optimizer steps, generated
   completions (dynamic sampling's refills counted) and training wall time (evaluation time left out).
4. Headline: optimizer steps full DAPO needs to reach naive GRPO's final accuracy, / GRPO's steps, per seed.
   ``benchmarks/results/dapo_ablation.{md,json}`` and ``dapo_ablation*.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BASE_CONFIG = REPO / "recipes" / "configs" / "tiny-rlvr.yaml"

# (name, what the rung adds): cumulative, each rung is the previous one plus these DAPOConfig fields
RUNGS: list[tuple[str, dict]] = [
    ("grpo", dict(loss_type="grpo", epsilon=0.2, epsilon_high=0.2, overlong_buffer_length=0,
                  mask_truncated_completions=False, dynamic_sampling=False)),
    ("+overlong_filter", dict(mask_truncated_completions=True)),
    ("+clip_higher", dict(epsilon_high=0.28)),
    ("+soft_overlong", dict(overlong_buffer_length=None)),  # None: DAPOConfig's default, max_completion_length // 5
    ("+token_loss", dict(loss_type="dapo")),
    ("+dynamic_sampling", dict(dynamic_sampling=True)),
]


@dataclass(frozen=True)
class Setting:
    """What every rung shares. The defaults are sized for 18 runs in ~25 minutes on 2 CPU cores."""

    steps: int = 60  # optimizer steps per run
    batch: int = 64  # per_device_train_batch_size: 8 prompts x 8 completions per optimizer step
    num_generations: int = 8
    steps_per_generation: int = 4  # one rollout of 32 prompts x 8 feeds 4 optimizer steps
    # chosen on rung 1 (GRPO) alone, seed 100 (not a ladder seed), 48 steps: 1e-4 took greedy accuracy from 0.92 to
    # 0.80, 3e-5 kept it (0.91) and raised sampled accuracy 0.58 -> 0.65; 3e-5 is also tiny-rlvr.yaml's value
    learning_rate: float = 3e-5
    max_completion_length: int = 8
    eval_every: int = 4
    eval_prompts: int = 300
    max_refill_rounds: int = 8
    # tiny-rlvr.yaml's 6000 x 4 epochs left an SFT policy whose greedy answers flipped under any RL step (greedy 0.33,
    # sampled 0.15); 12000 x 6 gives greedy 0.92, sampled 0.58: room for RL, and a policy that is not at chance
    num_sft_examples: int = 12000
    sft_epochs: float = 6
    num_rl_prompts: int = 8000


SMOKE = Setting(steps=2, batch=16, steps_per_generation=2, eval_every=1, eval_prompts=24, max_refill_rounds=1,
                num_sft_examples=128, sft_epochs=1, num_rl_prompts=256)


def rung_overrides(index: int) -> dict:
    """The DAPOConfig fields of rung ``index`` (0-based): rung 0's, updated by every later rung up to ``index``."""
    fields: dict = {}
    for _, change in RUNGS[: index + 1]:
        fields.update(change)
    return fields


# ---- the headline: steps to reach a target -------------------------------------------------------------------------
def first_reaching(points: list[tuple[float, float]], target: float) -> float | None:
    """The first x of ``points`` [(x, accuracy), ...] (in x order, x > 0 only) whose accuracy is >= ``target``."""
    for x, acc in points:
        if x > 0 and acc >= target - 1e-12:
            return x
    return None


def steps_ratio(dapo: list[tuple[float, float]], grpo: list[tuple[float, float]]) -> float | None:
    """Optimizer steps DAPO needs to reach GRPO's final accuracy, divided by GRPO's steps; None if never reached.

    Curves are [(step, accuracy), ...] from step 0 (the shared start) on; GRPO's final point gives the target and
    the denominator. Only evaluation points after the start count (step 0 is the SFT model, not DAPO's doing).
    """
    final_step, target = grpo[-1]
    reached = first_reaching(dapo, target)
    return None if reached is None else reached / final_step


def spread(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


# ---- the shared start ----------------------------------------------------------------------------------------------
def pipeline_config(workdir: Path, s: Setting):
    """tiny-rlvr.yaml's PipelineConfig, with chatter among the demonstrators' slips (see the module docstring)."""
    import yaml

    from trl_ext.pipeline import PipelineConfig

    data = yaml.safe_load(BASE_CONFIG.read_text())
    data.update(output_dir=str(workdir), demo_error_kinds=[*data["demo_error_kinds"], "chatter"],
                num_sft_examples=s.num_sft_examples, num_rl_prompts=s.num_rl_prompts)
    data["sft"] = {**data.get("sft", {}), "num_train_epochs": s.sft_epochs, "save_strategy": "no", "disable_tqdm": True}
    return PipelineConfig.from_flat(data)


def sft_start(cfg, workdir: Path) -> Path:
    """The SFT model every rung starts from, trained once by the pipeline's own SFT stage and cached."""
    from trl import ModelConfig

    from trl_ext.pipeline import resolve_base, run_sft

    model = workdir / "sft" / "model"
    if (model / "config.json").exists():
        return model
    folder = workdir / "sft"
    folder.mkdir(parents=True, exist_ok=True)
    model_args = ModelConfig()
    start = time.perf_counter()
    metrics = run_sft(cfg, model_args, resolve_base(cfg, model_args, workdir), folder)
    metrics["wall_s"] = time.perf_counter() - start
    (folder / "sft.json").write_text(json.dumps(metrics, indent=1))
    return model


# ---- one run -------------------------------------------------------------------------------------------------------
class GroupedChecker:
    """``sum_correct`` as the reward, also counting the groups whose verdicts are all equal (all right / all wrong).

    TRL's ``frac_reward_zero_std`` is the share of groups whose reward (the reward functions' weighted sum; DAPO's
    overlong shaping is not part of it) has zero std; the advantages also carry the shaping, so length alone can move
    an all-wrong group. This counts the checker's all-right / all-wrong groups directly, per generation round (refills
    included). TRL calls a reward function on whole groups, each prompt's ``num_generations`` completions consecutive.
    """

    __name__ = "sum_correct"  # TRL's name for the column: rewards/sum_correct/*

    def __init__(self, num_generations: int):
        self.num_generations = num_generations
        self.rounds: list[tuple[float, float]] = []  # (frac all right, frac all wrong) per call

    def __call__(self, prompts, completions, **kwargs):
        from trl_ext.toy import sum_correct

        scores = sum_correct(prompts, completions, **kwargs)
        G = self.num_generations
        groups = [scores[i : i + G] for i in range(0, len(scores), G)]
        self.rounds.append((sum(min(g) == 1.0 for g in groups) / len(groups),
                            sum(max(g) == 0.0 for g in groups) / len(groups)))
        return scores

    def drain(self) -> dict:
        """Means over the rounds since the last call, as log entries."""
        if not self.rounds:
            return {}
        right, wrong = (statistics.mean(x) for x in zip(*self.rounds))
        self.rounds = []
        return {"checker/frac_groups_all_right": right, "checker/frac_groups_all_wrong": wrong,
                "checker/frac_groups_constant": right + wrong}


def make_recorder(trainer, eval_data, every: int, checker: GroupedChecker):
    """A TrainerCallback that keeps every logged metric and, every ``every`` steps, the held-out greedy accuracy."""
    from transformers import TrainerCallback

    from trl_ext.evaluation import oracle_accuracy, oracle_accuracy_by_level, sample_completions
    from trl_ext.toy import sum_correct

    prompts, levels = eval_data["prompt"], eval_data["level"]
    args = trainer.args

    class Recorder(TrainerCallback):
        def __init__(self):
            self.logs, self.curve = [], []
            self.eval_s = 0.0
            self.start = None

        def generated(self, step: int) -> int:
            if args.dynamic_sampling:  # every round counts, refills included
                return trainer.dynamic_sampling_totals["generated_groups"] * trainer.num_generations
            # TRL generates one batch of generation_batch_size every steps_per_generation steps, at the first
            return math.ceil(step / args.steps_per_generation) * args.generation_batch_size

        def evaluate(self, step: int):
            t0 = time.perf_counter()
            answers = sample_completions(trainer.model, trainer.processing_class, prompts, temperature=0.0,
                                         max_new_tokens=args.max_completion_length)
            # what RL optimises: samples at the training temperature, the same draw for every rung at this step
            sampled = sample_completions(trainer.model, trainer.processing_class, prompts, num_samples=2,
                                         temperature=args.temperature, max_new_tokens=args.max_completion_length,
                                         seed=10_000 + step)
            self.curve.append({
                "step": step, "generated": self.generated(step),
                "wall_s": (t0 - self.start - self.eval_s) if self.start is not None else 0.0,
                "accuracy": oracle_accuracy(prompts, answers, sum_correct),
                "sampled_accuracy": oracle_accuracy(prompts, sampled, sum_correct),
                "by_level": oracle_accuracy_by_level(prompts, answers, sum_correct, levels),
                "mean_length": statistics.mean(len(a[0]) for a in answers),
            })
            self.eval_s += time.perf_counter() - t0

        def on_train_begin(self, a, state, control, **kwargs):
            self.evaluate(0)
            self.start = time.perf_counter()
            self.eval_s = 0.0

        def on_log(self, a, state, control, logs=None, **kwargs):
            if logs is not None and "loss" in logs:
                self.logs.append({"step": state.global_step, **checker.drain(),
                                  **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})

        def on_step_end(self, a, state, control, **kwargs):
            if state.global_step % every == 0 or state.global_step == state.max_steps:
                self.evaluate(state.global_step)

    return Recorder()


def run_one(job: dict) -> dict:
    """One rung and seed, in a worker process with one thread. Returns the curves and the logs."""
    import torch

    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed

    from trl_ext import DAPOConfig, DAPOTrainer
    from trl_ext.pipeline import RL_DEFAULTS, stage_args

    s = Setting(**job["setting"])
    workdir, rung, seed = Path(job["workdir"]), job["rung"], job["seed"]
    cfg = pipeline_config(workdir, s)
    name = RUNGS[rung][0]
    overrides = {
        **cfg.rl, "max_steps": s.steps, "per_device_train_batch_size": s.batch, "num_generations": s.num_generations,
        "steps_per_generation": s.steps_per_generation, "learning_rate": s.learning_rate,
        "max_completion_length": s.max_completion_length, "logging_steps": 1, "save_strategy": "no",
        "report_to": [], "disable_tqdm": True, "dynamic_sampling_max_refill_rounds": s.max_refill_rounds,
        "dynamic_sampling_on_cap": "train_on_kept", **rung_overrides(rung),
    }
    args = stage_args(DAPOConfig, RL_DEFAULTS, overrides, workdir / "runs" / f"{rung}-s{seed}", seed, "rl")
    set_seed(seed)
    sft = job["sft"]
    checker = GroupedChecker(s.num_generations)
    trainer = DAPOTrainer(
        AutoModelForCausalLM.from_pretrained(sft), [checker], args=args,
        train_dataset=cfg.task.prompt_dataset(s.num_rl_prompts, seed=cfg.seed + 2),
        processing_class=AutoTokenizer.from_pretrained(sft),
    )
    eval_data = cfg.task.eval_dataset()
    if s.eval_prompts < len(eval_data):  # an evenly spaced subset keeps every level
        step = len(eval_data) / s.eval_prompts
        eval_data = eval_data.select([int(i * step) for i in range(s.eval_prompts)])
    recorder = make_recorder(trainer, eval_data, s.eval_every, checker)
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts; the recorder keeps them
    trainer.add_callback(recorder)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    return {"rung": rung, "name": name, "seed": seed, "curve": recorder.curve, "logs": recorder.logs,
            "wall_s": wall, "train_wall_s": wall - recorder.eval_s, "totals": dict(trainer.dynamic_sampling_totals),
            "config": {k: getattr(args, k) for k in ("loss_type", "epsilon", "epsilon_high", "overlong_buffer_length",
                                                      "mask_truncated_completions", "dynamic_sampling")}}


def _init_worker():
    import torch

    torch.set_num_threads(1)


def run_all(jobs: list[dict], workers: int, log) -> list[dict]:
    """Every job, ``workers`` at a time (one thread each); ``log`` sees each run as it finishes."""
    runs = []
    if workers <= 1:
        for job in jobs:
            runs.append(run_one(job))
            log(runs[-1])
        return runs
    import multiprocessing as mp

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker) as pool:
        for future in as_completed([pool.submit(run_one, job) for job in jobs]):  # failures raise here
            runs.append(future.result())
            log(runs[-1])
    return sorted(runs, key=lambda r: (r["seed"], r["rung"]))


# ---- summary -------------------------------------------------------------------------------------------------------
def _metric(run: dict, key: str) -> list[tuple[int, float]]:
    return [(h["step"], h[key]) for h in run["logs"] if key in h]


def _generated_groups(totals: dict) -> int:
    """DAPO's count of generated groups; records written before the key was renamed call it "generated"."""
    return totals["generated_groups"] if "generated_groups" in totals else totals["generated"]


def _mean_of(run: dict, key: str, first: bool | None = None) -> float | None:
    values = [v for _, v in _metric(run, key)]
    if not values:
        return None
    if first is True:
        return values[0]
    if first is False:
        return values[-1]
    return statistics.mean(values)


def _at(curve: list[dict], step: float | None, key: str):
    if step is None:
        return None
    return next(p[key] for p in curve if p["step"] == step)


def summarise(runs: list[dict], seeds: list[int]) -> dict:
    by = {(r["rung"], r["seed"]): r for r in runs}
    rungs = {}
    for i, (name, _) in enumerate(RUNGS):
        rs = [by[(i, s)] for s in seeds if (i, s) in by]
        if not rs:
            continue
        rungs[name] = {
            "final_accuracy": spread([r["curve"][-1]["accuracy"] for r in rs]),
            "final_accuracy_per_seed": [r["curve"][-1]["accuracy"] for r in rs],
            "start_accuracy": statistics.mean(r["curve"][0]["accuracy"] for r in rs),
            "final_sampled_accuracy": spread([r["curve"][-1]["sampled_accuracy"] for r in rs]),
            "final_sampled_accuracy_per_seed": [r["curve"][-1]["sampled_accuracy"] for r in rs],
            "start_sampled_accuracy": statistics.mean(r["curve"][0]["sampled_accuracy"] for r in rs),
            "best_accuracy": spread([max(p["accuracy"] for p in r["curve"]) for r in rs]),
            "final_by_level": {lv: statistics.mean(r["curve"][-1]["by_level"][lv] for r in rs)
                               for lv in rs[0]["curve"][-1]["by_level"]},
            "generated_completions": spread([r["curve"][-1]["generated"] for r in rs]),
            "train_wall_s": spread([r["train_wall_s"] for r in rs]),
        }
        for key, label in (("entropy", "entropy"), ("frac_reward_zero_std", "frac_zero_std"),
                           ("checker/frac_groups_constant", "checker_constant"),
                           ("checker/frac_groups_all_right", "all_right"), ("checker/frac_groups_all_wrong", "all_wrong"),
                           ("completions/clipped_ratio", "truncated"), ("completions/mean_length", "mean_length"),
                           ("clip_ratio/region_mean", "clip_region"), ("clip_ratio/low_mean", "clip_low"),
                           ("clip_ratio/high_mean", "clip_high")):
            for which, flag in (("first", True), ("last", False), ("mean", None)):
                vals = [v for v in (_mean_of(r, key, flag) for r in rs) if v is not None]
                rungs[name][f"{label}_{which}"] = statistics.mean(vals) if vals else None
        ds = [r["totals"] for r in rs if r["config"]["dynamic_sampling"]]
        if ds:
            rungs[name]["dynamic_sampling"] = {
                "generated_per_kept": statistics.mean(_generated_groups(t) / max(t["trained"], 1) for t in ds),
                "refill_rounds_mean": statistics.mean(
                    statistics.mean(v for _, v in _metric(r, "dynamic_sampling/refill_rounds")) for r in rs),
                "padded_groups": sum(t["padded"] for t in ds),
                "totals": ds,
            }
    ratio, cost = headline(by, seeds, "accuracy")
    ratio_sampled, cost_sampled = headline(by, seeds, "sampled_accuracy")
    # the same ratio for every rung, GRPO included (against itself: when its own curve first reached its final
    # value): a rung is faster than GRPO only if its ratio is below GRPO's own, not merely below 1
    by_rung = {key: {name: [steps_ratio([(p["step"], p[key]) for p in by[(i, s)]["curve"]],
                                        [(p["step"], p[key]) for p in by[(0, s)]["curve"]])
                            for s in seeds if (i, s) in by and (0, s) in by]
                     for i, (name, _) in enumerate(RUNGS)} for key in ("accuracy", "sampled_accuracy")}
    return {"rungs": rungs, "steps_ratio_to_grpo_final": ratio, "cost_to_grpo_final": cost,
            "steps_ratio_to_grpo_final_sampled": ratio_sampled, "cost_to_grpo_final_sampled": cost_sampled,
            "steps_ratio_to_grpo_final_by_rung": by_rung}


def headline(by: dict, seeds: list[int], key: str) -> tuple[dict, list[dict]]:
    """Per seed: full DAPO's steps to GRPO's final ``key`` / GRPO's steps, and the completions and wall time spent."""
    per_seed, cost = [], []
    for s in seeds:
        g, d = by.get((0, s)), by.get((len(RUNGS) - 1, s))
        if g is None or d is None:
            continue
        grpo_pts = [(p["step"], p[key]) for p in g["curve"]]
        dapo_pts = [(p["step"], p[key]) for p in d["curve"]]
        target = grpo_pts[-1][1]
        reached = first_reaching(dapo_pts, target)
        per_seed.append(steps_ratio(dapo_pts, grpo_pts))
        cost.append({
            "seed": s, "grpo_start": grpo_pts[0][1], "grpo_final": target, "grpo_improved": target > grpo_pts[0][1],
            "dapo_final": dapo_pts[-1][1], "dapo_step": reached, "grpo_steps": grpo_pts[-1][0],
            "dapo_generated": _at(d["curve"], reached, "generated"), "grpo_generated": g["curve"][-1]["generated"],
            "dapo_wall_s": _at(d["curve"], reached, "wall_s"), "grpo_wall_s": g["curve"][-1]["wall_s"],
        })
    reached = [r for r in per_seed if r is not None]
    ratio = {
        "metric": key, "per_seed": per_seed, "seeds": [c["seed"] for c in cost],
        # a mean only when every seed reached the target: an unreached seed is not a number to average
        "mean": statistics.mean(reached) if reached and len(reached) == len(per_seed) else None,
        "mean_over_reached": statistics.mean(reached) if reached else None,
        "std": statistics.stdev(reached) if len(reached) > 1 else None,
        "reached": f"{len(reached)}/{len(per_seed)}", "goal": 0.6,
    }
    return ratio, cost


def _fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def write_markdown(meta: dict, summary: dict, runs: list[dict], path: Path):
    r, ratio = summary["rungs"], summary["steps_ratio_to_grpo_final"]
    s = meta["setting"]
    lines = [
        "# DAPO's ablation, rung by rung, on the verifiable-reward task" + (" (PARTIAL)" if meta["partial"] else ""),
        "",
        f"Command: `{meta['command']}`  ",
        f"Commit `{meta['git']['commit']}` (branch `{meta['git']['branch']}`{', uncommitted changes' if meta['git']['dirty'] else ''}); "
        f"machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, shared with other jobs "
        f"({meta['workers']} runs in parallel, one thread each), total wall {meta['wall_s']:.0f} s; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        *([f"Files rewritten from the runs' records by `{meta['rewritten_by']['command']}` at commit "
           f"`{meta['rewritten_by']['git']['commit']}`.", ""] if meta.get("rewritten_by") else []),
        *([f"PARTIAL: only the seeds with all rungs finished are summarised: {meta['seeds']}.", ""]
          if meta["partial"] else []),
        f"Task: graded addition (tiny-rlvr.yaml: sums of 2/3/4 numbers in [0, 19]) with chatter among the SFT "
        f"demonstrators' slips; one SFT start for every run; reward `sum_correct` (0/1). Every rung: lr "
        f"{s['learning_rate']}, {s['batch']} completions ({s['batch'] // s['num_generations']} prompts x "
        f"{s['num_generations']}) per optimizer step, one rollout per {s['steps_per_generation']} steps, "
        f"{s['steps']} optimizer steps, max_completion_length {s['max_completion_length']}, seeds {meta['seeds']}. "
        f"Accuracy: greedy, the checker, {s['eval_prompts']} held-out prompts, every {s['eval_every']} steps.",
        "",
    ]
    for key, title in (("", "greedy accuracy (the brief's headline)"), ("_sampled", "sampled accuracy (T=1, 2 per prompt)")):
        lines += headline_lines(summary[f"steps_ratio_to_grpo_final{key}"], summary[f"cost_to_grpo_final{key}"], title)
        own = [x for x in summary["steps_ratio_to_grpo_final_by_rung"]["sampled_accuracy" if key else "accuracy"]
               .get("grpo", []) if x is not None]
        if own:  # the ratio GRPO itself gets: a rung is faster only if it does better than this
            lines[-1:] = ["", f"Read against GRPO's own curve: GRPO first reaches its final value at ratio "
                              f"{statistics.mean(own):.2f} (mean; per seed in the table below). A ratio for DAPO "
                              "that is not below this says the curves plateau early, not that DAPO is faster.", ""]
    lines += ["## The same ratio for every rung (GRPO against its own final value: its plateau, the baseline to beat)",
              "", "| rung | greedy, per seed | sampled, per seed |", "|---|---|---|"]
    br = summary["steps_ratio_to_grpo_final_by_rung"]
    for name in br["accuracy"]:
        lines.append(f"| {name} | " + " | ".join(
            ", ".join("not reached" if x is None else f"{x:.2f}" for x in br[key][name])
            for key in ("accuracy", "sampled_accuracy")) + " |")
    lines += ["", "## Per rung (means over seeds)", "",
              "| rung | greedy acc start -> final (per seed) | sampled acc start -> final (per seed) | best greedy | level 0/1/2 final | entropy first -> last | zero-adv groups "
              "(TRL) first -> last | checker all right + all wrong, first -> last | truncated first -> last | mean length first -> last | clip low / high / region "
              "(mean) | generated | train wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, x in r.items():
        lines.append(
            f"| {name} | {x['start_accuracy']:.3f} -> {x['final_accuracy']['mean']:.3f} ± {x['final_accuracy']['std']:.3f} ("
            + ", ".join(f"{a:.3f}" for a in x["final_accuracy_per_seed"]) + f") | {x['start_sampled_accuracy']:.3f} -> "
            f"{x['final_sampled_accuracy']['mean']:.3f} ± {x['final_sampled_accuracy']['std']:.3f} ("
            + ", ".join(f"{a:.3f}" for a in x["final_sampled_accuracy_per_seed"]) + f") | {x['best_accuracy']['mean']:.3f} | "
            + "/".join(f"{v:.2f}" for v in x["final_by_level"].values())
            + f" | {_fmt(x['entropy_first'])} -> {_fmt(x['entropy_last'])} | {_fmt(x['frac_zero_std_first'])} -> "
            f"{_fmt(x['frac_zero_std_last'])} | {_fmt(x['all_right_first'], '.2f')} + {_fmt(x['all_wrong_first'], '.2f')} -> "
            f"{_fmt(x['all_right_last'], '.2f')} + {_fmt(x['all_wrong_last'], '.2f')} | {_fmt(x['truncated_first'])} -> {_fmt(x['truncated_last'])} | "
            f"{_fmt(x['mean_length_first'], '.2f')} -> {_fmt(x['mean_length_last'], '.2f')} | "
            f"{_fmt(x['clip_low_mean'], '.4f')} / {_fmt(x['clip_high_mean'], '.4f')} / {_fmt(x['clip_region_mean'], '.4f')} | "
            f"{x['generated_completions']['mean']:.0f} | {x['train_wall_s']['mean']:.0f} |")
    for name, x in r.items():
        if "dynamic_sampling" in x:
            d = x["dynamic_sampling"]
            lines += ["", f"Dynamic sampling ({name}): generated / kept groups {d['generated_per_kept']:.2f}, refill "
                          f"rounds per rollout {d['refill_rounds_mean']:.2f} (mean), groups padded at the refill cap "
                          f"{d['padded_groups']}."]
    lines += ["", "Zero-std groups (TRL's `frac_reward_zero_std`, on the reward without the overlong shaping) and the "
                  "checker's all-right / all-wrong groups are means over every generation round of the logging step, "
                  "refills included. With the soft overlong penalty (rungs 4-6) the advantages can still move inside "
                  "a group whose checker verdicts are all equal.",
              "", "![accuracy](dapo_ablation.png)", "", "![training](dapo_ablation_training.png)", ""]
    if meta.get("notes"):
        lines += ["## What each rung did", "", meta["notes"], ""]
    path.write_text("\n".join(lines) + "\n")


def headline_lines(ratio: dict, cost: list[dict], title: str) -> list[str]:
    lines = [f"## Steps full DAPO needs to reach naive GRPO's final {title} / GRPO's steps (goal <= 0.6)", "",
             "| seed | GRPO start | GRPO final | DAPO final | DAPO reaches it at step | ratio | DAPO generated / GRPO "
             "generated (to that point) | DAPO wall / GRPO wall (s) |", "|---|---|---|---|---|---|---|---|"]
    for c, x in zip(cost, ratio["per_seed"]):
        lines.append(
            f"| {c['seed']} | {c['grpo_start']:.3f} | {c['grpo_final']:.3f} | {c['dapo_final']:.3f} | "
            f"{c['dapo_step'] if c['dapo_step'] is not None else 'not reached'} of {c['grpo_steps']} | "
            f"{_fmt(x, '.2f') if x is not None else 'not reached'} | "
            f"{c['dapo_generated'] if c['dapo_generated'] is not None else '-'} / {c['grpo_generated']} | "
            f"{_fmt(c['dapo_wall_s'], '.0f') if c['dapo_wall_s'] is not None else '-'} / {c['grpo_wall_s']:.0f} |")
    mean = ratio["mean"]
    lines += ["", (f"Mean ratio {mean:.2f} (std {_fmt(ratio['std'], '.2f')}, seeds {ratio['reached']} reached); "
                   f"goal <= 0.6: {'met' if mean <= 0.6 else 'not met'}." if mean is not None else
                   f"Mean ratio: not a number, DAPO reached GRPO's final value on {ratio['reached']} seeds "
                   f"(mean over those: {_fmt(ratio['mean_over_reached'], '.2f')}). Goal <= 0.6: not met.")]
    if any(not c["grpo_improved"] for c in cost):
        lines += ["", "Note: on some seeds GRPO's final value is not above the shared start; there the target is at "
                      "or below the start and the ratio measures noise, not speed."]
    return lines + [""]


def plot(runs: list[dict], seeds: list[int], prefix: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.cm.viridis([i / (len(RUNGS) - 1) for i in range(len(RUNGS))])
    colours[-1] = (0.85, 0.1, 0.1, 1.0)  # full DAPO in red
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    panels = [("step", "accuracy"), ("generated", "accuracy"), ("wall_s", "accuracy"), ("step", "sampled_accuracy")]
    for i, (name, _) in enumerate(RUNGS):
        rs = [r for r in runs if r["rung"] == i]
        if not rs:
            continue
        for ax, (x, y) in zip(axes, panels):
            for r in rs:
                ax.plot([p[x] for p in r["curve"]], [p[y] for p in r["curve"]], color=colours[i], alpha=0.25, lw=0.8)
            steps = [p["step"] for p in rs[0]["curve"]]
            if x == "step" and all(len(r["curve"]) == len(steps) for r in rs):
                mean = [statistics.mean(r["curve"][n][y] for r in rs) for n in range(len(steps))]
                ax.plot(steps, mean, color=colours[i], lw=2, label=f"{i + 1} {name}")
    for ax, (x, y) in zip(axes, panels):
        ax.set_xlabel({"step": "optimizer steps", "generated": "generated completions (refills counted)",
                       "wall_s": "training wall s"}[x])
        ax.set_ylabel({"accuracy": "held-out greedy accuracy", "sampled_accuracy": "held-out sampled accuracy (T=1)"}[y])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"DAPO ablation ladder, graded addition, seeds {seeds} (thin: per seed, thick: mean)")
    fig.tight_layout()
    fig.savefig(f"{prefix}.png", dpi=110)
    plt.close(fig)

    keys = [("entropy", "policy entropy"), ("frac_reward_zero_std", "zero-std reward groups (TRL frac_reward_zero_std)"),
            ("checker/frac_groups_constant", "groups all right or all wrong (checker)"),
            ("completions/clipped_ratio", "truncated completions (clipped_ratio)"),
            ("completions/mean_length", "mean length (tokens)"), ("clip_ratio/region_mean", "clip ratio (region)"),
            ("clip_ratio/low_mean", "clip ratio (low)"), ("clip_ratio/high_mean", "clip ratio (high)")]
    fig, axes = plt.subplots(2, 4, figsize=(20, 8))
    for ax, (key, label) in zip(axes.flat, keys):
        for i, (name, _) in enumerate(RUNGS):
            for k, r in enumerate([r for r in runs if r["rung"] == i]):
                pts = _metric(r, key)
                if pts:
                    ax.plot(*zip(*pts), color=colours[i], alpha=0.6, lw=0.9,
                            label=f"{i + 1} {name}" if k == 0 else None)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("optimizer steps")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{prefix}_training.png", dpi=110)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------------------------
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="all 6 rungs, 1 seed, 2 steps, a tiny SFT start")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default [0, 1, 2, 3, 4] ([0] with --smoke)")
    parser.add_argument("--workers", type=int, default=None, help="runs in parallel (default 2; 1 with --smoke)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help=f"learning rate of every rung (default {Setting.learning_rate})")
    parser.add_argument("--rungs", type=int, nargs="+", default=None, help="1-based rungs to run (default all)")
    parser.add_argument("--workdir", default=None, help="SFT start and run folders (default /tmp/trl_ext_dapo_ablation)")
    parser.add_argument("--results", default=None, help=f"where the md/json/png go (default {RESULTS})")
    parser.add_argument("--from_partial", action="store_true",
                        help="write the md/json/png from the runs finished so far (WORKDIR/runs.jsonl), marked PARTIAL")
    parser.add_argument("--notes", default=None, help="a markdown file whose text closes the md (what each rung did)")
    a = parser.parse_args(argv)
    setting = SMOKE if a.smoke else Setting()
    if a.steps is not None:
        setting = Setting(**{**setting.__dict__, "steps": a.steps})
    if a.lr is not None:
        setting = Setting(**{**setting.__dict__, "learning_rate": a.lr})
    rungs = [r - 1 for r in a.rungs] if a.rungs else list(range(len(RUNGS)))
    seeds = a.seeds or ([0] if a.smoke else [0, 1, 2, 3, 4])
    workers = a.workers or (1 if a.smoke else 2)
    workdir = Path(a.workdir or ("/tmp/trl_ext_dapo_ablation" + ("_smoke" if a.smoke else "")))
    results = Path(a.results) if a.results else RESULTS
    results.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from provenance import git_state, machine_info, versions

    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    git = git_state()
    partial_path = workdir / "runs.jsonl"
    command = "OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/dapo_ablation.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    if a.from_partial:
        # the runs finished so far; complete when every (rung, seed) asked for is there. The measurement's own
        # command, commit and wall time are kept from the json the run wrote, if it got that far.
        runs = sorted((json.loads(line) for line in open(partial_path)), key=lambda r: (r["seed"], r["rung"]))
        have = {(r["rung"], r["seed"]) for r in runs}
        done = [s for s in seeds if all((i, s) in have for i in rungs)] or sorted({r["seed"] for r in runs})
        partial = not all((i, s) in have for s in seeds for i in rungs)
        previous = results / "dapo_ablation.json"
        before = json.loads(previous.read_text())["meta"] if previous.exists() else {}
        if before.get("partial", True) or before.get("setting") != setting.__dict__:
            before = {}
        out = finish(runs if not partial else [r for r in runs if r["seed"] in done], done, setting, workers,
                     before.get("git", git), before.get("wall_s", float("nan")), results, a.notes, partial=partial,
                     command=before.get("command", command), machine=machine_info(), vers=versions(),
                     sft=str(workdir / "sft" / "model"), rewritten_by={"command": command, "git": git})
        print(f"wrote {results} from {len(runs)} runs (seeds complete: {done}, partial: {partial})")
        return out
    cfg = pipeline_config(workdir, setting)
    sft = sft_start(cfg, workdir)
    print(f"SFT start ready: {sft} ({time.perf_counter() - t0:.0f}s)", flush=True)
    jobs = [{"setting": setting.__dict__, "workdir": str(workdir), "sft": str(sft), "rung": i, "seed": s}
            for s in seeds for i in rungs]
    partial_path.unlink(missing_ok=True)

    def log(run):
        with open(partial_path, "a") as f:
            f.write(json.dumps(run) + "\n")
        print(f"rung {run['rung'] + 1} {run['name']} seed {run['seed']}: acc {run['curve'][0]['accuracy']:.3f} -> "
              f"{run['curve'][-1]['accuracy']:.3f}, {run['wall_s']:.0f}s (t={time.perf_counter() - t0:.0f}s)",
              flush=True)

    runs = run_all(jobs, workers, log)
    finish(runs, seeds, setting, workers, git, time.perf_counter() - t0, results, a.notes, partial=False,
           command=command, machine=machine_info(), vers=versions(), sft=str(sft))


def finish(runs, seeds, setting, workers, git, wall, results: Path, notes, partial, command, machine, vers, sft,
           rewritten_by=None):
    summary = summarise(runs, seeds)
    meta = {"command": command.strip(), "git": git, "machine": machine, "versions": vers, "workers": workers,
            "setting": setting.__dict__, "seeds": seeds, "wall_s": wall, "partial": partial, "sft": sft,
            "notes": Path(notes).read_text() if notes else None,
            "rungs_defined": [{"name": n, "adds": c} for n, c in RUNGS], "rewritten_by": rewritten_by}
    out = {"seeds": seeds, "partial": partial,
           "steps_ratio_to_grpo_final": summary["steps_ratio_to_grpo_final"],
           "final_accuracy": {n: x["final_accuracy"] for n, x in summary["rungs"].items()},
           "cost_to_grpo_final": summary["cost_to_grpo_final"],
           "steps_ratio_to_grpo_final_sampled": summary["steps_ratio_to_grpo_final_sampled"],
           "cost_to_grpo_final_sampled": summary["cost_to_grpo_final_sampled"],
           "final_sampled_accuracy": {n: x["final_sampled_accuracy"] for n, x in summary["rungs"].items()},
           "steps_ratio_to_grpo_final_by_rung": summary["steps_ratio_to_grpo_final_by_rung"],
           "rungs": summary["rungs"], "meta": meta,
           "runs": runs}
    (results / "dapo_ablation.json").write_text(json.dumps(out, indent=1, default=str))
    write_markdown(meta, summary, runs, results / "dapo_ablation.md")
    plot(runs, seeds, results / "dapo_ablation")
    return out


if __name__ == "__main__":
    main()
