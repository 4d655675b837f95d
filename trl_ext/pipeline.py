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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset, load_dataset, load_from_disk
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback, set_seed
from trl import (
    DPOConfig, DPOTrainer, GRPOConfig, ModelConfig, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer,
    get_peft_config,
)

from .callbacks import GoldRewardCallback
from .dapo import DAPOConfig, DAPOTrainer
from .evaluation import oracle_accuracy, oracle_accuracy_by_level, reward_function_means, sample_completions
from .ppo import PPOConfig, PPOTrainer
from .ranking import RankingRewardConfig, RankingRewardTrainer
from .models import (
    check_model_path, disable_bnb_cpu_repack, load_causal_lm, load_sequence_classifier, load_tokenizer,
    match_trainable_dtype_to_compute, safe_from_pretrained,
)
from .resume import ResumableGRPOTrainer, newest_complete_checkpoint
from .rewards import RewardAdapter, import_reward_function
from .rloo import RLOOConfig, RLOOTrainer
from .toy import (
    AdditionTask, GradedAdditionTask, Labeller, ensure_tiny_checkpoint, oracle_correct, pairs_from_ranking, sum_correct,
)
from .toy.task import ERROR_KINDS

logger = logging.getLogger("trl_ext.pipeline")

STAGES = ("sft", "labels", "rm", "rl", "eval")
EMBEDDED_TASKS = ("addition", "graded")
# name -> (config class, trainer class) of the RL stage; later algorithms register here
RL_ALGORITHMS: dict[str, tuple[type, type]] = {
    "grpo": (GRPOConfig, ResumableGRPOTrainer),  # trl.GRPOTrainer that also checkpoints its generation buffer
    "dapo": (DAPOConfig, DAPOTrainer),
    "rloo": (RLOOConfig, RLOOTrainer),
    "rloo_trl": (trl.RLOOConfig, trl.RLOOTrainer),  # TRL's own RLOO, beside the explicit variant above
    "ppo": (PPOConfig, PPOTrainer),
}
ALGORITHMS = sorted([*RL_ALGORITHMS, "dpo"])  # "dpo": no RL, the policy trains on the labels' pairs (run_dpo)


class StageMismatchError(RuntimeError):
    """A stage folder was made with other settings than the ones given now."""


class StageInterrupted(RuntimeError):
    """Training was stopped by Ctrl-C after saving a checkpoint; rerunning the same command resumes it."""


class _SaveAndStopOnSigint(TrainerCallback):
    """First Ctrl-C: finish the current optimizer step, save a checkpoint, stop. A second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        logger.warning("Ctrl-C: saving a checkpoint after this step, then stopping (press again to stop at once).")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


@dataclass
class PipelineConfig:
    """Settings of the whole run. Model settings (path, LoRA, 4-bit) come from TRL's ``ModelConfig`` beside it.

    The ``sft``, ``rm`` and ``rl`` mappings hold any field of the stage's TRL config (``SFTConfig``, ``RewardConfig``,
    ``GRPOConfig``/the algorithm's config) and override the defaults chosen here for the embedded model.
    """

    output_dir: str = field(default="runs/tiny", metadata={"help": "Folder that receives one subfolder per stage."})
    seed: int = field(default=0, metadata={"help": "Seed of every stage (data, initialisation, sampling)."})
    algorithm: str = field(default="grpo", metadata={"help": f"RL algorithm: one of {ALGORITHMS}."})
    until: str = field(default="eval", metadata={"help": f"Last stage to run, one of {list(STAGES)}."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow model code from the hub (off: safer)."})
    # -- which stages run (see `stage_plan`) ---------------------------------------------------------------------
    start_at: str | None = field(
        default=None,
        metadata={
            "help": "First stage: 'sft', 'labels' or 'rl'. Past 'sft', model_name_or_path is taken as the SFT model. "
            "Default: 'sft' when there are SFT data (the embedded task's, or sft_dataset_name), else the stage after."
        },
    )
    reward: str | None = field(
        default=None,
        metadata={
            "help": "What RL optimises: 'model' (the learned RM: labels and RM stages run), 'rules' (reward_funcs "
            "only: no labels, no RM) or 'both' (the RM first, then reward_funcs, weighted by the rl map's "
            "reward_weights). Default: 'rules' when reward_funcs is set, else 'model'."
        },
    )
    # -- the embedded task --------------------------------------------------------------------------------------
    task_low: int = field(default=10, metadata={"help": "Smallest operand of the addition task."})
    task_high: int = field(default=49, metadata={"help": "Largest operand of the addition task."})
    embedded_task: str = field(
        default="addition",
        metadata={
            "help": "The embedded task: 'addition' (the seed's a+b) or 'graded' (sums of task_operands[i] numbers "
            "in [task_low, task_high], one difficulty level each; demonstrators slip at task_error_rates[i]; "
            "checker trl_ext.toy.sum_correct). See trl_ext.toy.graded."
        },
    )
    task_operands: list[int] = field(
        default_factory=lambda: [2, 3, 4], metadata={"help": "graded task: the number of operands of each level."}
    )
    task_error_rates: list[float] = field(
        default_factory=lambda: [0.1, 0.3, 0.5],
        metadata={"help": "graded task: the demonstrators' slip rate on each level (replaces demo_error_rate)."},
    )
    eval_size: int = field(default=200, metadata={"help": "Held-out (a, b) pairs used only for evaluation."})
    demo_error_rate: float = field(default=0.5, metadata={"help": "Share of SFT demonstrations that are wrong."})
    demo_error_kinds: list[str] = field(
        default_factory=lambda: ["chatter"], metadata={"help": f"Demonstrators' slips, from {list(ERROR_KINDS)}."}
    )
    num_sft_examples: int = field(default=8000, metadata={"help": "SFT demonstrations to write."})
    num_label_prompts: int = field(default=1500, metadata={"help": "Prompts whose K sampled answers get ranked."})
    num_ranked: int = field(default=4, metadata={"help": "K: answers sampled and ranked per prompt (>= 2)."})
    labeller_noise: float = field(default=0.1, metadata={"help": "Chance the labeller misjudges one answer."})
    label_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature for the K answers."})
    label_max_new_tokens: int = field(default=8, metadata={"help": "Longest answer sampled for the labeller."})
    rm_test_fraction: float = field(default=0.15, metadata={"help": "Share of label prompts held out to test the RM."})
    rm_loss: str | None = field(
        default=None,
        metadata={
            "help": "'ranking': RankingRewardTrainer on the labeller's whole rankings (one forward pass per answer, "
            "InstructGPT's loss; the default with the embedded labeller); 'pairwise': TRL's RewardTrainer on every "
            "pair the rankings imply, as separate rows (the default, and the only choice, with preference_dataset_name)."
        },
    )
    num_rl_prompts: int = field(default=4000, metadata={"help": "Training prompts for the RL stage."})
    eval_samples: int = field(default=4, metadata={"help": "Sampled answers per eval prompt (besides greedy)."})
    eval_temperature: float = field(default=1.0, metadata={"help": "Temperature of the sampled evaluation."})
    reward_batch_size: int = field(default=64, metadata={"help": "Micro-batch size of reward-model scoring."})
    gold_eval_steps: int = field(
        default=10,
        metadata={"help": "RL stage, embedded task: every this many steps GoldRewardCallback logs proxy (RM) vs gold "
                  "(oracle) reward and KL on the held-out prompts, plotted in report.md. 0: off. Not part of the "
                  "stage's settings: it does not change what is trained."},
    )
    gold_eval_samples: int = field(default=2, metadata={"help": "Sampled answers per held-out prompt for gold_eval_steps."})
    reward_funcs: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Extra reward functions for RL beside the reward model, by name as in TRL's grpo.py: a TRL "
            "built-in or a dotted import path ('my_rewards.exact'). Only names written here are imported; weight them "
            "with the rl map's reward_weights (the reward model comes first)."
        },
    )
    shared_base_reward: bool = field(
        default=False,
        metadata={"help": "Train the RM as a LoRA adapter and score with it on the policy's own base (needs use_peft)."},
    )
    # -- data from files or a hub, instead of the embedded task ----------------------------------------------------
    sft_dataset_name: str | None = field(default=None, metadata={"help": "SFT data (prompt/completion or messages)."})
    preference_dataset_name: str | None = field(
        default=None, metadata={"help": "Pairs (prompt, chosen, rejected); replaces sampling + labeller."}
    )
    prompt_dataset_name: str | None = field(default=None, metadata={"help": "RL prompts (a `prompt` column)."})
    dataset_split: str = field(default="train", metadata={"help": "Split read from each named dataset."})
    # -- per-stage TRL configs ---------------------------------------------------------------------------------------
    sft: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "trl.SFTConfig fields: a YAML map, or a JSON object on the command line."}
    )
    rm: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "trl.RewardConfig fields: a YAML map, or a JSON object on the command line."}
    )
    rl: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Fields of the RL algorithm's config (DPOConfig for dpo): a YAML map, or a JSON object on the "
            """command line, e.g. --rl '{"max_steps": 300}'."""
        },
    )

    def __post_init__(self):
        for name in ("sft", "rm", "rl"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as e:
                    raise ValueError(f"--{name} must be a JSON object of {name} config fields: {e}") from None
            setattr(self, name, dict(value or {}))
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"algorithm={self.algorithm!r} is unknown; choose one of {ALGORITHMS} "
                "(set `algorithm:` in the YAML or pass --algorithm)."
            )
        if self.until not in STAGES:
            raise ValueError(f"until={self.until!r} is not a stage; choose one of {list(STAGES)}.")
        if self.num_ranked < 2:
            raise ValueError(f"num_ranked={self.num_ranked}: a ranking needs K >= 2 answers per prompt; set num_ranked >= 2.")
        if self.rm_loss is None:
            self.rm_loss = "pairwise" if self.preference_dataset_name else "ranking"
        if self.rm_loss not in ("ranking", "pairwise"):
            raise ValueError(f"rm_loss={self.rm_loss!r} is unknown; choose 'ranking' or 'pairwise'.")
        if self.rm_loss == "ranking" and self.preference_dataset_name:
            raise ValueError(
                "rm_loss='ranking' needs the labeller's rankings, but preference_dataset_name gives pairs; set "
                "rm_loss: pairwise (or leave it unset)."
            )
        if not 0 < self.rm_test_fraction < 1:
            raise ValueError(f"rm_test_fraction={self.rm_test_fraction} must be strictly between 0 and 1.")
        for name in ("num_sft_examples", "num_label_prompts", "num_rl_prompts", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if self.gold_eval_steps < 0 or self.gold_eval_samples < 1:
            raise ValueError(
                f"gold_eval_steps={self.gold_eval_steps} must be >= 0 (0: off) and gold_eval_samples="
                f"{self.gold_eval_samples} >= 1."
            )
        if self.reward_batch_size < 1:
            raise ValueError(f"reward_batch_size={self.reward_batch_size} must be >= 1.")
        if self.reward_funcs and self.algorithm == "dpo":
            raise ValueError(
                "reward_funcs is set but algorithm='dpo' trains on the labelled pairs and calls no reward function; "
                f"remove reward_funcs or choose an RL algorithm ({', '.join(RL_ALGORITHMS)})."
            )
        if self.start_at not in (None, "sft", "labels", "rl"):
            raise ValueError(f"start_at={self.start_at!r}: choose 'sft', 'labels' or 'rl' (or leave it unset).")
        if self.reward not in (None, "model", "rules", "both"):
            raise ValueError(f"reward={self.reward!r}: choose 'model', 'rules' or 'both' (or leave it unset).")
        if self.label_max_new_tokens < 1:
            raise ValueError(f"label_max_new_tokens={self.label_max_new_tokens} must be >= 1.")
        if self.embedded_task not in EMBEDDED_TASKS:
            raise ValueError(f"embedded_task={self.embedded_task!r}: choose one of {list(EMBEDDED_TASKS)}.")
        self.task  # validates the task fields
        Labeller(self.labeller_noise)

    @property
    def task(self) -> AdditionTask | GradedAdditionTask:
        if self.embedded_task == "graded":
            return GradedAdditionTask(
                operands=tuple(self.task_operands), low=self.task_low, high=self.task_high, eval_size=self.eval_size,
                demo_error_rates=tuple(self.task_error_rates), demo_error_kinds=tuple(self.demo_error_kinds),
            )
        return AdditionTask(
            low=self.task_low,
            high=self.task_high,
            eval_size=self.eval_size,
            demo_error_rate=self.demo_error_rate,
            demo_error_kinds=tuple(self.demo_error_kinds),
        )

    @property
    def uses_embedded_task(self) -> bool:
        return self.sft_dataset_name is None and self.prompt_dataset_name is None

    @property
    def reward_route(self) -> str:
        """'model', 'rules' or 'both': ``reward`` as given, or 'rules' when only reward_funcs name a reward."""
        if self.reward is not None:
            return self.reward
        return "rules" if self.reward_funcs else "model"

    @property
    def oracle(self) -> Callable[..., list[float]]:
        """The embedded task's checker, a TRL reward function (1.0 right, 0.0 wrong)."""
        return sum_correct if self.embedded_task == "graded" else oracle_correct


# ---- defaults for the embedded model (2 CPU cores); YAML `sft:`/`rm:`/`rl:` maps override them -------------------
_COMMON = dict(
    report_to=[], logging_steps=10, save_strategy="steps", save_steps=50, save_total_limit=1,
    gradient_checkpointing=False,  # TRL 1.16 turns it on by default; for small models it only costs time
)
SFT_DEFAULTS = dict(
    learning_rate=1e-3, num_train_epochs=6, per_device_train_batch_size=64, lr_scheduler_type="cosine",
    warmup_steps=0.05, max_length=32,
)
RM_DEFAULTS = dict(
    learning_rate=5e-4, num_train_epochs=2, per_device_train_batch_size=64, per_device_eval_batch_size=256,
    lr_scheduler_type="cosine", warmup_steps=0.05, max_length=32, eval_strategy="no",
)
DPO_DEFAULTS = dict(
    learning_rate=2e-4, num_train_epochs=1, per_device_train_batch_size=64, beta=0.1, lr_scheduler_type="cosine",
    max_length=32,
)
RL_DEFAULTS = dict(
    learning_rate=5e-6, max_steps=150, per_device_train_batch_size=64, num_generations=8, max_completion_length=8,
    temperature=1.0, beta=0.0, lr_scheduler_type="constant", logging_steps=10,
)


def stage_args(config_cls, defaults: dict, overrides: dict, output_dir: Path, seed: int, what: str):
    valid = {f.name for f in fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"`{what}:` has fields that {config_cls.__name__} does not know: {unknown}. "
            f"Check their spelling against trl.{config_cls.__name__}."
        )
    kwargs = {**_COMMON, **defaults, **overrides, "output_dir": str(output_dir), "seed": seed}
    if not torch.cuda.is_available():
        kwargs.setdefault("use_cpu", True)
        # TRL 1.16 defaults to bf16 autocast, which CPUs without bf16 units emulate ~10x slower than fp32
        kwargs.setdefault("bf16", False)
    return config_cls(**kwargs)


def stage_plan(cfg: PipelineConfig, model_args: ModelConfig) -> list[str]:
    """The stages this run executes, in order, from ``start_at`` (or its default) to ``until``.

    The rule: SFT runs when it has data (the embedded task's demonstrations, or ``sft_dataset_name``); otherwise, or
    with ``start_at: labels`` / ``start_at: rl``, ``model_name_or_path`` is the SFT model. The labels and RM stages run
    when the reward includes the learned RM (``reward: model`` or ``both``); with ``reward: rules`` (the default when
    only ``reward_funcs`` name a reward) RL optimises the rule rewards alone: the verifiable-reward route. Every
    combination that cannot work is refused here, before any stage starts, with the field to change.
    """
    route = cfg.reward_route
    has_sft_data = cfg.uses_embedded_task or cfg.sft_dataset_name is not None
    start = cfg.start_at or ("sft" if has_sft_data else "rl" if route == "rules" else "labels")
    stop = STAGES.index(cfg.until)
    if STAGES.index(start) > stop:
        raise ValueError(f"until={cfg.until!r} comes before start_at={start!r}: nothing would run. Set until later.")
    if start != "sft" and not model_args.model_name_or_path:
        raise ValueError(
            f"start_at={start!r} skips SFT and takes model_name_or_path as the SFT model: pass --model_name_or_path "
            "(e.g. the sft/model folder of an earlier run), or set start_at: sft."
        )
    if start == "sft" and not has_sft_data:
        raise ValueError(
            "start_at='sft' but there are no SFT data for your prompts: give sft_dataset_name, or leave start_at unset "
            "(or start_at: rl) to use model_name_or_path as the SFT model."
        )
    if route in ("rules", "both") and not cfg.reward_funcs:
        raise ValueError(
            f"reward={route!r} optimises rule rewards but reward_funcs is empty: name them (e.g. reward_funcs: "
            "[trl_ext.toy.sum_correct] for the embedded task, or TRL's accuracy_reward), or set reward: model."
        )
    if route == "model" and cfg.reward_funcs:
        raise ValueError(
            f"reward='model' optimises the learned RM alone, but reward_funcs={cfg.reward_funcs} is set: choose "
            "reward: both to add them to the RM, or reward: rules to use them without one."
        )
    if route == "rules":
        if start == "labels":
            raise ValueError(
                "start_at='labels' but reward='rules' trains no reward model, so there is no labels stage: set "
                "start_at: rl, or reward: both to train an RM as well."
            )
        if cfg.shared_base_reward:
            raise ValueError("shared_base_reward=True scores with the learned RM, but reward='rules' trains none: "
                             "drop shared_base_reward, or set reward: both.")
    elif start == "rl":
        raise ValueError(
            f"start_at='rl' skips the labels and RM stages, but reward={route!r} needs the learned RM: set start_at: "
            "labels to train one from model_name_or_path, or reward: rules with reward_funcs."
        )
    plan = [s for s in STAGES[STAGES.index(start) : stop + 1] if route != "rules" or s not in ("labels", "rm")]
    if "labels" in plan and not cfg.uses_embedded_task and not cfg.preference_dataset_name:
        # the labeller only knows the embedded task: ranking its toy prompts would train an RM on the wrong data
        raise ValueError(
            "the labels stage needs preference pairs for your data: give preference_dataset_name (columns prompt, "
            "chosen, rejected), or reward: rules with reward_funcs (no labels, no RM). The embedded labeller only "
            "ranks answers to the embedded task, used when no sft_dataset_name / prompt_dataset_name is given."
        )
    if "labels" in plan and cfg.uses_embedded_task and cfg.embedded_task != "addition":
        raise ValueError(
            f"embedded_task={cfg.embedded_task!r} has no labeller (its checker is the reward): set reward: rules with "
            "reward_funcs: [trl_ext.toy.sum_correct], or embedded_task: addition for the RM route."
        )
    return plan


def preflight(cfg: PipelineConfig, run_dir: Path, stop: int, model_args: ModelConfig | None = None) -> list[str]:
    """Check everything the stages up to ``stop`` will need before the first one starts; return :func:`stage_plan`.

    Builds every stage's TRL config (TRL validates its configs when they are built), imports the named reward
    functions, and loads and checks the named datasets, so a bad value in the ``rl:`` map or an empty row in a dataset
    is an error in the first seconds rather than after SFT and the reward model have trained. ``stop`` is kept for
    callers of the older signature; the plan's last stage is ``cfg.until``.
    """
    if cfg.sft_dataset_name:
        sft_dataset(cfg)
    if cfg.preference_dataset_name and stop >= STAGES.index("labels"):
        preference_dataset(cfg)
    if cfg.prompt_dataset_name and stop >= STAGES.index("rl"):
        rl_prompts(cfg)
    plan = stage_plan(cfg, model_args or ModelConfig())
    rl_config = DPOConfig if cfg.algorithm == "dpo" else RL_ALGORITHMS[cfg.algorithm][0]
    rl_defaults = DPO_DEFAULTS if cfg.algorithm == "dpo" else RL_DEFAULTS
    stages = [("sft", SFTConfig, SFT_DEFAULTS), ("rm", _rm_trainer(cfg)[0], RM_DEFAULTS), ("rl", rl_config, rl_defaults)]
    for name, config_cls, defaults in stages:
        if name not in plan:
            continue
        try:
            args = stage_args(config_cls, defaults, getattr(cfg, name), run_dir / name / "checkpoints", cfg.seed, name)
        except (ValueError, TypeError) as e:
            if str(e).startswith(f"`{name}:`"):
                raise
            raise ValueError(f"`{name}:` settings are invalid for {config_cls.__name__}: {e}") from None
        if name == "rl" and cfg.algorithm != "dpo":
            funcs = [import_reward_function(spec, field=f"reward_funcs[{i}]") for i, spec in enumerate(cfg.reward_funcs)]
            weights = getattr(args, "reward_weights", None)
            with_rm = cfg.reward_route != "rules"
            if weights is not None and len(weights) != with_rm + len(funcs):
                rewards = f"the reward model, then reward_funcs {cfg.reward_funcs}" if with_rm else (
                    f"reward_funcs {cfg.reward_funcs}; reward: rules, no reward model")
                raise ValueError(
                    f"`rl:` reward_weights has {len(weights)} weights for {with_rm + len(funcs)} rewards ({rewards}); "
                    "give one weight per reward."
                )
    return plan


# ---- data ---------------------------------------------------------------------------------------------------------
def load_named_dataset(name: str, split: str) -> Dataset:
    """A dataset from a folder written by ``save_to_disk`` (a Dataset, or a DatasetDict's ``split``), a
    .json/.jsonl/.csv/.parquet file, or a hub id."""
    path = Path(name).expanduser()
    if path.is_dir() and (path / "dataset_info.json").exists():
        return load_from_disk(str(path))
    if path.is_dir() and (path / "dataset_dict.json").exists():  # DatasetDict.save_to_disk: one folder per split
        splits = load_from_disk(str(path))
        if split not in splits:
            raise ValueError(f"dataset {name!r} has no split {split!r}; its splits are {list(splits)}.")
        return splits[split]
    kinds = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
    if path.is_file():
        kind = kinds.get(path.suffix)
        if kind is None:
            raise ValueError(f"dataset {name!r}: unsupported file type {path.suffix!r}; use jsonl, json, csv or parquet.")
        return load_dataset(kind, data_files=str(path), split="train")
    if name.startswith((".", "/", "~")) or path.suffix in kinds:  # a file name, not a hub id: do not ask the hub
        raise FileNotFoundError(
            f"dataset {name!r} does not exist. Check the path (a relative one starts from the folder you run in), or "
            "give a hub dataset id."
        )
    return load_dataset(name, split=split)


def _is_empty(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, list):
        return len(value) == 0 or all(_is_empty(m.get("content") if isinstance(m, dict) else m) for m in value)
    return False


def validate_columns(dataset: Dataset, required: list[str], what: str) -> None:
    """Fail with the dataset, the row and the column when a required column is missing or a value is empty."""
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"{what}: column(s) {missing} missing; the dataset has {dataset.column_names}. "
            f"Rename the columns (dataset.rename_column) or pick a dataset with {required}."
        )
    for column in required:
        for i, value in enumerate(dataset[column]):
            if _is_empty(value):
                raise ValueError(f"{what}: row {i} has an empty {column!r}. Remove the row or fill it in.")


# ---- stage bookkeeping ------------------------------------------------------------------------------------------
def fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _write_json_atomic(path: Path, payload) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def _as_recorded(settings: dict) -> dict:
    return json.loads(json.dumps(settings, default=str))


def _changed_settings(now: dict, before: dict) -> list[str]:
    now = _as_recorded(now)  # compare as they were recorded
    return sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))


def _run_stage(run_dir: Path, name: str, settings: dict, fn: Callable[[Path], dict]) -> dict:
    """Run ``fn(folder)`` unless the stage is already complete with the same settings; record time and metrics."""
    folder = run_dir / name
    marker = folder / "stage.json"
    digest = fingerprint(settings)
    if marker.exists():
        info = json.loads(marker.read_text())
        if info["fingerprint"] != digest:
            changed = _changed_settings(settings, info["settings"])
            raise StageMismatchError(
                f"stage {name!r} in {folder} was made with other settings (changed: {changed}). Use a new "
                f"--output_dir, or delete {folder} (and the stages after it) to redo it."
            )
        logger.info("stage %s: complete in %s, skipped", name, folder)
        return info
    pending = folder / "stage.pending.json"  # what a cut-off run of this stage was started with
    if pending.exists() and (folder / "checkpoints").is_dir():
        started = json.loads(pending.read_text())
        if started["fingerprint"] != digest:
            changed = _changed_settings(settings, started["settings"])
            raise StageMismatchError(
                f"stage {name!r} in {folder} was cut off while running with other settings (changed: {changed}), so "
                f"its checkpoints cannot be resumed with these. Run with the earlier settings to finish it, or delete "
                f"{folder / 'checkpoints'} to start the stage again."
            )
    folder.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(pending, {"fingerprint": digest, "settings": _as_recorded(settings)})
    logger.info("stage %s: running in %s", name, folder)
    start = time.perf_counter()
    metrics = fn(folder)
    info = {
        "stage": name,
        "fingerprint": digest,
        "settings": _as_recorded(settings),
        "wall_time_s": round(time.perf_counter() - start, 2),
        "metrics": metrics,
    }
    _write_json_atomic(marker, info)
    pending.unlink(missing_ok=True)
    return info


def _train(trainer, folder: Path, callbacks=None) -> dict:
    """Train, resuming from the newest complete checkpoint in ``folder/checkpoints`` if an earlier run was cut off.

    A checkpoint folder that a kill -9 left half-written is skipped and deleted (see
    :func:`trl_ext.resume.newest_complete_checkpoint`); the log names it.
    """
    for callback in callbacks or ():
        trainer.add_callback(callback)
    ckpt_dir = folder / "checkpoints"
    last = newest_complete_checkpoint(ckpt_dir, trainer.args.world_size, remove_incomplete=trainer.args.should_save)
    if last:
        logger.info("resuming from %s", last)
    interrupt = _SaveAndStopOnSigint()
    trainer.add_callback(interrupt)
    interrupt.install()
    try:
        result = trainer.train(resume_from_checkpoint=last)
    finally:
        interrupt.uninstall()
    if interrupt.requested:
        saved = newest_complete_checkpoint(ckpt_dir, trainer.args.world_size)
        raise StageInterrupted(
            f"stage {folder.name!r} interrupted; checkpoint saved at {saved}. Run the same command again to resume."
        )
    if trainer.args.should_save:  # the report's training curves (and a resumed run's history, which includes the
        _write_json_atomic(folder / "log_history.json", trainer.state.log_history)  # checkpoint's)
    metrics = {"train_loss": result.training_loss, "global_step": result.global_step, "resumed_from": last}
    if last:
        metrics.update(_whole_run_loss(trainer.state, int(Path(last).name.split("-")[-1]), result.training_loss))
    return metrics


def _whole_run_loss(state, resumed_at: int, loss_since_resume: float) -> dict:
    """``train_loss`` over every step of a resumed run; Trainer's own covers only the steps since the resume.

    The steps before ``resumed_at`` are known from the logged losses in the checkpoint's log history, which cover
    them all when the checkpoint step is a logging step (``save_steps`` a multiple of ``logging_steps``). Otherwise
    the loss of the steps since the resume is kept, and ``train_loss_first_step`` says where it starts.
    """
    logged = [(h["step"], h["loss"]) for h in state.log_history if "loss" in h and h["step"] <= resumed_at]
    if not logged or logged[-1][0] != resumed_at:
        return {"train_loss_first_step": resumed_at + 1}
    total, previous = 0.0, 0
    for step, loss in logged:  # each logged loss is the mean over the steps since the previous log
        total += loss * (step - previous)
        previous = step
    return {"train_loss": (total + loss_since_resume * (state.global_step - resumed_at)) / state.global_step}


def _save_model(trainer, folder: Path, base_name: str, model_args: ModelConfig, auto_cls, tokenizer, **load_kw) -> str:
    """Write ``folder/model`` as a full checkpoint: LoRA adapters are merged into a full-precision copy of the base."""
    target = folder / "model"
    tmp = folder / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "peft_config"):  # a PeftModel: merge into an unquantised base so later stages load one folder
        adapter_dir = folder / "adapter"
        model.save_pretrained(adapter_dir)
        tokenizer.save_pretrained(adapter_dir)
        from peft import PeftModel

        dtype = torch.float32 if not torch.cuda.is_available() else torch.bfloat16
        base = safe_from_pretrained(auto_cls, base_name, dtype=dtype, **load_kw)
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
        merged.save_pretrained(tmp, safe_serialization=True)
    else:
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return f"{folder.name}/model"  # relative to the run folder


# ---- stages -------------------------------------------------------------------------------------------------------
def resolve_base(cfg: PipelineConfig, model_args: ModelConfig, run_dir: Path) -> str:
    """The base model: the user's path or hub id, or the embedded tiny checkpoint built into ``run_dir/base``."""
    if model_args.model_name_or_path:
        return check_model_path(model_args.model_name_or_path)
    return str(ensure_tiny_checkpoint(run_dir / "base"))


def _model_settings(model_args: ModelConfig) -> dict:
    return asdict(model_args)


def sft_dataset(cfg: PipelineConfig) -> Dataset:
    if cfg.sft_dataset_name:
        ds = load_named_dataset(cfg.sft_dataset_name, cfg.dataset_split)
        needed = ["messages"] if "messages" in ds.column_names else ["prompt", "completion"]
        validate_columns(ds, needed, f"sft_dataset_name={cfg.sft_dataset_name!r}")
        return ds
    return cfg.task.sft_dataset(cfg.num_sft_examples, seed=cfg.seed)


def run_sft(cfg: PipelineConfig, model_args: ModelConfig, base: str, folder: Path, callbacks=None) -> dict:
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_args, base, cfg.trust_remote_code)
    model = load_causal_lm(model_args, base, cfg.trust_remote_code)
    args = stage_args(SFTConfig, SFT_DEFAULTS, cfg.sft, folder / "checkpoints", cfg.seed, "sft")
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=sft_dataset(cfg), processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    metrics = _train(trainer, folder, callbacks)
    metrics["model"] = _save_model(
        trainer, folder, base, model_args, AutoModelForCausalLM, tokenizer, trust_remote_code=cfg.trust_remote_code
    )
    return metrics


def preference_dataset(cfg: PipelineConfig) -> Dataset:
    ds = load_named_dataset(cfg.preference_dataset_name, cfg.dataset_split)
    validate_columns(ds, ["chosen", "rejected"], f"preference_dataset_name={cfg.preference_dataset_name!r}")
    return ds


def run_labels(cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, folder: Path) -> dict:
    """Sample K answers per prompt from the SFT model, let the labeller rank them, turn rankings into pairs."""
    if cfg.preference_dataset_name:
        ds = preference_dataset(cfg)
        split = ds.train_test_split(test_size=cfg.rm_test_fraction, seed=cfg.seed)
        split["train"].to_json(folder / "train.jsonl")
        split["test"].to_json(folder / "test.jsonl")
        return {"train_pairs": len(split["train"]), "test_pairs": len(split["test"]), "source": "dataset"}

    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    dtype = torch.float32 if not torch.cuda.is_available() else "auto"
    model = safe_from_pretrained(
        AutoModelForCausalLM, sft_model, "sft model", dtype=dtype, trust_remote_code=cfg.trust_remote_code
    )
    if torch.cuda.is_available():
        model.to("cuda")
    prompts = cfg.task.prompt_dataset(cfg.num_label_prompts, seed=cfg.seed + 1)["prompt"]
    answers = sample_completions(
        model, tokenizer, prompts, num_samples=cfg.num_ranked, temperature=cfg.label_temperature,
        max_new_tokens=cfg.label_max_new_tokens, seed=cfg.seed, desc="sampling answers to rank",
    )
    labeller = Labeller(cfg.labeller_noise)
    rng = random.Random(cfg.seed)
    n_test = _num_test_prompts(cfg, len(prompts))
    rows = {"train": [], "test": []}
    with open(folder / "rankings.jsonl.tmp", "w") as rankings:
        for i, (prompt, ks) in enumerate(zip(prompts, answers, strict=True)):
            tiers = labeller.rank(prompt, ks, rng)
            rankings.write(json.dumps({"prompt": prompt, "answers": ks, "ranking": tiers}) + "\n")
            split = "test" if i < n_test else "train"
            for c, r in pairs_from_ranking(tiers, ks):
                rows[split].append({
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": ks[c]}],
                    "rejected": [{"role": "assistant", "content": ks[r]}],
                })
    if not rows["train"] or not rows["test"]:
        raise RuntimeError(
            f"labels: the labeller found no preference among the SFT model's answers (train pairs: {len(rows['train'])}, "
            f"test pairs: {len(rows['test'])}): every answer to a prompt was judged equal. Raise label_temperature "
            "or num_ranked, or num_label_prompts."
        )
    for split, split_rows in rows.items():
        Dataset.from_list(split_rows).to_json(folder / f"{split}.jsonl")
    os.replace(folder / "rankings.jsonl.tmp", folder / "rankings.jsonl")
    flat = [a for ks in answers for a in ks]
    return {
        "prompts": len(prompts), "k": cfg.num_ranked, "train_pairs": len(rows["train"]), "test_pairs": len(rows["test"]),
        "sampled_accuracy": oracle_accuracy(prompts, answers, oracle_correct), "distinct_answers": len(set(flat)),
    }


def _num_test_prompts(cfg: PipelineConfig, num_prompts: int) -> int:
    """The labels stage holds out the first this-many ranked prompts (and their pairs) to test the RM."""
    return max(1, int(round(cfg.rm_test_fraction * num_prompts)))


def _rm_trainer(cfg: PipelineConfig) -> tuple[type, type]:
    return (RankingRewardConfig, RankingRewardTrainer) if cfg.rm_loss == "ranking" else (RewardConfig, RewardTrainer)


def _train_rankings(cfg: PipelineConfig, labels: Path) -> Dataset:
    """The labeller's training rankings as RankingRewardTrainer rows; all-tied rankings (no pair) are left out."""
    ranked = load_dataset("json", data_files=str(labels / "rankings.jsonl"), split="train")
    ranked = ranked.select(range(_num_test_prompts(cfg, len(ranked)), len(ranked))).filter(lambda r: len(r["ranking"]) > 1)
    return ranked.map(
        lambda r: {"completions": [[{"role": "assistant", "content": a}] for a in r["answers"]]},
        remove_columns=["answers"],
    )


def run_rm(cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, labels: Path, folder: Path, callbacks=None) -> dict:
    """Train a sequence-classification reward model from the SFT model on the labels.

    ``rm_loss: ranking`` trains RankingRewardTrainer on the labeller's whole rankings; ``pairwise`` trains TRL's
    RewardTrainer on the pairs in ``train.jsonl``. Both are tested on the held-out pairs of ``test.jsonl``, each pair
    given to the ranking trainer as a ranking of K = 2 (one pair per row, so the same batches and the same accuracy).
    """
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    model = load_sequence_classifier(model_args, sft_model, num_labels=1, trust_remote_code=cfg.trust_remote_code)
    test = load_dataset("json", data_files=str(labels / "test.jsonl"), split="train")
    config_cls, trainer_cls = _rm_trainer(cfg)
    if cfg.rm_loss == "ranking":
        train = _train_rankings(cfg, labels)
        test = test.map(
            lambda p: {"completions": [p["chosen"], p["rejected"]], "ranking": [[0], [1]]},
            remove_columns=["chosen", "rejected"],
        )
    else:
        train = load_dataset("json", data_files=str(labels / "train.jsonl"), split="train")
    args = stage_args(config_cls, RM_DEFAULTS, cfg.rm, folder / "checkpoints", cfg.seed, "rm")
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"  # keeps the score head trainable (modules_to_save)
    trainer = trainer_cls(
        model=model, args=args, train_dataset=train, eval_dataset=test, processing_class=tokenizer,
        peft_config=peft_config,
    )
    match_trainable_dtype_to_compute(trainer.model, args.bf16)
    metrics = _train(trainer, folder, callbacks)
    evaluation = trainer.evaluate()
    metrics["test_pairwise_accuracy"] = evaluation["eval_accuracy"]
    metrics["test_pairs"] = len(test)
    metrics["rm_loss"] = cfg.rm_loss
    metrics["model"] = _save_model(
        trainer, folder, sft_model, model_args, AutoModelForSequenceClassification, tokenizer, num_labels=1,
        trust_remote_code=cfg.trust_remote_code,
    )
    return metrics


def rl_prompts(cfg: PipelineConfig) -> Dataset:
    if cfg.prompt_dataset_name:
        ds = load_named_dataset(cfg.prompt_dataset_name, cfg.dataset_split)
        validate_columns(ds, ["prompt"], f"prompt_dataset_name={cfg.prompt_dataset_name!r}")
        return ds
    return cfg.task.prompt_dataset(cfg.num_rl_prompts, seed=cfg.seed + 2)


def rl_stage_args(cfg: PipelineConfig, output_dir: Path):
    """The TRL config the RL stage trains with: the algorithm's config (DPOConfig for dpo) from the defaults here and
    the ``rl:`` map."""
    if cfg.algorithm == "dpo":
        return stage_args(DPOConfig, DPO_DEFAULTS, cfg.rl, output_dir, cfg.seed, "rl")
    return stage_args(RL_ALGORITHMS[cfg.algorithm][0], RL_DEFAULTS, cfg.rl, output_dir, cfg.seed, "rl")


def run_dpo(cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, labels: Path, folder: Path, callbacks=None) -> dict:
    """The non-RL route: the labeller's pairs (``labels/train.jsonl``) train the policy directly, no RM in the loop."""
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    model = load_causal_lm(model_args, sft_model, cfg.trust_remote_code)
    pairs = load_dataset("json", data_files=str(labels / "train.jsonl"), split="train")
    trainer = DPOTrainer(
        model=model, args=rl_stage_args(cfg, folder / "checkpoints"), train_dataset=pairs, processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    metrics = _train(trainer, folder, callbacks)
    metrics["model"] = _save_model(
        trainer, folder, sft_model, model_args, AutoModelForCausalLM, tokenizer, trust_remote_code=cfg.trust_remote_code
    )
    return metrics


def run_rl(
    cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, rm_folder: Path | None, folder: Path, callbacks=None,
    trainer_cls: type | None = None,
) -> dict:
    """RL from the SFT model: :func:`build_rl_trainer`, then :func:`train_rl`."""
    trainer = build_rl_trainer(cfg, model_args, sft_model, rm_folder, folder, trainer_cls)
    return train_rl(trainer, cfg, model_args, sft_model, folder, callbacks)


def build_rl_trainer(
    cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, rm_folder: Path | None, folder: Path,
    trainer_cls: type | None = None,
):
    """The RL stage's trainer, against the learned RM scored through RewardAdapter in micro-batches.

    ``rm_folder=None`` is the verifiable-reward route: the rule rewards (``reward_funcs``) alone. ``trainer_cls``
    replaces the algorithm's trainer class (a subclass of it, say); it is built with the same arguments.

    With ``shared_base_reward`` the policy becomes a PeftModel here and the RM's LoRA adapter (trained on the same SFT
    base) is loaded onto it as a second adapter: one copy of the base weights serves both roles.
    """
    set_seed(cfg.seed)
    trainer_cls = trainer_cls or RL_ALGORITHMS[cfg.algorithm][1]
    tokenizer = load_tokenizer(model_args, sft_model, cfg.trust_remote_code)
    model = load_causal_lm(model_args, sft_model, cfg.trust_remote_code)
    peft_config = get_peft_config(model_args)
    if cfg.shared_base_reward and rm_folder is not None:
        from peft import get_peft_model, prepare_model_for_kbit_training

        if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, peft_config)
        peft_config = None  # the trainer gets the PeftModel as it is
    reward, extra = _rl_reward(cfg, model_args, model, rm_folder)
    args = rl_stage_args(cfg, folder / "checkpoints")
    reward_funcs = [reward] * (reward is not None) + [
        RewardAdapter.from_function(import_reward_function(spec, field=f"reward_funcs[{i}]"))
        for i, spec in enumerate(cfg.reward_funcs)
    ]
    trainer = trainer_cls(
        model=model, reward_funcs=reward_funcs, args=args, train_dataset=rl_prompts(cfg), processing_class=tokenizer,
        peft_config=peft_config, **extra,
    )
    disable_bnb_cpu_repack(trainer.model)
    match_trainable_dtype_to_compute(trainer.model, args.bf16)
    return trainer


def _rl_reward(cfg: PipelineConfig, model_args: ModelConfig, model, rm_folder: Path | None) -> tuple[Any, dict]:
    """The learned RM as the RL stage scores with it (None on the rule-reward route), and the trainer's extra args."""
    if rm_folder is None:  # rule rewards only (reward: rules); PPO's critic then starts from the policy
        return None, {}
    if cfg.algorithm == "ppo" and bool(cfg.rl.get("shared_base")):
        # PPO puts policy, reference, RM and critic on one base and loads the RM adapter itself
        if not (rm_folder / "adapter").exists():
            raise ValueError("rl.shared_base=true needs the RM trained as a LoRA adapter: add --use_peft.")
        return str(rm_folder / "adapter"), {}  # no full RM: it would sit in memory beside the adapter, unused
    if cfg.shared_base_reward:
        return RewardAdapter.shared_base(model, rm_folder / "adapter", batch_size=cfg.reward_batch_size, name="rm"), {}
    reward_model = load_sequence_classifier(
        model_args, str(rm_folder / "model"), num_labels=1, trust_remote_code=cfg.trust_remote_code
    )
    reward = RewardAdapter.from_model(
        reward_model, load_tokenizer(model_args, str(rm_folder / "model"), cfg.trust_remote_code),
        batch_size=cfg.reward_batch_size, name="rm",
    )
    # PPO's critic starts from the RM (InstructGPT)
    return reward, ({"value_model": str(rm_folder / "model")} if cfg.algorithm == "ppo" else {})


def train_rl(trainer, cfg: PipelineConfig, model_args: ModelConfig, sft_model: str, folder: Path, callbacks=None) -> dict:
    """Train the RL stage's trainer (resuming a cut-off run), record the reward curve's ends, save ``folder/model``."""
    metrics = _train(trainer, folder, [*(callbacks or []), *_gold_callback(cfg, sft_model)])
    history = [h for h in trainer.state.log_history if "reward" in h]
    metrics["reward_first"] = history[0]["reward"] if history else None
    metrics["reward_last"] = history[-1]["reward"] if history else None
    # TRL's share of groups whose rewards do not vary (zero advantage; with a 0/1 reward: all right or all wrong)
    zero_std = [h["frac_reward_zero_std"] for h in history if "frac_reward_zero_std" in h]
    metrics["frac_reward_zero_std_first"] = zero_std[0] if zero_std else None
    metrics["frac_reward_zero_std_last"] = zero_std[-1] if zero_std else None
    if cfg.shared_base_reward:  # keep only the policy's adapter in what is saved and merged
        trainer.accelerator.unwrap_model(trainer.model).delete_adapter("reward")
    metrics["model"] = _save_model(
        trainer, folder, sft_model, model_args, AutoModelForCausalLM, tokenizer=trainer.processing_class,
        trust_remote_code=cfg.trust_remote_code,
    )
    return metrics


def _gold_callback(cfg: PipelineConfig, sft_model: str) -> list:
    """The oracle as gold reward during RL (embedded task only): proxy (the RM) vs truth vs KL, for report.md.

    The KL's reference is the trainer's own (its ref_model, or the base under LoRA); with beta=0 and no LoRA it is
    the SFT model the policy started from, loaded once by the callback. It leaves training untouched (same weights).
    """
    if not cfg.uses_embedded_task or cfg.gold_eval_steps == 0:
        return []
    return [GoldRewardCallback(
        gold=cfg.oracle, eval_dataset=cfg.task.eval_dataset(), eval_steps=cfg.gold_eval_steps,
        num_samples=cfg.gold_eval_samples, batch_size=cfg.reward_batch_size, seed=cfg.seed, ref_model=sft_model,
    )]


def eval_dataset(cfg: PipelineConfig) -> Dataset:
    """The embedded task's held-out prompts, or the last ``eval_size`` rows of a named prompt dataset."""
    if cfg.uses_embedded_task:
        return cfg.task.eval_dataset()
    ds = rl_prompts(cfg)
    return ds.select(range(len(ds) - min(cfg.eval_size, len(ds)), len(ds)))


def eval_prompts(cfg: PipelineConfig) -> list:
    return eval_dataset(cfg)["prompt"]


def _eval_rules(cfg: PipelineConfig, data: Dataset, prompts: list, greedy: list, sampled: list) -> dict:
    """Per-level oracle accuracy (a task with levels) and each reward function's mean, greedy and sampled."""
    row = {}
    if cfg.uses_embedded_task and "level" in data.column_names:
        for kind, answers in (("greedy", greedy), ("sampled", sampled)):
            row[f"oracle_accuracy_{kind}_by_level"] = oracle_accuracy_by_level(prompts, answers, cfg.oracle, data["level"])
    if cfg.reward_funcs:
        funcs = {spec: import_reward_function(spec, field=f"reward_funcs[{i}]") for i, spec in enumerate(cfg.reward_funcs)}
        columns = {c: data[c] for c in data.column_names if c != "prompt"}
        for kind, answers in (("greedy", greedy), ("sampled", sampled)):
            row[f"reward_funcs_{kind}"] = reward_function_means(funcs, prompts, answers, columns)
    return row


def run_eval(cfg: PipelineConfig, models: dict[str, str], rm_model: str | None, folder: Path) -> dict:
    """Oracle accuracy (greedy and sampled, per level where the task has levels; embedded task only), each reward
    function's mean, and the mean RM score of each model on held-out prompts."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = eval_dataset(cfg)
    prompts = data["prompt"]
    oracle = cfg.oracle if cfg.uses_embedded_task else None
    max_new_tokens = int(cfg.rl.get("max_completion_length", RL_DEFAULTS["max_completion_length"]))
    rm = None
    if rm_model is not None:
        rm_net = safe_from_pretrained(
            AutoModelForSequenceClassification, rm_model, "reward model", num_labels=1, dtype="auto",
            trust_remote_code=cfg.trust_remote_code,
        ).to(device)
        rm = RewardAdapter.from_model(rm_net, load_tokenizer(ModelConfig(), rm_model), batch_size=cfg.reward_batch_size)
    results = {}
    with open(folder / "samples.jsonl.tmp", "w") as out:
        for name, path in models.items():
            tokenizer = load_tokenizer(ModelConfig(), path, cfg.trust_remote_code)
            model = safe_from_pretrained(
                AutoModelForCausalLM, path, f"{name} model", dtype="auto", trust_remote_code=cfg.trust_remote_code
            )
            model.to(device)
            kw = dict(max_new_tokens=max_new_tokens)
            greedy = sample_completions(model, tokenizer, prompts, temperature=0.0, desc=f"eval {name} greedy", **kw)
            sampled = sample_completions(
                model, tokenizer, prompts, num_samples=cfg.eval_samples, temperature=cfg.eval_temperature,
                seed=cfg.seed, desc=f"eval {name} sampled", **kw,
            )
            row = {}
            if oracle is not None:
                row["oracle_accuracy_greedy"] = oracle_accuracy(prompts, greedy, oracle)
                row["oracle_accuracy_sampled"] = oracle_accuracy(prompts, sampled, oracle)
            if rm is not None:
                flat_p = [p for p, cs in zip(prompts, sampled) for _ in cs]
                flat_c = [c if isinstance(p, str) else [{"role": "assistant", "content": c}]
                          for p, cs in zip(prompts, sampled) for c in cs]
                scores = rm.score(flat_p, flat_c)
                row["rm_score_sampled"] = float(sum(scores) / len(scores))
            row.update(_eval_rules(cfg, data, prompts, greedy, sampled))
            results[name] = row
            for p, g, s in zip(prompts, greedy, sampled):
                out.write(json.dumps({"model": name, "prompt": p, "greedy": g[0], "sampled": s}) + "\n")
            del model
    os.replace(folder / "samples.jsonl.tmp", folder / "samples.jsonl")
    return results


# ---- the whole run ------------------------------------------------------------------------------------------------
def run_pipeline(cfg: PipelineConfig, model_args: ModelConfig | None = None, callbacks=None) -> dict:
    """Run (or resume) every stage up to ``cfg.until``; return the report and write report.json / report.md.

    ``callbacks`` (transformers ``TrainerCallback`` objects) are added to every trainer the run creates.
    """
    model_args = model_args or ModelConfig()
    if model_args.model_name_or_path is None and not cfg.uses_embedded_task:
        raise ValueError(
            "model_name_or_path is required when the data come from named datasets (sft_dataset_name / "
            "prompt_dataset_name): the embedded tiny model only knows the embedded task. Pass --model_name_or_path "
            "with a local checkpoint or a hub id."
        )
    if cfg.shared_base_reward and not model_args.use_peft:
        raise ValueError("shared_base_reward=True trains the RM as a LoRA adapter on the policy's base: add --use_peft.")
    run_dir = Path(cfg.output_dir)
    stop = STAGES.index(cfg.until)
    # a misspelt rl field, reward function or dataset column, or a route that cannot work, fails now, not after SFT
    plan = preflight(cfg, run_dir, stop, model_args)
    run_dir.mkdir(parents=True, exist_ok=True)
    base = resolve_base(cfg, model_args, run_dir)
    # the embedded base is named by what it is, not where it lies, so a run folder can be moved or copied
    common = {"seed": cfg.seed, "model": _model_settings(model_args), "base": model_args.model_name_or_path or "embedded"}
    task = {k: getattr(cfg, k) for k in ("task_low", "task_high", "eval_size", "demo_error_rate", "demo_error_kinds")}
    if cfg.embedded_task != "addition":  # recorded only when used, so folders of the seed's task keep their fingerprints
        task.update({k: getattr(cfg, k) for k in ("embedded_task", "task_operands", "task_error_rates")})
    infos: dict[str, dict] = {}

    if "sft" in plan:
        sft_settings = {**common, **task, "n": cfg.num_sft_examples, "data": cfg.sft_dataset_name, "sft": cfg.sft}
        infos["sft"] = _run_stage(run_dir, "sft", sft_settings, lambda f: run_sft(cfg, model_args, base, f, callbacks))
        sft_model, upstream = str(run_dir / "sft" / "model"), infos["sft"]["fingerprint"]
    else:  # model_name_or_path is the SFT model
        sft_model, upstream = base, fingerprint({**common, **task})
    if "labels" in plan:
        label_settings = {
            "sft": upstream, "data": cfg.preference_dataset_name,
            **{k: getattr(cfg, k) for k in ("num_label_prompts", "num_ranked", "labeller_noise", "label_temperature",
                                            "rm_test_fraction")},
        }
        if cfg.label_max_new_tokens != 8:  # the value before it became a field: old folders keep their fingerprints
            label_settings["label_max_new_tokens"] = cfg.label_max_new_tokens
        infos["labels"] = _run_stage(run_dir, "labels", label_settings, lambda f: run_labels(cfg, model_args, sft_model, f))
    if "rm" in plan:
        rm_settings = {
            "labels": infos["labels"]["fingerprint"], "model": _model_settings(model_args), "rm": cfg.rm,
            "rm_loss": cfg.rm_loss,
        }
        infos["rm"] = _run_stage(
            run_dir, "rm", rm_settings, lambda f: run_rm(cfg, model_args, sft_model, run_dir / "labels", f, callbacks)
        )
    rm_folder = run_dir / "rm" if "rm" in plan else None  # None: the verifiable-reward route, rule rewards only
    if "rl" in plan:
        rl_settings = {
            **({"rm": infos["rm"]["fingerprint"]} if rm_folder else {"sft": upstream}),
            "algorithm": cfg.algorithm, "rl": cfg.rl, "n": cfg.num_rl_prompts,
            "data": cfg.prompt_dataset_name, "model": _model_settings(model_args),
            "shared_base_reward": cfg.shared_base_reward, "reward_funcs": cfg.reward_funcs,
        }
        if cfg.algorithm == "dpo":
            train = lambda f: run_dpo(cfg, model_args, sft_model, run_dir / "labels", f, callbacks)  # noqa: E731
        else:
            train = lambda f: run_rl(cfg, model_args, sft_model, rm_folder, f, callbacks)  # noqa: E731
        infos["rl"] = _run_stage(run_dir, "rl", rl_settings, train)
    if "eval" in plan:
        models = {"base": base, "sft": sft_model, "rl": str(run_dir / "rl" / "model")}
        if "sft" not in plan:
            del models["base"]  # the given model is the SFT model
        eval_settings = {"rl": infos["rl"]["fingerprint"], "n": cfg.eval_samples, "t": cfg.eval_temperature}
        rm_model = str(rm_folder / "model") if rm_folder else None
        infos["eval"] = _run_stage(run_dir, "eval", eval_settings, lambda f: run_eval(cfg, models, rm_model, f))
    report = build_report(cfg, infos)
    _write_json_atomic(run_dir / "report.json", report)
    (run_dir / "report.md").write_text(format_report(report) + format_figures(run_dir, list(infos)))
    return report


def format_figures(run_dir: Path, stages: list[str]) -> str:
    """PNGs of every trained stage's ``log_history.json`` (and the RL stage's proxy-vs-gold curves) under
    ``run_dir/figures``, as a markdown section; empty when there is nothing to plot or matplotlib is missing."""
    try:
        from .plots import plot_gold_curves, plot_training_curves
    except ImportError:  # pragma: no cover - matplotlib is in the bench extra, which make pipeline installs
        return ""
    lines = []
    for name in stages:
        path = run_dir / name / "log_history.json"
        if not path.exists():
            continue
        try:
            history = json.loads(path.read_text())
            gold = plot_gold_curves(history, run_dir / "figures" / f"{name}_gold.png", f"{name}: proxy (RM) vs gold (oracle)")
            curves = plot_training_curves(history, run_dir / "figures" / f"{name}_training.png", f"{name} training")
        except ImportError:
            logger.warning("report.md without figures: pip install matplotlib")
            return ""
        if gold is not None:
            lines += [f"![{name}: proxy vs gold reward](figures/{gold.name})", ""]
        if curves is not None:
            lines += [f"![{name} training curves](figures/{curves.name})", ""]
    return ("\n## Curves\n\n" + "\n".join(lines)) if lines else ""


def build_report(cfg: PipelineConfig, infos: dict[str, dict]) -> dict:
    report = {
        "output_dir": cfg.output_dir,
        "algorithm": cfg.algorithm,
        "seed": cfg.seed,
        "wall_time_s": {name: info["wall_time_s"] for name, info in infos.items()},
    }
    if cfg.reward_route != "model":
        report["reward"] = cfg.reward_route  # absent on the seed's route, whose report stays as it was
    if "rm" in infos:
        report["rm_test_pairwise_accuracy"] = infos["rm"]["metrics"]["test_pairwise_accuracy"]
    rl = infos.get("rl", {}).get("metrics", {})
    if rl.get("frac_reward_zero_std_first") is not None:
        report["rl_frac_reward_zero_std"] = {
            "first": rl["frac_reward_zero_std_first"], "last": rl["frac_reward_zero_std_last"]
        }
    if "eval" in infos:
        report["models"] = infos["eval"]["metrics"]
    return report


def format_report(report: dict) -> str:
    lines = [f"# trl_ext pipeline report ({report['algorithm']}, seed {report['seed']})", ""]
    if "models" in report:
        columns = [
            ("oracle_accuracy_greedy", "oracle accuracy (greedy)"),
            ("oracle_accuracy_sampled", "oracle accuracy (sampled)"),
            ("rm_score_sampled", "mean RM score (sampled)"),
        ]
        lines += ["| model | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---:|" * len(columns)]
        for name, row in report["models"].items():
            cells = ["n/a" if row.get(key) is None else f"{row[key]:.3f}" for key, _ in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += _format_by_level(report["models"])
        lines += _format_reward_funcs(report["models"])
    if "rm_test_pairwise_accuracy" in report:
        lines += [f"Reward model held-out pairwise accuracy: {report['rm_test_pairwise_accuracy']:.3f}", ""]
    if "rl_frac_reward_zero_std" in report:
        z = report["rl_frac_reward_zero_std"]
        lines += [f"RL groups with zero reward spread (zero advantage), first / last logged: {z['first']:.3f} / "
                  f"{z['last']:.3f}", ""]
    lines += ["| stage | wall time (s) |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["wall_time_s"].items()]
    lines.append(f"| total | {sum(report['wall_time_s'].values()):.1f} |")
    return "\n".join(lines) + "\n"


def _format_by_level(models: dict) -> list[str]:
    """Oracle accuracy per difficulty level, greedy / sampled, one column per level (tasks with levels only)."""
    levels = sorted({lv for row in models.values() for lv in row.get("oracle_accuracy_greedy_by_level", {})}, key=int)
    if not levels:
        return []
    lines = ["Oracle accuracy per difficulty level (greedy / sampled):", "",
             "| model | " + " | ".join(f"level {lv}" for lv in levels) + " |", "|---|" + "---:|" * len(levels)]
    for name, row in models.items():
        g, s = row.get("oracle_accuracy_greedy_by_level", {}), row.get("oracle_accuracy_sampled_by_level", {})
        cells = [f"{g[lv]:.3f} / {s[lv]:.3f}" if lv in g else "n/a" for lv in levels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + [""]


def _format_reward_funcs(models: dict) -> list[str]:
    """Each reward function's mean on the held-out prompts, greedy / sampled."""
    names = list(dict.fromkeys(n for row in models.values() for n in row.get("reward_funcs_greedy", {})))
    if not names:
        return []
    lines = ["Mean of each reward function (greedy / sampled):", "",
             "| model | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---:|" * len(names)]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for name, row in models.items():
        g, s = row.get("reward_funcs_greedy", {}), row.get("reward_funcs_sampled", {})
        lines.append(f"| {name} | " + " | ".join(f"{fmt(g.get(n))} / {fmt(s.get(n))}" for n in names) + " |")
    return lines + [""]
