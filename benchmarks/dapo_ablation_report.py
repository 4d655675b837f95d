"""The numbers and the report of benchmarks/dapo_ablation.py: the per-rung summary and the headline ratios (pure
functions of the runs' records), the markdown and the two figures."""

from __future__ import annotations

import statistics
from pathlib import Path

from stats import first_reaching, logged, mean_if_all, mean_sd, spread


# ---- the headline: steps to reach a target -------------------------------------------------------------------------
def steps_ratio(dapo: list[tuple[float, float]], grpo: list[tuple[float, float]]) -> float | None:
    """Optimizer steps DAPO needs to reach GRPO's final accuracy, divided by GRPO's steps; None if never reached.

    Curves are [(step, accuracy), ...] from step 0 (the shared start) on; GRPO's final point gives the target and
    the denominator. Only evaluation points after the start count (step 0 is the SFT model, not DAPO's doing).
    """
    final_step, target = grpo[-1]
    reached = first_reaching(dapo, target)
    return None if reached is None else dapo[reached][0] / final_step


# ---- summary -------------------------------------------------------------------------------------------------------
def _generated_groups(totals: dict) -> int:
    """DAPO's count of generated groups: ``generated_groups``, or ``generated`` in the recorded runs of
    results/dapo_ablation.json (the name DAPOTrainer's totals had then), which ``--from_partial`` still reads."""
    return totals["generated_groups"] if "generated_groups" in totals else totals["generated"]


def _mean_of(run: dict, key: str, first: bool | None = None) -> float | None:
    values = [v for _, v in logged(run, key)]
    if not values:
        return None
    if first is True:
        return values[0]
    if first is False:
        return values[-1]
    return statistics.mean(values)


def summarise(runs: list[dict], seeds: list[int], names: list[str]) -> dict:
    """Per rung (``names``: the rungs' names in ladder order, naive GRPO first, full DAPO last) the numbers the report
    shows, and the headline ratios per seed."""
    by = {(r["rung"], r["seed"]): r for r in runs}
    rungs = {}
    for i, name in enumerate(names):
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
                    statistics.mean(v for _, v in logged(r, "dynamic_sampling/refill_rounds")) for r in rs),
                "padded_groups": sum(t["padded"] for t in ds),
                "totals": ds,
            }
    ratio, cost = headline(by, seeds, "accuracy", len(names) - 1)
    ratio_sampled, cost_sampled = headline(by, seeds, "sampled_accuracy", len(names) - 1)
    # the same ratio for every rung, GRPO included (against itself: when its own curve first reached its final
    # value): a rung is faster than GRPO only if its ratio is below GRPO's own, not merely below 1
    by_rung = {key: {name: [steps_ratio([(p["step"], p[key]) for p in by[(i, s)]["curve"]],
                                        [(p["step"], p[key]) for p in by[(0, s)]["curve"]])
                            for s in seeds if (i, s) in by and (0, s) in by]
                     for i, name in enumerate(names)} for key in ("accuracy", "sampled_accuracy")}
    return {"rungs": rungs, "steps_ratio_to_grpo_final": ratio, "cost_to_grpo_final": cost,
            "steps_ratio_to_grpo_final_sampled": ratio_sampled, "cost_to_grpo_final_sampled": cost_sampled,
            "steps_ratio_to_grpo_final_by_rung": by_rung}


def headline(by: dict, seeds: list[int], key: str, last: int) -> tuple[dict, list[dict]]:
    """Per seed: full DAPO's (rung ``last``) steps to GRPO's (rung 0) final ``key`` / GRPO's steps, and the
    completions and wall time spent."""
    per_seed, cost = [], []
    for s in seeds:
        g, d = by.get((0, s)), by.get((last, s))
        if g is None or d is None:
            continue
        grpo_pts = [(p["step"], p[key]) for p in g["curve"]]
        dapo_pts = [(p["step"], p[key]) for p in d["curve"]]
        target = grpo_pts[-1][1]
        i = first_reaching(dapo_pts, target)
        reached = None if i is None else dapo_pts[i][0]
        per_seed.append(steps_ratio(dapo_pts, grpo_pts))
        cost.append({
            "seed": s, "grpo_start": grpo_pts[0][1], "grpo_final": target, "grpo_improved": target > grpo_pts[0][1],
            "dapo_final": dapo_pts[-1][1], "dapo_step": reached, "grpo_steps": grpo_pts[-1][0],
            "dapo_generated": None if i is None else d["curve"][i]["generated"],
            "grpo_generated": g["curve"][-1]["generated"],
            "dapo_wall_s": None if i is None else d["curve"][i]["wall_s"], "grpo_wall_s": g["curve"][-1]["wall_s"],
        })
    reached = [r for r in per_seed if r is not None]
    ratio = {"metric": key, "per_seed": per_seed, "seeds": [c["seed"] for c in cost], **mean_if_all(per_seed),
             "sd": mean_sd(reached)[1], "reached": f"{len(reached)}/{len(per_seed)}", "goal": 0.6}
    return ratio, cost


# ---- report --------------------------------------------------------------------------------------------------------
def _fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def write_markdown(meta: dict, summary: dict, runs: list[dict], path: Path):
    r = summary["rungs"]
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
    for key, title in (("", "greedy accuracy (the headline)"), ("_sampled", "sampled accuracy (T=1, 2 per prompt)")):
        lines += headline_lines(summary[f"steps_ratio_to_grpo_final{key}"], summary[f"cost_to_grpo_final{key}"], title)
        own = [x for x in summary["steps_ratio_to_grpo_final_by_rung"]["sampled_accuracy" if key else "accuracy"]
               .get("grpo", []) if x is not None]
        if own:  # the ratio GRPO itself gets: a rung is faster only if it does better than this
            lines[-1:] = ["", f"Read against GRPO's own curve: GRPO first reaches its final value at ratio "
                              f"{statistics.fmean(own):.2f} (mean; per seed in the table below). A ratio for DAPO "
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
            f"| {name} | {x['start_accuracy']:.3f} -> {x['final_accuracy']['mean']:.3f} ± {_fmt(x['final_accuracy']['sd'])} ("
            + ", ".join(f"{a:.3f}" for a in x["final_accuracy_per_seed"]) + f") | {x['start_sampled_accuracy']:.3f} -> "
            f"{x['final_sampled_accuracy']['mean']:.3f} ± {_fmt(x['final_sampled_accuracy']['sd'])} ("
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
    lines += ["", (f"Mean ratio {mean:.2f} (sd {_fmt(ratio['sd'], '.2f')}, seeds {ratio['reached']} reached); "
                   f"goal <= 0.6: {'met' if mean <= 0.6 else 'not met'}." if mean is not None else
                   f"Mean ratio: not a number, DAPO reached GRPO's final value on {ratio['reached']} seeds "
                   f"(mean over those: {_fmt(ratio['mean_over_reached'], '.2f')}). Goal <= 0.6: not met.")]
    if any(not c["grpo_improved"] for c in cost):
        lines += ["", "Note: on some seeds GRPO's final value is not above the shared start; there the target is at "
                      "or below the start and the ratio measures noise, not speed."]
    return lines + [""]


def plot(runs: list[dict], seeds: list[int], prefix: Path, rungs: list[str]):
    """``prefix``.png (held-out accuracy against steps, generated completions, wall-clock) and ``prefix``_training.png
    (what the trainer logged), one colour per rung (``rungs``: their names, in ladder order), full DAPO in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = plt.cm.viridis([i / (len(rungs) - 1) for i in range(len(rungs))])
    colours[-1] = (0.85, 0.1, 0.1, 1.0)  # full DAPO in red
    fig, axes = plt.subplots(1, 4, figsize=(21, 4.5))
    panels = [("step", "accuracy"), ("generated", "accuracy"), ("wall_s", "accuracy"), ("step", "sampled_accuracy")]
    for i, name in enumerate(rungs):
        rs = [r for r in runs if r["rung"] == i]
        if not rs:
            continue
        for ax, (x, y) in zip(axes, panels):
            for r in rs:
                ax.plot([p[x] for p in r["curve"]], [p[y] for p in r["curve"]], color=colours[i], alpha=0.25, lw=0.8)
            steps = [p["step"] for p in rs[0]["curve"]]
            if x == "step" and all(len(r["curve"]) == len(steps) for r in rs):
                mean = [statistics.fmean(r["curve"][n][y] for r in rs) for n in range(len(steps))]
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
        for i, name in enumerate(rungs):
            for k, r in enumerate([r for r in runs if r["rung"] == i]):
                pts = logged(r, key)
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


