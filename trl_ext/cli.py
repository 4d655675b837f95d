"""`trl-ext` console command.

    trl-ext pipeline --config recipes/configs/tiny.yaml [--seed 1 --output_dir runs/tiny-s1 ...]
    trl-ext tiny-model PATH            # write the embedded tiny checkpoint to PATH
"""

from __future__ import annotations

import logging
import sys

USAGE = "usage: trl-ext {pipeline,tiny-model} ...  (trl-ext pipeline --help lists every pipeline option)"


def _pipeline(argv: list[str]) -> int:
    from trl import ModelConfig, TrlParser

    from .pipeline import PipelineConfig, StageInterrupted, format_report, run_pipeline

    parser = TrlParser((PipelineConfig, ModelConfig), prog="trl-ext pipeline")
    cfg, model_args = parser.parse_args_and_config(argv)
    try:
        report = run_pipeline(cfg, model_args)
    except StageInterrupted as e:
        print(e, file=sys.stderr)
        return 130
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
