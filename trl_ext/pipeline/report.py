"""``report.json`` and ``report.md``: the stages' headline numbers, tables and training curves."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import PipelineConfig

logger = logging.getLogger("trl_ext.pipeline")


def build_report(cfg: PipelineConfig, infos: dict[str, dict]) -> dict:
    report = {
        "output_dir": cfg.output_dir,
        "algorithm": cfg.algorithm,
        "seed": cfg.seed,
        "wall_time_s": {name: info["wall_time_s"] for name, info in infos.items()},
    }
    if cfg.reward_route != "model":
        report["reward"] = cfg.reward_route  # written only off the default route (the learned RM)
    if "rm" in infos:
        report["rm_test_pairwise_accuracy"] = infos["rm"]["metrics"]["test_pairwise_accuracy"]
    rl = infos.get("rl", {}).get("metrics", {})
    if rl.get("frac_reward_zero_std_first") is not None:
        report["rl_frac_reward_zero_std"] = {
            "first": rl["frac_reward_zero_std_first"], "last": rl["frac_reward_zero_std_last"]
        }
    if rl.get("dropped_groups_first") is not None:  # DAPO's dynamic sampling: TRL's share is taken after the filter
        report["rl_dropped_groups"] = {"first": rl["dropped_groups_first"], "last": rl["dropped_groups_last"]}
    if "eval" in infos:
        report["models"] = infos["eval"]["metrics"]
        names = getattr(cfg.task, "level_names", None) if cfg.uses_embedded_task else None
        if names:  # the by-level tables' keys are the level indexes
            report["level_names"] = {str(i): name for i, name in enumerate(names)}
    return report


def format_report(report: dict) -> str:
    lines = [f"# trl_ext pipeline report ({report['algorithm']}, seed {report['seed']})", ""]
    if "models" in report:
        columns = [
            ("oracle_accuracy_greedy", "oracle accuracy (greedy)"),
            ("oracle_accuracy_sampled", "oracle accuracy (sampled)"),
            ("rm_score_sampled", "mean RM score (sampled)"),
        ]
        lines += ["| model | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---:|" * len(columns)]
        for name, row in report["models"].items():
            cells = ["n/a" if row.get(key) is None else f"{row[key]:.3f}" for key, _ in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _format_by_level(report["models"], report.get("level_names", {}))
        lines += _format_reward_funcs(report["models"])
    if "rm_test_pairwise_accuracy" in report:
        lines += [f"Reward model held-out pairwise accuracy: {report['rm_test_pairwise_accuracy']:.3f}", ""]
    if "rl_frac_reward_zero_std" in report:
        z = report["rl_frac_reward_zero_std"]
        lines += [f"RL groups with zero reward spread (zero advantage), first / last logged: {z['first']:.3f} / "
                  f"{z['last']:.3f}", ""]
    if "rl_dropped_groups" in report:
        z = report["rl_dropped_groups"]
        lines += [f"RL generated groups with zero reward spread, dropped by dynamic sampling (1 - "
                  f"dynamic_sampling/frac_informative), first / last logged: {z['first']:.3f} / {z['last']:.3f}", ""]
    lines += ["| stage | wall time (s) |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["wall_time_s"].items()]
    lines.append(f"| total | {sum(report['wall_time_s'].values()):.1f} |")
    return "\n".join(lines) + "\n"


def _format_by_level(models: dict, names: dict[str, str]) -> list[str]:
    """Oracle accuracy per difficulty level, greedy / sampled, one column per level (tasks with levels only), headed
    by the task's level names where the report has them."""
    levels = sorted({lv for row in models.values() for lv in row.get("oracle_accuracy_greedy_by_level", {})}, key=int)
    if not levels:
        return []
    lines = ["Oracle accuracy per difficulty level (greedy / sampled):", "",
             "| model | " + " | ".join(names.get(lv, f"level {lv}") for lv in levels) + " |", "|---|" + "---:|" * len(levels)]
    for name, row in models.items():
        g, s = row.get("oracle_accuracy_greedy_by_level", {}), row.get("oracle_accuracy_sampled_by_level", {})
        cells = [f"{g[lv]:.3f} / {s[lv]:.3f}" if lv in g else "n/a" for lv in levels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _format_reward_funcs(models: dict) -> list[str]:
    """Each reward function's mean on the held-out prompts, greedy / sampled."""
    names = list(dict.fromkeys(n for row in models.values() for n in row.get("reward_funcs_greedy", {})))
    if not names:
        return []
    lines = ["Mean of each reward function (greedy / sampled):", "",
             "| model | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---:|" * len(names)]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for name, row in models.items():
        g, s = row.get("reward_funcs_greedy", {}), row.get("reward_funcs_sampled", {})
        lines.append(f"| {name} | " + " | ".join(f"{fmt(g.get(n))} / {fmt(s.get(n))}" for n in names) + " |")
    return lines + [""]


def format_figures(run_dir: Path, stages: list[str]) -> str:
    """PNGs of every trained stage's ``log_history.json`` (and the RL stage's proxy-vs-gold curves) under
    ``run_dir/figures``, as a markdown section; empty when there is nothing to plot or matplotlib is missing."""
    try:
        from ..plots import plot_gold_curves, plot_training_curves
    except ImportError:  # pragma: no cover - matplotlib is in the bench extra, which make pipeline installs
        return ""
    lines = []
    for name in stages:
        path = run_dir / name / "log_history.json"
        if not path.exists():
            continue
        try:
            history = json.loads(path.read_text())
            gold = plot_gold_curves(history, run_dir / "figures" / f"{name}_gold.png", f"{name}: proxy (RM) vs gold (oracle)")
            curves = plot_training_curves(history, run_dir / "figures" / f"{name}_training.png", f"{name} training")
        except ImportError:
            logger.warning("report.md without figures: pip install matplotlib")
            return ""
        if gold is not None:
            lines += [f"![{name}: proxy vs gold reward](figures/{gold.name})", ""]
        if curves is not None:
            lines += [f"![{name} training curves](figures/{curves.name})", ""]
    return ("\n## Curves\n\n" + "\n".join(lines)) if lines else ""
