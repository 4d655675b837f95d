"""`trl-ext` console command.

    trl-ext pipeline --config recipes/configs/tiny.yaml [--seed 1 --output_dir runs/tiny-s1 ...]
    trl-ext tiny-model PATH            # write the embedded tiny checkpoint to PATH
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys

USAGE = "usage: trl-ext {pipeline,tiny-model} ...  (trl-ext pipeline --help lists every pipeline option)"


def _explain_parse_error(message: str, known: list[str]) -> str:
    """TrlParser's "unknown arguments" errors, restated with the closest known option for each unknown one."""
    where = "in the config file" if "config file" in message else "on the command line"
    if "Unknown arguments" not in message and "not used by the HfArgumentParser" not in message:
        return message
    unknown = re.findall(r"'--([\w.-]+)'", message)
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hints.append(f"{name!r}: did you mean {close[0]!r}?" if close else f"{name!r}: no such option.")
    return f"unknown option(s) {where}: " + " ".join(hints) + " `trl-ext pipeline --help` lists every option."


def _fail(message: str) -> int:
    print(f"trl-ext pipeline: error: {message}", file=sys.stderr)
    if not os.environ.get("TRL_EXT_DEBUG"):
        print("(set TRL_EXT_DEBUG=1 to see the traceback)", file=sys.stderr)
    return 2


def _pipeline(argv: list[str]) -> int:
    from dataclasses import fields

    from trl import ModelConfig, TrlParser

    from .pipeline import PipelineConfig, StageInterrupted, StageMismatchError, format_report, run_pipeline

    parser = TrlParser((PipelineConfig, ModelConfig), prog="trl-ext pipeline")
    debug = bool(os.environ.get("TRL_EXT_DEBUG"))
    try:
        cfg, model_args = parser.parse_args_and_config(argv)
    except (ValueError, FileNotFoundError) as e:  # unknown options, a bad --rl JSON, a missing --config file
        if debug:
            raise
        known = [f.name for dc in (PipelineConfig, ModelConfig) for f in fields(dc)]
        return _fail(_explain_parse_error(str(e), known))
    try:
        report = run_pipeline(cfg, model_args)
    except StageInterrupted as e:
        print(e, file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, StageMismatchError) as e:  # bad input: the message names the fix
        if debug:
            raise
        return _fail(str(e))
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    commands = {"pipeline": _pipeline, "tiny-model": _tiny_model}
    if not argv or argv[0] not in commands:
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
