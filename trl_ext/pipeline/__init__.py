"""SFT → labelled rankings → reward model → RL (or DPO) → evaluation, as one resumable run.

Each stage writes its own folder under ``output_dir`` and a ``stage.json`` when it is complete::

    base/      the embedded tiny checkpoint (only when model_name_or_path is left empty)
    sft/       model/ (full checkpoint; LoRA runs are merged), checkpoints/ while training
    labels/    rankings.jsonl (K answers per prompt, ranked), train.jsonl / test.jsonl (chosen, rejected pairs)
    rm/        model/ (sequence classifier, num_labels=1; trained on the rankings, or on the pairs), checkpoints/
    rl/        model/, checkpoints/
    eval/      samples.jsonl (what each model answered)
    report.json, report.md

Rerunning the same command skips every complete stage (``stage.json`` present and made with the same settings) and
resumes a cut-off stage from its newest complete trainer checkpoint (a kill -9 can leave a half-written one, which is
skipped); a seeded run resumed this way continues exactly as the uninterrupted run would (see
:mod:`trl_ext.resume`). A stage whose settings changed is refused rather than silently reused; the message names the
stage and the way out. A failing stage never touches earlier stages' folders.

The package, one idea per module::

    config.py       PipelineConfig, the stage names, each stage's defaults, stage_args
    embedded.py     EmbeddedTaskConfig: the embedded task's settings, nested in PipelineConfig
    plan.py         which stages run (stage_plan) and the checks before the first (preflight)
    bookkeeping.py  stage markers and fingerprints, resume, Ctrl-C, writing folder/model
    data.py         each stage's data: the embedded task's, or named datasets (loaded and checked by trl_ext.assembly)
    sft.py labels.py rm.py rl.py dpo.py eval.py    one module per stage (dpo: the route without RL)
    report.py       report.json / report.md
    run.py          run_pipeline: the stages in order, then the report
"""

from .bookkeeping import StageInterrupted, StageMismatchError, fingerprint
from .config import (
    ALGORITHMS, DPO_DEFAULTS, RL_ALGORITHMS, RL_DEFAULTS, RM_DEFAULTS, SFT_DEFAULTS, STAGES, PipelineConfig,
    label_max_new_tokens, rl_max_completion_length, rl_stage_args, stage_args, stage_defaults, uses_embedded_model,
)
from .data import eval_dataset, eval_prompts, preference_dataset, rl_prompts, sft_dataset
from .embedded import EMBEDDED_TASKS, EmbeddedTaskConfig
from .dpo import run_dpo
from .eval import run_eval
from .labels import run_labels
from .plan import preflight, stage_plan
from .report import build_report, format_figures, format_report
from .rl import build_rl_trainer, run_rl, train_rl
from .rm import run_rm
from .run import run_pipeline
from .sft import resolve_base, run_sft

__all__ = [
    "ALGORITHMS", "DPO_DEFAULTS", "EMBEDDED_TASKS", "RL_ALGORITHMS", "RL_DEFAULTS", "RM_DEFAULTS", "SFT_DEFAULTS",
    "STAGES", "EmbeddedTaskConfig", "PipelineConfig", "StageInterrupted", "StageMismatchError", "build_report",
    "build_rl_trainer", "eval_dataset", "eval_prompts", "fingerprint", "format_figures", "format_report",
    "label_max_new_tokens", "rl_max_completion_length", "stage_defaults", "uses_embedded_model",
    "preference_dataset", "preflight", "resolve_base", "rl_prompts", "rl_stage_args", "run_dpo", "run_eval",
    "run_labels", "run_pipeline", "run_rl", "run_rm", "run_sft", "sft_dataset", "stage_args", "stage_plan",
    "train_rl",
]
