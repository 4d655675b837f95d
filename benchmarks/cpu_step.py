"""Where one LoRA RL step's time goes on a real model on this CPU, and what the CPU defaults buy.

    python benchmarks/cpu_step.py --model models/smollm2-135m-instruct --output_dir benchmarks/results

One DAPOTrainer (dynamic sampling off, so every step is one generation round of the same size) per setting, on the
same prompts ("What is A + B? Answer with the number only.", chat format), the same LoRA and the same seed; each runs
``--warmup`` steps, then ``--steps`` timed steps. A step's time is split into generation (``_generate``), rewards
(``_calculate_rewards``), log-probability forwards without grad (old/reference log-probs, when the config needs
them) and the optimisation (forward + backward + optimizer: the rest of ``training_step``). The settings, run in
turn in one process so they share the machine's state:

* ``trl-defaults``: what TRL 1.16 picks (fp32, gradient checkpointing on);
* ``no-checkpointing``: fp32, gradient checkpointing off (a 135M model's activations fit in memory many times over);
* ``bf16-autocast``: checkpointing off, ``bf16=True`` (autocast in the loss forward; generation stays fp32);
* ``bf16-weights``: checkpointing off, the base weights loaded in bf16 (LoRA weights stay fp32), so generation and
  the loss forward both run bf16 matmuls (AVX512-BF16 / AMX on these CPUs);

and the first step of each setting is compared with fp32's to show the precision change stays within bf16 tolerance:
generation runs outside autocast, so ``bf16-autocast`` trains on exactly fp32's first completions, and its logged
entropy (mean over completion tokens, from the loss forward's logits) and gradient norm can be compared number for
number. (GRPO's loss itself is no check at step 1: with one iteration the ratio is exactly 1 and the loss is the mean
advantage over tokens, whatever the precision.)
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import git_state, machine_info  # noqa: E402

SETTINGS = {
    "trl-defaults": dict(gradient_checkpointing=True, bf16=False, dtype=torch.float32),
    "no-checkpointing": dict(gradient_checkpointing=False, bf16=False, dtype=torch.float32),
    "bf16-autocast": dict(gradient_checkpointing=False, bf16=True, dtype=torch.float32),
    "bf16-weights": dict(gradient_checkpointing=False, bf16=False, dtype=torch.bfloat16),
}
_LAST_NUMBER = re.compile(r"-?\d+")


def sums(n: int, seed: int):
    from datasets import Dataset

    rng = random.Random(seed)
    rows = {"prompt": [], "answer": []}
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        rows["prompt"].append([{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}])
        rows["answer"].append(str(a + b))
    return Dataset.from_dict(rows)


def last_number_correct(prompts, completions, answer, **kwargs) -> list[float]:
    scores = []
    for completion, want in zip(completions, answer, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        found = _LAST_NUMBER.findall(text)
        scores.append(float(bool(found) and found[-1] == want))
    return scores


class Timings:
    """Wall time per named phase, per training step, collected by wrapping the trainer's methods."""

    def __init__(self):
        self.steps: list[dict[str, float]] = []
        self.current: dict[str, float] = defaultdict(float)

    def wrap(self, obj, name: str, phase):
        original = getattr(obj, name)

        def timed(*args, **kwargs):
            key = phase(*args, **kwargs) if callable(phase) else phase
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.current[key] += time.perf_counter() - start

        setattr(obj, name, timed)


def run_setting(name: str, args) -> dict:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed

    from trl_ext import DAPOConfig, DAPOTrainer

    spec = SETTINGS[name]
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=spec["dtype"])
    config = DAPOConfig(
        output_dir=str(Path(args.scratch) / name), use_cpu=True, bf16=spec["bf16"], seed=args.seed,
        gradient_checkpointing=spec["gradient_checkpointing"], max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.completions, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, dynamic_sampling=False, learning_rate=1e-5,
        logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True,
    )
    trainer = DAPOTrainer(
        model=model, reward_funcs=[last_number_correct], args=config, train_dataset=sums(256, args.seed),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    timings = Timings()
    timings.wrap(trainer, "_generate", "generation")
    timings.wrap(trainer, "_calculate_rewards", "rewards")
    timings.wrap(
        trainer, "_get_per_token_logps_and_entropies",
        lambda *a, **k: "optimisation" if torch.is_grad_enabled() else "logps_no_grad",
    )
    tokens = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            timings.current = defaultdict(float)
            timings.current["_start"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            current = dict(timings.current)
            total = time.perf_counter() - current.pop("_start")
            inner = sum(v for k, v in current.items() if k != "optimisation")
            # the rest of the step (backward, optimizer, bookkeeping) counts as optimisation
            current["optimisation"] = total - inner
            current["total"] = total
            timings.steps.append(current)

        def on_log(self, _args, state, control, logs=None, **__):
            if logs and "completions/mean_length" in logs:
                tokens.append(logs["completions/mean_length"])

    trainer.add_callback(StepClock())
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    first = next(row for row in trainer.state.log_history if "grad_norm" in row)
    timed = timings.steps[args.warmup :]
    phases = sorted({k for step in timed for k in step})
    mean = {k: sum(step.get(k, 0.0) for step in timed) / len(timed) for k in phases}
    mean_len = sum(tokens[args.warmup :]) / max(1, len(tokens[args.warmup :]))
    return {
        "setting": name, **{k: str(v) if isinstance(v, torch.dtype) else v for k, v in spec.items()},
        "seconds_per_step": mean, "per_step": timed, "first_loss": losses[0], "losses": losses,
        "first_grad_norm": first["grad_norm"], "first_entropy": first["entropy"],
        "completions_per_s": args.completions / mean["total"],
        "mean_completion_tokens": mean_len, "completion_tokens_per_s": args.completions * mean_len / mean["total"],
    }


def markdown(result: dict) -> str:
    rows = result["runs"]
    lines = [
        "# One LoRA RL step on SmolLM2-135M-Instruct, CPU",
        "",
        f"`{result['command']}`  ",
        f"commit {result['provenance']['commit'][:10]}{' (dirty)' if result['provenance']['dirty'] else ''}, "
        f"{result['machine']['cpu']}, {result['machine']['cores']} cores, torch threads {result['threads']}",
        "",
        f"DAPOTrainer (dynamic sampling off), {result['completions']} completions per step "
        f"({result['completions'] // result['num_generations']} prompts x {result['num_generations']}), at most "
        f"{result['max_completion_length']} new tokens, LoRA r=16 on all linear layers; mean of {result['steps']} steps "
        f"after {result['warmup']} warm-up step(s). Seconds per step:",
        "",
        "| setting | total | generation | rewards | log-probs (no grad) | forward+backward+optimizer | completions/s | "
        "tokens/s | step 1: entropy | step 1: grad norm |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds_per_step"]
        lines.append(
            f"| {r['setting']} | {s['total']:.2f} | {s.get('generation', 0):.2f} | {s.get('rewards', 0):.3f} | "
            f"{s.get('logps_no_grad', 0):.2f} | {s['optimisation']:.2f} | {r['completions_per_s']:.2f} | "
            f"{r['completion_tokens_per_s']:.1f} | {r['first_entropy']:.5f} | {r['first_grad_norm']:.5f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a local causal-LM checkpoint (e.g. trl-ext convert-gguf's)")
    parser.add_argument("--output_dir", default="benchmarks/results")
    parser.add_argument("--scratch", default="/tmp/trl_ext_cpu_step")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--completions", type=int, default=16)
    parser.add_argument("--num_generations", type=int, default=8)
    parser.add_argument("--max_completion_length", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="cpu_step", help="results file stem")
    args = parser.parse_args(argv)
    runs = []
    for name in args.settings:
        runs.append(run_setting(name, args))
        print(json.dumps({k: runs[-1][k] for k in ("setting", "seconds_per_step", "first_entropy", "first_grad_norm")}),
              flush=True)
    result = {
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "provenance": git_state(), "machine": machine_info(), "threads": torch.get_num_threads(),
        **{k: getattr(args, k) for k in ("completions", "num_generations", "max_completion_length", "warmup", "steps")},
        "runs": runs,
    }
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    (out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
