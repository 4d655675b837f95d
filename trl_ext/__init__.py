"""trl_ext: what TRL lacks, as drop-in trainers and one reward adapter. The public API is exactly what this module exports."""

from . import _bnb_notice  # noqa: F401  (first: it must see bitsandbytes' import, which transformers triggers)
from .callbacks import GoldRewardCallback
from .dapo import DAPOConfig, DAPOTrainer
from .ppo import PPOConfig, PPOTrainer
from .ranking import RankingRewardConfig, RankingRewardTrainer
from .rewards import RewardAdapter
from .rloo import RLOOConfig, RLOOTrainer

__version__ = "0.1.0"

__all__: list[str] = [
    "DAPOConfig",
    "DAPOTrainer",
    "GoldRewardCallback",
    "PPOConfig",
    "PPOTrainer",
    "RankingRewardConfig",
    "RankingRewardTrainer",
    "RLOOConfig",
    "RLOOTrainer",
    "RewardAdapter",
]
