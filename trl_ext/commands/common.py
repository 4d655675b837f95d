"""What the trainer commands share beyond :mod:`trl_ext.assembly`: the reward flags, the parser with CPU defaults,
the policy from ``--model_name_or_path``, the RL trainer from flags, and saving.

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

from dataclasses import dataclass, field
from pathlib import Path

from trl import DatasetMixtureConfig, ModelConfig, ScriptArguments

from ..assembly.data import load_datasets
from ..assembly.frontend import CommandParser
from ..assembly.rewards import build_rewards, plan_rewards
from ..assembly.trainers import build_trainer

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


def rl_trainer_from_args(trainer_cls, script_args, training_args, model_args, dataset_args, extra=None):
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
    trainer = build_trainer(
        trainer_cls, model=model, args=training_args, train_dataset=train, eval_dataset=evaluation,
        processing_class=tokenizer, peft_config=peft_config_for(model_args), **kwargs,
    )
    # TRL's GRPOTrainer does not warn; trl_ext's trainers did, once per tokenizer, so this adds no second warning
    warn_plain_prompts(train, tokenizer, script_args, type(trainer).__name__)
    return trainer


def train_and_save(trainer, training_args) -> None:
    """``train()`` then ``save_model(output_dir)``, as TRL's scripts do (a LoRA run saves the adapter)."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print("Training completed.")
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub()
