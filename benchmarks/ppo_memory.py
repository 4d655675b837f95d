"""Peak memory of PPO's four roles on one shared base, and as separate models, against GRPO + LoRA on the same base.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ppo_memory.py --repeats 3   # ~1.5 min/repeat on 2 busy cores

Writes ``benchmarks/results/ppo_memory.{md,png,json}`` (``--out`` changes the stem). Uses CUDA when present.

Configurations (same base checkpoint, same batch: ``--batch`` completions of ``--completion-length`` tokens per step):

* ``grpo_lora``: TRL's GRPOTrainer, LoRA policy, reference = adapters disabled (beta=0.04), reward model = a LoRA
  adapter + score head on the same base (``trl_ext.RewardAdapter.shared_base``), so it pays for the same reward model.
* ``ppo_shared``: PPOTrainer(shared_base=True): policy LoRA, critic LoRA + value head, reference = adapters disabled,
  reward model = the same LoRA adapter: all four roles on one base.
* ``ppo_separate``: the classic setup: full-parameter policy and critic (a copy of the reward model), separate
  reference and reward models, all full precision.
* ``grpo_lora_nf4``, ``ppo_shared_nf4``: the two LoRA setups on an nf4 4-bit base (the consumer-GPU recipe).

How memory is measured: every configuration runs in its own fresh Python process. With CUDA, the number is
``torch.cuda.max_memory_allocated()``. On CPU it is the process's peak resident set size (``getrusage`` ru_maxrss,
the kernel's high-water mark) minus the resident size measured after imports and dataset construction, just before
the first model is loaded: what weights, gradients, optimizer states, activations and generation add. CPU numbers
include allocator slack and are coarser than CUDA's; the ratios are what the comparison is about.

Precision: bf16 autocast only on CUDA (``bf16=cuda``); on CPU everything computes in fp32 (TRL 1.16's default
``bf16=True`` would autocast to bf16, which CPUs without bf16 units emulate ~10x slower).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ("grpo_lora", "ppo_shared", "ppo_separate", "grpo_lora_nf4", "ppo_shared_nf4")
GOAL = 1.3  # the claim checked: PPO with all roles on one base costs at most 1.3x GRPO + LoRA


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(config: str, opts: argparse.Namespace) -> dict:
    """Train ``opts.steps`` steps of one configuration in this (fresh) process and report its memory."""
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer, ModelConfig

    from trl_ext import PPOConfig, PPOTrainer, RewardAdapter
    from trl_ext.models import load_causal_lm
    from trl_ext.toy import AdditionTask

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(opts.base)
    data = AdditionTask().prompt_dataset(opts.batch * (opts.steps + 1), seed=0)
    cuda = torch.cuda.is_available()
    rss_before = _rss_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    common = dict(
        output_dir=os.path.join(opts.tmp, config),
        per_device_train_batch_size=opts.batch,
        num_generations=opts.generations,
        max_completion_length=opts.completion_length,
        max_steps=opts.steps,
        num_iterations=2,
        learning_rate=1e-4,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=not cuda,
        bf16=cuda,  # TRL 1.16 defaults bf16=True; on CPU that autocasts to emulated bf16, so measure fp32 there
        seed=0,
        disable_dropout=True,
        activation_checkpointing=False,
        generation_kwargs={"min_new_tokens": opts.completion_length},  # every run generates the same lengths
    )
    lora = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, target_modules="all-linear")
    load_in_4bit = config.endswith("_nf4")
    if load_in_4bit:
        policy = load_causal_lm(ModelConfig(model_name_or_path=opts.base, load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    else:
        policy = opts.base

    kind = config.removesuffix("_nf4")
    if kind == "grpo_lora":
        def reward_adapter(prompts, completions, **kwargs):  # GRPO reads reward_funcs before it builds the PeftModel
            raise RuntimeError("replaced by RewardAdapter.shared_base once the trainer has built the PeftModel")

        trainer = GRPOTrainer(policy, reward_adapter, args=GRPOConfig(beta=0.04, **common), train_dataset=data,
                              processing_class=tokenizer, peft_config=lora)
        # GRPO has no shared-RM option; trl_ext's shared-base reward (the one PPO uses) fills in
        trainer.reward_funcs[0] = RewardAdapter.shared_base(trainer.model, opts.rm_adapter, name="reward_adapter")
    elif kind == "ppo_shared":
        trainer = PPOTrainer(policy, opts.rm_adapter, args=PPOConfig(shared_base=True, **common), train_dataset=data,
                             processing_class=tokenizer, peft_config=lora)
    elif kind == "ppo_separate":
        trainer = PPOTrainer(policy, opts.base, args=PPOConfig(**common), train_dataset=data, processing_class=tokenizer)
    else:
        raise ValueError(f"unknown configuration {config!r}; choose from {CONFIGS}")

    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    params = {id(p): p for m in _modules(trainer) for p in m.parameters()}
    return {
        "config": config,
        "device": "cuda" if cuda else "cpu",
        "load_in_4bit": load_in_4bit,
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb() - rss_before,
        "peak_rss_mb": _peak_rss_mb(),
        "rss_before_models_mb": rss_before,
        "params_in_memory_m": sum(p.numel() for p in params.values()) / 1e6,
        "trainable_params_m": sum(p.numel() for p in params.values() if p.requires_grad) / 1e6,
        "train_seconds": seconds,
    }


def _modules(trainer):
    """Every model a trainer holds: policy, reference, reward models, critic (shared weights counted once)."""
    import torch

    found = [trainer.model]
    if getattr(trainer, "ref_model", None) is not None:
        found.append(trainer.ref_model)
    rewards = getattr(trainer, "reward_funcs", [])  # none in a RewardTrainer (gpu_memory.py's RM stage)
    found += [r for r in rewards if isinstance(r, torch.nn.Module)]
    heads = [getattr(getattr(r, "_source", None), "head", None) for r in rewards]  # shared-base RM heads
    found += [h for h in heads if isinstance(h, torch.nn.Module)]
    if getattr(trainer, "critic", None) is not None:
        found.append(trainer.critic)
    return found


def prepare(opts: argparse.Namespace) -> None:
    """Build the base checkpoint and a LoRA reward-model adapter on it (random weights: memory does not care)."""
    from trl_ext.toy import TinyModelSpec, ensure_tiny_checkpoint

    spec = TinyModelSpec(
        hidden_size=opts.hidden,
        num_hidden_layers=opts.layers,
        num_attention_heads=opts.hidden // 64,
        num_key_value_heads=max(1, opts.hidden // 128),
        intermediate_size=4 * opts.hidden,
    )
    opts.base = str(ensure_tiny_checkpoint(spec=spec))
    opts.rm_adapter = save_rm_adapter(opts.base, os.path.join(opts.tmp, "rm_adapter"))


def save_rm_adapter(base: str, path: str, lora_r: int = 16, lora_alpha: int = 32, **model_kwargs) -> str:
    """A LoRA reward-model adapter (SEQ_CLS: LoRA weights + score head) on ``base``, random weights, saved to ``path``.

    What RewardTrainer.save_model writes after training with a LoRA peft_config; memory does not care that it is
    untrained. ``model_kwargs`` go to ``from_pretrained`` (e.g. ``dtype``). Also used by benchmarks/gpu_memory.py.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, **model_kwargs)
    lora = LoraConfig(task_type="SEQ_CLS", r=lora_r, lora_alpha=lora_alpha, target_modules="all-linear")
    get_peft_model(rm, lora).save_pretrained(path)
    return path


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def report(runs: list[dict], opts: argparse.Namespace, command: str) -> None:
    """One table row per configuration: the median over repeats, with the range when there are several."""
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows, spread = [], {}
    for config in dict.fromkeys(r["config"] for r in runs):
        mine = [r for r in runs if r["config"] == config]
        peaks = [r["peak_mb"] for r in mine]
        rows.append({**mine[0], "peak_mb": _median(peaks), "peak_rss_mb": _median([r["peak_rss_mb"] for r in mine]),
                     "train_seconds": _median([r["train_seconds"] for r in mine])})
        spread[config] = (min(peaks), max(peaks), len(peaks))
    by = {r["config"]: r for r in rows}

    def baseline(config):  # GRPO + LoRA on the same base precision
        return by["grpo_lora_nf4" if config.endswith("_nf4") else "grpo_lora"]["peak_mb"]

    device = rows[0]["device"]
    what = "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS − RSS before the first model load"
    repeats = max(n for _, _, n in spread.values())
    lines = [
        "# PPO peak memory: four roles on one base vs separate models, against GRPO + LoRA",
        "",
        f"Command: `{command}`  ",
        f"Device: {device}; base: {opts.hidden} wide, {opts.layers} layers, random weights built locally (fp32, or nf4 "
        f"4-bit for `*_nf4`); LoRA r=16 on all linear layers; batch {opts.batch} completions "
        f"({opts.generations} per prompt) of {opts.completion_length} tokens; {opts.steps} optimizer steps, "
        "2 PPO epochs (num_iterations) per batch.  ",
        f"Memory: {what}, each configuration in a fresh process"
        + (f", run {repeats} times (median, min–max)." if repeats > 1 else ".")
        + (" Compute precision: bf16 autocast (CUDA)." if device == "cuda" else " Compute precision: fp32 "
           "(`bf16=False` on CPU; TRL 1.16's default bf16 autocast is off)."),
        "",
        "| configuration | peak memory (MiB) | min–max | ÷ GRPO + LoRA (same precision) | params in memory (M) "
        "| trainable (M) | train time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lo, hi, _ = spread[r["config"]]
        lines.append(
            f"| {r['config']} | {r['peak_mb']:.0f} | {lo:.0f}–{hi:.0f} | {r['peak_mb'] / baseline(r['config']):.2f} | "
            f"{r['params_in_memory_m']:.1f} | {r['trainable_params_m']:.2f} | {r['train_seconds']:.1f} |"
        )
    shared = by["ppo_shared"]["peak_mb"] / baseline("ppo_shared")
    # widest range the repeats allow: lowest shared peak over highest baseline peak, and the other way round
    shared_lo = spread["ppo_shared"][0] / spread["grpo_lora"][1]
    shared_hi = spread["ppo_shared"][1] / spread["grpo_lora"][0]
    lines += [
        "",
        f"PPO with all four roles on one fp32 base costs **{shared:.2f}×** GRPO + LoRA "
        f"(goal ≤ {GOAL}×: {'met' if shared <= GOAL else 'not met'} by the median"
        + (f"; across the repeats' min–max it spans {shared_lo:.2f}–{shared_hi:.2f}×" if repeats > 1 else "")
        + "); separate models cost "
        f"**{by['ppo_separate']['peak_mb'] / baseline('ppo_separate'):.2f}×**."
        + (
            f" On an nf4 base: **{by['ppo_shared_nf4']['peak_mb'] / baseline('ppo_shared_nf4'):.2f}×**."
            if "ppo_shared_nf4" in by
            else ""
        ),
        "",
        "Absolute peak RSS per process (MiB, includes the Python/torch runtime): "
        + ", ".join(f"{r['config']} {r['peak_rss_mb']:.0f}" for r in rows)
        + ".",
        "",
        "Notes. PPO's extra over GRPO + LoRA is the critic adapter (its weights, gradients and Adam states) and the "
        "value head, and the critic's activations: the value loss is part of the one loss Trainer back-propagates, "
        "so they are alive beside the policy's until that backward. On CPU the nf4 runs quantise while loading, so their RSS "
        "high-water mark includes the fp32 weights of the load and is not smaller than the fp32 runs'; on a GPU "
        "(torch.cuda.max_memory_allocated) the 4-bit base counts at its packed size. `params in memory` counts a "
        "4-bit weight's packed storage (two values per element). The ratio depends on how much of the peak is "
        "activations vs weights, i.e. on batch, sequence length and model size: measure with your shapes.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = [r["config"] for r in rows]
    values = [r["peak_mb"] for r in rows]
    colors = {"grpo_lora": "#888888", "ppo_shared": "#2a7ab9", "ppo_separate": "#c0504d"}
    bars = ax.bar(names, values, color=[colors[n.removesuffix("_nf4")] for n in names])
    for bar, name, v in zip(bars, names, values, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, v, f"{v / baseline(name):.2f}×", ha="center", va="bottom")
    ax.axhline(baseline("ppo_shared") * GOAL, ls="--", color="k", lw=0.8, label=f"goal: {GOAL}× GRPO + LoRA (fp32)")
    ax.tick_params(axis="x", labelsize=7)
    ax.set_ylim(0, max(values) * 1.15)
    ax.set_ylabel("peak memory (MiB)")
    ax.set_title(f"PPO roles, {opts.hidden}×{opts.layers} base ({device})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per configuration (median reported)")
    parser.add_argument("--from-json", help="rebuild the md/png from a saved .json of runs instead of measuring")
    parser.add_argument("--out", default="benchmarks/results/ppo_memory")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--base", help=argparse.SUPPRESS)
    parser.add_argument("--rm-adapter", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)

    if opts.worker:
        print("RESULT " + json.dumps(worker(opts.worker, opts)), flush=True)
        return

    command = "python benchmarks/ppo_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if opts.from_json:
        saved = json.loads(Path(opts.from_json).read_text())
        report(saved["runs"], opts, saved["command"])
        return
    with tempfile.TemporaryDirectory() as tmp:
        opts.tmp = tmp
        prepare(opts)
        rows = []
        for config in [c for _ in range(opts.repeats) for c in opts.configs.split(",")]:
            cmd = [sys.executable, __file__, "--worker", config, "--base", opts.base, "--rm-adapter", opts.rm_adapter,
                   "--tmp", tmp, "--hidden", str(opts.hidden), "--layers", str(opts.layers), "--batch",
                   str(opts.batch), "--generations", str(opts.generations), "--completion-length",
                   str(opts.completion_length), "--steps", str(opts.steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
            result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
            if proc.returncode != 0 or not result:
                raise RuntimeError(f"{config} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(result[-1][len("RESULT "):]))
            print(f"{config}: {rows[-1]['peak_mb']:.0f} MiB peak ({rows[-1]['train_seconds']:.1f} s)", flush=True)
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out + ".json").write_text(json.dumps({"command": command.strip(), "runs": rows}, indent=2))
    done = {r["config"] for r in rows}
    if {"grpo_lora", "ppo_shared", "ppo_separate"} <= done and ("ppo_shared_nf4" not in done or "grpo_lora_nf4" in done):
        report(rows, opts, command.strip())


if __name__ == "__main__":
    main()
