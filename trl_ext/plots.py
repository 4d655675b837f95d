"""Figures from a trainer's ``log_history``: proxy vs gold reward (against steps and sqrt(KL)) and training curves.

The gold figure follows Gao et al. 2022 ("Scaling Laws for Reward Model Overoptimization", arXiv 2210.10760), who
plot the proxy and the gold reward against the square root of the KL from the initial policy: the proxy keeps rising
with sqrt(KL) while the gold reward peaks and falls once the policy over-optimises the proxy. The points come from
:class:`trl_ext.GoldRewardCallback`'s ``gold/*`` and ``proxy/*`` entries.

matplotlib is imported inside each function with the Agg backend (files only, no display), so importing this module
costs nothing and a machine without a display works.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

# What a training-curve figure shows, in this order, when the history has it: TRL's metric names, then the namespaces
# of trl_ext's trainers. A "prefix/" entry draws every key under it in one panel.
TRAINING_PANELS = (
    "loss", "reward", "kl", "entropy", "clip_ratio/", "dynamic_sampling/", "ppo/value_loss", "ppo/explained_variance",
    "mean_token_accuracy", "accuracy", "margin", "rewards/chosen", "rewards/margins",
)
# dynamic_sampling/* counts of groups share a panel; the fraction of informative groups is on another scale
_SEPARATE = {"dynamic_sampling/frac_informative"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def gold_points(log_history: Sequence[dict]) -> list[dict]:
    """The callback's evaluations in ``log_history``, one per step (a resumed run's history can repeat a step)."""
    by_step = {h["step"]: h for h in log_history if "gold/reward" in h and "proxy/reward" in h}
    return [by_step[s] for s in sorted(by_step)]


def plot_gold_curves(log_history: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """Proxy and gold reward against steps (left) and against sqrt(KL) (right, when the KL was logged).

    Proxy and gold have their own y axes: a reward model's score and an accuracy are on different scales. Returns
    the written path, or None when the history has no gold evaluations.
    """
    points = gold_points(log_history)
    if not points:
        return None
    plt = _pyplot()
    has_kl = all("gold/sqrt_kl" in p for p in points)
    fig, axes = plt.subplots(1, 2 if has_kl else 1, figsize=(10 if has_kl else 5.5, 3.8), squeeze=False)
    xs = [("step", [p["step"] for p in points])]
    if has_kl:
        xs.append(("sqrt(KL) from the reference", [p["gold/sqrt_kl"] for p in points]))
    proxy = [p["proxy/reward"] for p in points]
    gold = [p["gold/reward"] for p in points]
    for ax, (label, x) in zip(axes[0], xs):
        proxy_line, = ax.plot(x, proxy, "o-", color="tab:blue")
        ax.set_xlabel(label)
        ax.set_ylabel("proxy reward", color="tab:blue")
        ax.grid(alpha=0.3)
        twin = ax.twinx()
        gold_line, = twin.plot(x, gold, "s-", color="tab:red")
        twin.set_ylabel("gold reward", color="tab:red")
    fig.legend([proxy_line, gold_line], ["proxy (the trainer's reward)", "gold (held-out reward)"], loc="lower center",
               ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title or "proxy vs gold reward on held-out prompts")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_series(log_history: Sequence[dict]) -> dict[str, list[tuple[int, float]]]:
    """Every numeric metric of the training logs (not the callback's, not the end-of-training summary), by name."""
    series: dict[str, list[tuple[int, float]]] = {}
    for h in log_history:
        if "gold/reward" in h or "train_runtime" in h:
            continue
        for key, value in h.items():
            if key in ("step", "epoch") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            series.setdefault(key, []).append((h["step"], float(value)))
    return series


def plot_training_curves(log_history: Sequence[dict], path: str | Path, title: str = "") -> Path | None:
    """One panel per metric family of :data:`TRAINING_PANELS` that the history holds; None if it holds none."""
    series = training_series(log_history)
    panels: list[tuple[str, list[str]]] = []
    for entry in TRAINING_PANELS:
        if entry.endswith("/"):
            keys = sorted(k for k in series if k.startswith(entry) and k not in _SEPARATE)
            extra = sorted(k for k in series if k.startswith(entry) and k in _SEPARATE)
            panels += [(entry + "*", keys)] if keys else []
            panels += [(k, [k]) for k in extra]
        elif entry in series:
            panels.append((entry, [entry]))
    if not panels:
        return None
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, panels):
        for key in keys:
            steps, values = zip(*series[key])
            ax.plot(steps, values, ".-", label=key.split("/", 1)[-1] if len(keys) > 1 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title or "training curves")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
