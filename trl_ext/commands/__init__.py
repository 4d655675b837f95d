"""One command per trainer, in TRL's script conventions: ``trl-ext sft|rm|dpo|grpo|dapo|rloo|ppo``.

Each module has ``make_parser()`` (a ``TrlParser`` over
``ScriptArguments``, the algorithm's config, ``ModelConfig`` and ``DatasetMixtureConfig``) and
``main(script_args, training_args, model_args, dataset_args)``, as TRL's ``trl/scripts/*.py``; what they share is in
:mod:`trl_ext.commands.common` and, with the pipeline, :mod:`trl_ext.assembly`. ``run(name, argv)`` parses and runs
one, turning errors into one line and an exit code.
"""

from __future__ import annotations

import importlib

# name -> the one line `trl-ext --help` shows (kept here so the listing imports nothing heavy)
TRAINER_COMMANDS = {
    "sft": "supervised fine-tuning (trl.SFTTrainer) on prompt/completion, messages or text rows",
    "rm": "reward model from (chosen, rejected) pairs (trl.RewardTrainer, num_labels=1)",
    "dpo": "direct preference optimisation on (chosen, rejected) pairs (trl.DPOTrainer), no reward model",
    "grpo": "TRL's GRPOTrainer through the same path as dapo/rloo/ppo, for side-by-side runs",
    "dapo": "DAPO: clip-higher, token-level loss, overlong shaping, dynamic sampling (trl_ext.DAPOTrainer)",
    "rloo": "RLOO: leave-one-out baseline, sequence-level KL (trl_ext.RLOOTrainer; DAPO's options available)",
    "ppo": "PPO with a critic: GAE, clipped policy and value losses, KL in the reward (trl_ext.PPOTrainer)",
}


def command_module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def run(name: str, argv: list[str]) -> int:
    from ..assembly.frontend import run_command

    module = command_module(name)
    return run_command(name, module.make_parser(), module.main, argv)
