"""trl_ext: what TRL lacks, as drop-in trainers and one reward adapter. The public API is exactly what this module exports."""

__version__ = "0.1.0"

from .ppo import PPOConfig, PPOTrainer

__all__: list[str] = ["PPOConfig", "PPOTrainer"]
