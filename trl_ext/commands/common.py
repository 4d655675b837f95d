"""What the trainer commands share: the parser, dataset loading and checks, reward resolution, models, saving, errors.

Every command follows TRL's scripts (``trl/scripts/grpo.py`` and friends): ``TrlParser`` over TRL's
``ScriptArguments`` (here with the reward fields of TRL's ``GRPOScriptArguments``), the algorithm's config,
``ModelConfig`` and ``DatasetMixtureConfig``; then load the dataset, build the trainer, ``train()``,
``save_model(output_dir)``. What trl_ext adds, in the order a run meets it:

1. the dataset is loaded and its columns checked, and every reward function is imported and every reward-model and
   critic path checked, *before* any model is loaded: a misspelt name is a one-line error in seconds (exit code 2);
2. models go through :mod:`trl_ext.models` (safetensors-only pickles, clear path errors, 4-bit CPU workaround);
3. reward models score through :class:`trl_ext.RewardAdapter` (own tokenizer, micro-batches, prompt-side truncation)
   instead of one forward over every completion of a step.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments, TrlParser, get_dataset

# ---- script arguments ------------------------------------------------------------------------------------------------


@dataclass
class RewardScriptArguments(ScriptArguments):
    """TRL's ``ScriptArguments`` plus the reward fields of TRL's ``grpo.py``/``rloo.py`` (same names), and the options
    of :meth:`trl_ext.RewardAdapter.from_model` for the reward models."""

    reward_model_name_or_path: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward model(s): hub ids or local folders of sequence-classification checkpoints (or LoRA "
            "adapters on one), scored through trl_ext.RewardAdapter with their own tokenizer. One or more; they come "
            "first in reward_weights, in the order given."
        },
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward functions, as in TRL's grpo.py: a TRL built-in (accuracy_reward, "
            "reasoning_accuracy_reward, think_format_reward) or a dotted import path ('my_rewards.exact'; a module "
            "in the current folder is found). Each is called as a TRL reward function; weight them with "
            "--reward_weights."
        },
    )
    reward_batch_size: int = field(
        default=16, metadata={"help": "Micro-batch size of reward-model scoring (RewardAdapter.from_model batch_size)."}
    )
    reward_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Longest sequence a reward model is given; longer ones lose tokens from the start of the prompt. "
            "Default: the RM tokenizer's model_max_length, else the config's max_position_embeddings."
        },
    )
    reward_completion_overflow: str = field(
        default="truncate",
        metadata={
            "help": "When a completion alone is longer than reward_max_length: 'truncate' keeps its last tokens (and "
            "counts it in rewards/<name>/completion_truncated), 'error' raises."
        },
    )


# ---- parser ----------------------------------------------------------------------------------------------------------
def _public_name(cls) -> str:
    """``trl.GRPOConfig`` rather than ``trl.trainer.grpo_config.GRPOConfig`` when the package exports it."""
    import importlib

    package = cls.__module__.split(".")[0]
    exported = getattr(importlib.import_module(package), cls.__name__, None) is cls
    return f"{package if exported else cls.__module__}.{cls.__name__}"


class CommandParser(TrlParser):
    """``TrlParser`` whose ``--help`` starts with the command's description and example, then one flag group per
    dataclass (TRL's own scripts list all flags in one group)."""

    def __init__(self, dataclass_types, *, intro: str, **kwargs):
        self._intro = intro.strip()
        kwargs.setdefault("usage", f"{kwargs.get('prog', '%(prog)s')} [--config FILE.yaml] [--option VALUE ...]")
        super().__init__(dataclass_types, **kwargs)

    def _add_dataclass_arguments(self, dtype):
        start = len(self._actions)
        super()._add_dataclass_arguments(dtype)
        group = self.add_argument_group(f"{dtype.__name__} ({_public_name(dtype)})")
        for action in self._actions[start:]:
            self._optionals._group_actions.remove(action)
            group._group_actions.append(action)

    def format_help(self) -> str:
        config = "--config FILE.yaml sets any of the options below by name (TRL's TrlParser); flags given here win."
        return f"{self._intro}\n\n{config}\n\n{super().format_help()}"


def make_parser(name: str, config_cls, intro: str, script_cls=ScriptArguments) -> CommandParser:
    """The parser of ``trl-ext NAME``: (script arguments, the algorithm's config, ModelConfig, DatasetMixtureConfig).

    Defaults differ from TRL's scripts on machines without CUDA only: :func:`trl_ext.models.cpu_training_defaults`
    (``use_cpu=True``; ``bf16`` only where the CPU has bf16 units; no gradient checkpointing). A YAML or flag value
    still wins.
    """
    import torch

    from ..models import cpu_training_defaults

    parser = CommandParser(
        (script_cls, config_cls, ModelConfig, DatasetMixtureConfig), intro=intro, prog=f"trl-ext {name}"
    )
    if not torch.cuda.is_available():
        parser.set_defaults(**cpu_training_defaults())
    return parser


# ---- errors ----------------------------------------------------------------------------------------------------------
def fail(command: str, message: str, code: int) -> int:
    """One line on stderr, ``trl-ext COMMAND: error: MESSAGE`` (a message's line breaks become spaces); the
    traceback only with TRL_EXT_DEBUG=1."""
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip()) or "(no message)"
    print(f"trl-ext {command}: error: {message}", file=sys.stderr)
    print("(set TRL_EXT_DEBUG=1 to see the traceback)", file=sys.stderr)
    return code


def run(name: str, parser: CommandParser, main, argv: list[str]) -> int:
    """Parse ``argv`` and call ``main(*parsed)``: bad input (ValueError, FileNotFoundError, TypeError from a config)
    is one line and exit code 2; a RuntimeError during training is one line and exit code 1."""
    from dataclasses import fields

    from ..cli import explain_parse_error

    debug = bool(os.environ.get("TRL_EXT_DEBUG"))
    try:
        parsed = parser.parse_args_and_config(argv)
    except (ValueError, TypeError, FileNotFoundError) as e:  # unknown flags, a config's own validation, a bad --config
        if debug:
            raise
        known = [f.name for dc in parser.dataclass_types for f in fields(dc)]
        return fail(name, explain_parse_error(str(e), known, name), 2)
    try:
        main(*parsed)
    except (ValueError, FileNotFoundError) as e:
        if debug:
            raise
        return fail(name, str(e), 2)
    except RuntimeError as e:
        if debug:
            raise
        return fail(name, str(e) or type(e).__name__, 1)
    return 0


# ---- data ------------------------------------------------------------------------------------------------------------
def _is_local(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~"))


def _one_split(script_args: ScriptArguments, split: str):
    """One split: a hub id (with --dataset_config), a save_to_disk folder's split, or a file (its only split,
    'train'; a file path given as the split is read as that split)."""
    from ..pipeline import load_named_dataset

    name = script_args.dataset_name
    if Path(split).suffix in (".json", ".jsonl", ".csv", ".parquet") and Path(split).expanduser().is_file():
        name, split = split, "train"  # a second file named as the split (a single file has only a train split)
    elif Path(name).expanduser().is_file() and split != "train":
        raise ValueError(
            f"--dataset_name {name!r} is a single file, which holds only a 'train' split, but split {split!r} was "
            "asked for. Name a second file as the split (--dataset_test_split test.jsonl), or set --eval_strategy no."
        )
    if script_args.dataset_config and not _is_local(name):
        from datasets import load_dataset

        return load_dataset(name, script_args.dataset_config, split=split)
    return load_named_dataset(name, split)


def load_datasets(script_args, dataset_args: DatasetMixtureConfig, training_args, required) -> tuple:
    """(train, eval or None), as TRL's scripts load them, each checked for ``required`` columns and empty values.

    ``required`` is a list of columns, or a list of such lists (any one of them suffices, e.g. SFT's ``messages`` or
    ``prompt`` + ``completion``). The eval split is read only when ``eval_strategy`` is not ``"no"``, as in TRL.
    """
    from ..pipeline import validate_columns

    want_eval = str(getattr(training_args.eval_strategy, "value", training_args.eval_strategy)) != "no"
    if dataset_args.datasets:  # TRL's dataset mixture (--datasets / a `datasets:` list in the YAML)
        mixture = get_dataset(dataset_args)
        splits = {"train": mixture[script_args.dataset_train_split]}
        if want_eval:
            splits["eval"] = mixture[script_args.dataset_test_split]
    elif script_args.dataset_name:
        splits = {"train": _one_split(script_args, script_args.dataset_train_split)}
        if want_eval:
            splits["eval"] = _one_split(script_args, script_args.dataset_test_split)
    else:
        raise ValueError(
            "--dataset_name is required: a hub dataset id, a folder written by save_to_disk, or a "
            ".json/.jsonl/.csv/.parquet file (or give a mixture with --datasets)."
        )
    options = required if isinstance(required[0], (list, tuple)) else [required]
    for which, ds in splits.items():
        what = f"--dataset_name={script_args.dataset_name!r} ({which} split)"
        columns = next((list(c) for c in options if set(c) <= set(ds.column_names)), list(options[0]))
        if len(options) > 1 and not set(columns) <= set(ds.column_names):
            raise ValueError(
                f"{what}: needs columns {' or '.join(str(list(c)) for c in options)}; the dataset has "
                f"{ds.column_names}. Rename the columns (dataset.rename_column) to one of these formats."
            )
        validate_columns(ds, columns, what)
    return splits["train"], splits.get("eval")


# ---- rewards ---------------------------------------------------------------------------------------------------------
def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def check_reward_model_path(name: str, field: str) -> str:
    """A reward model path: a full checkpoint (config.json) or a LoRA adapter folder (adapter_config.json)."""
    from ..models import check_model_path

    path = Path(name).expanduser()
    if (path / "adapter_config.json").exists():
        return str(path)
    return check_model_path(name, field=field)


@dataclass
class RewardPlan:
    """The rewards a run will use, resolved before any model is loaded: imported functions and checked RM paths."""

    model_paths: list[str]
    functions: list

    @property
    def count(self) -> int:
        return len(self.model_paths) + len(self.functions)


def plan_rewards(script_args: RewardScriptArguments, training_args) -> RewardPlan:
    """Import every ``--reward_funcs`` name and check every ``--reward_model_name_or_path`` (no model is loaded)."""
    from ..rewards import import_reward_function

    paths = [
        check_reward_model_path(p, field=f"--reward_model_name_or_path[{i}]")
        for i, p in enumerate(_as_list(script_args.reward_model_name_or_path))
    ]
    funcs = [
        import_reward_function(spec, field=f"--reward_funcs[{i}]")
        for i, spec in enumerate(_as_list(script_args.reward_funcs))
    ]
    plan = RewardPlan(paths, funcs)
    if plan.count == 0:
        raise ValueError(
            "no reward: pass --reward_funcs (a TRL built-in such as accuracy_reward, or 'my_rewards.score') and/or "
            "--reward_model_name_or_path (a reward model folder or hub id)."
        )
    weights = getattr(training_args, "reward_weights", None)
    if weights is not None and len(weights) != plan.count:
        raise ValueError(
            f"--reward_weights has {len(weights)} weights for {plan.count} rewards (reward models {paths}, then "
            f"reward functions {_as_list(script_args.reward_funcs)}); give one weight per reward, in that order."
        )
    if script_args.reward_batch_size < 1:
        raise ValueError(f"--reward_batch_size={script_args.reward_batch_size} must be >= 1.")
    if script_args.reward_completion_overflow not in ("truncate", "error"):
        raise ValueError(
            f"--reward_completion_overflow={script_args.reward_completion_overflow!r}: use 'truncate' or 'error'."
        )
    return plan


def build_rewards(plan: RewardPlan, script_args: RewardScriptArguments, model_args: ModelConfig, training_args) -> list:
    """The ``reward_funcs`` list for the trainer: one RewardAdapter per reward model (loaded now, with ModelConfig's
    dtype and quantization, on this process's device), then the functions as they are (as TRL's grpo.py passes them)."""
    from accelerate import PartialState

    from ..models import from_pretrained_kwargs
    from ..rewards import RewardAdapter

    rewards = []
    for path in plan.model_paths:
        model_kwargs = from_pretrained_kwargs(model_args, training_args.trust_remote_code)
        model_kwargs.setdefault("device_map", {"": str(PartialState().device)})
        rewards.append(
            RewardAdapter.from_model(
                path, batch_size=script_args.reward_batch_size, max_length=script_args.reward_max_length,
                completion_overflow=script_args.reward_completion_overflow, model_kwargs=model_kwargs,
            )
        )
    return rewards + list(plan.functions)


# ---- models and saving -----------------------------------------------------------------------------------------------
def load_policy(model_args: ModelConfig, training_args, auto: str = "causal_lm"):
    """(model, tokenizer) from ``--model_name_or_path`` through trl_ext.models (4-bit, safe weights, path errors)."""
    from ..models import load_causal_lm, load_sequence_classifier, load_tokenizer

    trc = training_args.trust_remote_code
    tokenizer = load_tokenizer(model_args, trust_remote_code=trc)
    if auto == "sequence_classifier":
        model = load_sequence_classifier(model_args, num_labels=1, trust_remote_code=trc)
    else:
        model = load_causal_lm(model_args, trust_remote_code=trc)
    return model, tokenizer


def warn_plain_prompts(train, tokenizer, script_args, trainer: str) -> None:
    """One warning when a chat model gets plain-string prompts (see trl_ext.checks): TRL trains on them as raw text."""
    from ..checks import warn_plain_prompts_for_chat_model

    warn_plain_prompts_for_chat_model(train, tokenizer, f"--dataset_name={script_args.dataset_name!r}", trainer)


def check_policy_path(model_args: ModelConfig) -> None:
    """``--model_name_or_path`` must be a full checkpoint or a hub id; a LoRA adapter folder is refused with the fix."""
    from ..models import check_model_path

    path = Path(str(model_args.model_name_or_path or "")).expanduser()
    if (path / "adapter_config.json").exists() and not (path / "config.json").exists():
        raise ValueError(
            f"--model_name_or_path={str(path)!r} is a LoRA adapter (what a --use_peft run saves), not a full model. "
            "Merge it into its base first: python -c \"from peft import AutoPeftModelForCausalLM as M; "
            f"M.from_pretrained('{path}').merge_and_unload().save_pretrained('{path}-merged')\" and copy the "
            "tokenizer files beside it, then pass the merged folder (or train on the base with --use_peft again)."
        )
    model_args.model_name_or_path = check_model_path(model_args.model_name_or_path, field="--model_name_or_path")


def peft_config_for(model_args: ModelConfig, task_type: str | None = None):
    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    if peft_config is not None and task_type is not None:
        peft_config.task_type = task_type
    return peft_config


def prepare(trainer) -> None:
    """After the trainer wrapped the model: the bitsandbytes CPU repack workaround, fp32 trainables without bf16."""
    from ..models import disable_bnb_cpu_repack, match_trainable_dtype_to_compute

    disable_bnb_cpu_repack(trainer.model)
    match_trainable_dtype_to_compute(trainer.model, trainer.args.bf16)


def build_rl_trainer(trainer_cls, script_args, training_args, model_args, dataset_args, extra=None):
    """An RL trainer (GRPO family, PPO) built as TRL's grpo.py builds one, every name checked before any loading.

    ``extra(plan)`` (optional, called before any model is loaded) returns more trainer keyword arguments; a
    ``reward_funcs`` entry there replaces the RewardAdapters built from the plan (PPO's shared base takes paths).
    """
    check_policy_path(model_args)
    train, evaluation = load_datasets(script_args, dataset_args, training_args, ["prompt"])
    plan = plan_rewards(script_args, training_args)
    kwargs = extra(plan) if extra is not None else {}
    model, tokenizer = load_policy(model_args, training_args)
    if "reward_funcs" not in kwargs:
        kwargs["reward_funcs"] = build_rewards(plan, script_args, model_args, training_args)
    trainer = trainer_cls(
        model=model, args=training_args, train_dataset=train, eval_dataset=evaluation, processing_class=tokenizer,
        peft_config=peft_config_for(model_args), **kwargs,
    )
    prepare(trainer)
    warn_plain_prompts(train, tokenizer, script_args, type(trainer).__name__)  # trl_ext's trainers warned already
    return trainer


def train_and_save(trainer, training_args) -> None:
    """``train()`` then ``save_model(output_dir)``, as TRL's scripts do (a LoRA run saves the adapter)."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print("Training completed.")
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub()
