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
import json
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
    }


def summarise(runs: list[dict]) -> dict:
    """Per recipe and metric: the starting model's and the RL model's mean +- sd over seeds, and the gain's."""
    out = {}
    for recipe in sorted({r["recipe"] for r in runs}):
        rows = sorted((r for r in runs if r["recipe"] == recipe), key=lambda r: r["seed"])
        start = next(iter(rows[0]["models"]))  # the first model evaluated: the base, or the given model
        entry = {"seeds": [r["seed"] for r in rows], "start_model": start, "metrics": {}}
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
             "`python benchmarks/smollm2_recipes.py " + " ".join(result["argv"]) + "`", ""]
    for recipe, entry in result["summary"].items():
        lines += [f"## smollm2-{recipe} (seeds {entry['seeds']})", "",
                  f"Held-out checker accuracy of the starting model (`{entry['start_model']}`) and of the RL model; the "
                  "gain counts when its mean exceeds the larger of the two models' sd over seeds.", "",
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
        lines += ["| seed | " + " | ".join(stages) + " | commit | cpu |", "|---|" + "---:|" * len(stages) + "---|---|"]
        for r in sorted(runs, key=lambda r: r["seed"]):
            cells = [f"{r['stage_wall_s'].get(s, float('nan')):.0f}" for s in stages]
            commit = r["git"]["commit"][:10] + (" (dirty)" if r["git"]["dirty"] else "")
            lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {commit} | {r['machine']['cpu']}, "
                         f"{r['machine']['cores']} cores |")
        lines.append("")
    return "\n".join(lines)


def write(result: dict, path: Path) -> None:
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
    result["argv"] = list(argv if argv is not None else sys.argv[1:])
    for recipe in args.recipes:
        for seed in args.seeds:
            if not args.rerun and any(r["recipe"] == recipe and r["seed"] == seed for r in result["runs"]):
                print(f"smollm2-{recipe} seed {seed}: recorded, skipped", flush=True)
                continue
            entry = run_one(recipe, seed, ROOT / args.runs_dir, extra)
            result["runs"] = [r for r in result["runs"] if (r["recipe"], r["seed"]) != (recipe, seed)] + [entry]
            write(result, path)
    if result["runs"]:
        write(result, path)
        print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
