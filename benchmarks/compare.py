"""Every algorithm side by side: same SFT checkpoint, same learned RM, same budget of generated completions, 3 seeds.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/compare.py --setting quick   # <= 15 min on 2 CPU cores
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/compare.py --setting full    # 4x the budget
    python benchmarks/compare.py --algorithms grpo dapo --seeds 0 --output_dir runs/compare-try
    python benchmarks/compare.py --config benchmarks/configs/compare-qwen2.5-0.5b-qlora.yaml   # GPU, 4-bit + LoRA

What runs:

1. ``trl_ext.pipeline.run_pipeline(until="rm")`` once (seed ``--seed``): the embedded tiny model, SFT on the noisy
   demonstrations, the labeller's rankings, the reward model. Every algorithm starts from that ``sft/model`` and RL
   algorithms optimise that ``rm/model`` (through ``RewardAdapter``, as the pipeline's RL stage does).
2. For each algorithm and each of ``--seeds``: the pipeline's RL stage (``trl_ext.pipeline.build_rl_trainer`` and
   ``train_rl``; DPO: ``run_dpo``) in a fresh subprocess (isolation and a per-run peak RSS), with the pipeline's RL
   defaults. ``grpo`` = ``trl.GRPOTrainer``, ``dapo`` =
   ``trl_ext.DAPOTrainer``, ``rloo`` = ``trl_ext.RLOOTrainer``, ``rloo_trl`` = ``trl.RLOOTrainer``, ``ppo`` =
   ``trl_ext.PPOTrainer`` (critic initialised from the RM), ``dpo`` = ``trl.DPOTrainer`` on the labeller's pairs.
3. Every ``--eval_every`` units of budget, a callback samples the held-out eval prompts (never trained on) and records
   the oracle accuracy, the oracle utility and the learned RM's score. Evaluation time is kept out of the training time.
4. ``benchmarks/results/compare.{md,json}`` and two PNGs.

Budget: RL runs stop when they have *generated* ``--budget`` completions (counted by the harness as the rows the RM
scored, so DAPO's dynamic-sampling refills count; DAPO's own ``max_generated_completions`` stops it before a step whose
first round the rest of the budget cannot pay for, and caps a step's refills to it). DPO generates nothing: it sees ``--budget`` labelled (chosen, rejected) pairs, the labels file cycled as often
as needed (the labels themselves were sampled once from the SFT model, and are shared with the RM).

Finished runs are reused when the same command is run again (same settings, same SFT/RM); ``--rerun`` ignores them.

Files: this one (the command line, the shared SFT/RM build, the runs' specs and launch), ``compare_child.py`` (one
run, and the evaluation), ``compare_stats.py`` (the reported numbers), ``compare_report.py`` (compare.md and the
figures), ``provenance.py`` (git, machine, versions, peak memory).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, however this file is loaded

from compare_child import eval_subset, evaluate_policy, load_eval_rm, run_one  # noqa: E402
from compare_report import format_markdown, ordering_text, plot  # noqa: E402
from compare_stats import summarise  # noqa: E402
from provenance import REPO, git_state, machine_info, versions  # noqa: E402

ALGORITHMS = ("grpo", "dapo", "rloo", "rloo_trl", "ppo", "dpo")
# budget: generated completions per run (DPO: labelled pairs seen); eval_every: budget between evaluations;
# eval_prompts: how many of the held-out prompts are sampled at each evaluation (an evenly spaced subset)
# quick: 50 GRPO steps of 64 completions, 6 evaluations; full: 200 steps, 21 evaluations
SETTINGS = {
    "quick": dict(budget=3200, eval_every=640, eval_prompts=200),
    "full": dict(budget=12800, eval_every=640, eval_prompts=200),
}
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


def _specs(cmp: CompareArgs, cfg, model_args, build: dict, git: dict) -> tuple[list[dict], dict]:
    """Every (algorithm, seed) run's spec, written to its folder: those to run, and the finished ones whose spec
    (fingerprint) matches, reused."""
    from trl_ext.pipeline import fingerprint

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
            spec["fingerprint"] = fingerprint(spec)
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
    return todo, results


def _execute(todo: list[dict], cmp: CompareArgs) -> dict:
    """Run the specs, ``cmp.jobs`` processes at a time; a one-line summary per finished run, the log tail of a
    failed one."""
    from tqdm.auto import tqdm

    results = {}
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
    return results


def run_all(cmp: CompareArgs, cfg, model_args, build: dict, git: dict) -> list[dict]:
    todo, results = _specs(cmp, cfg, model_args, build, git)
    if results:
        print(f"reusing {len(results)} finished run(s): {sorted(f'{a}-s{s}' for a, s in results)}", flush=True)
    results.update(_execute(todo, cmp))
    return [results[(a, s)] for a in cmp.algorithms for s in cmp.seeds]


def parse(argv: list[str]):
    from trl import ModelConfig

    from trl_ext.assembly.frontend import CommandParser  # PipelineConfig's nested task settings as flat flags
    from trl_ext.pipeline import PipelineConfig

    parser = CommandParser((CompareArgs, PipelineConfig, ModelConfig), prog="benchmarks/compare.py")
    cmp, cfg, model_args = parser.parse_args_and_config(argv)
    if cfg.output_dir == DEFAULT_OUTPUT_DIR:
        cfg.output_dir = f"runs/compare-{cmp.setting}"
    return cmp, cfg, model_args


def _meta(argv, cmp, cfg, model_args, git, build, built_now, reference, threshold, runs, load_start, t0) -> dict:
    """Everything compare.md states besides the tables: command, code, machine, setup, timing."""
    from trl_ext import pipeline

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
    return meta


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
    meta = _meta(argv, cmp, cfg, model_args, git, build, built_now, reference, threshold, runs, load_start, t0)
    (results_dir / "compare.json").write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1,
                                                         default=str))
    (results_dir / "compare.md").write_text(format_markdown(meta, summary))
    plot(runs, meta, results_dir)
    print("\n".join(ordering_text(summary["per_algorithm"])))
    print(f"done in {meta['wall_s']:.0f} s: {results_dir / 'compare.md'}", flush=True)


if __name__ == "__main__":
    main()
