"""DAPO (arXiv 2503.14476) as a drop-in ``trl.GRPOTrainer``: clip-higher, token-level loss, overlong shaping and
dynamic sampling that refills, carries its surplus and stays consistent across processes.

Layout: ``config.py`` (DAPOConfig: the paper's defaults and the fields TRL lacks), ``trainer.py`` (DAPOTrainer, the
hooks it overrides, read in the order a step runs them), ``reward_columns.py`` (each round's record: the reward
columns, the overlong shaping beside them, the total and the signal), ``step.py`` (the model-free pieces of a
dynamic-sampling step: the refill order, gathering, what the rounds found, the filler, the totals and metrics, the
generation budget), ``prompt_history.py`` (the cheaper options: skipping prompts before generating, sized refills).
"""

from .config import ON_CAP_CHOICES, DAPOConfig
from .trainer import DAPOTrainer

__all__ = ["ON_CAP_CHOICES", "DAPOConfig", "DAPOTrainer"]
