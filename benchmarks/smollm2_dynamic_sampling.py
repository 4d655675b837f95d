"""Does dynamic sampling pay for itself? GRPO vs DAPO's dynamic sampling vs the cheaper one, on a real model, counted
in generated completions and wall-clock.

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/smollm2_dynamic_sampling.py --seeds 0 1 2   # hours on a CPU
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/smollm2_dynamic_sampling.py --smoke         # minutes, not a result
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/smollm2_dynamic_sampling.py --dropped_group_cost   # ~1 min
    # wider rounds (8 prompts x 8 a step), where the sized refill can draw fewer prompts than a round; own file:
    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/smollm2_dynamic_sampling.py --batch 64 \
        --results benchmarks/results/smollm2_dynamic_sampling_wide.json

What runs, per seed, from the same start (SmolLM2-135M-Instruct's weights, a fresh LoRA adapter seeded alike) with the
same hyper-parameters (``recipes/configs/smollm2-rlvr.yaml``'s RL settings: LoRA r 16, learning rate 2e-5, 2 prompts
x 8 answers a step, 16-token answers, the soft overlong penalty of that recipe) on the arithmetic task
(:class:`trl_ext.toy.ArithmeticTask`, checker :func:`trl_ext.toy.arithmetic_correct`), and the same budget of
generated completions (``--budget``), all three with :class:`trl_ext.DAPOTrainer` so only dynamic sampling differs:

* ``grpo``: ``dynamic_sampling=False``, ``max_steps = budget // generation_batch_size`` (every step generates one
  batch, so this is the same budget);
* ``dapo``: dynamic sampling as it was before the cheaper options (whole-batch refills), ``max_generated_completions``;
* ``dapo_cheaper``: + ``dynamic_sampling_skip_probability`` (GRESO-style skipping) + ``dynamic_sampling_sized_refill``.
  Dropped rows' log-prob forwards are not paid with ``beta=0`` (see docs/dynamic-sampling.md; ``--dropped_group_cost``
  measures what they cost where they are).

Every ``eval_every`` generated completions (``trl_ext.curves.CurveRecorder``; every method is evaluated at the same
counts, whatever its optimizer steps) the held-out accuracy of the checker, greedy and sampled (temperature 1, 2 samples, the same draw for every method at a given evaluation), against generated
completions and training wall-clock (evaluation time left out). The headline, per method and seed: the generated completions and the wall-clock it
needs to first reach GRPO's final greedy accuracy, as a ratio to GRPO's (whole budget and whole wall-clock): json keys
``seeds`` and per method ``generated_completions_ratio`` / ``wall_ratio`` with ``mean`` (None unless every seed
reached the target) and ``per_seed``. Also zero-advantage shares over training (TRL's ``frac_reward_zero_std``),
prompts skipped and refill rounds.

Each finished (method, seed) is written to ``benchmarks/results/smollm2_dynamic_sampling.json`` at once and skipped
by the next sitting, so the seeds can be spread over several sittings; ``.md`` and ``.png`` are rewritten each time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import git_state, machine_info  # noqa: E402
from stats import first_reaching, logged, mean_if_all  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = str(ROOT / "models" / "smollm2-135m-instruct")  # where `trl-ext convert-gguf smollm2` is told to write
MIN_SEEDS = 3  # the issue's goal is judged on at least this many seeds per method
METHODS = {
    "grpo": dict(dynamic_sampling=False),
    "dapo": dict(dynamic_sampling=True),
    "dapo_cheaper": dict(dynamic_sampling=True, dynamic_sampling_skip_probability=0.5,
                         dynamic_sampling_sized_refill=True),
}


@dataclass(frozen=True)
class Setting:
    """What every method shares; the RL settings are smollm2-rlvr.yaml's."""

    budget: int = 4800  # generated completions per run: 300 GRPO steps of 16
    batch: int = 16  # per_device_train_batch_size: 2 prompts x 8 answers
    num_generations: int = 8
    learning_rate: float = 2e-5
    max_completion_length: int = 16
    overlong_buffer_length: int = 4
    overlong_penalty_factor: float = 0.2
    max_refill_rounds: int = 4
    lora_r: int = 16
    lora_alpha: int = 32
    # 4800 completions = 600 groups: 150 prompts come back ~4 times (GRESO's skipping needs a prompt's history;
    # the recipe's 2000 would be seen once each). The same prompts for every method.
    num_prompts: int = 150
    eval_every: int = 600  # generated completions: 8 points on the budget, at the same counts for every method
    eval_per_level: int = 25  # held-out problems per level (4 levels)
    bf16: bool = False


SMOKE = Setting(budget=32, eval_every=16, eval_per_level=1, num_prompts=64, max_refill_rounds=1)


# ---- the headline (pure) -------------------------------------------------------------------------------------------
def cost_ratios(curve: list[dict], grpo: list[dict], key: str = "accuracy") -> dict:
    """What ``curve`` spends to first reach GRPO's final ``key``, over what GRPO spent in all (its last point).

    Curves are evaluation points ``{"generated", "wall_s", key}`` in order, from the shared start (generated 0),
    which does not count: reaching the target there is the start's doing. Returns ``generated_completions_ratio``
    and ``wall_ratio``, both None when the curve never reaches the target.
    """
    last = grpo[-1]
    i = first_reaching([(p["generated"], p[key]) for p in curve], last[key])
    if i is None:
        return {"generated_completions_ratio": None, "wall_ratio": None}
    return {"generated_completions_ratio": curve[i]["generated"] / last["generated"],
            "wall_ratio": curve[i]["wall_s"] / last["wall_s"]}


GOAL = {"method": "dapo_cheaper", "generated_completions_ratio": 0.7, "wall_ratio": 0.8}  # the issue's goal


def goal_verdict(summary: dict, goal: dict = GOAL) -> dict:
    """The goal, seed by seed: ``goal["method"]`` meets it on a seed when it reached GRPO's final there with both
    ratios at or under their bounds. ``met`` needs every recorded seed to meet it and at least MIN_SEEDS of them."""
    entry = summary.get("methods", {}).get(goal["method"])
    if entry is None:
        return {"method": goal["method"], "per_seed": {}, "seeds_met": 0, "seeds": 0, "met": False}
    bounds = {k: v for k, v in goal.items() if k != "method"}
    def within(name: str, seed: str) -> bool:  # None: GRPO's final never reached on that seed
        v = entry[name]["per_seed"][seed]
        return v is not None and v <= bounds[name] + 1e-12

    per_seed = {seed: all(within(name, seed) for name in bounds)
                for seed in entry["generated_completions_ratio"]["per_seed"]}
    met = sum(per_seed.values())
    return {"method": goal["method"], **{f"max_{k}": v for k, v in bounds.items()}, "per_seed": per_seed,
            "seeds_met": met, "seeds": len(per_seed), "met": len(per_seed) >= MIN_SEEDS and met == len(per_seed)}


def band(curves: list[list[dict]], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """Mean, min and max of ``key`` over seeds at each evaluation, against the (mean) generated completions there;
    the curves' common length only (every method is evaluated at the same counts)."""
    points = min((len(c) for c in curves), default=0)
    rows = [[c[k][key] for c in curves] for k in range(points)]
    return ([statistics.fmean(c[k]["generated"] for c in curves) for k in range(points)],
            [statistics.fmean(r) for r in rows], [min(r) for r in rows], [max(r) for r in rows])


def _mean_and_seeds(values: list[float | None], seeds: list[int]) -> dict:
    return {**mean_if_all(values), "per_seed": dict(zip(map(str, seeds), values, strict=True))}


def summarise(runs: list[dict]) -> dict:
    """Per method: the ratios to GRPO on the seeds GRPO and the method both finished, finals, and costs."""
    by = {(r["method"], r["seed"]): r for r in runs}
    seeds = sorted(s for (m, s) in by if m == "grpo")
    out = {"seeds": seeds, "methods": {}}
    for method in METHODS:
        ms = [s for s in seeds if (method, s) in by]
        if not ms:
            continue
        rs = [by[(method, s)] for s in ms]
        ratios = [cost_ratios(by[(method, s)]["curve"], by[("grpo", s)]["curve"]) for s in ms]
        entry = {name: _mean_and_seeds([r[name] for r in ratios], ms)
                 for name in ("generated_completions_ratio", "wall_ratio")}
        for key in ("accuracy", "sampled_accuracy"):
            entry[f"final_{key}"] = _mean_and_seeds([r["curve"][-1][key] for r in rs], ms)
            entry[f"start_{key}"] = statistics.fmean(r["curve"][0][key] for r in rs)
        entry["generated_completions"] = _mean_and_seeds([r["curve"][-1]["generated"] for r in rs], ms)
        entry["train_wall_s"] = _mean_and_seeds([r["curve"][-1]["wall_s"] for r in rs], ms)
        entry["no_signal_share"] = _mean_and_seeds([no_signal_share(r) for r in rs], ms)
        entry["frac_reward_zero_std"] = _mean_and_seeds([_mean_logged(r, "frac_reward_zero_std") for r in rs], ms)
        entry["skipped_prompts"] = _mean_and_seeds([r["totals"].get("skipped_prompts", 0) for r in rs], ms)
        entry["optimizer_steps"] = _mean_and_seeds([r["curve"][-1]["step"] for r in rs], ms)
        entry["padded_groups"] = _mean_and_seeds([r["totals"].get("padded", 0) for r in rs], ms)
        entry["refill_rounds"] = _mean_and_seeds([sum(h.get("dynamic_sampling/refill_rounds", 0) for h in r["logs"])
                                                  for r in rs], ms)
        out["methods"][method] = entry
    return out


def group_counts(run: dict) -> list[tuple[int, float]]:
    """Per optimizer step: (groups generated, groups whose rewards did not vary), from the step's logs. Without
    dynamic sampling a step generates one batch and TRL's ``frac_reward_zero_std`` is that batch's share; with it,
    TRL's share is taken after the filter, so the generated groups and the kept ones come from ``dynamic_sampling/*``.
    """
    per_step = run["setting"]["batch"] // run["setting"]["num_generations"]
    out = []
    for row in run["logs"]:
        if "dynamic_sampling/generated_groups" in row:
            generated = round(row["dynamic_sampling/generated_groups"])
            out.append((generated, generated - round(row["dynamic_sampling/kept_groups"])))
        elif "frac_reward_zero_std" in row:
            out.append((per_step, row["frac_reward_zero_std"] * per_step))
    return out


def no_signal_share(run: dict) -> float | None:
    """Share of all the groups a run generated whose rewards did not vary (what dynamic sampling throws away)."""
    counts = group_counts(run)
    generated = sum(g for g, _ in counts)
    return sum(z for _, z in counts) / generated if generated else None


def no_signal_curve(run: dict, every: int) -> list[tuple[int, float]]:
    """(generated completions at a bin's end, share of the bin's groups without signal), in bins of ``every``
    generated completions: the zero-advantage share over training, on the same axis for every method."""
    G, out, done, bin_g, bin_z = run["setting"]["num_generations"], [], 0, 0, 0
    for generated, zero in group_counts(run):
        done, bin_g, bin_z = done + generated * G, bin_g + generated, bin_z + zero
        if bin_g * G >= every:
            out.append((done, bin_z / bin_g))
            bin_g = bin_z = 0
    if bin_g:
        out.append((done, bin_z / bin_g))
    return out


def skipped_curve(run: dict) -> list[tuple[int, int]]:
    """(generated completions so far, prompts skipped so far) after each logged step of a dynamic-sampling run."""
    G, done, total, out = run["setting"]["num_generations"], 0, 0, []
    for row in run["logs"]:
        if "dynamic_sampling/generated_groups" in row:
            done += round(row["dynamic_sampling/generated_groups"]) * G
            total += round(row.get("dynamic_sampling/skipped_prompts", 0))
            out.append((done, total))
    return out


def _mean_logged(run: dict, key: str) -> float | None:
    values = [v for _, v in logged(run, key)]
    return statistics.fmean(values) if values else None


# ---- one run -------------------------------------------------------------------------------------------------------
def run_one(method: str, seed: int, s: Setting, model_path: str, workdir: Path) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed

    from trl_ext import DAPOConfig, DAPOTrainer
    from trl_ext.curves import CurveRecorder
    from trl_ext.evaluation import oracle_accuracy, sample_completions
    from trl_ext.toy import ArithmeticTask, arithmetic_correct

    task = ArithmeticTask(eval_per_level=s.eval_per_level)
    fields = METHODS[method]
    budget = dict(max_generated_completions=s.budget, max_steps=10 * s.budget // s.batch) if fields[
        "dynamic_sampling"] else dict(max_steps=s.budget // s.batch)
    args = DAPOConfig(
        output_dir=str(workdir / f"{method}-s{seed}"), seed=seed, per_device_train_batch_size=s.batch,
        num_generations=s.num_generations, learning_rate=s.learning_rate, max_completion_length=s.max_completion_length,
        temperature=1.0, overlong_buffer_length=s.overlong_buffer_length,
        overlong_penalty_factor=s.overlong_penalty_factor, dynamic_sampling_max_refill_rounds=s.max_refill_rounds,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not torch.cuda.is_available(),
        bf16=s.bf16, gradient_checkpointing=False, **budget, **fields,
    )
    set_seed(seed)  # the same LoRA initialisation for every method of a seed
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    trainer = DAPOTrainer(
        AutoModelForCausalLM.from_pretrained(model_path), [arithmetic_correct], args=args,
        train_dataset=task.prompt_dataset(s.num_prompts, seed=seed), processing_class=tokenizer,
        peft_config=LoraConfig(r=s.lora_r, lora_alpha=s.lora_alpha, target_modules="all-linear",
                               task_type="CAUSAL_LM"),
    )
    held_out = task.eval_dataset()
    prompts, columns = held_out["prompt"], {"answer": held_out["answer"]}

    def evaluate(model, step: int) -> dict:
        greedy = sample_completions(model, tokenizer, prompts, temperature=0.0, max_new_tokens=s.max_completion_length)
        sampled = sample_completions(model, tokenizer, prompts, num_samples=2, temperature=1.0,
                                     max_new_tokens=s.max_completion_length, seed=10_000 + step)
        point = {"accuracy": oracle_accuracy(prompts, greedy, arithmetic_correct, columns),
                 "sampled_accuracy": oracle_accuracy(prompts, sampled, arithmetic_correct, columns)}
        print(f"{method} s{seed} step {step} {point}", flush=True)
        return point

    recorder = CurveRecorder(trainer, evaluate, eval_completions=s.eval_every)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(recorder)
    trainer.train()
    return {"method": method, "seed": seed, "curve": recorder.curve, "logs": recorder.logs,
            "totals": dict(trainer.dynamic_sampling_totals), "setting": asdict(s), "git": git_state(),
            "machine": machine_info()}


def check_same_setting(runs: list[dict], setting: Setting, path: Path) -> None:
    """Refuse to add a run to a results file whose runs used another setting: the ratios compare like with like."""
    ours = asdict(setting)
    for run in runs:
        differ = sorted(k for k in ours if run["setting"].get(k) != ours[k])
        if differ:
            theirs = ", ".join(f"{k}={run['setting'].get(k)}" for k in differ)
            mine = ", ".join(f"{k}={ours[k]}" for k in differ)
            raise SystemExit(f"{path} holds runs with another setting ({theirs}; this invocation: {mine}). Give "
                             "--results a new file for this setting, or the same --budget/--batch as the file's runs.")


# ---- what a dropped group pays besides its generation ------------------------------------------------------------
def dropped_group_cost(model_path: str, num_groups: int = 8, G: int = 8, T: int = 16) -> dict:
    """Seconds to generate one group of ``G`` completions of ``T`` tokens, and to run on it the no-grad log-prob
    forward TRL 1.16 runs on every row before rewards exist (reference with ``beta != 0``, old policy when steps are
    misaligned); the mean over ``num_groups`` arithmetic prompts after one warm-up."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_ext.toy import ArithmeticTask

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    generate_s, forward_s = [], []
    for row in ArithmeticTask().prompt_dataset(num_groups + 1, seed=0):
        text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        encoded = tokenizer([text] * G, return_tensors="pt")
        with torch.no_grad():
            t0 = time.perf_counter()
            ids = model.generate(**encoded, do_sample=True, max_new_tokens=T, min_new_tokens=T,
                                 pad_token_id=tokenizer.pad_token_id)  # (G, P + T)
            t1 = time.perf_counter()
            logits = model(input_ids=ids, logits_to_keep=T + 1).logits[:, :-1]  # (G, T, V)
            torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, -T:].unsqueeze(-1))  # (G, T, 1)
            t2 = time.perf_counter()
        generate_s.append(t1 - t0)
        forward_s.append(t2 - t1)
    generate, forward = statistics.fmean(generate_s[1:]), statistics.fmean(forward_s[1:])
    return {"prompt_tokens": encoded["input_ids"].shape[1], "completion_tokens": T, "num_generations": G,
            "generate_s": generate, "logprob_forward_s": forward, "forward_over_generate": forward / generate}


# ---- reporting -----------------------------------------------------------------------------------------------------
def _fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def markdown(result: dict) -> str:
    summary = result["summary"]
    lines = ["# Dynamic sampling that pays for itself: SmolLM2-135M-Instruct, arithmetic", "",
             "`python benchmarks/smollm2_dynamic_sampling.py --seeds 0 1 2` (each (method, seed) is written when it "
             "ends and skipped by the next invocation, so it may run as several; the last was "
             f"`{result['command']}`)", "",
             "Ratios: generated completions / wall-clock a method needs to first reach GRPO's final greedy held-out "
             "accuracy, over GRPO's whole run (n/a: not reached; mean only when every seed reached it).", "",
             "Each row: means over the method's seeds. Evaluations every "
             f"{result['runs'][0]['setting']['eval_every'] if result['runs'] else '?'} generated completions, so a "
             "ratio moves in steps of that over the budget.", "",
             "Groups without signal: share of all generated groups whose rewards did not vary (dynamic sampling "
             "drops them; GRPO trains on them with zero advantage).", "",
             "| method | completions ratio (mean; per seed) | wall ratio (mean; per seed) | final greedy | final sampled "
             "| groups without signal | skipped prompts | refill rounds | filler groups | optimizer steps | "
             "training wall-clock (s) |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, e in summary.get("methods", {}).items():
        def per(name, e=e):
            return f"{_fmt(e[name]['mean'])}; " + ", ".join(_fmt(v) for v in e[name]["per_seed"].values())
        lines.append(f"| {method} | {per('generated_completions_ratio')} | {per('wall_ratio')} | "
                     f"{_fmt(e['final_accuracy']['mean'])} | {_fmt(e['final_sampled_accuracy']['mean'])} | "
                     f"{_fmt(e['no_signal_share']['mean'])} | {_fmt(e['skipped_prompts']['mean'], '.1f')} | "
                     f"{_fmt(e['refill_rounds']['mean'], '.1f')} | {_fmt(e['padded_groups']['mean'], '.1f')} | "
                     f"{_fmt(e['optimizer_steps']['mean'], '.1f')} | {_fmt(e['train_wall_s']['mean'], '.0f')} |")
    g = goal_verdict(summary)
    if g["seeds"]:
        lines += ["", f"Goal: {g['method']} at <= {g['max_generated_completions_ratio']}x GRPO's generated completions "
                  f"and <= {g['max_wall_ratio']}x its wall-clock, on every one of >= {MIN_SEEDS} seeds: "
                  f"**{'met' if g['met'] else 'not met'}** (met on {g['seeds_met']} of {g['seeds']} seeds: "
                  + ", ".join(f"seed {k} {'yes' if v else 'no'}" for k, v in g["per_seed"].items()) + ")."]
    runs = result["runs"]
    lines += ["", *curve_table(runs)]
    recorded = {m: sorted(r["seed"] for r in runs if r["method"] == m) for m in METHODS}
    if any(len(v) < MIN_SEEDS for v in recorded.values()):
        lines += ["", f"**PARTIAL**: the goal is judged on >= {MIN_SEEDS} seeds per method; recorded so far: "
                  + ", ".join(f"{m} seeds {v}" for m, v in recorded.items())
                  + ". The rest run at later sittings (finished runs are kept)."]
    if runs:
        r = runs[-1]
        lines += ["", f"Seeds {summary.get('seeds')}; commit {r['git']['commit'][:10]}"
                  f"{' (dirty)' if r['git']['dirty'] else ''}; {r['machine']['cpu']}, {r['machine']['cores']} cores.",
                  "", "![curves](smollm2_dynamic_sampling.png)", ""]
    return "\n".join(lines)


def curve_table(runs: list[dict]) -> list[str]:
    """The k-th evaluation of every method side by side: mean over seeds of greedy / sampled accuracy and of the
    training wall-clock there (methods are evaluated at the same generated-completion counts)."""
    by_method = {m: [r["curve"] for r in runs if r["method"] == m] for m in METHODS}
    by_method = {m: c for m, c in by_method.items() if c}
    if not by_method:
        return []
    points = min(len(c) for curves in by_method.values() for c in curves)
    means = {m: {key: band(curves, key)[1] for key in ("accuracy", "sampled_accuracy", "wall_s")}
             for m, curves in by_method.items()}
    generated = band([c for curves in by_method.values() for c in curves], "generated")[1]
    lines = ["Held-out accuracy at each evaluation, greedy / sampled (training wall-clock, s), mean over seeds:", "",
             "| generated completions | " + " | ".join(by_method) + " |", "|---:|" + "---|" * len(by_method)]
    for k in range(points):
        cells = [f"{m['accuracy'][k]:.3f} / {m['sampled_accuracy'][k]:.3f} ({m['wall_s'][k]:.0f})"
                 for m in means.values()]
        lines.append(f"| {generated[k]:.0f} | " + " | ".join(cells) + " |")
    return lines


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 2, figsize=(11, 12))
    colours = dict(zip(METHODS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    first_seed = min(result["summary"]["seeds"] or [0])
    for run in result["runs"]:
        every = run["setting"]["eval_every"]
        share = no_signal_curve(run, every)
        axes[2][0].plot([g for g, _ in share], [z for _, z in share], color=colours[run["method"]], alpha=0.6,
                        label=run["method"] if run["seed"] == first_seed else None)
        skipped = skipped_curve(run)
        if skipped and skipped[-1][1]:
            axes[2][1].plot([g for g, _ in skipped], [k for _, k in skipped], color=colours[run["method"]],
                            alpha=0.6, label=run["method"] if run["seed"] == first_seed else None)
    axes[2][0].set_xlabel("generated completions")
    axes[2][0].set_ylabel(f"groups without signal (share, per {every} completions)")
    axes[2][1].set_xlabel("generated completions")
    axes[2][1].set_ylabel("prompts skipped before generating (cumulative)")
    for row, key in enumerate(("accuracy", "sampled_accuracy")):
        # against completions (the same counts for every run): the mean over seeds, the band their min to max
        for method in METHODS:
            curves = [r["curve"] for r in result["runs"] if r["method"] == method]
            if not curves:
                continue
            x, mean, lo, hi = band(curves, key)
            axes[row][0].plot(x, mean, color=colours[method], linewidth=2,
                              label=f"{method} (mean of {len(curves)}, band min-max)")
            axes[row][0].fill_between(x, lo, hi, color=colours[method], alpha=0.15)
        # against wall-clock (each run its own times): one line per (method, seed)
        for run in result["runs"]:
            axes[row][1].plot([p["wall_s"] for p in run["curve"]], [p[key] for p in run["curve"]],
                              color=colours[run["method"]], alpha=0.6,
                              label=run["method"] if run["seed"] == first_seed else None)
        for col in (0, 1):
            axes[row][col].set_xlabel("generated completions" if col == 0 else "training wall-clock (s)")
            axes[row][col].set_ylabel(f"held-out {'greedy' if key == 'accuracy' else 'sampled'} accuracy")
    grpo_finals = [r["curve"][-1]["accuracy"] for r in result["runs"] if r["method"] == "grpo"]
    if grpo_finals:  # the headline's target: each seed's own GRPO final (the mean drawn)
        for col in (0, 1):
            axes[0][col].axhline(statistics.fmean(grpo_finals), color="grey", linestyle="--", linewidth=1,
                                 label="GRPO's final (mean)" if col == 0 else None)
    for ax in (axes[0][0], axes[0][1], axes[2][0], axes[2][1]):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.suptitle("left column of accuracy: mean over seeds with min-max band; the rest: one line per (method, seed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(result: dict, path: Path) -> None:
    result["summary"] = summarise(result["runs"])
    result["seeds"] = result["summary"]["seeds"]
    result["goal"] = goal_verdict(result["summary"])
    for method, e in result["summary"]["methods"].items():
        result[method] = {k: e[k] for k in ("generated_completions_ratio", "wall_ratio")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    path.with_suffix(".md").write_text(markdown(result))
    if result["runs"]:
        plot(result, path.with_suffix(".png"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--budget", type=int, default=None, help="generated completions per run")
    parser.add_argument("--batch", type=int, default=None,
                        help="completions a step (prompts x num_generations; default 16). Wider rounds are where "
                        "dynamic_sampling_sized_refill can differ from whole-round refills; give them their own "
                        "--results file (a file holds one setting)")
    parser.add_argument("--smoke", action="store_true", help="a tiny budget, 1 seed, results under /tmp")
    parser.add_argument("--workdir", default="runs/smollm2_dynamic_sampling")
    parser.add_argument("--results", default="benchmarks/results/smollm2_dynamic_sampling.json")
    parser.add_argument("--dropped_group_cost", action="store_true",
                        help="only measure what a dropped group's log-prob forward costs against generating it")
    args = parser.parse_args(argv)
    if args.dropped_group_cost:
        print(json.dumps({**dropped_group_cost(args.model), "machine": machine_info()}, indent=1))
        return 0
    setting = SMOKE if args.smoke else Setting()
    overrides = {k: v for k, v in (("budget", args.budget), ("batch", args.batch)) if v is not None}
    setting = Setting(**{**asdict(setting), **overrides})
    path = Path("/tmp/smollm2_dynamic_sampling_smoke.json") if args.smoke else ROOT / args.results
    seeds = args.seeds[:1] if args.smoke else args.seeds
    if args.smoke:  # a check that the script runs, never a result to resume
        path.unlink(missing_ok=True)
    result = json.loads(path.read_text()) if path.exists() else {"runs": []}
    check_same_setting(result["runs"], setting, path)
    result["command"] = "python benchmarks/smollm2_dynamic_sampling.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    for seed in seeds:
        for method in args.methods:
            if any(r["method"] == method and r["seed"] == seed for r in result["runs"]):
                print(f"{method} seed {seed}: recorded, skipped", flush=True)
                continue
            run = run_one(method, seed, setting, args.model, ROOT / args.workdir)
            result["runs"].append(run)
            write(result, path)  # at once: a later sitting skips it
    write(result, path)
    print(path.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
