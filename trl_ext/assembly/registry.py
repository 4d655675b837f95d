"""The RL algorithms by name: the config and trainer class each front-end builds for ``--algorithm NAME`` (the
pipeline) or ``trl-ext NAME`` (the commands)."""

from __future__ import annotations

import trl
from trl import GRPOConfig

from ..dapo import DAPOConfig, DAPOTrainer
from ..ppo import PPOConfig, PPOTrainer
from ..resume import ResumableGRPOTrainer
from ..rloo import RLOOConfig, RLOOTrainer

# name -> (config class, trainer class)
RL_ALGORITHMS: dict[str, tuple[type, type]] = {
    "grpo": (GRPOConfig, ResumableGRPOTrainer),  # trl.GRPOTrainer that also checkpoints its generation buffer
    "dapo": (DAPOConfig, DAPOTrainer),
    "rloo": (RLOOConfig, RLOOTrainer),
    "rloo_trl": (trl.RLOOConfig, trl.RLOOTrainer),  # TRL's own RLOO, beside the explicit variant above
    "ppo": (PPOConfig, PPOTrainer),
}

ALGORITHMS = sorted([*RL_ALGORITHMS, "dpo"])  # "dpo": no RL, the policy trains on preference pairs (no reward)
