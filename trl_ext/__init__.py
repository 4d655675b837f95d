"""trl_ext: what TRL lacks, as drop-in trainers and one reward adapter. The public API is exactly what this module exports."""

from .callbacks import GoldRewardCallback
from .dapo import DAPOConfig, DAPOTrainer
from .ppo import PPOConfig, PPOTrainer
from .rewards import RewardAdapter
from .rloo import RLOOConfig, RLOOTrainer

__version__ = "0.1.0"

__all__: list[str] = [
    "DAPOConfig",
    "DAPOTrainer",
    "GoldRewardCallback",
    "PPOConfig",
    "PPOTrainer",
    "RLOOConfig",
    "RLOOTrainer",
    "RewardAdapter",
]
