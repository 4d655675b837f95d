"""The GPU kit's report: fit table, goals and ratios as markdown, every run as JSON, the fit chart as PNG.

Written by benchmarks/gpu_memory.py from its runs (or, with ``--dry_run``, from its plan with every cell "not
measured"). Definitions, so the numbers can be checked by hand from the JSON:

* need = peak reserved + the CUDA context measured once on the card (what the process holds on the card); a card of
  G GB fits a run when need <= G GiB. On CPU (``--smoke``) need is the peak RSS delta and the card columns mean
  nothing (tiny shapes).
* step time = the median of the optimizer steps after the first (the first holds warm-up: kernel selection, caches);
  with one step, that step.
* DAPO (dynamic sampling off) / GRPO = step time of ``dapo_off`` / step time of ``grpo``, per pair run alone on the
  device; PPO shared / GRPO = peak allocated of ``ppo_shared`` / of ``grpo`` in the same shape and setting;
  RewardAdapter / TRL = peak allocated *during the scoring call* (above what was allocated before it) of
  ``adapter_bs16`` / ``trl_one_shot``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import gpu_shapes

CARDS_GIB = (8, 12, 16, 24)
GOALS = {"dapo_1.5b_nf4_gib": 8.0, "dapo_off_over_grpo": 1.02, "ppo_shared_over_grpo": 1.3}
TRAINER_NOTES = {
    "dapo": "trl_ext DAPOTrainer, dynamic sampling on",
    "grpo": "TRL GRPOTrainer",
    "rloo": "trl_ext RLOOTrainer",
    "ppo_shared": "trl_ext PPOTrainer, policy + critic + RM adapters on one base, reference = adapters off",
    "ppo_separate": "trl_ext PPOTrainer, separate RM (setting's precision) and full-parameter bf16 critic",
    "rm": "TRL RewardTrainer, LoRA (SEQ_CLS)",
    "dapo_off": "DAPOTrainer with dynamic sampling, overlong shaping and clip-higher off (GRPO's math)",
}
SETTING_NAMES = gpu_shapes.SETTINGS


# ---- numbers from runs -----------------------------------------------------------------------------------------------
def need_mib(r: dict, meta: dict) -> float | None:
    if r.get("status") != "ok":
        return None
    if meta["mode"] == "gpu":
        return r["peak_reserved_mib"] + meta["env"]["context_mib"]
    return r["peak_rss_mib"]


def peak_mib(r: dict | None) -> float | None:
    """The peak compared in ratios: allocated on CUDA, RSS delta on CPU, the scoring call's own peak for scores."""
    if not r or r.get("status") != "ok":
        return None
    return r.get("peak_mib", r.get("peak_alloc_mib", r.get("peak_rss_mib")))


def card(r: dict, meta: dict) -> str:
    """The smallest card size of CARDS_GIB the run fits, or why there is none."""
    status = r.get("status")
    if meta["mode"] == "smoke" and status == "ok":
        return "n/a (CPU)"
    if status == "oom":
        cap = meta.get("cap_gib")
        return f"> {CARDS_GIB[-1]} GB (OOM at the {cap:.0f} GiB cap)" if cap and cap >= CARDS_GIB[-1] else "OOM"
    if status != "ok":
        return status or "?"
    need = need_mib(r, meta) / 1024
    return next((f"{g} GB" for g in CARDS_GIB if need <= g), f"> {CARDS_GIB[-1]} GB")


def step_time(r: dict | None) -> float | None:
    if not r or r.get("status") != "ok" or not r.get("step_s"):
        return None
    steps = r["step_s"][1:] or r["step_s"]
    return statistics.median(steps)


def find(results: list[dict], **key) -> dict | None:
    for r in results:
        if all(r.get(k) == v for k, v in key.items()):
            return r
    return None


def fit_row(results: list[dict], arch: str, setting: str, trainer: str) -> dict | None:
    """The fit run of a cell, else a ratio run of the same cell (the plan runs those instead of a duplicate)."""
    return find(results, arch=arch, setting=setting, trainer=trainer, role="fit") or find(
        results, arch=arch, setting=setting, trainer=trainer, role="ratio")


def cells(results: list[dict]) -> list[tuple[str, str]]:
    """(shape, trainer) rows of the fit table, in ARCHS and TRAINER_NOTES order (``dapo_off`` only feeds a ratio)."""
    present = {(r["arch"], r["trainer"]) for r in results if r.get("kind") == "train" and r["trainer"] != "dapo_off"}
    return [(a, t) for a in gpu_shapes.ARCHS for t in TRAINER_NOTES if (a, t) in present]


def ratios(results: list[dict], meta: dict) -> dict:
    out = {"dapo_off_over_grpo": [], "ppo_shared_over_grpo": [], "adapter_over_trl": []}
    for pair in sorted({r["pair"] for r in results if r.get("role") == "ratio"}):
        dapo, grpo = (step_time(find(results, role="ratio", pair=pair, trainer=t)) for t in ("dapo_off", "grpo"))
        out["dapo_off_over_grpo"].append({"pair": pair, "dapo_off_s": dapo, "grpo_s": grpo,
                                          "ratio": dapo / grpo if dapo and grpo else None})
    for arch in dict.fromkeys(r["arch"] for r in results if r.get("kind") == "train"):
        for setting in SETTING_NAMES:
            ppo_run, grpo_run = fit_row(results, arch, setting, "ppo_shared"), fit_row(results, arch, setting, "grpo")
            ppo, grpo = peak_mib(ppo_run), peak_mib(grpo_run)
            if ppo_run and grpo_run:
                out["ppo_shared_over_grpo"].append({"arch": arch, "setting": setting, "ppo_shared_mib": ppo,
                                                    "grpo_mib": grpo, "ratio": ppo / grpo if ppo and grpo else None})
    for n in sorted({r["n"] for r in results if r.get("kind") == "score"}):
        a, t = (find(results, kind="score", n=n, method=m) for m in ("adapter_bs16", "trl_one_shot"))
        pa, pt = peak_mib(a), peak_mib(t)
        row = {"n": n, "adapter_mib": pa, "trl_mib": pt, "trl_status": t.get("status") if t else None,
               "ratio": pa / pt if pa is not None and pt else None}
        if row["trl_status"] == "oom" and pa is not None and meta.get("cap_gib"):  # TRL needed more than the cap
            row["ratio_below"] = pa / (meta["cap_gib"] * 1024)
        out["adapter_over_trl"].append(row)
    return out


# ---- output ----------------------------------------------------------------------------------------------------------
def progress_line(r: dict) -> str:
    if r.get("status") != "ok":
        return f"{r['id']}: {r.get('status')} {r.get('error', '')[:300]}"
    if r["kind"] == "build":
        return f"{r['id']}: {r['params_m']:.0f}M parameters at {r['base']}"
    if r["kind"] == "score":
        return f"{r['id']}: {r['peak_mib']:.0f} MiB during scoring, {r['time_s']:.2f} s"
    mem = r.get("peak_alloc_mib", r.get("peak_rss_mib"))
    tps = r.get("gen_tokens_per_s")
    return (f"{r['id']}: peak {mem:.0f} MiB, step {step_time(r):.2f} s"
            + (f", {tps:.0f} generated tokens/s" if tps else "") + f" ({r['wall_s']:.0f} s)")


def _fmt(x, spec=".2f", none="—"):
    return none if x is None else format(x, spec)


def write(results: list[dict], meta: dict, out_dir: Path, stem: str, write_data: bool = True) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = ratios(results, meta)
    (out_dir / f"{stem}.md").write_text(markdown(results, meta, summary))
    if write_data:
        payload = {"meta": meta, "ratios": summary, "runs": results}
        (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
        chart(results, meta, out_dir / f"{stem}.png")


def _header(meta: dict) -> list[str]:
    mode = meta["mode"]
    if mode == "not measured":
        return [f"**Not measured ({meta['reason']}).** This is the table the kit fills in: every shape, trainer and "
                "setting it runs, at the settings listed below. Nothing in it is a measurement.", "",
                f"Written by: `{meta['command']}`"]
    env = meta["env"]
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "transformers", "trl", "peft", "accelerate",
                                                   "bitsandbytes", "datasets") if env.get(k))
    lines = [f"Command: `{meta['command']}` (commit {env.get('commit') or 'unknown'})  "]
    if mode == "gpu":
        lines += [f"Card: **{env['card']}** ({env['total_mib'] / 1024:.0f} GiB, compute capability "
                  f"{env['capability']}), driver {env.get('driver') or 'unknown'}, CUDA {env['cuda']}; CUDA context "
                  f"{env['context_mib']:.0f} MiB.  ",
                  f"Runs: {meta['jobs']} at a time, each capped at {meta['cap_gib']:.1f} GiB "
                  f"(`set_per_process_memory_fraction`), {meta['threads_per_run']} CPU threads each; budget "
                  f"{meta['budget_s']:.0f} s, elapsed {meta['elapsed_s']:.0f} s.  "]
    else:
        lines += ["**Smoke run: CPU, tiny shapes of the same architectures** (width "
                  f"{gpu_shapes.SMOKE_SHAPE['hidden_size']}, {gpu_shapes.SMOKE_SHAPE['num_hidden_layers']} layers, "
                  f"vocabulary {gpu_shapes.SMOKE_SHAPE['vocab_size']}; batch, group and lengths of "
                  "`gpu_shapes.SMOKE_SETTINGS`). Memory is **process RSS** (peak resident set size minus the size "
                  "after the fork), not VRAM; the card columns and goals mean nothing here. This run checks that the "
                  "kit works, not what fits.  ",
                  f"CPU: {env.get('cpu')}; elapsed {meta['elapsed_s']:.0f} s.  "]
    return lines + [f"Versions: Python {env['python']}, {versions}."]


def markdown(results: list[dict], meta: dict, summary: dict) -> str:
    lines = ["# Single-GPU fit table: every trainer on real architecture shapes (random weights)", ""]
    lines += [*_header(meta), ""]
    lines += _goal_rows(results, meta, summary)
    lines += _fit_rows(results, meta)
    scores = sorted((r for r in results if r.get("kind") == "score"), key=lambda r: (r["n"], r["method"]))
    if scores:
        lines += ["## Reward-model scoring", "",
                  "| completions | method | peak during the call (MiB) | time (s) | status |",
                  "|---:|---|---:|---:|---|"]
        lines += [f"| {r['n']} | {r['method']} | {_fmt(r.get('peak_mib'), '.0f')} | {_fmt(r.get('time_s'))} | "
                  f"{r.get('status')} |" for r in scores]
        lines.append("")
    lines += _settings_rows(results, meta)
    failed = [r for r in results if r.get("status") not in ("ok", "not measured")]
    if failed:
        lines += ["## Runs without a measurement", "", "| run | status | why |", "|---|---|---|"]
        lines += [f"| {r['id']} | {r['status']} | {str(r.get('error', '')).replace('|', '/')[:240]} |" for r in failed]
        lines.append("")
    lines.append("Run `benchmarks/gpu_kit.sh` on a GPU machine (its header says how) to fill this in."
                 if meta["mode"] == "not measured" else
                 "Definitions: `benchmarks/gpu_report.py`. Every run's numbers (step times, memory after loading, "
                 "losses, dynamic-sampling counts, errors) are in the JSON beside this file.")
    return "\n".join(lines) + "\n"


def _unit(meta: dict) -> tuple[str, int]:
    return ("MiB", 1) if meta["mode"] == "smoke" else ("GiB", 1024)


def _goal_rows(results: list[dict], meta: dict, summary: dict) -> list[str]:
    mode, (unit, div) = meta["mode"], _unit(meta)
    lines = ["## Goals and ratios", "", "| what | goal | measured | verdict |", "|---|---|---|---|"]
    need = need_mib(fit_row(results, "qwen2.5-1.5b", "nf4_lora", "dapo") or {}, meta)
    lines.append(f"| DAPO, Qwen2.5-1.5B shape, nf4 + LoRA, recipe settings: peak need (reserved + context) | < 8 GiB "
                 f"(Unsloth: GRPO 1.5B in 5-7 GB) | {_fmt(need and need / div)} {unit} | "
                 f"{_verdict(need and need / 1024, GOALS['dapo_1.5b_nf4_gib'], mode)} |")
    recipe = gpu_shapes.recipe_file(gpu_shapes.RATIO_ARCH, "grpo")
    for p in summary["dapo_off_over_grpo"]:
        lines.append(f"| DAPOTrainer (dynamic sampling off) ÷ TRL GRPOTrainer, median step time, {recipe} settings, "
                     f"nf4 + LoRA, run alone (pair {p['pair']}) | ≤ 1.02 | {_fmt(p['ratio'], '.3f')} "
                     f"({_fmt(p['dapo_off_s'], '.3f')} s / {_fmt(p['grpo_s'], '.3f')} s) | "
                     f"{_verdict(p['ratio'], GOALS['dapo_off_over_grpo'], mode)} |")
    for p in (p for p in summary["ppo_shared_over_grpo"] if p["setting"] == "nf4_lora"):
        lines.append(f"| PPO, all four roles on one 4-bit base ÷ GRPO + LoRA, peak allocated, {p['arch']} shape "
                     f"| ≤ 1.3 | {_fmt(p['ratio'])} ({_fmt(p['ppo_shared_mib'] and p['ppo_shared_mib'] / div)} / "
                     f"{_fmt(p['grpo_mib'] and p['grpo_mib'] / div)} {unit}) | "
                     f"{_verdict(p['ratio'], GOALS['ppo_shared_over_grpo'], mode)} |")
    for p in summary["adapter_over_trl"]:
        ratio = f"< {p['ratio_below']:.3f}" if "ratio_below" in p else _fmt(p["ratio"])
        trl = "" if p["trl_status"] in ("ok", None) else f", TRL: {p['trl_status']}"
        lines.append(f"| RewardAdapter (micro-batches of 16) ÷ TRL one forward, peak during scoring, {p['n']} "
                     f"completions, {gpu_shapes.SCORE_ARCH}-shaped RM, bf16 | lower is better | {ratio} "
                     f"({_fmt(p['adapter_mib'], '.0f')} / {_fmt(p['trl_mib'], '.0f')} MiB{trl}) | |")
    return lines + [""]


def _fit_rows(results: list[dict], meta: dict) -> list[str]:
    unit, div = _unit(meta)
    caption = (f"Peak memory ({unit}) per run, allocated / need (reserved + CUDA context); the smallest card that "
               "holds the need; generated tokens per second of `generate`; median step time (s). One child process "
               "per run.")
    if meta["mode"] == "smoke":
        caption += " On CPU both memory numbers are the RSS delta; there is no card to fit."
    if meta["mode"] == "gpu" and meta["jobs"] > 1:
        caption += (f" Up to {meta['jobs']} runs shared the card at a time, so speeds and step times are lower than "
                    "alone (memory is per process and unaffected); the ratio runs ran alone.")
    header, rule = "| shape | trainer |", "|---|---|"
    for name in SETTING_NAMES.values():
        header += f" {name}: alloc / need | fits | gen tok/s | step s |"
        rule += "---:|---|---:|---:|"
    lines = ["## Fit table", "", caption, "", header, rule]
    for arch, trainer in cells(results):
        row = f"| {arch} | {trainer} |"
        for setting in SETTING_NAMES:
            r = fit_row(results, arch, setting, trainer)
            if r is None:
                row += " | | | |"
                continue
            alloc = r.get("peak_alloc_mib", r.get("peak_rss_mib")) if r.get("status") == "ok" else None
            need = need_mib(r, meta)
            row += (f" {_fmt(alloc and alloc / div)} / {_fmt(need and need / div)} | {card(r, meta)} |"
                    f" {_fmt(r.get('gen_tokens_per_s'), '.0f')} | {_fmt(step_time(r))} |")
        lines.append(row)
    return lines + [""]


def _settings_rows(results: list[dict], meta: dict) -> list[str]:
    lines = ["## Settings", "", "Each shape trains at its recipe's `rl:` / `rm:` maps over the pipeline's defaults "
             "(`trl_ext.pipeline.stage_args`); `max_steps` and logging are the kit's. Completions are forced to "
             "the full `max_completion_length` (`min_new_tokens`); preference pairs have exactly `max_length` tokens.",
             "", "| shape | recipe (RL / PPO) | RL: batch, group, completion tokens, prompt tokens, grad. ckpt | "
             "PPO: batch, group, completion tokens | RM: batch × accumulation, max_length, grad. ckpt | LoRA |",
             "|---|---|---|---|---|---|"]
    smoke = meta["mode"] == "smoke"
    for arch in dict.fromkeys(a for a, _ in cells(results)):
        rl, ppo = (gpu_shapes.recipe_settings(arch, t, smoke) for t in ("grpo", "ppo_shared"))
        r, p, m, lora = rl["rl"], ppo["rl"], rl["rm"], rl["lora"]
        lines.append(
            f"| {arch} | {rl['recipe']} / {ppo['recipe']} | {r['per_device_train_batch_size']}, "
            f"{r['num_generations']}, {r['max_completion_length']}, {rl['prompt_tokens']}, "
            f"{r.get('gradient_checkpointing', False)} | {p['per_device_train_batch_size']}, {p['num_generations']}, "
            f"{p['max_completion_length']} | {m['per_device_train_batch_size']} × "
            f"{m.get('gradient_accumulation_steps', 1)}, {m['max_length']}, {m.get('gradient_checkpointing', False)} | "
            f"r={lora.get('lora_r')}, alpha={lora.get('lora_alpha')}, {lora.get('lora_target_modules')} |")
    notes = "; ".join(f"`{k}`: {v}" for k, v in TRAINER_NOTES.items())
    return lines + ["", f"Trainers: {notes}. GRPO, DAPO and RLOO score with the reward model as a LoRA adapter on "
                    "the policy's base (the scorer PPO's shared setting uses too, so the PPO ratio isolates the "
                    "critic); with a separate reward model, as the recipes' pipeline loads it by default, add that "
                    "model's weights. Prompt lengths are the kit's assumption (`gpu_shapes.PROMPT_TOKENS`), not the "
                    "recipes'. Random weights: memory and speed follow the shapes; losses and rewards mean nothing.",
                    ""]


def _verdict(value, goal, mode) -> str:
    if mode == "not measured":
        return "not measured"
    if value is None:
        return "no measurement"
    if mode == "smoke":
        return "(smoke: says nothing about the goal)"
    return "met" if value <= goal else "not met"


def chart(results: list[dict], meta: dict, path: Path) -> None:
    """Which setting fits which card: one cell per (shape, trainer) and setting, coloured by the smallest card."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    rows = cells(results) or [("none", "none")]
    labels = [f"{c} GB" for c in CARDS_GIB] + [f"> {CARDS_GIB[-1]} GB", "no result"]
    colors = ["#1a9641", "#a6d96a", "#ffffbf", "#fdae61", "#d7191c", "#bbbbbb"]
    grid, text = [], []
    for arch, trainer in rows:
        grid.append([]), text.append([])
        for setting in SETTING_NAMES:
            r = fit_row(results, arch, setting, trainer)
            label = card(r, meta) if r else "no result"
            index = next((i for i, name in enumerate(labels) if label.startswith(name)), len(labels) - 1)
            grid[-1].append(index)
            need = need_mib(r, meta) if r else None
            if need is None:
                text[-1].append("—")
            else:
                text[-1].append(f"{need / 1024:.1f}" if meta["mode"] == "gpu" else f"{need:.0f} MiB")
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(rows) + 1.6))
    ax.imshow(grid, cmap=ListedColormap(colors), vmin=0, vmax=len(colors) - 1, aspect="auto")
    for i, row in enumerate(text):
        for j, t in enumerate(row):
            ax.text(j, i, t, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(SETTING_NAMES)), list(SETTING_NAMES.values()), fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{a} {t}" for a, t in rows], fontsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    where = {"gpu": f"{meta['env'].get('card')}: GiB = reserved + CUDA context",
             "smoke": "SMOKE: CPU RSS of tiny shapes, no card to fit"}.get(meta["mode"], meta["mode"])
    ax.set_title(f"Smallest card that holds each run ({where})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
