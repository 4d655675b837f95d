"""What a pipeline run is given: ``PipelineConfig`` (the embedded task's settings nested in it, :mod:`.embedded`), the
stage names, each stage's defaults for the embedded model, and the TRL config a stage builds from them
(:func:`stage_args`). The algorithm names come from :mod:`trl_ext.assembly.registry`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from trl import DPOConfig, GRPOConfig

from ..assembly.registry import ALGORITHMS, RL_ALGORITHMS
from ..models import cpu_training_defaults
from ..toy import AdditionTask, ArithmeticTask, GradedAdditionTask
from ..toy.model import is_embedded_checkpoint
from .embedded import EmbeddedTaskConfig

STAGES = ("sft", "labels", "rm", "rl", "eval")


@dataclass
class PipelineConfig:
    """Settings of the whole run. Model settings (path, LoRA, 4-bit) come from TRL's ``ModelConfig`` beside it.

    The ``sft``, ``rm`` and ``rl`` mappings hold any field of the stage's TRL config (``SFTConfig``, ``RewardConfig``,
    ``GRPOConfig``/the algorithm's config) and override the defaults chosen here for the embedded model. On the
    command line each is a JSON object merged over the YAML's map (``--rl '{"max_steps": 2}'`` keeps the YAML's
    other ``rl:`` fields).
    """

    MERGED_SECTIONS: ClassVar[tuple[str, ...]] = ("sft", "rm", "rl")  # see assembly.frontend.CommandParser

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
    # -- the embedded task (its keys are written flat: see EmbeddedTaskConfig) ---------------------------------------
    embedded: EmbeddedTaskConfig = field(
        default_factory=EmbeddedTaskConfig,
        metadata={"help": "The embedded task's settings; a mapping of its fields is accepted (an asdict() copy)."},
    )
    num_sft_examples: int = field(default=8000, metadata={"help": "SFT demonstrations to write."})
    num_label_prompts: int = field(default=1500, metadata={"help": "Prompts whose K sampled answers get ranked."})
    num_ranked: int = field(default=4, metadata={"help": "K: answers sampled and ranked per prompt (>= 2)."})
    label_temperature: float = field(default=1.0, metadata={"help": "Sampling temperature for the K answers."})
    label_max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Longest answer sampled for the labeller. Default: 8 with the embedded model; with "
                  "model_name_or_path, the RL stage's max_completion_length (the RM then scores answers as long as "
                  "the ones RL will sample)."},
    )
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
        default=None, metadata={"help": "trl.SFTConfig fields: a YAML map, or a JSON object on the command line (merged over the YAML's map)."}
    )
    rm: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "trl.RewardConfig fields: a YAML map, or a JSON object on the command line (merged over the YAML's map)."}
    )
    rl: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Fields of the RL algorithm's config (DPOConfig for dpo): a YAML map, or a JSON object on the "
            """command line, e.g. --rl '{"max_steps": 300}': its fields replace the same fields of the YAML's """
            "rl: map, the others stay."
        },
    )

    def __post_init__(self):
        if isinstance(self.embedded, dict):
            self.embedded = EmbeddedTaskConfig(**self.embedded)
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
        if self.label_max_new_tokens is not None and self.label_max_new_tokens < 1:
            raise ValueError(f"label_max_new_tokens={self.label_max_new_tokens} must be >= 1.")

    @classmethod
    def from_flat(cls, settings: dict) -> PipelineConfig:
        """The config from one flat mapping, keyed as a YAML file writes it (``embedded_task: graded`` beside
        ``seed: 0``): the embedded task's keys go to ``embedded``, as ``trl-ext pipeline`` parses them."""
        from ..assembly.frontend import CommandParser

        return CommandParser((cls,)).parse_dict(settings)[0]

    @property
    def task(self) -> AdditionTask | GradedAdditionTask | ArithmeticTask:
        """The embedded task (``embedded.task``)."""
        return self.embedded.task

    @property
    def uses_embedded_task(self) -> bool:
        return self.sft_dataset_name is None and self.prompt_dataset_name is None

    @property
    def reward_route(self) -> str:
        """'model', 'rules' or 'both': ``reward`` as given, or 'rules' when only reward_funcs name a reward."""
        if self.reward is not None:
            return self.reward
        return "rules" if self.reward_funcs else "model"


_COMMON = dict(
    report_to=[], logging_steps=10, save_strategy="steps", save_steps=50, save_total_limit=1,
    gradient_checkpointing=False,  # TRL 1.16 turns it on by default; for small models it only costs time
)


# The defaults below (SFT_DEFAULTS ... RL_DEFAULTS and _COMMON) are tuned for the embedded tiny model: a 0.75M-parameter
# model on a private task (learning rate 1e-3, 6 epochs, 8-token answers, 32-token rows). A model given by
# model_name_or_path gets TRL's own defaults instead (see stage_defaults), plus _BOOKKEEPING.
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


# What the pipeline needs of every stage whatever the model: no tracker unless asked (report_to: TRL's "all" would
# start every installed one), and checkpoints to resume a cut-off stage from (train_resumable).
_BOOKKEEPING = dict(report_to=[], save_strategy="steps", save_steps=50, save_total_limit=1)


def uses_embedded_model(model_args) -> bool:
    """The embedded tiny model (no model_name_or_path, or a checkpoint trained from it): its tuned defaults apply."""
    path = getattr(model_args, "model_name_or_path", None)
    return path is None or is_embedded_checkpoint(path)


def stage_defaults(stage: str, algorithm: str = "grpo", embedded: bool = True) -> dict:
    """The pipeline's defaults for ``stage`` ('sft', 'rm' or 'rl'): the embedded model's tuned ones, or for a model
    given by path only the bookkeeping (TRL's own defaults otherwise: its learning rates, lengths and epochs are
    meant for real models)."""
    if not embedded:
        return dict(_BOOKKEEPING)
    if stage == "rl":
        return DPO_DEFAULTS if algorithm == "dpo" else RL_DEFAULTS
    return {"sft": SFT_DEFAULTS, "rm": RM_DEFAULTS}[stage]


def rl_max_completion_length(cfg: PipelineConfig, embedded: bool = True) -> int:
    """The longest answer the RL stage samples: the ``rl:`` map's, else the default for the model (8 for the
    embedded one; TRL's GRPOConfig default for a given one). Labels and evaluation sample the same length."""
    if "max_completion_length" in cfg.rl:
        return int(cfg.rl["max_completion_length"])
    if embedded:
        return RL_DEFAULTS["max_completion_length"]
    return next(f.default for f in fields(GRPOConfig) if f.name == "max_completion_length")


def label_max_new_tokens(cfg: PipelineConfig, embedded: bool = True) -> int:
    if cfg.label_max_new_tokens is not None:
        return cfg.label_max_new_tokens
    return 8 if embedded else rl_max_completion_length(cfg, embedded)


def stage_args(config_cls, defaults: dict, overrides: dict, output_dir: Path, seed: int, what: str,
               embedded: bool = True):
    valid = {f.name for f in fields(config_cls)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(
            f"`{what}:` has fields that {config_cls.__name__} does not know: {unknown}. "
            f"Check their spelling against trl.{config_cls.__name__}."
        )
    common = _COMMON if embedded else {}  # on a GPU a given model keeps TRL's gradient_checkpointing (memory first)
    kwargs = {**common, **defaults, **overrides, "output_dir": str(output_dir), "seed": seed}
    if not torch.cuda.is_available():
        # A given model trains with the commands' CPU defaults (bf16 autocast where the CPU has bf16 units, no
        # gradient checkpointing). The embedded tiny model stays fp32: bf16 buys nothing at its size, and its
        # recorded numbers (make pipeline) were measured in fp32.
        cpu = cpu_training_defaults() if not embedded else dict(use_cpu=True, bf16=False)
        for key, value in cpu.items():
            kwargs.setdefault(key, value)
    return config_cls(**kwargs)


def rl_stage_args(cfg: PipelineConfig, output_dir: Path, embedded: bool = True):
    """The TRL config the RL stage trains with: the algorithm's config (DPOConfig for dpo) from the defaults for the
    model (``embedded``: the embedded tiny one) and the ``rl:`` map."""
    config_cls = DPOConfig if cfg.algorithm == "dpo" else RL_ALGORITHMS[cfg.algorithm][0]
    defaults = stage_defaults("rl", cfg.algorithm, embedded)
    return stage_args(config_cls, defaults, cfg.rl, output_dir, cfg.seed, "rl", embedded=embedded)
