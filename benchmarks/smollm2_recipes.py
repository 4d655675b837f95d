"""The real-model recipes, seed by seed: does RL raise held-out checker accuracy by more than the spread over seeds?

    trl-ext convert-gguf smollm2 --output_dir models/smollm2-135m-instruct      # once, offline
    python benchmarks/smollm2_recipes.py --recipes rlvr rlhf --seeds 0 1 2

Each (recipe, seed) is one ``trl-ext pipeline --config recipes/configs/smollm2-RECIPE.yaml --seed S`` run in its own
folder (``runs/smollm2-RECIPE-sS``), started as a child process so one failure does not end the rest. A finished run
is recorded in ``benchmarks/results/smollm2_recipes.json`` at once (with the commit and machine it ran on) and never
run again, and an interrupted one resumes from its last complete stage (the pipeline's own bookkeeping): the seeds can
be spread over several sittings. ``smollm2_recipes.md`` is rewritten after every run: per recipe, held-out accuracy
(greedy and sampled) of the starting model and of the RL model, per seed and as mean +- sd, the gain against the
spread over seeds, and wall times per stage.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import git_state, machine_info  # noqa: E402
from stats import mean_sd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("oracle_accuracy_greedy", "oracle_accuracy_sampled")


def run_one(recipe: str, seed: int, runs_dir: Path, extra: list[str]) -> dict:
    out = runs_dir / f"smollm2-{recipe}-s{seed}"
    command = ["trl-ext", "pipeline", "--config", f"recipes/configs/smollm2-{recipe}.yaml", "--seed", str(seed),
               "--output_dir", str(out), *extra]
    print("$", " ".join(command), flush=True)
    start = time.time()
    done = subprocess.run(command, cwd=ROOT)
    wall = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}; rerun this script to resume it")
    report = json.loads((out / "report.json").read_text())
    return {
        "recipe": recipe, "seed": seed, "command": " ".join(command), "output_dir": str(out),
        "wall_s_this_sitting": wall, "stage_wall_s": report["wall_time_s"], "models": report["models"],
        "report": {k: v for k, v in report.items() if k not in ("models", "wall_time_s")},
        "git": git_state(), "machine": machine_info(),
        # the pipeline's torch threads: one run alone uses every core; two seeds side by side get one core each, so
        # their wall times are not the recipe's time on a quiet machine
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", f"unset ({os.cpu_count()} cores)"),
    }


def summarise(runs: list[dict]) -> dict:
    """Per recipe and metric: the mean +- sd over seeds of the model RL started from (the SFT model where the recipe
    ran SFT, else the given model) and of the RL model, and the gain's; every model's mean beside them."""
    out = {}
    for recipe in sorted({r["recipe"] for r in runs}):
        rows = sorted((r for r in runs if r["recipe"] == recipe), key=lambda r: r["seed"])
        names = list(rows[0]["models"])  # in pipeline order: base or given, [sft,] rl
        start = "sft" if "sft" in names else names[0]  # RL's own starting point: its gain is what RL did
        entry = {"seeds": [r["seed"] for r in rows], "start_model": start, "models": names, "metrics": {},
                 "model_means": {m: {metric: statistics.fmean(r["models"][m][metric] for r in rows)
                                     for metric in METRICS} for m in names}}
        for metric in METRICS:
            before = [r["models"][start][metric] for r in rows]
            after = [r["models"]["rl"][metric] for r in rows]
            gains = [a - b for a, b in zip(after, before, strict=True)]
            b_mean, b_sd = mean_sd(before)
            a_mean, a_sd = mean_sd(after)
            g_mean, g_sd = mean_sd(gains)
            spread = max(b_sd, a_sd) if len(rows) > 1 else None
            entry["metrics"][metric] = {
                "before": before, "after": after, "before_mean": b_mean, "before_sd": b_sd, "after_mean": a_mean,
                "after_sd": a_sd, "gain_mean": g_mean, "gain_sd": g_sd, "spread": spread,
                "gain_exceeds_spread": bool(spread is not None and g_mean > spread),
            }
        walls = [sum(r["stage_wall_s"].values()) for r in rows]
        entry["total_wall_s"] = {"per_seed": walls, "mean": statistics.fmean(walls), "max": max(walls)}
        out[recipe] = entry
    return out


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"  # no sd from one seed


def markdown(result: dict) -> str:
    lines = ["# SmolLM2-135M-Instruct recipes, seed by seed", "",
             "`python benchmarks/smollm2_recipes.py --recipes " + " ".join(result["summary"]) + " --seeds "
             + " ".join(str(s) for s in sorted({r["seed"] for r in result["runs"]})) + "` (resumable; seeds may run "
             "in separate invocations: each run's own command, commit and thread count are below and in the json)", ""]
    for recipe, entry in result["summary"].items():
        lines += [f"## smollm2-{recipe} (seeds {entry['seeds']})", "",
                  "Held-out checker accuracy, mean over seeds, of every model the pipeline evaluated: "
                  + ", ".join(f"`{m}` {v['oracle_accuracy_greedy']:.3f} greedy / {v['oracle_accuracy_sampled']:.3f} "
                              "sampled" for m, v in entry["model_means"].items()) + ".", "",
                  f"RL's gain over the model it started from (`{entry['start_model']}`); the gain counts when its mean "
                  "exceeds the larger of the two models' sd over seeds.", "",
                  "| metric | before (mean +- sd) | after (mean +- sd) | gain (mean +- sd) | exceeds spread | per seed "
                  "(before -> after) |", "|---|---:|---:|---:|---|---|"]
        for metric, m in entry["metrics"].items():
            per_seed = ", ".join(f"{b:.3f} -> {a:.3f}" for b, a in zip(m["before"], m["after"], strict=True))
            lines.append(
                f"| {metric.removeprefix('oracle_accuracy_')} | {m['before_mean']:.3f} +- {_fmt(m['before_sd'])} | "
                f"{m['after_mean']:.3f} +- {_fmt(m['after_sd'])} | {m['gain_mean']:+.3f} +- {_fmt(m['gain_sd'])} | "
                f"{'yes' if m['gain_exceeds_spread'] else 'no'} | {per_seed} |"
            )
        w = entry["total_wall_s"]
        lines += ["", f"Wall time of the whole pipeline per seed (s): {', '.join(f'{x:.0f}' for x in w['per_seed'])} "
                  f"(mean {w['mean']:.0f}, max {w['max']:.0f}).", ""]
        runs = [r for r in result["runs"] if r["recipe"] == recipe]
        stages = list(dict.fromkeys(s for r in runs for s in r["stage_wall_s"]))
        lines += ["| seed | " + " | ".join(stages) + " | threads | commit | cpu |",
                  "|---|" + "---:|" * len(stages) + "---|---|---|"]
        for r in sorted(runs, key=lambda r: r["seed"]):
            cells = [f"{r['stage_wall_s'].get(s, float('nan')):.0f}" for s in stages]
            commit = r["git"]["commit"][:10] + (" (dirty)" if r["git"]["dirty"] else "")
            lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {r.get('omp_num_threads', '?')} | {commit} | "
                         f"{r['machine']['cpu']}, "
                         f"{r['machine']['cores']} cores |")
        lines.append("")
    return "\n".join(lines)


def write(result: dict, path: Path, new: dict | None = None) -> None:
    """Record ``new`` (a finished run) and rewrite the json and the page. The file is re-read under a lock first, so
    two invocations running other seeds side by side (``--seeds 1`` and ``--seeds 2``) keep each other's runs."""
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            on_disk = json.loads(path.read_text())["runs"]
            mine = {(r["recipe"], r["seed"]) for r in result["runs"]}
            result["runs"] = [r for r in on_disk if (r["recipe"], r["seed"]) not in mine] + result["runs"]
        if new is not None:
            result["runs"] = [r for r in result["runs"] if (r["recipe"], r["seed"]) != (new["recipe"], new["seed"])]
            result["runs"].append(new)
        result["runs"].sort(key=lambda r: (r["recipe"], r["seed"]))
        result["summary"] = summarise(result["runs"]) if result["runs"] else {}
        path.write_text(json.dumps(result, indent=1))
        path.with_suffix(".md").write_text(markdown(result))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["rlvr", "rlhf"], choices=["rlvr", "rlhf"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs_dir", default="runs")
    parser.add_argument("--results", default="benchmarks/results/smollm2_recipes.json")
    parser.add_argument("--rerun", action="store_true", help="run (recipe, seed) pairs already recorded again")
    args, extra = parser.parse_known_args(argv)  # anything else goes to trl-ext pipeline (e.g. --rl '{...}')
    path = ROOT / args.results
    result = json.loads(path.read_text()) if path.exists() else {"runs": []}
    for recipe in args.recipes:
        for seed in args.seeds:
            if not args.rerun and any(r["recipe"] == recipe and r["seed"] == seed for r in result["runs"]):
                print(f"smollm2-{recipe} seed {seed}: recorded, skipped", flush=True)
                continue
            write(result, path, run_one(recipe, seed, ROOT / args.runs_dir, extra))
    if result["runs"]:
        write(result, path)
        print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
