"""benchmarks/compare.py's results page: compare.md (provenance, setup, definitions, tables) and its two figures."""

from __future__ import annotations

from pathlib import Path

from compare_stats import clearly_apart, mean_curve


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


def _header(meta: dict) -> list[str]:
    cmp = meta["compare"]
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
    return lines


def _setup(meta: dict) -> list[str]:
    cmp, ref, build = meta["compare"], meta["reference"], meta["build"]
    return [
        "",
        "## Setup",
        "",
        "- One SFT checkpoint and one reward model, built by `run_pipeline(until=\"rm\")` with seed "
        f"{meta['build_seed']} "
        f"(SFT {build['stage_wall_s']['sft']:.0f} s, labels {build['stage_wall_s']['labels']:.0f} s, RM "
        f"{build['stage_wall_s']['rm']:.0f} s when built; RM held-out pairwise accuracy "
        f"{build['rm_test_pairwise_accuracy']:.3f}; {build['label_pairs']} labelled training pairs). Every run below "
        "starts from that SFT model; every RL run optimises that RM through `RewardAdapter`.",
        f"- Budget per run: **{cmp['budget']} generated completions** (RL), counted as the rows the RM "
        "scored (DAPO's dynamic-sampling refills included; DAPO's `max_generated_completions` stops it before a step "
        "whose first round the rest of the budget cannot pay for, and caps a step's refills to it). DPO generates nothing: its budget is "
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
    ]


def _per_algorithm(meta: dict, summary: dict) -> list[str]:
    ref, per_algo = meta["reference"], summary["per_algorithm"]
    lines = [
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
    return lines


def _per_seed(summary: dict) -> list[str]:
    lines = [
        "## Per seed", "",
        "| algorithm | seed | oracle acc. | best acc. | RM score | gap | steps to thr. | completions to thr. | "
        "budget used | steps | train s | peak MiB | distinct answers |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary["per_run"]:
        to = lambda v: "not reached" if v is None else str(v)  # noqa: E731
        lines.append(
            f"| {r['algorithm']} | {r['seed']} | {r['accuracy']:.3f} | {r['best_accuracy']:.3f} | {r['rm_score']:.2f} "
            f"| {r['gap']:.2f} | {to(r['steps_to_threshold'])} | {to(r['completions_to_threshold'])} | {r['used']} "
            f"| {r['steps']} | {r['train_wall_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['distinct']} |"
        )
    return lines


def _dynamic_sampling(meta: dict) -> list[str]:
    """DAPO's totals next to the harness's count (empty without a dynamic-sampling run)."""
    ds = [m for m in meta["runs_meta"] if m.get("dynamic_sampling")]
    if not ds:
        return []
    lines = [
        "", "## DAPO's dynamic sampling (what it generated vs. what it trained on)", "",
        "| seed | groups generated | informative | trained | padded (cap) | dropped stale | left in pool | "
        "completions generated (trainer) | completions counted (harness) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in ds:
        t = m["dynamic_sampling"]
        lines.append(f"| {m['seed']} | {t['generated_groups']} | {t['informative']} | {t['trained']} | {t['padded']} | "
                     f"{t['dropped']} | {t['left_in_pool']} | {t['completions_generated']} | {m['used']} |")
    return lines


def _figures() -> list[str]:
    return [
        "", "## Figures", "",
        "![oracle accuracy vs generated completions](compare_accuracy.png)", "",
        "Oracle accuracy against budget spent (DPO: labelled pairs); line = mean over seeds, band = min to max.", "",
        "![proxy vs oracle](compare_proxy_vs_oracle.png)", "",
        "Left: learned-RM score against oracle accuracy, mean over seeds at each evaluation (circle = start, square "
        "= end). Right: the gap z(RM) − z(utility) against budget spent.", "",
        "Raw per-evaluation data: `compare.json`.",
    ]


def format_markdown(meta: dict, summary: dict) -> str:
    """compare.md: provenance, setup and definitions, the per-algorithm / per-seed tables, DAPO's totals, figures."""
    sections = (_header(meta), _setup(meta), _per_algorithm(meta, summary), _per_seed(summary), _dynamic_sampling(meta),
                _figures())
    return "\n".join(line for section in sections for line in section) + "\n"


def plot(runs: list[dict], meta: dict, results_dir: Path) -> None:
    """compare_accuracy.png and compare_proxy_vs_oracle.png in ``results_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algos = list(dict.fromkeys(r["algorithm"] for r in runs))
    colours = dict(zip(algos, plt.get_cmap("tab10").colors))
    _plot_accuracy(plt, runs, meta, algos, colours, results_dir)
    _plot_proxy_vs_oracle(plt, runs, algos, colours, results_dir)


def _plot_accuracy(plt, runs, meta, algos, colours, results_dir: Path) -> None:
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


def _plot_proxy_vs_oracle(plt, runs, algos, colours, results_dir: Path) -> None:
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
