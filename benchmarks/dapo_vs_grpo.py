"""DAPO vs GRPO on the embedded addition task (CPU-sized). Not a test: writes benchmarks/results/dapo_vs_grpo.{md,png}.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/dapo_vs_grpo.py --steps 30 --eval_every 10

1. SFT the tiny model on noisy demonstrations (half of them swap the digits of the sum) of AdditionTask(10, 39)
   (the 2-digit range the tiny model learns fastest on 2 CPU cores), cached in --workdir.
2. RL from that checkpoint with oracle_correct as the reward, 3 seeds each of
   GRPO (TRL defaults: symmetric clip, no shaping, no filtering) and DAPO (trl_ext defaults: clip-higher,
   overlong shaping, dynamic sampling judged on oracle_correct). Greedy oracle accuracy on held-out prompts against
   optimizer steps and against generated completions.
3. Dynamic-sampling efficiency: generated / trained completions against the floor 1 / p(informative).
4. Overhead: DAPOTrainer with dynamic sampling and shaping off vs GRPOTrainer, same config, interleaved runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, SFTConfig, SFTTrainer

from trl_ext import DAPOConfig, DAPOTrainer
from trl_ext.curves import CurveRecorder
from trl_ext.evaluation import oracle_accuracy, sample_completions
from trl_ext.toy import AdditionTask, ensure_tiny_checkpoint, oracle_correct

RESULTS = Path(__file__).parent / "results"
TASK = AdditionTask()  # replaced in main() by the --low/--high range


def sft_checkpoint(workdir: Path) -> Path:
    out = workdir / "sft"
    if (out / "config.json").exists():
        return out
    base = ensure_tiny_checkpoint()
    args = SFTConfig(
        output_dir=str(out), num_train_epochs=2, per_device_train_batch_size=32, learning_rate=3e-3,
        lr_scheduler_type="cosine", warmup_steps=20, logging_steps=50, report_to="none", save_strategy="no",
        use_cpu=True, bf16=False, gradient_checkpointing=False, seed=0, disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=TASK.sft_dataset(4000, seed=0),
        processing_class=AutoTokenizer.from_pretrained(base),
    )
    trainer.train()
    trainer.save_model(str(out))
    return out


def greedy_accuracy(tokenizer, eval_rows: int):
    """``evaluate(model, step)`` for ``CurveRecorder``: greedy oracle accuracy on the first ``eval_rows`` held-out
    prompts (one answer each, up to 6 tokens)."""
    prompts = TASK.eval_dataset().select(range(eval_rows))["prompt"]

    def evaluate(model, step: int) -> dict:
        answers = sample_completions(model, tokenizer, prompts, temperature=0.0, max_new_tokens=6)
        return {"accuracy": oracle_accuracy(prompts, answers, oracle_correct)}

    return evaluate


LEARNING_RATE = 1e-4  # set by --lr


def common_args(out: Path, seed: int, steps: int) -> dict:
    return dict(
        output_dir=str(out), per_device_train_batch_size=32, num_generations=8, max_completion_length=8,
        max_steps=steps, learning_rate=LEARNING_RATE, temperature=1.0, logging_steps=steps, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, gradient_checkpointing=False, seed=seed, disable_tqdm=True,
    )


def rl_run(algo: str, ckpt: Path, seed: int, steps: int, every: int, eval_rows: int, workdir: Path):
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    data = TASK.prompt_dataset(4000, seed=seed)
    if algo == "grpo":
        trainer = GRPOTrainer(model, [oracle_correct], args=GRPOConfig(**common_args(workdir / algo, seed, steps)),
                              train_dataset=data, processing_class=tokenizer)
    else:
        args = DAPOConfig(**common_args(workdir / algo, seed, steps), dynamic_sampling_signal="oracle_correct",
                          dynamic_sampling_on_cap="train_on_kept")
        trainer = DAPOTrainer(model, [oracle_correct], args=args, train_dataset=data, processing_class=tokenizer)
    recorder = CurveRecorder(trainer, greedy_accuracy(tokenizer, eval_rows), every)
    trainer.add_callback(recorder)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    totals = dict(trainer.dynamic_sampling_totals) if isinstance(trainer, DAPOTrainer) else None
    if totals is not None:
        totals["pool_at_end"] = trainer.pooled_groups
    return {"algo": algo, "seed": seed, "curve": recorder.curve, "wall_s": wall, "totals": totals}


def overhead_pairs(ckpt: Path, reps: int, steps: int, workdir: Path) -> list[dict]:
    """Same config, same seed; the order alternates so a drifting shared CPU hits both sides alike.

    One extra pair runs first and is discarded (first-call warm-up of kernels and the dataset cache)."""
    tokenizer = AutoTokenizer.from_pretrained(ckpt)
    data = TASK.prompt_dataset(2000, seed=0)
    pairs = []
    for rep in range(-1, reps):
        times = {}
        for algo in (("grpo", "dapo_off") if rep % 2 == 0 else ("dapo_off", "grpo")):
            kwargs = common_args(workdir / "overhead", 0, steps)
            model = AutoModelForCausalLM.from_pretrained(ckpt)
            if algo == "grpo":
                trainer = GRPOTrainer(model, [oracle_correct], args=GRPOConfig(**kwargs, epsilon_high=0.28),
                                      train_dataset=data, processing_class=tokenizer)
            else:
                args = DAPOConfig(**kwargs, dynamic_sampling=False, overlong_buffer_length=0)
                trainer = DAPOTrainer(model, [oracle_correct], args=args, train_dataset=data,
                                      processing_class=tokenizer)
            start = time.perf_counter()
            trainer.train()
            times[algo] = time.perf_counter() - start
        if rep >= 0:
            pairs.append({**times, "ratio": times["dapo_off"] / times["grpo"]})
    return pairs


def summarise(runs, pairs, config) -> str:
    lines = ["# DAPO vs GRPO on the embedded addition task", "",
             f"Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/dapo_vs_grpo.py {' '.join(sys.argv[1:])}` "
             f"({config}).", "",
             "Tiny Qwen3 (~0.75M params) after SFT on noisy demonstrations; RL reward `oracle_correct` (1/0); greedy "
             "oracle accuracy on the first eval prompts of the held-out set. GRPO = TRL `GRPOConfig` defaults; "
             "DAPO = `DAPOConfig` defaults (epsilon_high 0.28, overlong shaping, dynamic sampling on "
             "`oracle_correct`, `on_cap='train_on_kept'`). Both: 4 prompts x 8 generations per step.", "",
             "## Accuracy", "", "| algo | seed | start | end | best | steps | generated completions | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        accs = [p["accuracy"] for p in r["curve"]]
        lines.append(f"| {r['algo']} | {r['seed']} | {accs[0]:.3f} | {accs[-1]:.3f} | {max(accs):.3f} | "
                     f"{r['curve'][-1]['step']} | {r['curve'][-1]['generated']} | {r['wall_s']:.0f} |")
    for algo in ("grpo", "dapo"):
        ends = [r["curve"][-1]["accuracy"] for r in runs if r["algo"] == algo]
        lines.append(f"\n{algo}: final accuracy mean {statistics.mean(ends):.3f} (seeds: "
                     + ", ".join(f"{e:.3f}" for e in ends) + ")")
    lines += ["", "## Dynamic sampling efficiency (DAPO runs)", "",
              "p = informative / generated groups; floor = 1/p generated completions per trained completion; "
              "achieved = generated / trained. Goal: achieved <= 1.05 x floor.", "",
              "| seed | generated groups | informative | trained | padded (cap) | dropped stale | left in pool | p | "
              "floor 1/p | achieved | achieved / floor |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        t = r["totals"]
        if not t:
            continue
        p = t["informative"] / t["generated_groups"]
        achieved = t["generated_groups"] / max(t["trained"], 1)
        floor = f"{1 / p:.3f}" if p else "n/a (no informative group)"
        lines.append(f"| {r['seed']} | {t['generated_groups']} | {t['informative']} | {t['trained']} | {t['padded']} | "
                     f"{t['dropped']} | {t['pool_at_end']} | {p:.3f} | {floor} | {achieved:.3f} | "
                     f"{achieved * p:.3f} |")
    ratios = [p["ratio"] for p in pairs]
    lines += ["", "## Overhead: DAPOTrainer (dynamic sampling and shaping off) / GRPOTrainer, same config", "",
              "| rep | GRPO s | DAPO-off s | ratio |", "|---|---|---|---|"]
    lines += [f"| {i} | {p['grpo']:.2f} | {p['dapo_off']:.2f} | {p['ratio']:.3f} |" for i, p in enumerate(pairs)]
    lines += ["", f"Median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) over "
              f"{len(ratios)} interleaved pairs; goal <= 1.02. The CPU is shared with other work, so single pairs "
              "are noisy; the median is the number to read."]
    return "\n".join(lines) + "\n"


def plot(runs, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"grpo": "tab:blue", "dapo": "tab:red"}
    for r in runs:
        steps, gen, acc = ([p[k] for p in r["curve"]] for k in ("step", "generated", "accuracy"))
        label = f"{r['algo']} seed {r['seed']}"
        axes[0].plot(steps, acc, color=colours[r["algo"]], alpha=0.7, label=label)
        axes[1].plot(gen, acc, color=colours[r["algo"]], alpha=0.7, label=label)
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("generated completions")
    for ax in axes:
        ax.set_ylabel("greedy oracle accuracy")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("DAPO vs GRPO, embedded addition task (3 seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/trl_ext_bench_dapo")
    parser.add_argument("--low", type=int, default=10, help="AdditionTask range (the SFT checkpoint is cached per range)")
    parser.add_argument("--high", type=int, default=39)
    parser.add_argument("--lr", type=float, default=1e-4, help="RL learning rate (both algorithms)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--eval_every", type=int, default=10)
    parser.add_argument("--eval_rows", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--overhead_reps", type=int, default=6)
    parser.add_argument("--overhead_steps", type=int, default=10)
    parser.add_argument("--overhead_only", action="store_true",
                        help="Only time DAPO-off vs GRPO pairs and print them (the results files are not rewritten)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    global TASK, LEARNING_RATE
    TASK = AdditionTask(low=args.low, high=args.high)
    LEARNING_RATE = args.lr
    workdir = Path(args.workdir) / f"range_{args.low}_{args.high}"
    t0 = time.perf_counter()
    ckpt = sft_checkpoint(workdir)
    print(f"SFT checkpoint ready ({time.perf_counter() - t0:.0f}s)", flush=True)
    if args.overhead_only:
        pairs = overhead_pairs(ckpt, args.overhead_reps, args.overhead_steps, workdir)
        ratios = [p["ratio"] for p in pairs]
        print(json.dumps(pairs))
        print(f"median ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
        return
    runs = []
    for seed in args.seeds:
        for algo in ("grpo", "dapo"):
            runs.append(rl_run(algo, ckpt, seed, args.steps, args.eval_every, args.eval_rows, workdir))
            print(algo, seed, runs[-1]["curve"][-1], f"{runs[-1]['wall_s']:.0f}s", flush=True)
    pairs = overhead_pairs(ckpt, args.overhead_reps, args.overhead_steps, workdir)
    print(pairs, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    config = (f"AdditionTask(low={args.low}, high={args.high}), lr={args.lr}, steps={args.steps}, seeds={args.seeds}, "
              f"eval_rows={args.eval_rows}, overhead {args.overhead_reps} pairs x {args.overhead_steps} steps")
    (RESULTS / "dapo_vs_grpo.md").write_text(summarise(runs, pairs, config))
    (workdir / "runs.json").write_text(json.dumps({"runs": runs, "pairs": pairs}))
    plot(runs, RESULTS / "dapo_vs_grpo.png")
    print(f"done in {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
