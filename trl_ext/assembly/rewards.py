"""Rewards named in a config, resolved before any model is loaded: reward functions imported from their names, reward
model paths checked; then the ``reward_funcs`` list a trainer takes (RewardAdapters for the reward models)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def import_reward_functions(specs, field: str = "reward_funcs") -> list:
    """Each name in ``specs`` (a TRL built-in or a dotted import path) imported; a bad one is an error naming
    ``field[i]``."""
    from ..rewards import import_reward_function

    return [import_reward_function(spec, field=f"{field}[{i}]") for i, spec in enumerate(specs)]


def check_reward_model_path(name: str, field: str) -> str:
    """A reward model path: a full checkpoint (config.json) or a LoRA adapter folder (adapter_config.json)."""
    from ..models import check_model_path

    path = Path(name).expanduser()
    if (path / "adapter_config.json").exists():
        return str(path)
    return check_model_path(name, field=field)


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


@dataclass
class RewardPlan:
    """The rewards a run will use, resolved before any model is loaded: imported functions and checked RM paths."""

    model_paths: list[str]
    functions: list

    @property
    def count(self) -> int:
        return len(self.model_paths) + len(self.functions)


def plan_rewards(script_args, training_args) -> RewardPlan:
    """Import every ``--reward_funcs`` name and check every ``--reward_model_name_or_path`` (no model is loaded).

    ``script_args`` carries the reward flags of ``trl_ext.commands.common.RewardScriptArguments``; ``training_args``
    the algorithm's config (its ``reward_weights``)."""
    paths = [
        check_reward_model_path(p, field=f"--reward_model_name_or_path[{i}]")
        for i, p in enumerate(_as_list(script_args.reward_model_name_or_path))
    ]
    plan = RewardPlan(paths, import_reward_functions(_as_list(script_args.reward_funcs), "--reward_funcs"))
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


def build_rewards(plan: RewardPlan, script_args, model_args, training_args) -> list:
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
