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
3. Per run ``trl_ext.curves.CurveRecorder`` keeps the trainer's logged metrics every step (entropy,
   ``frac_reward_zero_std``, clip ratios, ``completions/clipped_ratio``, mean length, ``dynamic_sampling/*``, and the
   checker's all-right / all-wrong groups) and every ``--eval_every`` steps the greedy accuracy of the checker on the
   300 held-out prompts (``trl_ext.evaluation``), against optimizer steps, generated completions (dynamic sampling's
   refills counted) and training wall time (evaluation time left out).
4. Headline: optimizer steps full DAPO needs to reach naive GRPO's final accuracy, / GRPO's steps, per seed.
   ``benchmarks/results/dapo_ablation.{md,json}`` and ``dapo_ablation*.png`` (written by dapo_ablation_report.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dapo_ablation_report import plot, summarise, write_markdown  # noqa: E402
from provenance import git_state, machine_info, versions  # noqa: E402

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

RUNG_NAMES = [name for name, _ in RUNGS]


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


def held_out_accuracy(trainer, eval_data):
    """``evaluate(model, step)`` for :class:`trl_ext.curves.CurveRecorder`: the checker's greedy accuracy on the
    held-out prompts (overall and by level, and the answers' mean length) and its accuracy on 2 samples per prompt."""
    from trl_ext.evaluation import oracle_accuracy, oracle_accuracy_by_level, sample_completions
    from trl_ext.toy import sum_correct

    prompts, levels = eval_data["prompt"], eval_data["level"]
    args, tokenizer = trainer.args, trainer.processing_class

    def evaluate(model, step: int) -> dict:
        answers = sample_completions(model, tokenizer, prompts, temperature=0.0,
                                     max_new_tokens=args.max_completion_length)
        # what RL optimises: samples at the training temperature, the same draw for every rung at this step
        sampled = sample_completions(model, tokenizer, prompts, num_samples=2, temperature=args.temperature,
                                     max_new_tokens=args.max_completion_length, seed=10_000 + step)
        return {
            "accuracy": oracle_accuracy(prompts, answers, sum_correct),
            "sampled_accuracy": oracle_accuracy(prompts, sampled, sum_correct),
            "by_level": oracle_accuracy_by_level(prompts, answers, sum_correct, levels),
            "mean_length": statistics.mean(len(a[0]) for a in answers),
        }

    return evaluate


def run_one(job: dict) -> dict:
    """One rung and seed, in a worker process with one thread. Returns the curves and the logs."""
    import torch

    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed

    from trl_ext import DAPOConfig, DAPOTrainer
    from trl_ext.curves import CurveRecorder
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
    recorder = CurveRecorder(trainer, held_out_accuracy(trainer, eval_data), s.eval_every, extra_logs=checker.drain)
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
    summary = summarise(runs, seeds, RUNG_NAMES)
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
    plot(runs, seeds, results / "dapo_ablation", RUNG_NAMES)
    return out


if __name__ == "__main__":
    main()
