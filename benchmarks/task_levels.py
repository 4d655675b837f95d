"""How often a model solves each level of the arithmetic task: greedy accuracy, sampled accuracy (temperature 1) and
the share of sampled groups that are all right / all wrong (the groups that give GRPO-family RL no signal).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/task_levels.py --model /work/models/smollm2-135m-instruct

Every level of :data:`trl_ext.toy.arithmetic.LEVELS` is measured on its held-out problems with the task's short
system message, and ``--compare_levels`` again with none (SmolLM2's template then injects its own default, ~30 tokens
more per prompt). Writes
``benchmarks/results/task_levels.{json,md}``. The checker is :func:`trl_ext.toy.arithmetic.arithmetic_correct`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import git_state, machine_info, versions  # noqa: E402

from trl_ext.evaluation import flatten_samples, sample_completions  # noqa: E402
from trl_ext.toy.arithmetic import LEVELS, SHORT_SYSTEM_PROMPT, ArithmeticTask, arithmetic_correct, level_size  # noqa: E402


def measure_level(model, tokenizer, task: ArithmeticTask, args) -> dict:
    data = task.eval_dataset()
    prompts, answers = data["prompt"], data["answer"]
    kw = dict(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, return_ids=True)
    greedy = sample_completions(model, tokenizer, prompts, temperature=0.0, **kw)
    sampled = sample_completions(model, tokenizer, prompts, num_samples=args.samples, temperature=1.0, seed=0, **kw)

    def verdicts(samples):
        flat_prompts, flat = flatten_samples(prompts, samples.texts)
        per_row = arithmetic_correct(flat_prompts, flat, answer=[a for a, cs in zip(answers, samples.texts) for _ in cs])
        k = len(samples.texts[0])
        return [per_row[i : i + k] for i in range(0, len(per_row), k)]

    g, s = verdicts(greedy), verdicts(sampled)
    lengths = [len(ids) for row in sampled.completion_ids for ids in row]
    return {
        "prompts": len(prompts),
        "prompt_tokens": sum(map(len, greedy.prompt_ids)) / len(prompts),
        "greedy_accuracy": sum(v[0] for v in g) / len(g),
        "sampled_accuracy": sum(map(sum, s)) / sum(map(len, s)),
        "all_right": sum(all(v) for v in s) / len(s),
        "all_wrong": sum(not any(v) for v in s) / len(s),
        "sampled_tokens": sum(lengths) / len(lengths),
        "sampled_hit_limit": sum(n >= args.max_new_tokens for n in lengths) / len(lengths),
        "examples": [{"prompt": p[-1]["content"], "answer": a, "greedy": gr[0], "sampled": sa[:3]}
                     for p, a, gr, sa in list(zip(prompts, answers, greedy.texts, sampled.texts))[:3]],
    }


def format_md(result: dict) -> str:
    lines = [
        "# Arithmetic task levels on the base model", "",
        f"Command: `{result['command']}`  ", f"Commit: {result['git']['commit']} (dirty: {result['git']['dirty']})  ",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; torch {result['versions']['torch']}, "
        f"threads {torch.get_num_threads()}, bf16 autocast {result['bf16']}  ",
        f"{result['per_level']} held-out prompts per level (fewer where that is over half the level), greedy and {result['samples']} samples at temperature 1, "
        f"max_new_tokens {result['max_new_tokens']}; checker `arithmetic_correct` (final number). "
        f"All right / all wrong: share of {result['samples']}-sample groups. Wall {result['wall_s']:.0f} s.", "",
    ]
    for variant, rows in result["variants"].items():
        lines += [f"## System message: {variant}", "",
                  "| level | prompts | prompt tokens | greedy acc. | sampled acc. | all right | all wrong | sampled tokens | hit limit |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in rows.items():
            lines.append(
                f"| {name} | {r['prompts']} | {r['prompt_tokens']:.1f} | {r['greedy_accuracy']:.2f} | {r['sampled_accuracy']:.3f} | "
                f"{r['all_right']:.2f} | {r['all_wrong']:.2f} | {r['sampled_tokens']:.1f} | {r['sampled_hit_limit']:.2f} |"
            )
        lines.append("")
    lines += ["## A few answers (short system message)", ""]
    first = next(iter(result["variants"].values()))
    for name, r in first.items():
        for ex in r["examples"][:2]:
            lines.append(f"- {name}: {ex['prompt']!r} (answer {ex['answer']}): greedy {ex['greedy']!r}; "
                         f"sampled {ex['sampled']!r}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/work/models/smollm2-135m-instruct")
    parser.add_argument("--levels", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    parser.add_argument("--per_level", type=int, default=40, help="held-out prompts per level (at most half of it)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=16, help="the recipes' max_completion_length")
    parser.add_argument("--batch_size", type=int, default=64, help="prompts per generate() call")
    parser.add_argument("--variants", nargs="+", default=["short", "none"], choices=["short", "none"],
                        help=f"short: the task's system message {SHORT_SYSTEM_PROMPT!r}; none: the template's default")
    parser.add_argument("--compare_levels", nargs="+", default=["add_1digit", "add_to20", "mul_1digit"],
                        choices=list(LEVELS), help="the levels measured again without a system message (time)")
    parser.add_argument("--no_bf16", action="store_true", help="fp32 instead of bf16 autocast")
    parser.add_argument("--results_dir", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    command = "python benchmarks/task_levels.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    autocast = contextlib.nullcontext() if args.no_bf16 else torch.autocast("cpu", dtype=torch.bfloat16)
    start = time.perf_counter()
    variants = {}
    with autocast:
        for variant in args.variants:
            system = SHORT_SYSTEM_PROMPT if variant == "short" else None
            rows = {}
            for name in args.levels if variant == args.variants[0] else args.compare_levels:
                # a level holds out at most half its problems (mul_1digit has 64)
                task = ArithmeticTask(levels=(name,), eval_per_level=min(args.per_level, level_size(name) // 2),
                                      demo_error_rates=(0.0,), system_prompt=system)
                rows[name] = measure_level(model, tokenizer, task, args)
                print(variant, name, {k: v for k, v in rows[name].items() if k != "examples"}, flush=True)
            variants[f"{SHORT_SYSTEM_PROMPT!r}" if system else "none (template default)"] = rows
    result = {
        "command": command, "git": git_state(), "machine": machine_info(), "versions": versions(),
        "model": args.model, "per_level": args.per_level, "samples": args.samples,
        "max_new_tokens": args.max_new_tokens, "bf16": not args.no_bf16, "wall_s": time.perf_counter() - start,
        "variants": variants,
    }
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "task_levels.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "task_levels.md").write_text(format_md(result))
    print(format_md(result))


if __name__ == "__main__":
    main()
